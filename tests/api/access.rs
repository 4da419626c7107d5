//! Every route × every role and every kind of bad token: 401, 403 or success.

use crate::helpers::{Db, TEST_JWT_SECRET, TestApp, balance};
use crate::on_both_databases;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hotswap::auth::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};

/// A request's path and body, made after setting up what it needs.
type Prepared<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (String, Option<Value>)> + 'a>>;
/// Builds one request that succeeds when allowed, given a unique number.
type Prepare = for<'a> fn(&'a TestApp, u32) -> Prepared<'a>;

/// One route: its method, the least role allowed, the success status, and
/// how to make a request that succeeds when allowed (fresh state per call).
struct Route {
    method: &'static str,
    min_role: Role,
    success: u16,
    prepare: Prepare,
}

macro_rules! route {
    ($method:literal, $role:ident, $success:literal, |$app:ident, $n:ident| $body:expr) => {
        Route {
            method: $method,
            min_role: Role::$role,
            success: $success,
            prepare: |$app, $n| Box::pin(async move { $body }),
        }
    };
}

fn routes() -> Vec<Route> {
    vec![
        route!("GET", Viewer, 200, |_a, _n| (
            "/api/v1/configs".into(),
            None
        )),
        route!("POST", Developer, 201, |_a, n| (
            "/api/v1/configs".into(),
            Some(
                json!({"name": format!("cfg-{n}"), "configType": "Custom", "environment": "staging"})
            )
        )),
        route!("GET", Viewer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance".into(),
            None
        )),
        route!("DELETE", Admin, 204, |a, n| {
            a.create_config(&format!("del-{n}"), "Custom", "staging")
                .await;
            (format!("/api/v1/configs/del-{n}"), None)
        }),
        route!("POST", Developer, 201, |_a, n| (
            "/api/v1/configs/weapon-balance/versions".into(),
            Some(json!({"version": format!("{n}.0.0"), "content": balance(50)}))
        )),
        route!("GET", Viewer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions".into(),
            None
        )),
        route!("GET", Viewer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions/1.0.0".into(),
            None
        )),
        route!("GET", Viewer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions/1.0.0/diff/1.1.0".into(),
            None
        )),
        route!("PUT", Developer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions/1.0.0/tags".into(),
            Some(json!({"tags": ["stable"]}))
        )),
        route!("POST", Developer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions/1.0.0/validate".into(),
            None
        )),
        route!("GET", Viewer, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions/1.0.0/validation-report".into(),
            None
        )),
        route!("POST", Admin, 200, |_a, _n| (
            "/api/v1/configs/weapon-balance/versions/1.1.0/approve".into(),
            None
        )),
        route!("POST", Developer, 201, |_a, n| (
            "/api/v1/configs/weapon-balance/rollback".into(),
            Some(json!({"toVersion": "1.0.0", "version": format!("{n}.0.0")}))
        )),
        route!("POST", Developer, 201, |_a, n| (
            "/api/v1/schemas".into(),
            Some(
                json!({"id": format!("schema-{n}"), "version": "1.0.0", "schema": {"type": "object"}})
            )
        )),
        route!("GET", Viewer, 200, |_a, _n| (
            "/api/v1/schemas".into(),
            None
        )),
        route!("GET", Viewer, 200, |_a, _n| (
            "/api/v1/schemas/game-balance".into(),
            None
        )),
        route!("POST", Developer, 200, |_a, _n| (
            "/api/v1/schemas/game-balance/validate".into(),
            Some(balance(5))
        )),
        route!("GET", Admin, 200, |_a, _n| ("/api/v1/audit".into(), None)),
        route!("GET", Admin, 200, |_a, _n| (
            "/api/v1/audit/verify".into(),
            None
        )),
        route!("POST", Admin, 201, |_a, n| (
            "/api/v1/api-keys".into(),
            Some(json!({"name": format!("fleet-{n}")}))
        )),
        route!("GET", Admin, 200, |_a, _n| (
            "/api/v1/api-keys".into(),
            None
        )),
        route!("DELETE", Admin, 200, |a, n| {
            let created = a
                .post_json("/api/v1/api-keys", &json!({"name": format!("doomed-{n}")}))
                .await;
            (
                format!("/api/v1/api-keys/{}", created.body["id"].as_str().unwrap()),
                None,
            )
        }),
        route!("GET", Viewer, 200, |_a, _n| (
            "/api/v1/signing-key".into(),
            None
        )),
        route!("GET", Viewer, 200, |_a, _n| (
            "/api/v1/openapi.json".into(),
            None
        )),
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
    for open in ["/health", "/ready"] {
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

on_both_databases!(
    every_route_checks_tokens_and_roles,
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
        set_cookie.starts_with(&format!("{}=", hotswap::http::auth::DOCS_COOKIE)),
        "{set_cookie}"
    );
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
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
