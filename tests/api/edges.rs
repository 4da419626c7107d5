//! REST edges from the review of issue 14: client addresses behind
//! proxies, and YAML bodies that expand through aliases.

use crate::helpers::{Db, TestApp, spawn_app_with};
use crate::on_both_databases;
use hotswap::settings::Settings;
use serde_json::json;

/// The audit source of the newest `config.create`.
async fn last_source(app: &TestApp) -> String {
    let audit = app.get("/api/v1/audit?limit=50").await;
    audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["action"] == "config.create")
        .and_then(|row| row["source"].as_str())
        .unwrap_or_default()
        .to_owned()
}

async fn create_through_proxy(app: &TestApp, name: &str, forwarded_for: &str) -> u16 {
    let body = serde_json::to_vec(
        &json!({"name": name, "configType": "Custom", "environment": "staging"}),
    )
    .unwrap();
    let client = awc::Client::default();
    client
        .post(app.url("/api/v1/configs"))
        .insert_header(("authorization", format!("Bearer {}", app.admin_token)))
        .insert_header(("x-forwarded-for", forwarded_for))
        .content_type("application/json")
        .send_body(body)
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn behind_a_proxy(settings: &mut Settings) {
    settings.http.trusted_proxies = vec!["127.0.0.0/8".into()];
    settings.rate_limit.address_per_minute = 60;
    settings.rate_limit.address_burst = 3;
}

async fn x_forwarded_for_is_read_from_the_right_past_trusted_proxies(app: TestApp) {
    // The proxy (127.0.0.1, trusted) appended the client; the entry to its
    // left is the client's own claim and is ignored.
    assert_eq!(
        create_through_proxy(&app, "a", "6.6.6.6, 203.0.113.9").await,
        201
    );
    assert_eq!(last_source(&app).await, "203.0.113.9");
    // Two proxies in a row: the first untrusted address from the right.
    assert_eq!(
        create_through_proxy(&app, "b", "198.51.100.7, 127.0.0.9").await,
        201
    );
    assert_eq!(last_source(&app).await, "198.51.100.7");
    // A proxy that adds its own header line (HAProxy) rather than append:
    // every line counts, in order, and the client's own first line is not
    // believed.
    let body = serde_json::to_vec(
        &json!({"name": "lines", "configType": "Custom", "environment": "staging"}),
    )
    .unwrap();
    let status = awc::Client::default()
        .post(app.url("/api/v1/configs"))
        .insert_header(("authorization", format!("Bearer {}", app.admin_token)))
        .append_header(("x-forwarded-for", "6.6.6.6"))
        .append_header(("x-forwarded-for", "203.0.113.50"))
        .content_type("application/json")
        .send_body(body)
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 201);
    assert_eq!(last_source(&app).await, "203.0.113.50");
    // Per-address limits follow the client, not the proxy: one client's
    // burst spent leaves another's untouched.
    let statuses: Vec<u16> = futures_util::future::join_all((0..4).map(|i| {
        let app = &app;
        async move { create_through_proxy(app, &format!("c{i}"), "192.0.2.1").await }
    }))
    .await;
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(create_through_proxy(&app, "d", "192.0.2.2").await, 201);
}

/// A byte that is not text in the client's part of the header (a proxy
/// merging lines keeps it) spoils that entry only: the proxy's entry, to
/// its right, still reads.
async fn x_forwarded_for_with_bytes_that_are_not_text_still_reads(app: TestApp) {
    let body = serde_json::to_vec(
        &json!({"name": "bytes", "configType": "Custom", "environment": "staging"}),
    )
    .unwrap();
    let status = awc::Client::default()
        .post(app.url("/api/v1/configs"))
        .insert_header(("authorization", format!("Bearer {}", app.admin_token)))
        .insert_header((
            "x-forwarded-for",
            awc::http::header::HeaderValue::from_bytes(b"\x80x, 203.0.113.77").unwrap(),
        ))
        .content_type("application/json")
        .send_body(body)
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 201);
    assert_eq!(last_source(&app).await, "203.0.113.77");
}

on_both_databases!(
    x_forwarded_for_is_read_from_the_right_past_trusted_proxies with behind_a_proxy,
    x_forwarded_for_with_bytes_that_are_not_text_still_reads with behind_a_proxy,
);

#[actix_web::test]
async fn without_trusted_proxies_the_header_is_ignored() {
    let app = spawn_app_with(Db::Sqlite, |_| {}).await.unwrap();
    assert_eq!(create_through_proxy(&app, "a", "203.0.113.9").await, 201);
    assert_eq!(last_source(&app).await, "127.0.0.1");
}

#[actix_web::test]
async fn yaml_aliases_cannot_expand_a_body_past_its_budget() {
    let app = spawn_app_with(Db::Sqlite, |_| {}).await.unwrap();
    assert_eq!(
        app.create_config("loot", "Custom", "staging").await.status,
        201
    );
    // A 6 KB body that aliases into a million values.
    let anchor = vec!["1"; 1000].join(", ");
    let aliases = vec!["*a"; 1000].join(", ");
    let body = format!("version: 1.0.0\ncontent:\n  a: &a [{anchor}]\n  b: [{aliases}]\n");
    let refused = app
        .send_raw(
            "POST",
            "/api/v1/configs/loot/versions",
            "application/yaml",
            body.into_bytes(),
        )
        .await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "malformed_body");
    assert!(
        refused.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expands past")),
        "{:?}",
        refused.body
    );
    // Aliases within the budget still work.
    let fine = "version: 1.0.0\ncontent:\n  base: &b {x: 1}\n  copy: *b\n";
    let created = app
        .send_raw(
            "POST",
            "/api/v1/configs/loot/versions",
            "application/yaml",
            fine.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["content"]["copy"], json!({"x": 1}));
}
