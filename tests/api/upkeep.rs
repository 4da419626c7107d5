//! One-off start-up steps over a store written by an older hub: checksums
//! moved to RFC 8785 (and signed again), sealed pointers recorded; each
//! once, audited.

use crate::helpers::{TestApp, spawn_app_on};
use crate::on_both_databases;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn execute(app: &TestApp, statements: &[&str]) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

async fn audit_actions(app: &TestApp, action: &str) -> Vec<Value> {
    app.get("/api/v1/audit?limit=1000").await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["action"] == action)
        .cloned()
        .collect()
}

async fn restart(app: TestApp) -> TestApp {
    let (db, url, dir) = app.into_parts();
    spawn_app_on(db, url, dir, |_| {}).await
}

async fn stored_checksums_move_to_rfc8785_once_and_are_signed_again(app: TestApp) {
    assert_eq!(
        app.create_config("odd", "Custom", "staging").await.status,
        201
    );
    // Where serde_json's output and JCS differ: an exponent, and keys whose
    // UTF-8 and UTF-16 orders disagree.
    let text =
        r#"{"version": "1.0.0", "content": {"scale": 1e21, "\ufb33": 1, "\ud83d\ude00": 2}}"#;
    let created = app
        .send_raw(
            "POST",
            "/api/v1/configs/odd/versions",
            "application/json",
            text.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let document = created.body["content"].clone();
    let jcs_checksum = hotswap_client::document_checksum(&document);
    assert_eq!(
        created.body["checksum"], jcs_checksum,
        "new versions are JCS"
    );
    let serde_json_checksum =
        hex::encode(Sha256::digest(hotswap_client::canonical_json(&document)));
    assert_ne!(serde_json_checksum, jcs_checksum);

    // As an older hub left it: the serde_json checksum, and the step not done.
    execute(
        &app,
        &[
            &format!(
                "UPDATE config_versions SET checksum = '{serde_json_checksum}', signature = 'old'"
            ),
            "DELETE FROM upkeep WHERE name = 'checksums-rfc8785-v1'",
        ],
    )
    .await;
    let app = restart(app).await;
    let version = app.get("/api/v1/configs/odd/versions/1.0.0").await.body;
    assert_eq!(version["checksum"], jcs_checksum);
    let public_key = app.signing_key().await;
    assert_eq!(
        hotswap_client::signature::verify(
            &public_key,
            "odd",
            1,
            &jcs_checksum,
            version["signature"].as_str().unwrap()
        ),
        Ok(()),
        "signed again over the new checksum"
    );
    let audited = audit_actions(&app, "versions.checksum-upgrade").await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["summary"]["changed"], 1, "{audited:?}");
    assert_eq!(
        app.get("/api/v1/audit/verify").await.body["valid"],
        true,
        "the audit chain holds"
    );
    // Once: a second start changes and audits nothing.
    let app = restart(app).await;
    assert_eq!(
        audit_actions(&app, "versions.checksum-upgrade").await.len(),
        1
    );
}

async fn sealed_pointers_of_an_older_store_are_remembered(app: TestApp) {
    let schema = |secret: bool| {
        let mut password = json!({"type": "string"});
        if secret {
            password["x-secret"] = json!(true);
        }
        json!({"type": "object", "properties": {"password": password}})
    };
    let registered = app
        .post_json(
            "/api/v1/schemas",
            &json!({"id": "creds", "version": "1.0.0", "schema": schema(true)}),
        )
        .await;
    assert_eq!(registered.status, 201);
    let created = app
        .post_json(
            "/api/v1/configs",
            &json!({"name": "svc", "configType": "Custom", "environment": "staging", "schemaId": "creds"}),
        )
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        app.post_version("svc", "1.0.0", json!({"password": "hunter2-old"}))
            .await
            .status,
        201
    );
    // As an older hub left it: no record of what was sealed.
    execute(
        &app,
        &[
            "DELETE FROM config_sealed_paths",
            "DELETE FROM upkeep WHERE name = 'sealed-paths-v1'",
        ],
    )
    .await;
    let app = restart(app).await;
    let unmarked = app
        .post_json(
            "/api/v1/schemas",
            &json!({"id": "creds", "version": "2.0.0", "schema": schema(false), "approveBreaking": true}),
        )
        .await;
    assert_eq!(unmarked.status, 201, "{:?}", unmarked.body);
    let next = app
        .post_version("svc", "1.1.0", json!({"password": "hunter2-new"}))
        .await;
    assert_eq!(next.status, 201, "{:?}", next.body);
    assert_eq!(next.body["content"]["password"], "***", "still sealed");
}

on_both_databases!(
    stored_checksums_move_to_rfc8785_once_and_are_signed_again,
    sealed_pointers_of_an_older_store_are_remembered,
);
