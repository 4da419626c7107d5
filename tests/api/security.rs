//! API keys, signed versions, encrypted secret fields, rate limits, the
//! tamper-evident audit chain, request limits and TLS.

use crate::helpers::{Db, TestApp, balance, spawn_app_on, spawn_app_with};
use crate::on_both_databases;
use base64::{Engine, engine::general_purpose::STANDARD};
use hotswap::{Role, settings::SecretString};
use serde_json::{Value, json};
use std::time::Duration;

async fn api_keys_are_shown_once_listed_without_secret_and_revocable(app: TestApp) {
    let created = app
        .post_json("/api/v1/api-keys", &json!({"name": "eu fleet", "environments": ["production"], "regions": ["EU-WEST", "EU-WEST"]}))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let key = created.body["key"].as_str().unwrap().to_owned();
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("hsk_"));
    assert_eq!(created.body["regions"], json!(["EU-WEST"]));
    let listed = app.get("/api/v1/api-keys").await;
    let listed_text = listed.body.to_string();
    assert!(
        !listed_text.contains(&key),
        "a listing never shows the secret"
    );
    assert_eq!(listed.body["items"][0]["hint"], &key[..10]);
    assert!(listed.body["items"][0].get("key").is_none());

    for (token, how) in [(Some(key.as_str()), "bearer"), (None, "query")] {
        let path = match how {
            "query" => format!("/api/v1/server/whoami?token={key}"),
            _ => "/api/v1/server/whoami".to_owned(),
        };
        let me = app.request("GET", &path, token, None).await;
        assert_eq!(me.status, 200, "{how}: {:?}", me.body);
        assert_eq!(me.body["keyId"], id.as_str());
        assert_eq!(me.body["environments"], json!(["production"]));
    }
    let forged = format!("hsk_{}", "A".repeat(43));
    assert_eq!(
        app.request("GET", "/api/v1/server/whoami", Some(&forged), None)
            .await
            .status,
        401
    );
    assert_eq!(
        app.request("GET", "/api/v1/server/whoami", None, None)
            .await
            .status,
        401
    );
    // A user token is not a server key.
    assert_eq!(app.get("/api/v1/server/whoami").await.status, 401);

    let revoked = app.delete(&format!("/api/v1/api-keys/{id}")).await;
    assert_eq!(revoked.status, 200);
    assert!(revoked.body["revokedAt"].is_string());
    assert_eq!(
        app.request("GET", "/api/v1/server/whoami", Some(&key), None)
            .await
            .status,
        401
    );
    assert_eq!(
        app.delete(&format!("/api/v1/api-keys/{id}")).await.status,
        404
    );
    assert_eq!(app.delete("/api/v1/api-keys/not-a-uuid").await.status, 404);

    for bad in [
        json!({"name": ""}),
        json!({"name": "x", "regions": ["has space"]}),
        json!({"name": "x", "environments": ["moon"]}),
        json!({"name": "x", "regions": vec!["R"; 101]}),
    ] {
        assert_eq!(
            app.post_json("/api/v1/api-keys", &bad).await.status,
            422,
            "{bad}"
        );
    }
    let trail = app
        .get(&format!("/api/v1/audit?resource=api-keys/{id}"))
        .await;
    assert!(
        !trail.body.to_string().contains(&key),
        "the audit trail never holds the secret"
    );
}

async fn every_version_is_signed_with_the_published_key(app: TestApp) {
    app.create_config("weapon-balance", "GameBalance", "staging")
        .await;
    let version = app
        .post_version("weapon-balance", "1.0.0", balance(45))
        .await;
    let key = app.get("/api/v1/signing-key").await;
    assert_eq!(key.body["algorithm"], "Ed25519");
    let (public, signature) = (
        key.body["publicKey"].as_str().unwrap(),
        version.body["signature"].as_str().unwrap(),
    );
    assert_eq!(version.body["signingKeyId"], key.body["keyId"]);
    let checksum = version.body["checksum"].as_str().unwrap();
    assert!(
        hotswap_client::signature::verify(public, "weapon-balance", 1, checksum, signature).is_ok()
    );
    assert!(
        hotswap_client::signature::verify(public, "weapon-balance", 2, checksum, signature)
            .is_err()
    );
    let listed = app.get("/api/v1/configs/weapon-balance/versions").await;
    assert_eq!(listed.body["items"][0]["signature"], signature);
}

fn secret_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "endpoint": {"type": "string"},
            "apiKey": {"type": "string", "minLength": 8, "x-secret": true},
            "partners": {"type": "object", "additionalProperties": {"properties": {"token": {"x-secret": true}}}}
        }
    })
}

async fn with_secret_config(app: &TestApp) {
    let schema = app
        .post_json(
            "/api/v1/schemas",
            &json!({"id": "store-backend", "version": "1.0.0", "schema": secret_schema()}),
        )
        .await;
    assert_eq!(schema.status, 201, "{:?}", schema.body);
    let config = app.create_production_config("store", "store-backend").await;
    assert_eq!(config.status, 201);
}

const PLAIN_KEY: &str = "sk-live-hunter2-very-secret";
const PLAIN_TOKEN: &str = "partner-token-0xdeadbeef";

fn secret_document(api_key: &str) -> Value {
    json!({"endpoint": "https://pay.example", "apiKey": api_key, "partners": {"acme": {"token": PLAIN_TOKEN, "name": "Acme"}}})
}

async fn secret_fields_are_encrypted_at_rest_and_masked_everywhere(app: TestApp) {
    with_secret_config(&app).await;
    let created = app
        .post_version("store", "1.0.0", secret_document(PLAIN_KEY))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["content"]["apiKey"], "***");
    assert_eq!(created.body["content"]["partners"]["acme"]["token"], "***");
    assert_eq!(created.body["content"]["partners"]["acme"]["name"], "Acme");
    assert_eq!(
        created.body["checksum"],
        hotswap_client::document_checksum(&secret_document(PLAIN_KEY)),
        "the checksum is of what servers get"
    );

    // Unchanged secret: no change; changed secret: a masked change.
    app.post_version("store", "1.1.0", json!({"endpoint": "https://pay2.example", "apiKey": PLAIN_KEY, "partners": {"acme": {"token": PLAIN_TOKEN, "name": "Acme"}}})).await;
    app.post_version("store", "1.2.0", secret_document("sk-live-rotated-value"))
        .await;
    let same = app
        .get("/api/v1/configs/store/versions/1.0.0/diff/1.1.0")
        .await;
    let paths: Vec<&str> = same.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/endpoint"]);
    let changed = app
        .get("/api/v1/configs/store/versions/1.1.0/diff/1.2.0")
        .await;
    let changes = changed.body["changes"].as_array().unwrap();
    let secret_change = changes
        .iter()
        .find(|c| c["path"] == "/apiKey")
        .expect("the secret change is listed");
    assert_eq!(
        (secret_change["from"].as_str(), secret_change["to"].as_str()),
        (Some("***"), Some("***"))
    );

    // A validation error on a secret does not quote it.
    let short = app
        .post_version("store", "1.3.0", secret_document("short"))
        .await;
    assert_eq!(short.status, 422);
    assert!(
        !short.body.to_string().contains("\"short\""),
        "{:?}",
        short.body
    );

    // Rollback re-validates and re-seals the old secrets.
    let rolled = app
        .post_json(
            "/api/v1/configs/store/rollback",
            &json!({"toVersion": "1.0.0"}),
        )
        .await;
    assert_eq!(rolled.status, 201, "{:?}", rolled.body);
    assert_eq!(rolled.body["checksum"], created.body["checksum"]);
    let back = app
        .get(&format!(
            "/api/v1/configs/store/versions/1.0.0/diff/{}",
            rolled.body["version"].as_str().unwrap()
        ))
        .await;
    assert_eq!(back.body["changes"], json!([]));
    assert_eq!(
        app.post_empty("/api/v1/configs/store/versions/1.0.0/validate")
            .await
            .body["valid"],
        true
    );

    // Nothing anywhere holds the plaintext: responses, reports, the audit trail, the store.
    let mut seen = String::new();
    for path in [
        "/api/v1/configs/store/versions/1.0.0",
        "/api/v1/configs/store/versions",
        "/api/v1/configs/store/versions/1.0.0/validation-report",
        "/api/v1/configs/store/versions/1.0.0/diff/1.2.0",
        "/api/v1/audit?limit=1000",
    ] {
        seen.push_str(&app.get(path).await.body.to_string());
    }
    seen.push_str(&app.stored_version_texts().await);
    for secret in [PLAIN_KEY, PLAIN_TOKEN, "sk-live-rotated-value"] {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
    assert!(app.stored_version_texts().await.contains("$hsenc:v1:"));

    // A client may not plant envelope-looking strings.
    let planted = app
        .post_version("store", "9.0.0", json!({"endpoint": "$hsenc:v1:abc:def"}))
        .await;
    assert_eq!(planted.status, 422);
}

async fn the_rate_limit_trips_and_recovers(app: TestApp) {
    // This hub allows 3 requests at once, then one per second, per principal.
    let token = app.token(Role::Viewer, "burst");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            app.request("GET", "/api/v1/configs", Some(&token), None)
                .await
                .status,
        );
    }
    assert_eq!(&statuses[..3], [200, 200, 200]);
    assert_eq!(statuses[4], 429, "{statuses:?}");
    let limited = app
        .request("GET", "/api/v1/configs", Some(&token), None)
        .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body["code"], "rate_limited");
    assert!(
        limited
            .header("retry-after")
            .is_some_and(|s| s.parse::<u64>().is_ok())
    );
    // Another principal is not affected.
    assert_eq!(
        app.request(
            "GET",
            "/api/v1/configs",
            Some(&app.token(Role::Viewer, "other")),
            None
        )
        .await
        .status,
        200
    );
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.request("GET", "/api/v1/configs", Some(&token), None)
            .await
            .status,
        200,
        "the bucket refilled"
    );
}

async fn the_audit_chain_shows_an_edit_made_behind_the_hubs_back(app: TestApp) {
    for name in ["a", "b", "c"] {
        app.create_config(name, "Custom", "staging").await;
    }
    let verified = app.get("/api/v1/audit/verify").await;
    assert_eq!(verified.body["valid"], true, "{:?}", verified.body);
    assert!(verified.body["checked"].as_u64().unwrap() >= 8);
    let target: i64 = app.get("/api/v1/audit?resource=configs/b").await.body["items"][0]["seq"]
        .as_i64()
        .unwrap();

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    let update = format!("UPDATE audit_log SET actor = 'mallory' WHERE seq = {target}");
    let refused = sqlx::query(sqlx::AssertSqlSafe(update.clone()))
        .execute(&pool)
        .await;
    assert!(
        refused.is_err(),
        "the store itself refuses to edit the trail"
    );
    let disable = match app.db {
        Db::Sqlite => "DROP TRIGGER audit_log_no_update",
        Db::Postgres => "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
    };
    sqlx::query(disable).execute(&pool).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(update))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let broken = app.get("/api/v1/audit/verify").await;
    assert_eq!(broken.body["valid"], false);
    assert_eq!(broken.body["firstBrokenSeq"], target);
    assert!(broken.body["reason"].as_str().unwrap().contains("edited"));
}

async fn oversized_headers_and_item_lists_are_refused_cleanly(app: TestApp) {
    app.create_config("weapon-balance", "GameBalance", "staging")
        .await;
    let huge = "x".repeat(20 * 1024);
    let response = app
        .request_with_header("/api/v1/configs", ("x-padding", &huge))
        .await;
    assert_eq!(response.status, 431);
    assert_eq!(response.body["code"], "headers_too_large");
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    // Far past the limit the HTTP layer itself may refuse or close; the hub stays up.
    // (A client of its own, so a connection the hub resets is not reused below.)
    let _ = awc::Client::default()
        .get(app.url("/api/v1/configs"))
        .insert_header(("x-padding", "x".repeat(256 * 1024)))
        .send()
        .await;
    let many_tags: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let tags = app
        .post_json(
            "/api/v1/configs/weapon-balance/versions",
            &json!({"version": "1.0.0", "content": balance(5), "tags": many_tags}),
        )
        .await;
    assert_eq!(tags.status, 422);
    // The hub is unaffected.
    assert_eq!(app.get("/api/v1/configs").await.status, 200);
}

on_both_databases!(
    api_keys_are_shown_once_listed_without_secret_and_revocable,
    every_version_is_signed_with_the_published_key,
    secret_fields_are_encrypted_at_rest_and_masked_everywhere,
    the_audit_chain_shows_an_edit_made_behind_the_hubs_back,
    oversized_headers_and_item_lists_are_refused_cleanly,
);

mod rate_limit {
    use super::*;

    fn tight(settings: &mut hotswap::settings::Settings) {
        settings.rate_limit.principal_per_minute = 60;
        settings.rate_limit.principal_burst = 3;
    }

    #[actix_web::test]
    async fn on_sqlite() {
        super::the_rate_limit_trips_and_recovers(spawn_app_with(Db::Sqlite, tight).await.unwrap())
            .await;
    }

    #[actix_web::test]
    async fn on_postgres() {
        if let Some(app) = spawn_app_with(Db::Postgres, tight).await {
            super::the_rate_limit_trips_and_recovers(app).await;
        }
    }
}

#[actix_web::test]
async fn unauthenticated_floods_are_limited_per_address() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.rate_limit.address_per_minute = 60;
        s.rate_limit.address_burst = 5;
    })
    .await
    .unwrap();
    let statuses: Vec<u16> = futures_util::future::join_all(
        (0..8).map(|_| app.request("GET", "/api/v1/configs", Some("forged"), None)),
    )
    .await
    .into_iter()
    .map(|r| r.status)
    .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        app.request("GET", "/health", None, None).await.status,
        200,
        "health checks are never limited"
    );
}

#[actix_web::test]
async fn production_without_a_secrets_key_refuses_secret_fields_only() {
    let signing = STANDARD.encode([3u8; 32]);
    let app = spawn_app_with(Db::Sqlite, move |s| {
        s.environment = hotswap::domain::kinds::Environment::Production;
        s.signing.key = Some(SecretString::new(signing));
        s.secrets.key = None;
    })
    .await
    .unwrap();
    with_secret_config(&app).await;
    let refused = app
        .post_version("store", "1.0.0", secret_document(PLAIN_KEY))
        .await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "secrets_key_missing");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("HOTSWAP_SECRETS__KEY")
    );
    assert_eq!(
        app.post_version("store", "1.0.0", json!({"endpoint": "https://x"}))
            .await
            .status,
        201
    );
}

#[actix_web::test]
async fn rotation_re_encrypts_stored_secrets_under_the_new_key() {
    let (old_key, new_key) = (STANDARD.encode([1u8; 32]), STANDARD.encode([2u8; 32]));
    let first = {
        let old_key = old_key.clone();
        spawn_app_with(Db::Sqlite, move |s| {
            s.secrets.key = Some(SecretString::new(old_key))
        })
        .await
        .unwrap()
    };
    with_secret_config(&first).await;
    assert_eq!(
        first
            .post_version("store", "1.0.0", secret_document(PLAIN_KEY))
            .await
            .status,
        201
    );
    let before = first.stored_version_texts().await;
    let (db, url, dir) = first.into_parts();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hotswap"))
        .args(["secrets", "rotate"])
        .env("HOTSWAP_DATA_DIR", dir.path())
        .env("HOTSWAP_DATABASE__URL", &url)
        .env("HOTSWAP_SECRETS__KEY", &new_key)
        .env("HOTSWAP_SECRETS__PREVIOUS_KEYS", &old_key)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("re-encrypted 2 secret values in 1 versions")
    );

    // Only the new key now: the rotated secrets still open (rollback re-validates them in clear).
    let app = spawn_app_on(db, url, dir, move |s| {
        s.secrets.key = Some(SecretString::new(new_key))
    })
    .await;
    let after = app.stored_version_texts().await;
    assert_ne!(before, after);
    let rolled = app
        .post_json(
            "/api/v1/configs/store/rollback",
            &json!({"toVersion": "1.0.0"}),
        )
        .await;
    assert_eq!(rolled.status, 201, "{:?}", rolled.body);
    let trail = app.get("/api/v1/audit?resource=secrets").await;
    assert_eq!(trail.body["items"][0]["summary"]["values"], 2);
}

#[actix_web::test]
async fn tokens_from_an_identity_provider_verify_with_its_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = (dir.path().join("idp.key"), dir.path().join("idp.pub"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        private.to_str().unwrap(),
    ]);
    run(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let public_path = public.clone();
    let app = spawn_app_with(Db::Sqlite, move |s| {
        s.auth.public_key_file = Some(public_path);
        s.auth.public_key_algorithm = Some("ES256".into());
        s.auth.issuer = Some("https://login.studio.example/".into());
    })
    .await
    .unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(&private).unwrap()).unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    let mint = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &key,
        )
        .unwrap()
    };
    let good = mint(
        json!({"sub": "sso-user", "role": "developer", "exp": now + 600, "iss": "https://login.studio.example/"}),
    );
    let created = app
        .request(
            "POST",
            "/api/v1/configs",
            Some(&good),
            Some((
                "application/json",
                serde_json::to_vec(
                    &json!({"name": "sso", "configType": "Custom", "environment": "staging"}),
                )
                .unwrap(),
            )),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["createdBy"], "sso-user");
    let wrong_issuer = mint(
        json!({"sub": "x", "role": "admin", "exp": now + 600, "iss": "https://evil.example/"}),
    );
    assert_eq!(
        app.request("GET", "/api/v1/configs", Some(&wrong_issuer), None)
            .await
            .status,
        401
    );
    let no_issuer = mint(json!({"sub": "x", "role": "admin", "exp": now + 600}));
    assert_eq!(
        app.request("GET", "/api/v1/configs", Some(&no_issuer), None)
            .await
            .status,
        401
    );
    // An HS256 token signed with the public key's bytes (algorithm confusion) is refused.
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "x", "role": "admin", "exp": now + 600, "iss": "https://login.studio.example/"}),
        &jsonwebtoken::EncodingKey::from_secret(&std::fs::read(&public).unwrap()),
    )
    .unwrap();
    assert_eq!(
        app.request("GET", "/api/v1/configs", Some(&confused), None)
            .await
            .status,
        401
    );
}
