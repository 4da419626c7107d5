//! Every route × every role and every kind of bad token: 401, 403 or success.

use crate::helpers::{Db, TEST_JWT_SECRET, TestApp, balance};
use crate::on_both_databases;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hotswap::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};

/// A request's path and body, made after setting up what it needs.
type Prepared<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (String, Option<Value>)> + 'a>>;
/// Builds one request that succeeds when allowed, given a unique number.
type Prepare = for<'a> fn(&'a TestApp, u32) -> Prepared<'a>;

/// One route: its method and path template (as the OpenAPI document names
/// it), the least role allowed, the success status, and how to make a
/// request that succeeds when allowed (fresh state per call).
struct Route {
    method: &'static str,
    template: &'static str,
    min_role: Role,
    success: u16,
    prepare: Prepare,
}

macro_rules! route {
    ($method:literal $template:literal, $role:ident, $success:literal, |$app:ident, $n:ident| $body:expr) => {
        Route {
            method: $method,
            template: $template,
            min_role: Role::$role,
            success: $success,
            prepare: |$app, $n| Box::pin(async move { $body }),
        }
    };
}

/// A Canary deployment of a fresh config's second version, in progress
/// (no servers, no auto-promotion: it stays in its first phase); its id.
async fn running_deployment(app: &TestApp, n: u32) -> String {
    let config = format!("dep-{n}");
    assert_eq!(
        app.create_config(&config, "Custom", "staging").await.status,
        201
    );
    let first = app.deploy(&config, "1.0.0", json!({"n": n})).await;
    let first_id = first.body["id"].as_str().unwrap().to_owned();
    // Without servers a direct deployment completes at once.
    for _ in 0..200 {
        let view = app.get(&format!("/api/v1/deployments/{first_id}")).await;
        if view.body["status"] == "Completed" {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    app.start_canary(&config, "1.1.0", json!({"n": n + 1}))
        .await
}

async fn paused_deployment(app: &TestApp, n: u32) -> String {
    let id = running_deployment(app, n).await;
    let paused = app
        .post_empty(&format!("/api/v1/deployments/{id}/pause"))
        .await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    id
}

/// A production deployment an operator created, waiting for an admin.
async fn deployment_awaiting_approval(app: &TestApp, n: u32) -> String {
    let config = format!("prod-{n}");
    assert_eq!(
        app.create_config(&config, "Custom", "production")
            .await
            .status,
        201
    );
    assert_eq!(
        app.post_version(&config, "1.0.0", json!({"n": n}))
            .await
            .status,
        201
    );
    let creator = app.token(Role::Operator, &format!("creator-{n}"));
    let body = json!({"config": config, "version": "1.0.0", "strategy": "Direct"});
    let created = app
        .request(
            "POST",
            "/api/v1/deployments",
            Some(&creator),
            Some(("application/json", serde_json::to_vec(&body).unwrap())),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["status"], "AwaitingApproval");
    created.body["id"].as_str().unwrap().to_owned()
}

/// A game server said hello as `id` (its socket lives on in a task).
async fn registered_server(app: &TestApp, id: &str) {
    let (key, _) = app.server_key(&[], &[]).await;
    let mut socket = crate::sockets::raw(app, Some(&key)).await.unwrap();
    crate::sockets::send(
        &mut socket,
        crate::sockets::hello(id, "staging", Default::default()),
    )
    .await;
    assert!(crate::sockets::next_message(&mut socket).await.is_ok());
    actix_web::rt::spawn(async move {
        while crate::sockets::next_message(&mut socket).await.is_ok() {}
    });
}

/// A live event an hour away, overriding a fresh config; its name.
async fn scheduled_event(app: &TestApp, n: u32) -> String {
    let config = format!("ev-cfg-{n}");
    app.create_config(&config, "Custom", "staging").await;
    app.post_version(&config, "1.0.0", json!({"n": n})).await;
    let start = chrono::Utc::now() + chrono::Duration::hours(1);
    let end = start + chrono::Duration::hours(1);
    let name = format!("ev-{n}");
    let created = app
        .post_json(
            "/api/v1/live-events",
            &json!({"name": name, "eventType": "Tournament",
                "overrides": [{"config": config, "patch": {"n": 0}}],
                "schedule": {"startTime": start.to_rfc3339(), "endTime": end.to_rfc3339()}}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    name
}

/// A fresh config (active revision 1) and a draft experiment on it; its name.
async fn draft_experiment(app: &TestApp, n: u32) -> String {
    let config = format!("exp-cfg-{n}");
    app.create_config(&config, "Custom", "staging").await;
    let deployed = app.deploy(&config, "1.0.0", json!({"n": n})).await;
    app.wait_deployment_status(deployed.body["id"].as_str().unwrap(), "Completed")
        .await;
    let name = format!("exp-{n}");
    let created = app
        .post_json("/api/v1/experiments", &experiment_body(&name, &config))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    name
}

fn experiment_body(name: &str, config: &str) -> Value {
    json!({"name": name, "config": config,
        "variants": [{"id": "control", "weight": 1, "patch": {}}, {"id": "b", "weight": 1, "patch": {"n": -1}}],
        "metrics": [{"name": "sessions", "kind": "count", "event": "session_start"}]})
}

/// A draft experiment moved through `controls`; its name.
async fn experiment_after(app: &TestApp, n: u32, controls: &[&str]) -> String {
    let name = draft_experiment(app, n).await;
    for control in controls {
        let done = app
            .post_empty(&format!("/api/v1/experiments/{name}/{control}"))
            .await;
        assert_eq!(done.status, 200, "{control}: {:?}", done.body);
    }
    name
}

/// A segment (a list) named after `n`.
async fn list_segment(app: &TestApp, n: u32) -> String {
    let name = format!("seg-{n}");
    let created = app
        .post_json(
            "/api/v1/segments",
            &json!({"name": name, "members": ["p1"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    name
}

fn routes() -> Vec<Route> {
    vec![
        route!("GET" "/api/v1/configs", Viewer, 200, |_a, _n| (
            "/api/v1/configs".into(),
            None
        )),
        route!("POST" "/api/v1/configs", Developer, 201, |_a, n| (
            "/api/v1/configs".into(),
            Some(
                json!({"name": format!("cfg-{n}"), "configType": "Custom", "environment": "staging"})
            )
        )),
        route!("GET" "/api/v1/configs/{name}", Viewer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance".into(),
            None
        )),
        route!("DELETE" "/api/v1/configs/{name}", Admin, 204, |a, n| {
            a.create_config(&format!("del-{n}"), "Custom", "staging")
                .await;
            (format!("/api/v1/configs/del-{n}"), None)
        }),
        route!("POST" "/api/v1/configs/{name}/versions", Developer, 201, |_a, n| (
            "/api/v1/configs/weapon-balance/versions".into(),
            Some(json!({"version": format!("{n}.0.0"), "content": balance(50)}))
        )),
        route!("GET" "/api/v1/configs/{name}/versions", Viewer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions".into(),
            None
        )),
        route!("GET" "/api/v1/configs/{name}/versions/{version}", Viewer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions/1.0.0".into(),
            None
        )),
        route!("GET" "/api/v1/configs/{name}/versions/{from}/diff/{to}", Viewer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions/1.0.0/diff/1.1.0".into(),
            None
        )),
        route!("PUT" "/api/v1/configs/{name}/versions/{version}/tags", Developer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions/1.0.0/tags".into(),
            Some(json!({"tags": ["stable"]}))
        )),
        route!("POST" "/api/v1/configs/{name}/versions/{version}/validate", Developer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions/1.0.0/validate".into(),
            None
        )),
        route!("GET" "/api/v1/configs/{name}/versions/{version}/validation-report", Viewer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions/1.0.0/validation-report".into(),
            None
        )),
        route!("POST" "/api/v1/configs/{name}/versions/{version}/approve", Admin, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions/1.1.0/approve".into(),
            None
        )),
        route!("POST" "/api/v1/configs/{name}/rollback", Developer, 201, |_a, n| (
            "/api/v1/configs/weapon-balance/rollback".into(),
            Some(json!({"toVersion": "1.0.0", "version": format!("{n}.0.0")}))
        )),
        route!("POST" "/api/v1/schemas", Developer, 201, |_a, n| (
            "/api/v1/schemas".into(),
            Some(
                json!({"id": format!("schema-{n}"), "version": "1.0.0", "schema": {"type": "object"}})
            )
        )),
        route!("GET" "/api/v1/schemas", Viewer, 200, |_a, _n| (
            "/api/v1/schemas".into(),
            None
        )),
        route!("GET" "/api/v1/schemas/{id}", Viewer, 200, |_a, _n| (
            "/api/v1/schemas/game-balance".into(),
            None
        )),
        route!("POST" "/api/v1/schemas/{id}/validate", Developer, 200, |_a, _n| (
            "/api/v1/schemas/game-balance/validate".into(),
            Some(balance(5))
        )),
        route!("GET" "/api/v1/audit", Admin, 200, |_a, _n| ("/api/v1/audit".into(), None)),
        route!("GET" "/api/v1/audit/verify", Admin, 200, |_a, _n| (
            "/api/v1/audit/verify".into(),
            None
        )),
        route!("POST" "/api/v1/api-keys", Admin, 201, |_a, n| (
            "/api/v1/api-keys".into(),
            Some(json!({"name": format!("fleet-{n}")}))
        )),
        route!("GET" "/api/v1/api-keys", Admin, 200, |_a, _n| (
            "/api/v1/api-keys".into(),
            None
        )),
        route!("DELETE" "/api/v1/api-keys/{id}", Admin, 200, |a, n| {
            let created = a
                .post_json("/api/v1/api-keys", &json!({"name": format!("doomed-{n}")}))
                .await;
            (
                format!("/api/v1/api-keys/{}", created.body["id"].as_str().unwrap()),
                None,
            )
        }),
        route!("GET" "/api/v1/signing-key", Viewer, 200, |_a, _n| (
            "/api/v1/signing-key".into(),
            None
        )),
        route!("GET" "/api/v1/openapi.json", Viewer, 200, |_a, _n| (
            "/api/v1/openapi.json".into(),
            None
        )),
        route!("POST" "/api/v1/deployments", Developer, 201, |a, n| {
            let config = format!("new-dep-{n}");
            a.create_config(&config, "Custom", "staging").await;
            a.post_version(&config, "1.0.0", json!({"n": n})).await;
            (
                "/api/v1/deployments".into(),
                Some(json!({"config": config, "version": "1.0.0", "strategy": "Direct"})),
            )
        }),
        route!("GET" "/api/v1/deployments", Viewer, 200, |_a, _n| (
            "/api/v1/deployments".into(),
            None
        )),
        route!("GET" "/api/v1/deployments/{id}", Viewer, 200, |a, n| (
            format!("/api/v1/deployments/{}", running_deployment(a, n).await),
            None
        )),
        route!("GET" "/api/v1/deployments/{id}/servers", Viewer, 200, |a, n| (
            format!("/api/v1/deployments/{}/servers", running_deployment(a, n).await),
            None
        )),
        route!("GET" "/api/v1/deployments/{id}/metrics", Viewer, 200, |a, n| (
            format!("/api/v1/deployments/{}/metrics", running_deployment(a, n).await),
            None
        )),
        route!("GET" "/api/v1/deployments/{id}/rollback-status", Viewer, 200, |a, n| (
            format!("/api/v1/deployments/{}/rollback-status", running_deployment(a, n).await),
            None
        )),
        route!("POST" "/api/v1/deployments/{id}/pause", Operator, 200, |a, n| (
            format!("/api/v1/deployments/{}/pause", running_deployment(a, n).await),
            None
        )),
        route!("POST" "/api/v1/deployments/{id}/resume", Operator, 200, |a, n| (
            format!("/api/v1/deployments/{}/resume", paused_deployment(a, n).await),
            None
        )),
        route!("POST" "/api/v1/deployments/{id}/promote", Operator, 200, |a, n| (
            format!("/api/v1/deployments/{}/promote", running_deployment(a, n).await),
            None
        )),
        route!("POST" "/api/v1/deployments/{id}/cancel", Operator, 200, |a, n| (
            format!("/api/v1/deployments/{}/cancel", running_deployment(a, n).await),
            None
        )),
        route!("POST" "/api/v1/deployments/{id}/rollback", Operator, 200, |a, n| (
            format!("/api/v1/deployments/{}/rollback", running_deployment(a, n).await),
            None
        )),
        route!("POST" "/api/v1/deployments/{id}/rollback-thresholds", Operator, 200, |a, n| (
            format!("/api/v1/deployments/{}/rollback-thresholds", running_deployment(a, n).await),
            Some(json!({"thresholds": [{"metric": "crashRate", "critical": 0.2}]}))
        )),
        route!("POST" "/api/v1/deployments/{id}/approve", Admin, 200, |a, n| (
            format!("/api/v1/deployments/{}/approve", deployment_awaiting_approval(a, n).await),
            None
        )),
        route!("GET" "/api/v1/metrics/aggregated", Viewer, 200, |_a, _n| (
            "/api/v1/metrics/aggregated".into(),
            None
        )),
        route!("POST" "/api/v1/metrics/player-feedback", Developer, 201, |_a, _n| (
            "/api/v1/metrics/player-feedback".into(),
            Some(json!({"kind": "rating", "rating": 4}))
        )),
        route!("GET" "/api/v1/game-servers", Viewer, 200, |_a, _n| (
            "/api/v1/game-servers".into(),
            None
        )),
        route!("GET" "/api/v1/game-servers/{id}", Viewer, 200, |a, n| {
            registered_server(a, &format!("gs-get-{n}")).await;
            (format!("/api/v1/game-servers/gs-get-{n}"), None)
        }),
        route!("PUT" "/api/v1/game-servers/{id}", Operator, 200, |a, n| {
            registered_server(a, &format!("gs-put-{n}")).await;
            (
                format!("/api/v1/game-servers/gs-put-{n}"),
                Some(json!({"operatorTags": ["pool-a"]})),
            )
        }),
        route!("DELETE" "/api/v1/game-servers/{id}", Admin, 204, |a, n| {
            registered_server(a, &format!("gs-del-{n}")).await;
            (format!("/api/v1/game-servers/gs-del-{n}"), None)
        }),
        route!("GET" "/api/v1/segments", Viewer, 200, |_a, _n| ("/api/v1/segments".into(), None)),
        route!("POST" "/api/v1/segments", Operator, 201, |_a, n| (
            "/api/v1/segments".into(),
            Some(json!({"name": format!("new-seg-{n}"), "rule": {"attribute": "level", "gte": 3}}))
        )),
        route!("GET" "/api/v1/segments/{name}", Viewer, 200, |_a, _n| (
            "/api/v1/segments/vip".into(),
            None
        )),
        route!("PUT" "/api/v1/segments/{name}", Operator, 200, |a, n| (
            format!("/api/v1/segments/{}", list_segment(a, n).await),
            Some(json!({"description": "changed", "members": ["p2"]}))
        )),
        route!("DELETE" "/api/v1/segments/{name}", Operator, 204, |a, n| (
            format!("/api/v1/segments/{}", list_segment(a, n).await),
            None
        )),
        route!("POST" "/api/v1/segments/{name}/members", Operator, 200, |a, n| (
            format!("/api/v1/segments/{}/members", list_segment(a, n).await),
            Some(json!({"add": ["p9"]}))
        )),
        route!("POST" "/api/v1/live-events", Operator, 201, |a, n| {
            let config = format!("new-ev-cfg-{n}");
            a.create_config(&config, "Custom", "staging").await;
            a.post_version(&config, "1.0.0", json!({"n": n})).await;
            (
                "/api/v1/live-events".into(),
                Some(json!({"name": format!("new-ev-{n}"), "eventType": "Season",
                    "overrides": [{"config": config, "patch": {"n": 1}}],
                    "schedule": {"startTime": "2030-01-01T00:00:00Z", "endTime": "2030-02-01T00:00:00Z"}})),
            )
        }),
        route!("GET" "/api/v1/live-events", Viewer, 200, |_a, _n| (
            "/api/v1/live-events".into(),
            None
        )),
        route!("GET" "/api/v1/live-events/timeline", Viewer, 200, |_a, _n| (
            "/api/v1/live-events/timeline".into(),
            None
        )),
        route!("GET" "/api/v1/live-events/{name}", Viewer, 200, |a, n| (
            format!("/api/v1/live-events/{}", scheduled_event(a, n).await),
            None
        )),
        route!("PUT" "/api/v1/live-events/{name}", Operator, 200, |a, n| {
            let name = scheduled_event(a, n).await;
            let mut body = a.get(&format!("/api/v1/live-events/{name}")).await.body["definition"].clone();
            body["displayName"] = json!("Renamed for display");
            (format!("/api/v1/live-events/{name}"), Some(body))
        }),
        route!("DELETE" "/api/v1/live-events/{name}", Operator, 204, |a, n| (
            format!("/api/v1/live-events/{}", scheduled_event(a, n).await),
            None
        )),
        route!("POST" "/api/v1/live-events/{name}/activate", Operator, 200, |a, n| (
            format!("/api/v1/live-events/{}/activate", scheduled_event(a, n).await),
            None
        )),
        route!("POST" "/api/v1/live-events/{name}/pause", Operator, 200, |a, n| (
            format!("/api/v1/live-events/{}/pause", scheduled_event(a, n).await),
            None
        )),
        route!("POST" "/api/v1/live-events/{name}/resume", Operator, 200, |a, n| {
            let name = scheduled_event(a, n).await;
            a.post_empty(&format!("/api/v1/live-events/{name}/pause")).await;
            (format!("/api/v1/live-events/{name}/resume"), None)
        }),
        route!("POST" "/api/v1/live-events/{name}/end", Operator, 200, |a, n| {
            let name = scheduled_event(a, n).await;
            a.post_empty(&format!("/api/v1/live-events/{name}/activate")).await;
            (format!("/api/v1/live-events/{name}/end"), None)
        }),
        route!("POST" "/api/v1/live-events/{name}/cancel", Operator, 200, |a, n| (
            format!("/api/v1/live-events/{}/cancel", scheduled_event(a, n).await),
            None
        )),
        route!("GET" "/api/v1/live-events/{name}/metrics", Viewer, 200, |a, n| (
            format!("/api/v1/live-events/{}/metrics", scheduled_event(a, n).await),
            None
        )),
        route!("GET" "/api/v1/events/active", Viewer, 200, |_a, _n| (
            "/api/v1/events/active?playerId=p1&region=EU-WEST".into(),
            None
        )),
        route!("GET" "/api/v1/players/{id}/config", Viewer, 200, |a, n| {
            let config = format!("player-cfg-{n}");
            a.create_config(&config, "Custom", "staging").await;
            a.deploy(&config, "1.0.0", json!({"n": n})).await;
            (format!("/api/v1/players/p1/config?configs={config}"), None)
        }),
        route!("POST" "/api/v1/experiments", Operator, 201, |a, n| {
            let config = format!("new-exp-cfg-{n}");
            a.create_config(&config, "Custom", "staging").await;
            let deployed = a.deploy(&config, "1.0.0", json!({"n": n})).await;
            a.wait_deployment_status(deployed.body["id"].as_str().unwrap(), "Completed").await;
            ("/api/v1/experiments".into(), Some(experiment_body(&format!("new-exp-{n}"), &config)))
        }),
        route!("GET" "/api/v1/experiments", Viewer, 200, |_a, _n| ("/api/v1/experiments".into(), None)),
        route!("GET" "/api/v1/experiments/{name}", Viewer, 200, |a, n| (
            format!("/api/v1/experiments/{}", draft_experiment(a, n).await),
            None
        )),
        route!("PUT" "/api/v1/experiments/{name}", Operator, 200, |a, n| {
            let name = draft_experiment(a, n).await;
            let mut body = experiment_body(&name, &format!("exp-cfg-{n}"));
            body["description"] = json!("changed");
            (format!("/api/v1/experiments/{name}"), Some(body))
        }),
        route!("POST" "/api/v1/experiments/{name}/start", Operator, 200, |a, n| (
            format!("/api/v1/experiments/{}/start", draft_experiment(a, n).await),
            None
        )),
        route!("POST" "/api/v1/experiments/{name}/pause", Operator, 200, |a, n| (
            format!("/api/v1/experiments/{}/pause", experiment_after(a, n, &["start"]).await),
            None
        )),
        route!("POST" "/api/v1/experiments/{name}/resume", Operator, 200, |a, n| (
            format!("/api/v1/experiments/{}/resume", experiment_after(a, n, &["start", "pause"]).await),
            None
        )),
        route!("POST" "/api/v1/experiments/{name}/finish", Operator, 200, |a, n| (
            format!("/api/v1/experiments/{}/finish", draft_experiment(a, n).await),
            None
        )),
        route!("POST" "/api/v1/experiments/{name}/promote", Operator, 200, |a, n| (
            format!("/api/v1/experiments/{}/promote", experiment_after(a, n, &["start"]).await),
            Some(json!({"variant": "b"}))
        )),
        route!("GET" "/api/v1/experiments/{name}/results", Viewer, 200, |a, n| (
            format!("/api/v1/experiments/{}/results", experiment_after(a, n, &["start"]).await),
            None
        )),
        route!("GET" "/api/v1/experiments/assignments", Viewer, 200, |_a, _n| (
            "/api/v1/experiments/assignments?playerId=p1".into(),
            None
        )),
        route!("GET" "/api/v1/telemetry/event-types", Viewer, 200, |_a, _n| (
            "/api/v1/telemetry/event-types".into(),
            None
        )),
        route!("GET" "/api/v1/telemetry/event-types/{name}", Viewer, 200, |_a, _n| (
            "/api/v1/telemetry/event-types/session_start".into(),
            None
        )),
        route!("POST" "/api/v1/telemetry/event-types", Operator, 201, |_a, n| (
            "/api/v1/telemetry/event-types".into(),
            Some(json!({"name": format!("custom_{n}"), "schema": {"type": "object"}}))
        )),
        // Staff may not send telemetry: a player (for itself) or a game
        // server may; the role loop skips it (see `OWN_RULES`).
        route!("POST" "/api/v1/telemetry/batch", Player, 200, |_a, n| (
            "/api/v1/telemetry/batch".into(),
            Some(json!({"playerId": "player-user", "events": [{"eventType": "session_start",
                "eventTime": chrono::Utc::now().to_rfc3339(), "eventId": format!("e{n}"), "payload": {}}]}))
        )),
        route!("GET" "/api/v1/kpis/{name}", Viewer, 200, |_a, _n| ("/api/v1/kpis/dau".into(), None)),
        route!("GET" "/api/v1/manifest", Viewer, 200, |a, n| {
            let config = format!("manifest-{n}");
            a.create_config(&config, "ContentManifest", "staging").await;
            a.deploy(&config, "1.0.0", json!({"activeVersion": "1.0.0",
                "contentHash": format!("sha256:{}", "0".repeat(64)), "minSupportedClientVersion": "1.0.0"})).await;
            (format!("/api/v1/manifest?clientVersion=1.0.0&config={config}"), None)
        }),
        route!("POST" "/api/v1/players/resolve", Viewer, 200, |a, n| {
            let config = format!("roster-cfg-{n}");
            a.create_config(&config, "Custom", "staging").await;
            a.deploy(&config, "1.0.0", json!({"n": n})).await;
            (
                "/api/v1/players/resolve".into(),
                Some(json!({"players": [{"playerId": "p1"}], "configs": [config]})),
            )
        }),
    ]
}

fn encode(header: &Header, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Tokens that must all be refused with 401, with what is wrong with each.
fn bad_tokens() -> Vec<(&'static str, String)> {
    let secret = TEST_JWT_SECRET.as_bytes();
    let good_claims = json!({"sub": "mallory", "roles": ["admin"], "exp": now() + 3600});
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good_claims.to_string())
    );
    vec![
        (
            "expired",
            encode(
                &Header::new(Algorithm::HS256),
                &json!({"sub": "mallory", "roles": ["admin"], "exp": now() - 3600}),
                secret,
            ),
        ),
        (
            "bad signature",
            encode(
                &Header::new(Algorithm::HS256),
                &good_claims,
                b"another-secret-another-secret-another-secret",
            ),
        ),
        (
            "wrong algorithm",
            encode(&Header::new(Algorithm::HS512), &good_claims, secret),
        ),
        ("alg none", unsigned),
        (
            "no exp",
            encode(
                &Header::new(Algorithm::HS256),
                &json!({"sub": "mallory", "roles": ["admin"]}),
                secret,
            ),
        ),
        ("garbage", "not.a.token".into()),
    ]
}

/// Routes whose callers are not a ladder of roles, tested on their own:
/// telemetry comes from game servers and players, never staff
/// (`telemetry.rs`); the role loop skips them, the rest still applies.
const OWN_RULES: [&str; 1] = ["/api/v1/telemetry/batch"];

async fn every_route_checks_tokens_and_roles(app: TestApp) {
    assert_eq!(
        app.create_config("weapon-balance", "GameBalance", "staging")
            .await
            .status,
        201
    );
    assert_eq!(
        app.post_version("weapon-balance", "1.0.0", balance(45))
            .await
            .status,
        201
    );
    assert_eq!(
        app.post_version("weapon-balance", "1.1.0", balance(46))
            .await
            .status,
        201
    );
    let counter = AtomicU32::new(2);
    let next = || counter.fetch_add(1, Ordering::SeqCst);
    let bad = bad_tokens();
    for route in routes() {
        for role in Role::ALL {
            if OWN_RULES.contains(&route.template) {
                break;
            }
            let (path, body) = (route.prepare)(&app, next()).await;
            let token = app.token(role, &format!("{role}-user"));
            let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap()));
            let response = app.request(route.method, &path, Some(&token), body).await;
            let expected = if role >= route.min_role {
                route.success
            } else {
                403
            };
            assert_eq!(
                response.status, expected,
                "{} {path} as {role}: {:?}",
                route.method, response.body
            );
        }
        let (path, body) = (route.prepare)(&app, next()).await;
        let body = || {
            body.as_ref()
                .map(|b| ("application/json", serde_json::to_vec(b).unwrap()))
        };
        let anonymous = app.request(route.method, &path, None, body()).await;
        assert_eq!(
            anonymous.status, 401,
            "{} {path} without a token",
            route.method
        );
        assert_eq!(anonymous.body["code"], "unauthenticated");
        assert!(
            anonymous
                .header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer"))
        );
        for (what, token) in &bad {
            let response = app.request(route.method, &path, Some(token), body()).await;
            assert_eq!(
                response.status, 401,
                "{} {path} with a token that is {what}: {:?}",
                route.method, response.body
            );
        }
    }
    // A game server's API key opens no user route; player feedback and
    // what players see take keys on purpose (a server asks for its players).
    let (server_key, _) = app.server_key(&[], &[]).await;
    let for_servers = [
        "/api/v1/metrics/player-feedback",
        "/api/v1/events/active",
        "/api/v1/players/{id}/config",
        "/api/v1/players/resolve",
        "/api/v1/experiments/assignments",
        "/api/v1/telemetry/batch",
        "/api/v1/manifest",
    ];
    // (The feedback route's own rules are the attacks tests'.)
    for route in routes()
        .iter()
        .filter(|r| r.template != "/api/v1/metrics/player-feedback")
    {
        let (path, body) = (route.prepare)(&app, next()).await;
        let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap()));
        let response = app
            .request(route.method, &path, Some(&server_key), body)
            .await;
        let expected = if for_servers.contains(&route.template) {
            route.success
        } else {
            401
        };
        assert_eq!(
            response.status, expected,
            "{} {path} with a game server's key: {:?}",
            route.method, response.body
        );
    }
    // ...and a user's token opens no game-server route.
    for role in Role::ALL {
        let token = app.token(role, "someone");
        let whoami = app
            .request("GET", "/api/v1/server/whoami", Some(&token), None)
            .await;
        assert_eq!(whoami.status, 401, "whoami as {role}");
        match crate::sockets::raw(&app, Some(&token)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "the socket as {role}")
            }
            other => panic!("the socket took a {role} token: {:?}", other.map(|_| ())),
        }
    }
    let whoami = app
        .request("GET", "/api/v1/server/whoami", Some(&server_key), None)
        .await;
    assert_eq!(whoami.status, 200);
    // A valid token with no known role may do nothing.
    let no_role = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "nobody", "roles": ["wizard"], "exp": now() + 60}),
        TEST_JWT_SECRET.as_bytes(),
    );
    assert_eq!(
        app.request("GET", "/api/v1/configs", Some(&no_role), None)
            .await
            .status,
        403
    );
    // Only these stay open.
    for open in ["/health", "/ready", "/metrics"] {
        assert_eq!(
            app.request("GET", open, None, None).await.status,
            200,
            "{open}"
        );
    }
}

async fn the_audit_trail_records_who_with_which_role_from_where(app: TestApp) {
    let alice = app.token(Role::Developer, "alice");
    let body = json!({"name": "loot", "configType": "Economy", "environment": "staging"});
    let created = app
        .request(
            "POST",
            "/api/v1/configs",
            Some(&alice),
            Some(("application/json", serde_json::to_vec(&body).unwrap())),
        )
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["createdBy"], "alice");
    let trail = app.get("/api/v1/audit?actor=alice").await;
    let row = &trail.body["items"][0];
    assert_eq!(row["actor"], "alice");
    assert_eq!(row["actorRole"], "developer");
    assert_eq!(row["source"], "127.0.0.1");
    assert_eq!(row["resource"], "configs/loot");
}

async fn schema_breaking_changes_need_an_admin_to_approve(app: TestApp) {
    let schema = json!({"properties": {"damage": {"maximum": 1000}}});
    let developer = app.token(Role::Developer, "dev");
    let send = |token: String, body: Value| {
        let app = &app;
        async move {
            app.request(
                "POST",
                "/api/v1/schemas",
                Some(&token),
                Some(("application/json", serde_json::to_vec(&body).unwrap())),
            )
            .await
        }
    };
    assert_eq!(
        send(
            developer.clone(),
            json!({"id": "w", "version": "1.0.0", "schema": schema})
        )
        .await
        .status,
        201
    );
    let narrowed = json!({"id": "w", "version": "2.0.0", "schema": {"properties": {"damage": {"maximum": 10}}}, "approveBreaking": true});
    assert_eq!(send(developer, narrowed.clone()).await.status, 403);
    let approved = send(app.admin_token.clone(), narrowed).await;
    assert_eq!(approved.status, 201);
    assert_eq!(approved.body["breakingApprovedBy"], "test-admin");
}

/// Every route the hub serves, as its OpenAPI document lists them,
/// against the table above (plus the routes checked on their own).
#[actix_web::test]
async fn the_table_covers_every_route_of_the_openapi_document() {
    let app = crate::helpers::spawn_app(Db::Sqlite).await.unwrap();
    let document = app.get("/api/v1/openapi.json").await.body;
    let mut documented: Vec<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "put", "post", "delete", "patch"].contains(&m.as_str()))
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    documented.sort();
    let mut walked: Vec<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.to_owned(), r.template.to_owned()))
        // The document itself is served outside it.
        .filter(|(_, path)| path != "/api/v1/openapi.json")
        .chain(
            [
                // Open: checked in every_route_checks_tokens_and_roles.
                "/health",
                "/ready",
                "/metrics",
                // Game servers: checked with keys and tokens above.
                "/api/v1/server/whoami",
                "/ws/v1/servers",
                // The dashboards' feed (a WebSocket): checked in stream.rs.
                "/api/v1/stream",
            ]
            .map(|path| ("GET".to_owned(), path.to_owned())),
        )
        .collect();
    walked.sort();
    assert_eq!(
        walked, documented,
        "the access table and the OpenAPI document list different routes"
    );
}

fn many_deployments(settings: &mut hotswap::settings::Settings) {
    // The table starts a deployment for every request it makes of one.
    settings.deployments.max_concurrent = 10_000;
    // And a live event for every request it makes of one.
    settings.liveops.max_events = 10_000;
    // And an experiment.
    settings.liveops.max_experiments = 10_000;
}

on_both_databases!(
    every_route_checks_tokens_and_roles with many_deployments,
    the_audit_trail_records_who_with_which_role_from_where,
    schema_breaking_changes_need_an_admin_to_approve,
);

#[actix_web::test]
async fn the_api_explorer_takes_a_token_once_and_keeps_it_in_a_cookie() {
    let app = crate::helpers::spawn_app(Db::Sqlite).await.unwrap();
    let client = awc::Client::builder().disable_redirects().finish();
    let mut anonymous = client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let page = String::from_utf8(anonymous.body().await.unwrap().to_vec()).unwrap();
    assert!(
        page.contains(r#"<form method="post" action="/docs/login">"#),
        "a sign-in form, so the token never sits in a URL: {page}"
    );
    // The form's POST signs in; a bad token does not.
    let viewer = app.token(Role::Viewer, "reader");
    let form = |token: &str| format!("token={token}");
    let refused = client
        .post(app.url("/docs/login"))
        .content_type("application/x-www-form-urlencoded")
        .send_body(form("forged"))
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let signed_in = client
        .post(app.url("/docs/login"))
        .content_type("application/x-www-form-urlencoded")
        .send_body(form(&viewer))
        .await
        .unwrap();
    assert_eq!(signed_in.status().as_u16(), 303);
    let login_cookie = signed_in
        .headers()
        .get("set-cookie")
        .expect("the explorer cookie")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(login_cookie.contains("HttpOnly"), "{login_cookie}");
    assert!(login_cookie.contains("SameSite=Strict"), "{login_cookie}");
    assert!(
        !login_cookie.contains("Secure"),
        "plain HTTP here (the TLS test checks Secure)"
    );
    let bad = client
        .get(app.url("/docs/?token=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    let entry = client
        .get(app.url(&format!("/docs/?token={viewer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(entry.status().as_u16(), 303);
    let set_cookie = entry
        .headers()
        .get("set-cookie")
        .expect("the explorer cookie")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.starts_with(&format!("{}=", hotswap::DOCS_COOKIE)),
        "{set_cookie}"
    );
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    // It names a session; the token stays in the hub.
    let id = cookie.split_once('=').unwrap().1;
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{cookie}"
    );
    let mut page = client
        .get(app.url("/docs/"))
        .insert_header(("cookie", cookie.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = String::from_utf8(page.body().await.unwrap().to_vec()).unwrap();
    assert!(html.contains("swagger"));
    let spec = client
        .get(app.url("/api/v1/openapi.json"))
        .insert_header(("cookie", cookie.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.status().as_u16(), 200);
    // The cookie opens the description only, never the API itself.
    let api = client
        .get(app.url("/api/v1/configs"))
        .insert_header(("cookie", cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status().as_u16(), 401);
}
