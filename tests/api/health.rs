use crate::helpers::{Db, TestApp};
use crate::on_both_databases;

async fn health_and_ready_answer_when_the_store_is_up(app: TestApp) {
    assert_eq!(app.get("/health").await.status, 200);
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["store"], "ok");
}

async fn the_openapi_document_lists_every_resource(app: TestApp) {
    let doc = app.get("/api/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    let paths = doc.body["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/configs",
        "/api/v1/configs/{name}/versions",
        "/api/v1/configs/{name}/versions/{from}/diff/{to}",
        "/api/v1/configs/{name}/rollback",
        "/api/v1/schemas/{id}/validate",
        "/api/v1/audit",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
}

async fn the_api_explorer_is_served_from_the_binary(app: TestApp) {
    let page = app.get("/docs/").await;
    assert_eq!(page.status, 200);
    let html = page.body.as_str().expect("html");
    assert!(html.contains("swagger"), "{html}");
    assert!(
        !html.contains("cdn."),
        "the explorer must not load from a CDN"
    );
    // The client follows the redirect from /docs to /docs/.
    let redirected = app.get("/docs").await;
    assert_eq!(redirected.status, 200);
    assert!(
        redirected
            .body
            .as_str()
            .is_some_and(|html| html.contains("swagger"))
    );
}

async fn unknown_routes_and_methods_get_problem_json(app: TestApp) {
    let missing = app.get("/api/v1/nothing-here").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(missing.body["code"], "route_not_found");
    let wrong_method = app
        .send_raw(
            "PATCH",
            "/api/v1/configs",
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.body["code"], "method_not_allowed");
}

async fn every_response_carries_a_request_id(app: TestApp) {
    let response = app.get("/health").await;
    assert!(
        response
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty())
    );
}

on_both_databases!(
    health_and_ready_answer_when_the_store_is_up,
    the_openapi_document_lists_every_resource,
    the_api_explorer_is_served_from_the_binary,
    unknown_routes_and_methods_get_problem_json,
    every_response_carries_a_request_id,
);

#[actix_web::test]
async fn data_survives_a_restart_on_the_same_sqlite_file() {
    let app = crate::helpers::spawn_app(Db::Sqlite)
        .await
        .expect("sqlite always runs");
    assert_eq!(
        app.create_config("weapon-balance", "GameBalance", "staging")
            .await
            .status,
        201
    );
    assert_eq!(
        app.post_version("weapon-balance", "1.0.0", crate::helpers::balance(45))
            .await
            .status,
        201
    );
    let (db, url, dir) = app.into_parts();
    let again = crate::helpers::spawn_app_on(db, url, dir, |_| {}).await;
    let version = again
        .get("/api/v1/configs/weapon-balance/versions/1.0.0")
        .await;
    assert_eq!(version.status, 200);
    assert_eq!(version.body["content"]["weapons"]["rifle"]["damage"], 45);
}

/// `GET /ready` says Redis is down while it is, and ready again once it is
/// back, without a restart of the hub.
async fn ready_reports_redis_and_recovers_with_it(db: Db) {
    let redis = crate::helpers::PrivateRedis::start(None);
    let port = redis.port;
    let Some(app) = crate::helpers::spawn_app_with(db, move |settings| {
        settings.redis.url = Some(hotswap::settings::SecretString::new(format!(
            "redis://127.0.0.1:{port}/0"
        )));
        settings.redis.timeout_ms = 300;
    })
    .await
    else {
        return;
    };
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    assert_eq!(ready.body["redis"], "ok");
    drop(redis);
    let down = app.get("/ready").await;
    assert_eq!(down.status, 503, "{:?}", down.body);
    assert_eq!(
        down.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(app.get("/health").await.status, 200, "alive all the same");
    let _back = crate::helpers::PrivateRedis::start(Some(port));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ready = app.get("/ready").await;
        if ready.status == 200 {
            assert_eq!(ready.body["redis"], "ok");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never ready again: {:?}",
            ready.body
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.hub.stop_runs().await;
}

/// Redis makes a hub one node of several, which share PostgreSQL: on
/// SQLite it refuses to start, saying so.
#[actix_web::test]
async fn redis_with_sqlite_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hotswap.db").display());
    let mut settings = crate::helpers::test_settings(&url, dir.path());
    settings.redis.url = Some(hotswap::settings::SecretString::new(
        "redis://127.0.0.1:1/0",
    ));
    let Err(error) = hotswap::startup::Application::build(settings).await else {
        panic!("a SQLite hub with redis.url started");
    };
    let text = format!("{error:#}");
    assert!(
        text.contains("PostgreSQL") && text.contains("redis.url"),
        "{text}"
    );
}

#[actix_web::test]
async fn ready_reports_redis_on_postgres() {
    ready_reports_redis_and_recovers_with_it(Db::Postgres).await;
}
