use crate::helpers::{TestApp, balance};
use crate::on_both_databases;
use serde_json::json;

async fn every_mutation_is_on_the_audit_trail_with_its_request_id(app: TestApp) {
    let created = app
        .create_config("weapon-balance", "GameBalance", "staging")
        .await;
    let request_id = created.header("x-request-id").unwrap().to_owned();
    app.post_version("weapon-balance", "1.0.0", balance(45))
        .await;
    app.post_version("weapon-balance", "1.1.0", balance(50))
        .await;
    app.put_json(
        "/api/v1/configs/weapon-balance/versions/1.1.0/tags",
        &json!({"tags": ["stable"]}),
    )
    .await;
    app.post_empty("/api/v1/configs/weapon-balance/versions/1.1.0/approve")
        .await;
    app.post_json(
        "/api/v1/configs/weapon-balance/rollback",
        &json!({"toVersion": "1.0.0"}),
    )
    .await;
    // A refused change leaves no row.
    assert_eq!(
        app.post_version("weapon-balance", "0.1.0", balance(45))
            .await
            .status,
        409
    );

    let trail = app
        .get("/api/v1/audit?resource=configs/weapon-balance")
        .await;
    assert_eq!(trail.status, 200);
    let items = trail.body["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "config.rollback",
            "version.approve",
            "version.tag",
            "version.create",
            "version.create",
            "config.create"
        ]
    );
    let creation = items.last().unwrap();
    assert_eq!(creation["actor"], "test-admin");
    assert_eq!(creation["requestId"], request_id.as_str());
    assert_eq!(creation["resource"], "configs/weapon-balance");
    assert_eq!(creation["summary"]["configType"], "GameBalance");
    assert_eq!(items[3]["summary"]["changes"], 1, "1.1.0 changed one value");
    assert!(items[0]["at"].as_str().unwrap().ends_with('Z'));
}

async fn the_audit_trail_filters_and_pages(app: TestApp) {
    for name in ["a-1", "a-2", "a-3"] {
        app.create_config(name, "Custom", "staging").await;
    }
    let by_actor = app.get("/api/v1/audit?actor=test-admin&limit=2").await;
    assert_eq!(by_actor.body["items"].as_array().unwrap().len(), 2);
    let cursor = by_actor.body["nextCursor"].as_str().unwrap();
    let next = app
        .get(&format!(
            "/api/v1/audit?actor=test-admin&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(next.body["items"][0]["resource"], "configs/a-1");
    assert!(next.body["nextCursor"].is_null());
    let nobody = app.get("/api/v1/audit?actor=mallory").await;
    assert_eq!(nobody.body["items"].as_array().unwrap().len(), 0);
    let future = app.get("/api/v1/audit?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future.body["items"].as_array().unwrap().len(), 0);
    let system = app.get("/api/v1/audit?actor=system").await;
    assert_eq!(
        system.body["items"].as_array().unwrap().len(),
        hotswap::BUILTIN_SCHEMAS.len(),
        "one row per built-in schema"
    );
    assert_eq!(app.get("/api/v1/audit?since=yesterday").await.status, 400);
    // Resource filters match a resource and what is below it, not siblings with a longer name.
    app.create_config("a-10", "Custom", "staging").await;
    let only_a1 = app.get("/api/v1/audit?resource=configs/a-1").await;
    assert_eq!(only_a1.body["items"].as_array().unwrap().len(), 1);
}

on_both_databases!(
    every_mutation_is_on_the_audit_trail_with_its_request_id,
    the_audit_trail_filters_and_pages,
);
