//! The dashboard (`/dashboard`) on both databases: its session (sign-in,
//! the cookie standing for a bearer token, origin and CSRF checks, roles,
//! sign-out), its embedded assets, and — in a real browser (Debian's
//! chromium driven by `tests/browser/dashboard.mjs`) — a canary's
//! regression rolled back on screen without a reload, and an operator's
//! pause while a viewer watches without controls.

use crate::helpers::{TestApp, announce_skip, under_ci};
use crate::on_both_databases;
use crate::progressive::{CONFIG, Fleet, Mode, deployment, setup, start_deployment};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

struct Answer {
    status: u16,
    headers: awc::http::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A request with exactly these headers (no bearer token, no redirects).
async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    form: Option<&str>,
) -> Answer {
    let client = awc::Client::builder().disable_redirects().finish();
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method, app.url(path));
    for (name, value) in headers {
        request = request.insert_header((*name, *value));
    }
    let mut response = match form {
        Some(body) => request
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .send_body(body.to_owned())
            .await
            .unwrap(),
        None => request.send().await.unwrap(),
    };
    let bytes = response.body().limit(4 << 20).await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The sign-in form posted with `token` and these headers.
async fn post_sign_in(app: &TestApp, token: &str, headers: &[(&str, &str)]) -> Answer {
    let form = format!("token={token}");
    send(app, "POST", "/dashboard/session", headers, Some(&form)).await
}

/// `GET /api/v1/deployments` with the session cookie `cookie` alone.
async fn list_with(app: &TestApp, cookie: &str) -> Answer {
    send(
        app,
        "GET",
        "/api/v1/deployments",
        &[("cookie", cookie)],
        None,
    )
    .await
}

/// `GET /dashboard/session` with the session cookie `cookie`.
async fn whoami(app: &TestApp, cookie: &str) -> Answer {
    send(
        app,
        "GET",
        "/dashboard/session",
        &[("cookie", cookie)],
        None,
    )
    .await
}

/// Signs in with `token`; the session cookie's `name=value`.
async fn sign_in(app: &TestApp, token: &str) -> String {
    let answer = post_sign_in(app, token, &[]).await;
    assert_eq!(answer.status, 303, "{}", answer.text);
    assert_eq!(answer.header("location"), "/dashboard/");
    let cookie = answer.header("set-cookie").to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(cookie.contains(attribute), "{attribute}: {cookie}");
    }
    cookie.split(';').next().unwrap().to_owned()
}

async fn feed_with(app: &TestApp, cookie: &str, origin: &str) -> Result<Value, u16> {
    open_feed(app, cookie, origin)
        .await
        .map(|(_, snapshot)| snapshot)
}

/// The feed opened with a session cookie from `origin`, and its snapshot.
async fn open_feed(
    app: &TestApp,
    cookie: &str,
    origin: &str,
) -> Result<(crate::sockets::Socket, Value), u16> {
    let mut request = format!("{}/api/v1/stream", app.ws_url())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", HeaderValue::from_str(cookie).unwrap());
    request
        .headers_mut()
        .insert("origin", HeaderValue::from_str(origin).unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut socket, _)) => {
            let first = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let Message::Text(text) = first else {
                panic!("{first:?}")
            };
            Ok((socket, serde_json::from_str(&text).unwrap()))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("{other}"),
    }
}

async fn the_session_cookie_stands_for_a_token_behind_origin_and_csrf_checks(app: TestApp) {
    let own = format!("http://{}", app.address.trim_start_matches("http://"));
    // Before signing in: the sign-in form, behind a strict policy.
    let moved = send(&app, "GET", "/dashboard", &[], None).await;
    assert_eq!(moved.status, 308);
    assert_eq!(moved.header("location"), "/dashboard/");
    let page = send(&app, "GET", "/dashboard/", &[], None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains("action=\"/dashboard/session\""),
        "{}",
        page.text
    );
    assert!(
        page.header("content-security-policy")
            .contains("script-src 'self'")
    );
    assert!(
        page.header("content-security-policy")
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(
        send(&app, "GET", "/dashboard/session", &[], None)
            .await
            .status,
        401
    );

    // Bad tokens are refused on the form, their reason escaped.
    let bad = post_sign_in(&app, "%3Cscript%3E", &[]).await;
    assert_eq!(bad.status, 401, "{}", bad.text);
    assert!(bad.text.contains("not accepted") && !bad.text.contains("<script>"));
    let player = app.token(hotswap::Role::Player, "p-1");
    let refused = post_sign_in(&app, &player, &[]).await;
    assert_eq!(refused.status, 403, "a player's token opens no dashboard");
    let operator = app.token(hotswap::Role::Operator, "olivia");
    let elsewhere = post_sign_in(&app, &operator, &[("origin", "http://evil.example")]).await;
    assert_eq!(elsewhere.status, 403, "another site's form signs nobody in");
    assert!(elsewhere.header("set-cookie").is_empty());

    // Signed in: the page, who it is, and the CSRF token.
    let cookie = sign_in(&app, &operator).await;
    let page = send(&app, "GET", "/dashboard/", &[("cookie", &cookie)], None).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("/dashboard/assets/app.js"));
    let me = whoami(&app, &cookie).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json()["subject"], "olivia");
    assert_eq!(me.json()["role"], "operator");
    let csrf = me.json()["csrfToken"].as_str().unwrap().to_owned();
    assert_eq!(csrf.len(), 64);
    // The cookie names a session; it is no bearer token.
    let id = cookie.split_once('=').unwrap().1.to_owned();
    assert_eq!(id.len(), 64);
    assert!(!id.contains('.'), "not the token: {id}");
    let as_bearer = app
        .request("GET", "/api/v1/deployments", Some(&id), None)
        .await;
    assert_eq!(as_bearer.status, 401);

    // The cookie reads the API as a bearer token would.
    assert_eq!(
        app.create_config(CONFIG, "GameBalance", "staging")
            .await
            .status,
        201
    );
    app.deploy(CONFIG, "1.0.0", crate::helpers::balance(45))
        .await;
    let deployed = app
        .deploy(CONFIG, "1.0.1", crate::helpers::balance(46))
        .await;
    let id = deployed.body["id"].as_str().unwrap().to_owned();
    let listed = list_with(&app, &cookie).await;
    assert_eq!(listed.status, 200, "{}", listed.text);

    // Writes need the CSRF token, from the hub's own origin.
    let kill = format!("/api/v1/deployments/{id}/rollback");
    for (headers, why) in [
        (vec![("cookie", cookie.as_str())], "no CSRF token"),
        (
            vec![
                ("cookie", cookie.as_str()),
                ("x-csrf-token", "0".repeat(64).leak()),
            ],
            "a wrong CSRF token",
        ),
        (
            vec![
                ("cookie", cookie.as_str()),
                ("x-csrf-token", csrf.as_str()),
                ("origin", "http://evil.example"),
            ],
            "another site's origin",
        ),
    ] {
        let answer = send(&app, "POST", &kill, &headers, None).await;
        assert_eq!(answer.status, 403, "{why}: {}", answer.text);
        assert_eq!(answer.json()["code"], "forbidden", "{why}");
    }
    assert_eq!(
        deployment(&app, &id).await["status"],
        "Completed",
        "nothing was rolled back"
    );
    let done = send(
        &app,
        "POST",
        &kill,
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("origin", &own),
        ],
        None,
    )
    .await;
    assert_eq!(
        done.status, 200,
        "the kill switch from the dashboard: {}",
        done.text
    );
    let audit = app.get("/api/v1/audit?limit=5").await;
    assert!(
        audit.body.to_string().contains("olivia"),
        "the action is audited as the session's subject: {}",
        audit.body
    );

    // A viewer's session reads, and is refused writes by role.
    let viewer = sign_in(&app, &app.token(hotswap::Role::Viewer, "vera")).await;
    let viewer_me = whoami(&app, &viewer).await;
    let viewer_csrf = viewer_me.json()["csrfToken"].as_str().unwrap().to_owned();
    assert_ne!(viewer_csrf, csrf, "each session has its own CSRF token");
    let pause = send(
        &app,
        "POST",
        &format!("/api/v1/deployments/{id}/pause"),
        &[("cookie", &viewer), ("x-csrf-token", &viewer_csrf)],
        None,
    )
    .await;
    assert_eq!(pause.status, 403, "{}", pause.text);
    assert!(pause.text.contains("operator"), "{}", pause.text);

    // The feed takes the cookie from the hub's own pages only.
    assert_eq!(
        feed_with(&app, &viewer, "http://evil.example").await.err(),
        Some(403)
    );
    let snapshot = feed_with(&app, &viewer, &own).await.unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert!(snapshot["history"].is_object(), "{snapshot}");

    // Two session cookies (one planted by another service on the host,
    // under a longer path): neither is believed.
    let both = format!("{cookie}; {viewer}");
    assert_eq!(whoami(&app, &both).await.status, 401);
    let (mut watching, _) = open_feed(&app, &viewer, &own).await.unwrap();

    // Signing out needs the CSRF token too, ends the session and forgets
    // the cookie.
    let out = send(
        &app,
        "POST",
        "/dashboard/session/end",
        &[("cookie", &viewer)],
        None,
    )
    .await;
    assert_eq!(out.status, 403);
    let out = send(
        &app,
        "POST",
        "/dashboard/session/end",
        &[("cookie", &viewer), ("x-csrf-token", &viewer_csrf)],
        None,
    )
    .await;
    assert_eq!(out.status, 204);
    assert!(
        out.header("set-cookie").contains("Max-Age=0"),
        "{}",
        out.header("set-cookie")
    );
    let after = whoami(&app, &viewer).await;
    assert_eq!(
        after.status, 401,
        "the session is over, whatever the browser keeps"
    );
    // Its feed is closed within a recheck (5 s).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watching.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return Some(frame),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the feed closes after sign-out")
    .expect("with a close frame");
    assert_eq!(u16::from(closed.code), 1008, "{closed:?}");
    assert!(closed.reason.contains("sign in again"), "{closed:?}");
}

async fn the_assets_are_embedded_and_revalidated(app: TestApp) {
    for (name, kind) in [
        ("app.js", "text/javascript"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("style.css", "text/css"),
    ] {
        let path = format!("/dashboard/assets/{name}");
        let first = send(&app, "GET", &path, &[], None).await;
        assert_eq!(first.status, 200, "{name}");
        assert!(first.header("content-type").starts_with(kind), "{name}");
        assert_eq!(first.header("x-content-type-options"), "nosniff");
        let tag = first.header("etag").to_owned();
        assert!(tag.starts_with('"') && tag.len() == 34, "{tag}");
        let again = send(&app, "GET", &path, &[("if-none-match", &tag)], None).await;
        assert_eq!(again.status, 304, "{name}");
        assert!(again.text.is_empty());
    }
    for missing in ["nope.js", "..%2FCargo.toml", "%2e%2e"] {
        let answer = send(
            &app,
            "GET",
            &format!("/dashboard/assets/{missing}"),
            &[],
            None,
        )
        .await;
        assert_eq!(answer.status, 404, "{missing}");
        assert_eq!(answer.header("content-type"), "application/problem+json");
    }
}

fn tight_limits(settings: &mut hotswap::settings::Settings) {
    settings.rate_limit.principal_per_minute = 60;
    settings.rate_limit.principal_burst = 20;
}

/// A session's reads spend a bucket of their own: a page polling never
/// leaves its operator's actions (or CLI) rate-limited.
async fn a_sessions_reads_never_spend_its_operators_budget(app: TestApp) {
    let token = app.token(hotswap::Role::Operator, "olivia");
    let cookie = sign_in(&app, &token).await;
    let me = whoami(&app, &cookie).await;
    let csrf = me.json()["csrfToken"].as_str().unwrap().to_owned();
    let mut limited = 0;
    for _ in 0..30 {
        let read = list_with(&app, &cookie).await;
        limited += usize::from(read.status == 429);
    }
    assert!(limited > 0, "the session's reads are limited too");
    let write = send(
        &app,
        "POST",
        "/api/v1/deployments/nope/pause",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        None,
    )
    .await;
    assert_eq!(
        write.status, 404,
        "the operator's action still goes: {}",
        write.text
    );
    let own = app
        .request("GET", "/api/v1/deployments", Some(&token), None)
        .await;
    assert_eq!(own.status, 200, "and so does the CLI with her token");
}

fn behind_a_tls_proxy(settings: &mut hotswap::settings::Settings) {
    settings.http.secure_cookies = true;
}

/// Behind a proxy that ends TLS (`http.secure_cookies`): a `__Host-`
/// cookie marked Secure, HSTS, and only the `https://` origin passes.
async fn behind_tls_the_cookie_is_secure_and_origins_are_https(app: TestApp) {
    let host = app.address.trim_start_matches("http://").to_owned();
    let token = app.token(hotswap::Role::Operator, "olivia");
    let answer = post_sign_in(&app, &token, &[]).await;
    assert_eq!(answer.status, 303, "{}", answer.text);
    let set = answer.header("set-cookie").to_owned();
    assert!(set.starts_with("__Host-hotswap_session="), "{set}");
    assert!(
        set.contains("Secure") && set.contains("Path=/") && !set.contains("Domain"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = send(&app, "GET", "/dashboard/", &[("cookie", &cookie)], None).await;
    assert!(
        page.header("strict-transport-security")
            .contains("max-age=")
    );
    let me = whoami(&app, &cookie).await;
    let csrf = me.json()["csrfToken"].as_str().unwrap().to_owned();
    let end = |origin: String| {
        let (cookie, csrf) = (cookie.clone(), csrf.clone());
        let app = &app;
        async move {
            send(
                app,
                "POST",
                "/dashboard/session/end",
                &[
                    ("cookie", &cookie),
                    ("x-csrf-token", &csrf),
                    ("origin", &origin),
                ],
                None,
            )
            .await
            .status
        }
    };
    assert_eq!(
        end(format!("http://{host}")).await,
        403,
        "plain http is another origin"
    );
    assert_eq!(end(format!("https://{host}")).await, 204);
}

on_both_databases!(
    the_session_cookie_stands_for_a_token_behind_origin_and_csrf_checks,
    the_assets_are_embedded_and_revalidated,
    behind_tls_the_cookie_is_secure_and_origins_are_https with behind_a_tls_proxy,
    a_sessions_reads_never_spend_its_operators_budget with tight_limits,
);

// ---- In a real browser ----

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Whether the browser tests can run here; outside CI a missing piece
/// skips them, saying why; under CI it fails them (`.ci/run` installs
/// chromium and playwright-core).
fn browser_ready() -> bool {
    let missing = if !Path::new(CHROMIUM).exists() {
        Some(format!("{CHROMIUM} is absent (apt-get install chromium)"))
    } else if !browser_dir().join("node_modules/playwright-core").exists() {
        Some("playwright-core is not installed (npm ci --prefix tests/browser)".to_owned())
    } else if Command::new("node").arg("--version").output().is_err() {
        Some("node is not on PATH".to_owned())
    } else {
        None
    };
    match missing {
        None => true,
        Some(reason) if under_ci() => panic!("{reason}: CI=true requires the browser tests to run"),
        Some(reason) => {
            announce_skip(&reason);
            false
        }
    }
}

/// The browser script, running a scenario, its stdout read line by line.
struct Browser {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Browser {
    fn start(app: &TestApp, scenario: &str, deployment: &str, servers: usize) -> Browser {
        let shots = browser_dir()
            .join("screenshots")
            .join(format!("{scenario}-{:?}", app.db).to_lowercase());
        let mut child = Command::new("node")
            .arg("dashboard.mjs")
            .current_dir(browser_dir())
            .env("HUB", app.url(""))
            .env("SCENARIO", scenario)
            .env("DEPLOYMENT", deployment)
            .env("TOKEN", app.token(hotswap::Role::Operator, "olivia"))
            .env("VIEWER_TOKEN", app.token(hotswap::Role::Viewer, "vera"))
            .env("SERVERS", servers.to_string())
            .env("SHOTS", shots)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("browser: {line}");
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Browser { child, lines }
    }

    /// The script's next line starting with `READY`, `PASS` or `FAIL`.
    async fn next(&mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, self.lines.recv())
                .await
                .expect("the browser script answers in time")
                .expect("the browser script is still running");
            if ["READY", "PASS", "FAIL"]
                .iter()
                .any(|w| line.starts_with(w))
            {
                return line;
            }
        }
    }

    fn tell(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn finish(mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the browser script exited with {status}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A canary whose cohorts both report: its id and revision.
async fn running_canary(app: &TestApp, fleet: &Fleet) -> (String, i64) {
    let id = start_deployment(
        app,
        "1.1.0",
        50,
        json!({ "strategy": "Canary", "phases": [50, 100], "phaseInterval": "PT1H" }),
    )
    .await;
    let revision = deployment(app, &id).await["revision"].as_i64().unwrap();
    fleet.wait_cohorts_filled(app, &id, revision).await;
    (id, revision)
}

const SERVERS: usize = 30;

async fn the_dashboard_shows_a_canary_rolled_back_without_a_reload(app: TestApp) {
    if !browser_ready() {
        return;
    }
    let key = setup(&app).await;
    let fleet = Fleet::start(&app, &key, SERVERS, |_| "EU-WEST").await;
    assert!(fleet.all_on(1).await);
    let (id, revision) = running_canary(&app, &fleet).await;
    let mut browser = Browser::start(&app, "rollback", &id, SERVERS);
    let ready = browser.next(Duration::from_secs(60)).await;
    assert_eq!(ready, "READY", "{ready}");
    assert_eq!(deployment(&app, &id).await["status"], "InProgress");
    fleet.regress(revision, Mode::Crashes);
    browser.tell("GO");
    let verdict = browser.next(Duration::from_secs(60)).await;
    assert!(verdict.starts_with("PASS"), "{verdict}");
    browser.finish();
    let view = deployment(&app, &id).await;
    assert_eq!(view["status"], "RolledBack");
    assert_eq!(view["rollback"]["metric"], "crashRate");
    fleet.stop().await;
}

/// Live events on a second config (two overlapping now, one ahead) and
/// a running experiment with players assigned.
async fn live_ops(app: &TestApp) {
    let made = app
        .create_config("weapon-balance", "GameBalance", "staging")
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    app.deploy("weapon-balance", "1.0.0", crate::helpers::balance(45))
        .await;
    let at = |hours: i64| {
        (chrono::Utc::now() + chrono::Duration::hours(hours))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    for (name, from, to, damage) in [
        ("double-xp", -1, 2, 50),
        ("rifle-week", -2, 3, 55),
        ("winter-fest", 48, 72, 60),
    ] {
        let event = json!({
            "name": name, "displayName": name, "eventType": "LimitedTimeOffer",
            "rules": {"rewardMultipliers": {"xp": 2.0}},
            "overrides": [{"config": "weapon-balance", "patch": {"weapons": {"rifle": {"damage": damage}}}}],
            "schedule": {"startTime": at(from), "endTime": at(to)},
            "allowOverlap": true,
        });
        let created = app.post_json("/api/v1/live-events", &event).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
    }
    let kind = json!({"name": "match_result", "schema": {"type": "object",
        "properties": {"won": {"type": "boolean"}}, "required": ["won"]}});
    assert_eq!(
        app.post_json("/api/v1/telemetry/event-types", &kind)
            .await
            .status,
        201
    );
    let experiment = json!({
        "name": "hot-rifle", "config": "weapon-balance",
        "variants": [{"id": "control", "weight": 50, "patch": {}},
                     {"id": "hot", "weight": 50, "patch": {"weapons": {"rifle": {"damage": 65}}}}],
        "metrics": [{"name": "win", "kind": "binomial", "event": "match_result", "field": "won"}],
    });
    assert_eq!(
        app.post_json("/api/v1/experiments", &experiment)
            .await
            .status,
        201
    );
    assert_eq!(
        app.post_empty("/api/v1/experiments/hot-rifle/start")
            .await
            .status,
        200
    );
    for n in 0..40 {
        let path = format!("/api/v1/players/p-{n}/config?configs=weapon-balance&region=EU-WEST");
        assert_eq!(app.get(&path).await.status, 200);
    }
}

async fn an_operator_pauses_from_the_dashboard_as_a_viewer_watches(app: TestApp) {
    if !browser_ready() {
        return;
    }
    let key = setup(&app).await;
    live_ops(&app).await;
    let fleet = Fleet::start(&app, &key, 10, |_| "EU-WEST").await;
    assert!(fleet.all_on(1).await);
    let (id, _) = running_canary(&app, &fleet).await;
    let mut browser = Browser::start(&app, "pause", &id, 10);
    let verdict = browser.next(Duration::from_secs(90)).await;
    assert!(verdict.starts_with("PASS"), "{verdict}");
    browser.finish();
    let view = deployment(&app, &id).await;
    assert_eq!(view["status"], "Paused");
    let ended = app.get("/api/v1/live-events/rifle-week").await;
    assert_eq!(
        ended.body["state"], "Ended",
        "ended from the dashboard: {:?}",
        ended.body
    );
    let audit = app.get("/api/v1/audit?limit=20").await;
    assert!(
        audit.body.to_string().contains("olivia"),
        "the pause is audited as the operator: {}",
        audit.body
    );
    fleet.stop().await;
}

on_both_databases!(
    the_dashboard_shows_a_canary_rolled_back_without_a_reload,
    an_operator_pauses_from_the_dashboard_as_a_viewer_watches,
);
