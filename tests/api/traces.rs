//! OpenTelemetry traces over OTLP/HTTP, received by a real OTLP receiver
//! (`scripts/otlp-receiver.py`, PyPI's `opentelemetry-proto`) on both
//! databases: a config created, a version uploaded and validated, and a
//! A/B test deployed to a connected server then rolled back, each under the
//! caller's W3C trace, as the tree of spans the studios name. Outside CI
//! the test is skipped, with a printed reason, when the receiver's Python
//! package is missing; under CI it fails.

use crate::helpers::{Db, balance, connected, sdk_config, spawn_app_with};
use serde_json::{Value, json};
use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    time::Duration,
};

struct Receiver {
    child: Child,
    port: u16,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receiver() -> Option<Receiver> {
    let importable = Command::new("python3")
        .args(["-c", "import opentelemetry.proto.collector.trace.v1"])
        .status()
        .is_ok_and(|s| s.success());
    if !importable {
        assert!(
            std::env::var("CI").is_err(),
            "CI needs PyPI's opentelemetry-proto (.ci/run installs it)"
        );
        eprintln!(
            "SKIPPED traces: python3 cannot import opentelemetry-proto (pip install opentelemetry-proto)"
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("spans.jsonl");
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/otlp-receiver.py"
        ))
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
    Some(Receiver {
        child,
        port,
        out,
        _dir: dir,
    })
}

fn spans(receiver: &Receiver) -> Vec<Value> {
    std::fs::read_to_string(&receiver.out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn traceparent(trace: &str, parent: &str) -> String {
    format!("00-{trace}-{parent}-01")
}

async fn spans_follow_config_operations(db: Db) {
    let Some(receiver) = receiver() else {
        return;
    };
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let Some(app) = spawn_app_with(db, |settings| {
        settings.otel.endpoint = Some(endpoint);
        settings.otel.service_name = "hotswap-test".into();
    })
    .await
    else {
        return;
    };
    let send = |method: &'static str, path: &'static str, body: Value, trace: &'static str| {
        let app = &app;
        async move {
            let answer = app
                .client
                .request(
                    awc::http::Method::from_bytes(method.as_bytes()).unwrap(),
                    app.url(path),
                )
                .insert_header(("Authorization", format!("Bearer {}", app.admin_token)))
                .insert_header(("traceparent", traceparent(trace, "00f067aa0ba902b7")))
                .send_json(&body)
                .await
                .unwrap();
            let status = answer.status().as_u16();
            let given = answer
                .headers()
                .get("traceparent")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            (status, given)
        }
    };
    const CREATE: &str = "11111111111111111111111111111111";
    const UPLOAD: &str = "22222222222222222222222222222222";
    const DEPLOY: &str = "33333333333333333333333333333333";
    let (status, given) = send(
        "POST",
        "/api/v1/configs",
        json!({"name": "weapon-balance", "configType": "GameBalance", "environment": "staging"}),
        CREATE,
    )
    .await;
    assert_eq!(status, 201);
    assert!(given.starts_with(&format!("00-{CREATE}-")), "{given}");
    let (status, _) = send(
        "POST",
        "/api/v1/configs/weapon-balance/versions",
        json!({"version": "1.0.0", "content": balance(45)}),
        UPLOAD,
    )
    .await;
    assert_eq!(status, 201);
    let deployed = app
        .post_json(
            "/api/v1/deployments",
            &json!({"config": "weapon-balance", "version": "1.0.0", "strategy": "Direct"}),
        )
        .await;
    assert_eq!(deployed.status, 201, "{:?}", deployed.body);
    app.wait_deployment_status(deployed.body["id"].as_str().unwrap(), "Completed")
        .await;
    let (key, _) = app.server_key(&[], &[]).await;
    let server = connected(sdk_config(&app, &key, "arena-1")).await;
    assert!(
        server
            .wait_for_revision("weapon-balance", 1, Duration::from_secs(10))
            .await
    );
    let uploaded = app
        .post_version("weapon-balance", "1.1.0", balance(60))
        .await;
    assert_eq!(uploaded.status, 201, "{:?}", uploaded.body);
    let (status, _) = send(
        "POST",
        "/api/v1/deployments",
        // An A/B test runs until an operator ends it; the new version's
        // weight takes the one server.
        json!({"config": "weapon-balance", "version": "1.1.0", "strategy": "ABTest",
               "variants": [{"name": "old", "version": "1.0.0", "weight": 1},
                            {"name": "hot", "version": "1.1.0", "weight": 1000000}]}),
        DEPLOY,
    )
    .await;
    assert_eq!(status, 201);
    assert!(
        server
            .wait_for_revision("weapon-balance", 2, Duration::from_secs(10))
            .await
    );
    let list = app.get("/api/v1/deployments").await;
    let id = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["version"] == "1.1.0")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Let a judgement of the variants' metrics happen, then roll back.
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let rolled = app
        .post_json(&format!("/api/v1/deployments/{id}/rollback"), &json!({}))
        .await;
    assert_eq!(rolled.status, 200, "{:?}", rolled.body);
    app.wait_deployment_status(&id, "RolledBack").await;

    // The spans arrive within the exporter's second.
    let wanted = [
        "config.create",
        "config.version.upload",
        "config.validate",
        "config.deploy",
        "config.distribute",
        "config.deploy.instance",
        "metrics.collect",
        "rollback.execute",
    ];
    let mut got = Vec::new();
    for _ in 0..100 {
        got = spans(&receiver);
        let deploy_done = got
            .iter()
            .any(|s| s["name"] == "config.deploy" && s["traceId"] == DEPLOY);
        if deploy_done && wanted.iter().all(|w| got.iter().any(|s| s["name"] == *w)) {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    let find = |name: &str, trace: &str| -> Value {
        got.iter()
            .find(|s| s["name"] == name && s["traceId"] == trace)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in trace {trace}: {got:#?}"))
    };
    // Each request's server span joins the caller's trace, under its span.
    let request = find("http.request", CREATE);
    assert_eq!(request["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(request["kind"], 2);
    assert_eq!(request["service"], "hotswap-test");
    let create = find("config.create", CREATE);
    assert_eq!(create["parentSpanId"], request["spanId"]);
    assert_eq!(create["attributes"]["config"], "weapon-balance");
    let upload = find("config.version.upload", UPLOAD);
    assert_eq!(
        upload["parentSpanId"],
        find("http.request", UPLOAD)["spanId"]
    );
    let validate = find("config.validate", UPLOAD);
    assert_eq!(validate["parentSpanId"], upload["spanId"]);
    // The deployment: its span under the request, and under it the
    // distribution, a server's push-to-ack, a judgement and the rollback.
    let deploy = find("config.deploy", DEPLOY);
    assert_eq!(
        deploy["parentSpanId"],
        find("http.request", DEPLOY)["spanId"]
    );
    assert_eq!(deploy["attributes"]["deployment.id"], id.as_str());
    assert_eq!(deploy["attributes"]["status"], "RolledBack");
    assert_eq!(deploy["status"], 2, "a rolled-back deployment is an error");
    for child in [
        "config.distribute",
        "config.deploy.instance",
        "metrics.collect",
        "rollback.execute",
    ] {
        assert_eq!(
            find(child, DEPLOY)["parentSpanId"],
            deploy["spanId"],
            "{child}"
        );
    }
    assert_eq!(
        find("config.deploy.instance", DEPLOY)["attributes"]["server.id"],
        "arena-1"
    );
    // Players' hot paths carry the context but export no span.
    let lookup = app
        .get("/api/v1/players/p-1/config?configs=weapon-balance")
        .await;
    assert_eq!(lookup.status, 200);
    // A caller whose trace is not sampled gets none of its work recorded
    // (the context still comes back).
    const UNSAMPLED: &str = "44444444444444444444444444444444";
    let quiet = app
        .client
        .post(app.url("/api/v1/configs"))
        .insert_header(("Authorization", format!("Bearer {}", app.admin_token)))
        .insert_header(("traceparent", format!("00-{UNSAMPLED}-00f067aa0ba902b7-00")))
        .send_json(&json!({"name": "quiet", "configType": "GameBalance", "environment": "staging"}))
        .await
        .unwrap();
    assert_eq!(quiet.status().as_u16(), 201);
    let given = quiet
        .headers()
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        given.starts_with(&format!("00-{UNSAMPLED}-")) && given.ends_with("-00"),
        "{given}"
    );
    // Read past an export of a call made after both.
    let marker = app.get("/api/v1/configs").await;
    assert_eq!(marker.status, 200);
    let mut later = Vec::new();
    for _ in 0..50 {
        later = spans(&receiver);
        if later.iter().any(|s| {
            s["attributes"]["url.path"] == "/api/v1/configs"
                && s["attributes"]["http.request.method"] == "GET"
        }) {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        later
            .iter()
            .any(|s| s["attributes"]["url.path"] == "/api/v1/configs"
                && s["attributes"]["http.request.method"] == "GET"),
        "the operator's call after the lookup was exported: {later:#?}"
    );
    assert!(!later.iter().any(|s| {
        s["attributes"]["url.path"]
            .as_str()
            .is_some_and(|p| p.contains("/players/"))
    }));
    assert!(
        !later.iter().any(|s| s["traceId"] == UNSAMPLED),
        "{later:#?}"
    );
    // Success leaves the status unset; failure is an error.
    assert_eq!(find("config.create", CREATE)["status"], 0);
    server.stop().await;
    app.hub.stop_runs().await;
    let _ = std::io::stdout().flush();
}

#[actix_web::test]
async fn spans_follow_config_operations_on_sqlite() {
    spans_follow_config_operations(Db::Sqlite).await;
}

#[actix_web::test]
async fn spans_follow_config_operations_on_postgres() {
    spans_follow_config_operations(Db::Postgres).await;
}
