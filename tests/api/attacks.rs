//! The attacks found from outside (issue 14), each refused with a clear
//! error over real sockets, on both databases, with an innocent server
//! connected alongside that keeps being served.

use crate::helpers::{TestApp, balance};
use crate::on_both_databases;
use crate::sockets::{
    close_of, hello, hello_message, next_error, next_message, raw, raw_from, send,
};
use hotswap::{Role, settings::Settings};
use hotswap_client::protocol::{
    self, EncodedHistogram, HubMessage, MetricsReport, ServerMessage, close_code,
};
use serde_json::{Value, json};
use std::{collections::BTreeMap, time::Duration};
use tokio_tungstenite::tungstenite;

/// Raw sockets here do not heartbeat: sessions are not closed for silence
/// while a test looks elsewhere, and silent sockets outlive the hello timeout.
pub(crate) fn calm(settings: &mut Settings) {
    settings.hub.heartbeat_ms = 10_000;
    settings.hub.hello_timeout_ms = 30_000;
}

fn no_approvals(settings: &mut Settings) {
    calm(settings);
    settings.deployments.approval_environments = Vec::new();
}

/// The production frame limit (1 MiB), which a 20,000-entry hello fits.
fn production_frames(settings: &mut Settings) {
    calm(settings);
    settings.hub.max_frame_bytes = 1024 * 1024;
}

/// A config of `environment` at revision 1 (deployed Direct).
pub(crate) async fn config_at_revision_one(app: &TestApp, name: &str, environment: &str) {
    let created = app.create_config(name, "GameBalance", environment).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    app.deploy(name, "1.0.0", balance(45)).await;
}

pub(crate) async fn key(app: &TestApp, environments: &[&str]) -> (String, String) {
    app.server_key(environments, &[]).await
}

/// Says hello and reads the welcome; the frames after it are the caller's.
pub(crate) async fn welcomed(socket: &mut crate::sockets::Socket, frame: Vec<u8>) {
    send(socket, frame).await;
    match next_message(socket).await {
        Ok(HubMessage::Welcome { .. }) => {}
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// Reads frames until one carries `revision` of a config (a snapshot or
/// delta), acking each one as a server would.
pub(crate) async fn receives_revision(socket: &mut crate::sockets::Socket, revision: i64) {
    loop {
        match next_message(socket).await {
            Ok(HubMessage::Snapshot {
                config,
                revision: got,
                ..
            })
            | Ok(HubMessage::Delta {
                config,
                revision: got,
                ..
            }) => {
                send(socket, ack(&config, got)).await;
                if got == revision {
                    return;
                }
            }
            Ok(_) => continue,
            Err(code) => panic!("closed ({code:?}) before revision {revision}"),
        }
    }
}

fn ack(config: &str, revision: i64) -> Vec<u8> {
    protocol::encode(&ServerMessage::Ack(protocol::Ack {
        config: config.into(),
        revision,
        ok: true,
        error: None,
        apply_micros: 10,
    }))
}

pub(crate) fn hello_as(server_id: &str, environment: &str) -> Vec<u8> {
    hello(server_id, environment, BTreeMap::new())
}

pub(crate) async fn server(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/game-servers/{id}")).await.body
}

async fn deployment_when(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut view = app.get(&format!("/api/v1/deployments/{id}")).await.body;
    for _ in 0..250 {
        if done(&view) {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        view = app.get(&format!("/api/v1/deployments/{id}")).await.body;
    }
    view
}

// ---- 1. Server id takeover -------------------------------------------------

pub(crate) fn forget_at_once(settings: &mut Settings) {
    no_approvals(settings);
    settings.hub.stale_after_secs = 0;
}

async fn a_key_cannot_take_over_another_keys_server_id(app: TestApp) {
    config_at_revision_one(&app, "weapon-balance", "production").await;
    let (production_key, _) = key(&app, &["production"]).await;
    let (staging_key, _) = key(&app, &["staging"]).await;
    let (any_key, _) = key(&app, &[]).await;

    let mut victim = raw(&app, Some(&production_key)).await.unwrap();
    welcomed(&mut victim, hello_as("prod-eu-1", "production")).await;
    receives_revision(&mut victim, 1).await;
    let connected_since = server(&app, "prod-eu-1").await["connectedSince"].clone();

    // The staging key claims the production server's id (as its own staging server).
    let mut intruder = raw(&app, Some(&staging_key)).await.unwrap();
    send(&mut intruder, hello_as("prod-eu-1", "staging")).await;
    let (code, reason) = close_of(&mut intruder).await;
    assert_eq!(code, Some(close_code::POLICY_VIOLATION), "{reason}");
    assert!(reason.contains("registered to another API key"), "{reason}");
    // A key allowed in production fares no better.
    let mut intruder = raw(&app, Some(&any_key)).await.unwrap();
    send(&mut intruder, hello_as("prod-eu-1", "production")).await;
    let (code, reason) = close_of(&mut intruder).await;
    assert_eq!(code, Some(close_code::POLICY_VIOLATION));
    assert!(reason.contains("registered to another API key"), "{reason}");

    // The holder kept its session and its registry entry, and is still served.
    let record = server(&app, "prod-eu-1").await;
    assert_eq!(record["connected"], true);
    assert_eq!(record["environment"], "production");
    assert_eq!(record["connectedSince"], connected_since);
    app.deploy("weapon-balance", "1.1.0", balance(50)).await;
    receives_revision(&mut victim, 2).await;

    // The same key may replace its own session (a restarted server).
    let mut restarted = raw(&app, Some(&production_key)).await.unwrap();
    welcomed(&mut restarted, hello_as("prod-eu-1", "production")).await;
    assert_eq!(close_of(&mut victim).await.0, Some(close_code::REPLACED));

    // Gone and forgotten as stale, the id still belongs to its key.
    drop(restarted);
    for _ in 0..100 {
        if server(&app, "prod-eu-1").await["connected"] == false {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    // Stale means last seen before now: a millisecond must pass.
    actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    app.hub.prune().await.unwrap();
    assert_eq!(
        app.get("/api/v1/game-servers/prod-eu-1").await.status,
        404,
        "pruned from the registry"
    );
    let mut intruder = raw(&app, Some(&any_key)).await.unwrap();
    send(&mut intruder, hello_as("prod-eu-1", "production")).await;
    let (code, reason) = close_of(&mut intruder).await;
    assert_eq!(code, Some(close_code::POLICY_VIOLATION));
    assert!(reason.contains("registered to another API key"), "{reason}");

    // Only an admin releases it; then another key may register it.
    let operator = app.token(Role::Operator, "ops");
    let path = "/api/v1/game-servers/prod-eu-1";
    assert_eq!(
        app.request("DELETE", path, Some(&operator), None)
            .await
            .status,
        403
    );
    assert_eq!(app.delete(path).await.status, 204);
    assert_eq!(app.delete(path).await.status, 404, "released once");
    let audit = app
        .get("/api/v1/audit?resource=game-servers/prod-eu-1")
        .await;
    assert_eq!(
        audit.body["items"][0]["action"], "game-server.deregister",
        "{:?}",
        audit.body
    );
    let mut newcomer = raw(&app, Some(&any_key)).await.unwrap();
    welcomed(&mut newcomer, hello_as("prod-eu-1", "production")).await;

    // An id held by a revoked key is free for another.
    let (doomed_key, doomed_id) = key(&app, &[]).await;
    let mut doomed = raw(&app, Some(&doomed_key)).await.unwrap();
    welcomed(&mut doomed, hello_as("eu-9", "production")).await;
    assert_eq!(
        app.delete(&format!("/api/v1/api-keys/{doomed_id}"))
            .await
            .status,
        200
    );
    assert_eq!(close_of(&mut doomed).await.0, Some(close_code::KEY_REVOKED));
    let mut heir = raw(&app, Some(&any_key)).await.unwrap();
    welcomed(&mut heir, hello_as("eu-9", "production")).await;
}

fn few_ids_per_key(settings: &mut Settings) {
    forget_at_once(settings);
    settings.hub.max_server_ids_per_key = 3;
}

/// A key inventing server ids cannot grow the bindings: past its cap, its
/// least recently seen ids of servers the hub forgot are released.
async fn a_keys_server_ids_are_capped(app: TestApp) {
    config_at_revision_one(&app, "weapon-balance", "staging").await;
    let (key, key_id) = key(&app, &[]).await;
    for i in 0..6 {
        let mut socket = raw(&app, Some(&key)).await.unwrap();
        welcomed(&mut socket, hello_as(&format!("made-up-{i}"), "staging")).await;
        drop(socket);
        for _ in 0..100 {
            if server(&app, &format!("made-up-{i}")).await["connected"] == false {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        app.hub.flush().await.unwrap();
        app.hub.prune().await.unwrap();
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    let (held,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM game_server_bindings WHERE key_id = $1")
            .bind(&key_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert!(held <= 3, "{held} bindings for a key capped at 3");
    // The newest id still belongs to its key.
    let (other_key, _) = app.server_key(&[], &[]).await;
    let mut intruder = raw(&app, Some(&other_key)).await.unwrap();
    send(&mut intruder, hello_as("made-up-5", "staging")).await;
    assert_eq!(
        close_of(&mut intruder).await.0,
        Some(close_code::POLICY_VIOLATION)
    );
    // A path that cannot be a server id reaches no database.
    for id in ["%00", "a%2Fb", "x%20y"] {
        assert_eq!(
            app.delete(&format!("/api/v1/game-servers/{id}"))
                .await
                .status,
            404,
            "{id}"
        );
        assert_eq!(
            app.get(&format!("/api/v1/game-servers/{id}")).await.status,
            404
        );
    }
}

// ---- 2. Forged acks and metrics ---------------------------------------------

async fn acks_and_resyncs_outside_a_sessions_subscriptions_change_nothing(app: TestApp) {
    config_at_revision_one(&app, "weapon-balance", "staging").await;
    config_at_revision_one(&app, "other", "staging").await;
    config_at_revision_one(&app, "prod-config", "production").await;
    let (key, _) = key(&app, &[]).await;

    // The innocent: a target of a deployment narrowed to NA-EAST.
    let mut target = raw(&app, Some(&key)).await.unwrap();
    let mut target_hello = hello_message("na-1", "staging", BTreeMap::new());
    target_hello.region = "NA-EAST".into();
    welcomed(
        &mut target,
        protocol::encode(&ServerMessage::Hello(target_hello)),
    )
    .await;
    receives_revision(&mut target, 1).await;

    // The forger subscribes to weapon-balance (and, uselessly, prod-config).
    let mut forger = raw(&app, Some(&key)).await.unwrap();
    let mut forger_hello = hello_message("eu-1", "staging", BTreeMap::new());
    forger_hello.subscriptions.push("prod-config".into());
    welcomed(
        &mut forger,
        protocol::encode(&ServerMessage::Hello(forger_hello)),
    )
    .await;
    // Subscriptions in name order: prod-config (another environment), then weapon-balance.
    match next_message(&mut forger).await {
        Ok(HubMessage::Error { code, .. }) => assert_eq!(code, "environment_mismatch"),
        other => panic!("{other:?}"),
    }
    match next_message(&mut forger).await {
        Ok(HubMessage::Snapshot { config, .. }) => assert_eq!(config, "weapon-balance"),
        other => panic!("{other:?}"),
    }
    send(&mut forger, ack("weapon-balance", 1)).await;
    for _ in 0..100 {
        if server(&app, "eu-1").await["applied"]["weapon-balance"] == 1 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }

    for (config, why) in [
        ("other", "not subscribed"),
        ("prod-config", "another environment"),
        ("Not A Slug \u{0}", "not even a config name"),
    ] {
        send(&mut forger, ack(config, 1)).await;
        let (code, message) = next_error(&mut forger).await;
        assert_eq!(code, "not_subscribed", "{why}: {message}");
        assert!(!message.contains('\0'));
        let resync = protocol::encode(&ServerMessage::Resync {
            config: config.into(),
        });
        send(&mut forger, resync).await;
        assert_eq!(next_error(&mut forger).await.0, "not_subscribed", "{why}");
    }
    let record = server(&app, "eu-1").await;
    assert_eq!(
        record["applied"],
        json!({"weapon-balance": 1}),
        "nothing else was recorded"
    );

    // A deployment narrowed to NA-EAST: the forger is no target, and its
    // ack of the new revision does not count for it.
    app.post_version("weapon-balance", "1.1.0", balance(60))
        .await;
    let deployed = app
        .post_json(
            "/api/v1/deployments",
            &json!({"config": "weapon-balance", "version": "1.1.0", "strategy": "Direct", "regions": ["NA-EAST"]}),
        )
        .await;
    assert_eq!(deployed.status, 201, "{:?}", deployed.body);
    let id = deployed.body["id"].as_str().unwrap().to_owned();
    // The target gets the frame and holds its ack back.
    loop {
        if let Ok(
            HubMessage::Delta { revision: 2, .. } | HubMessage::Snapshot { revision: 2, .. },
        ) = next_message(&mut target).await
        {
            break;
        }
    }
    send(&mut forger, ack("weapon-balance", 2)).await;
    // The session handles its frames in order: once this resync is
    // answered, the forged ack was handled.
    send(
        &mut forger,
        protocol::encode(&ServerMessage::Resync {
            config: "other".into(),
        }),
    )
    .await;
    assert_eq!(next_error(&mut forger).await.0, "not_subscribed");
    let view = deployment_when(&app, &id, |v| v["targets"] == 1).await;
    let view_after = app.get(&format!("/api/v1/deployments/{id}")).await.body;
    for view in [&view, &view_after] {
        assert_eq!(
            (view["targets"].as_i64(), view["acked"].as_i64()),
            (Some(1), Some(0)),
            "{view:?}"
        );
        assert_eq!(view["status"], "InProgress");
    }
    let servers = app
        .get(&format!("/api/v1/deployments/{id}/servers"))
        .await
        .body;
    assert_eq!(servers["items"].as_array().unwrap().len(), 1);
    assert_eq!(servers["items"][0]["serverId"], "na-1");
    // The real target's ack completes it.
    send(&mut target, ack("weapon-balance", 2)).await;
    let done = deployment_when(&app, &id, |v| v["status"] == "Completed").await;
    assert_eq!(done["status"], "Completed", "{done:?}");
    assert_eq!(done["acked"], 1);
}

// ---- 3. Histogram length bomb -----------------------------------------------

/// A 40-byte HdrHistogram V2 header claiming a 4 GiB payload.
fn length_bomb() -> Vec<u8> {
    let mut header = 0x1c84_9313_u32.to_be_bytes().to_vec();
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    header.extend_from_slice(&0_u32.to_be_bytes());
    header.extend_from_slice(&3_u32.to_be_bytes());
    header.extend_from_slice(&1_u64.to_be_bytes());
    header.extend_from_slice(&3_600_000_u64.to_be_bytes());
    header.extend_from_slice(&1.0_f64.to_bits().to_be_bytes());
    header
}

/// The same, deflated: the compressed length field claims 4 GiB too.
fn compressed_length_bomb() -> Vec<u8> {
    let mut bytes = 0x1c84_9314_u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    bytes.extend_from_slice(&length_bomb());
    bytes
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn a_histogram_length_bomb_is_refused_without_allocating_it(app: TestApp) {
    config_at_revision_one(&app, "weapon-balance", "staging").await;
    let (key, _) = key(&app, &[]).await;
    let mut innocent = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut innocent, hello_as("innocent", "staging")).await;
    receives_revision(&mut innocent, 1).await;

    let mut bomber = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut bomber, hello_as("bomber", "staging")).await;
    let peak_before = peak_rss_kib();
    for bombs in [
        vec![("latencyMs", length_bomb()), ("fps", length_bomb())],
        vec![("sessionSecs", compressed_length_bomb())],
    ] {
        let report = MetricsReport {
            seq: 1,
            window_ms: 1000,
            players: 10,
            histograms: bombs
                .into_iter()
                .map(|(name, bytes)| (name.to_owned(), EncodedHistogram::HdrV2(bytes)))
                .collect(),
            ..Default::default()
        };
        send(
            &mut bomber,
            protocol::encode(&ServerMessage::Metrics(Box::new(report))),
        )
        .await;
        let (code, message) = next_error(&mut bomber).await;
        assert_eq!(code, "invalid_metrics");
        assert!(message.contains("payload"), "{message}");
    }
    let grown_mib = peak_rss_kib().saturating_sub(peak_before) / 1024;
    assert!(
        grown_mib < 256,
        "the peak grew by {grown_mib} MiB (a 4 GiB claim was allocated?)"
    );
    assert_eq!(
        server(&app, "bomber").await["metricsFrames"],
        0,
        "refused reports count for nothing"
    );
    app.deploy("weapon-balance", "1.1.0", balance(50)).await;
    receives_revision(&mut innocent, 2).await;
    receives_revision(&mut bomber, 2).await;
}

/// Counters that would overflow a sum (or outweigh a fleet) are refused
/// at the edge; the innocent server sharing the region and the minute goes
/// on, and so does the flusher.
async fn counters_that_would_overflow_are_refused(app: TestApp) {
    config_at_revision_one(&app, "weapon-balance", "staging").await;
    let (other_key, _) = key(&app, &[]).await;
    let (key, _) = key(&app, &[]).await;
    let mut innocent = raw(&app, Some(&other_key)).await.unwrap();
    welcomed(&mut innocent, hello_as("innocent", "staging")).await;
    receives_revision(&mut innocent, 1).await;
    let mut overflow = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut overflow, hello_as("overflow", "staging")).await;
    for report in [
        MetricsReport {
            seq: 1,
            window_ms: 1000,
            players: 10,
            crashes: u64::MAX,
            ..Default::default()
        },
        MetricsReport {
            seq: 2,
            window_ms: 1000,
            players: 10,
            histograms: [(
                "latencyMs".to_owned(),
                EncodedHistogram::Sparse(vec![(5, u64::MAX), (6, u64::MAX)]),
            )]
            .into(),
            ..Default::default()
        },
    ] {
        send(
            &mut overflow,
            protocol::encode(&ServerMessage::Metrics(Box::new(report))),
        )
        .await;
        assert_eq!(next_error(&mut overflow).await.0, "invalid_metrics");
    }
    let aggregated = app.get("/api/v1/metrics/aggregated").await;
    assert_eq!(aggregated.status, 200, "{:?}", aggregated.body);
    app.hub.flush().await.expect("the flusher writes");
    app.deploy("weapon-balance", "1.1.0", balance(50)).await;
    receives_revision(&mut innocent, 2).await;
    receives_revision(&mut overflow, 2).await;
}

// ---- 4. A key revoked before its socket's hello ----------------------------

async fn a_key_revoked_before_hello_closes_its_sockets_and_welcomes_none(app: TestApp) {
    config_at_revision_one(&app, "weapon-balance", "staging").await;
    let (key, key_id) = key(&app, &[]).await;
    let (other_key, _) = app.server_key(&[], &[]).await;
    let mut innocent = raw(&app, Some(&other_key)).await.unwrap();
    welcomed(&mut innocent, hello_as("innocent", "staging")).await;
    receives_revision(&mut innocent, 1).await;

    // Upgraded, silent: no hello yet.
    let mut early = raw(&app, Some(&key)).await.unwrap();
    let mut greeted = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut greeted, hello_as("greeted", "staging")).await;
    assert_eq!(app.hub.gate().open_for(&key_id), 2);
    assert_eq!(
        app.delete(&format!("/api/v1/api-keys/{key_id}"))
            .await
            .status,
        200
    );
    for socket in [&mut early, &mut greeted] {
        let (code, reason) = close_of(socket).await;
        assert_eq!(code, Some(close_code::KEY_REVOKED), "{reason}");
    }
    match raw(&app, Some(&key)).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| "a socket")),
    }
    assert_eq!(
        app.get("/api/v1/game-servers/greeted").await.body["connected"],
        false
    );
    app.deploy("weapon-balance", "1.1.0", balance(50)).await;
    receives_revision(&mut innocent, 2).await;
}

// ---- 5. An unbounded hello ---------------------------------------------------

async fn an_unbounded_hello_is_refused_and_persistence_goes_on(app: TestApp) {
    config_at_revision_one(&app, "weapon-balance", "staging").await;
    let (key, _) = key(&app, &[]).await;
    let mut innocent = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut innocent, hello_as("innocent", "staging")).await;
    receives_revision(&mut innocent, 1).await;

    type Change = fn(&mut protocol::Hello);
    let cases: [(Change, &str); 5] = [
        (
            |h| h.known = (0..20_000).map(|i| (format!("config-{i}"), 1)).collect(),
            "hello.known: at most 256",
        ),
        (
            |h| h.hostname = Some(format!("{}\0{}", "h".repeat(50_000), "h".repeat(50_000))),
            "hello.hostname: at most 253",
        ),
        (
            |h| h.hostname = Some("host\0name".into()),
            "hello.hostname: may contain only",
        ),
        (
            |h| h.subscriptions = (0..300).map(|i| format!("c{i}")).collect(),
            "hello.subscriptions: at most 256",
        ),
        (|h| h.tags = vec!["ranked\0".into()], "hello.tags"),
    ];
    for (change, expected) in cases {
        let mut message = hello_message("bad-1", "staging", BTreeMap::new());
        change(&mut message);
        let mut socket = raw(&app, Some(&key)).await.unwrap();
        send(
            &mut socket,
            protocol::encode(&ServerMessage::Hello(message)),
        )
        .await;
        let (code, reason) = close_of(&mut socket).await;
        assert_eq!(code, Some(close_code::POLICY_VIOLATION), "{reason}");
        assert!(reason.starts_with(expected), "{reason:?} vs {expected:?}");
    }
    assert_eq!(app.get("/api/v1/game-servers/bad-1").await.status, 404);
    // Nothing reached the store's writes: they go on for everyone.
    app.hub.flush().await.expect("the flusher writes");
    app.deploy("weapon-balance", "1.1.0", balance(50)).await;
    receives_revision(&mut innocent, 2).await;
    for _ in 0..100 {
        if server(&app, "innocent").await["applied"]["weapon-balance"] == 2 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    app.hub.flush().await.expect("the flusher writes");
}

// ---- 6. A developer cannot unmask a secret -----------------------------------

const SECRET: &str = "db-pass-hunter2-0001";
const NEXT_SECRET: &str = "db-pass-hunter3-0002";

fn vault_schema(secret: bool) -> Value {
    let mut password = json!({"type": "string"});
    if secret {
        password["x-secret"] = json!(true);
    }
    json!({"type": "object", "properties": {"db": {"type": "object", "properties": {
        "password": password, "host": {"type": "string"}}}}})
}

async fn a_secret_stays_sealed_when_its_schema_stops_marking_it(app: TestApp) {
    let registered = app
        .post_json(
            "/api/v1/schemas",
            &json!({"id": "vault", "version": "1.0.0", "schema": vault_schema(true)}),
        )
        .await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let created = app.create_production_config("svc", "vault").await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let first = app
        .post_version(
            "svc",
            "1.0.0",
            json!({"db": {"password": SECRET, "host": "h"}}),
        )
        .await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(first.body["content"]["db"]["password"], "***");

    // The unmasking schema: no x-secret, compatibility none.
    let developer = app.token(Role::Developer, "dev");
    let unmasking = |approve: bool| {
        json!({"id": "vault", "version": "2.0.0", "compatibility": "none",
               "schema": vault_schema(false), "approveBreaking": approve})
    };
    let body = |v: &Value| ("application/json", serde_json::to_vec(v).unwrap());
    let refused = app
        .request(
            "POST",
            "/api/v1/schemas",
            Some(&developer),
            Some(body(&unmasking(false))),
        )
        .await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "breaking_schema_change");
    let rules: Vec<(String, String)> = refused.error_paths();
    assert!(
        rules.contains(&(
            "/schema/properties/db/properties/password".into(),
            "removed-secret".into()
        )),
        "{rules:?}"
    );
    assert!(
        rules
            .iter()
            .any(|(_, rule)| rule == "weakened-compatibility"),
        "{rules:?}"
    );
    let self_approved = app
        .request(
            "POST",
            "/api/v1/schemas",
            Some(&developer),
            Some(body(&unmasking(true))),
        )
        .await;
    assert_eq!(self_approved.status, 403, "{:?}", self_approved.body);
    // Without x-secret but keeping the mode: still the admin's call.
    let mut keeping_mode = unmasking(false);
    keeping_mode
        .as_object_mut()
        .unwrap()
        .remove("compatibility");
    let refused = app
        .request(
            "POST",
            "/api/v1/schemas",
            Some(&developer),
            Some(body(&keeping_mode)),
        )
        .await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);

    // A schema that refuses every document (a new root `not`) is a change
    // the compatibility check cannot work out: breaking in every mode but
    // `none`, and the refusal's messages never quote a value holding a
    // secret, even once an admin let it through.
    let refuses_everything = {
        let mut schema = vault_schema(true);
        schema["not"] = json!({"type": "object"});
        json!({"id": "vault", "version": "1.5.0", "schema": schema})
    };
    let refused = app
        .request(
            "POST",
            "/api/v1/schemas",
            Some(&developer),
            Some(body(&refuses_everything)),
        )
        .await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert!(
        refused
            .error_paths()
            .iter()
            .any(|(_, rule)| rule == "changed-keyword"),
        "{:?}",
        refused.body
    );
    let mut approved_not = refuses_everything.clone();
    approved_not["approveBreaking"] = json!(true);
    assert_eq!(
        app.post_json("/api/v1/schemas", &approved_not).await.status,
        201
    );
    let revalidated = app
        .request(
            "POST",
            "/api/v1/configs/svc/versions/1.0.0/validate",
            Some(&developer),
            None,
        )
        .await;
    assert_eq!(revalidated.body["valid"], false, "{:?}", revalidated.body);
    let report = app
        .request(
            "GET",
            "/api/v1/configs/svc/versions/1.0.0/validation-report",
            Some(&developer),
            None,
        )
        .await;
    assert!(
        !report.body.to_string().contains(SECRET),
        "a message about the whole document quoted the secret: {:?}",
        report.body
    );

    // Even once an admin approved it, what was sealed stays sealed: a new
    // version, a rollback and a revalidation by the developer.
    let approved = app.post_json("/api/v1/schemas", &unmasking(true)).await;
    assert_eq!(approved.status, 201, "{:?}", approved.body);
    let next = app
        .request(
            "POST",
            "/api/v1/configs/svc/versions",
            Some(&developer),
            Some(body(&json!({"version": "1.1.0", "content": {"db": {"password": NEXT_SECRET, "host": "h2"}}}))),
        )
        .await;
    assert_eq!(next.status, 201, "{:?}", next.body);
    assert_eq!(next.body["content"]["db"]["password"], "***");
    let rolled = app
        .request(
            "POST",
            "/api/v1/configs/svc/rollback",
            Some(&developer),
            Some(body(&json!({"toVersion": "1.0.0"}))),
        )
        .await;
    assert_eq!(rolled.status, 201, "{:?}", rolled.body);
    assert_eq!(rolled.body["content"]["db"]["password"], "***");
    assert_eq!(rolled.body["checksum"], first.body["checksum"]);
    let revalidated = app
        .request(
            "POST",
            "/api/v1/configs/svc/versions/1.0.0/validate",
            Some(&developer),
            None,
        )
        .await;
    assert_eq!(revalidated.status, 200, "{:?}", revalidated.body);

    let mut seen = app.stored_version_texts().await;
    assert!(seen.contains("$hsenc:v1:"));
    for path in [
        "/api/v1/configs/svc/versions/1.0.0",
        "/api/v1/configs/svc/versions/1.1.0",
        &format!(
            "/api/v1/configs/svc/versions/{}",
            rolled.body["version"].as_str().unwrap()
        ),
        "/api/v1/configs/svc/versions",
        "/api/v1/configs/svc/versions/1.0.0/diff/1.1.0",
        "/api/v1/configs/svc/versions/1.0.0/validation-report",
        "/api/v1/audit?limit=1000",
    ] {
        let answer = app.request("GET", path, Some(&developer), None).await;
        seen.push_str(&answer.body.to_string());
    }
    for secret in [SECRET, NEXT_SECRET] {
        assert!(!seen.contains(secret), "{secret} came out in clear");
    }
}

// ---- Player feedback moves production cohorts only from trusted callers ----

async fn feedback_counts_in_production_only_from_operators_and_the_servers_own_key(app: TestApp) {
    config_at_revision_one(&app, "weapon-balance", "production").await;
    let (own_key, _) = key(&app, &["production"]).await;
    let (other_key, _) = key(&app, &[]).await;
    let mut server_socket = raw(&app, Some(&own_key)).await.unwrap();
    welcomed(&mut server_socket, hello_as("prod-1", "production")).await;
    receives_revision(&mut server_socket, 1).await;
    // A deployment in flight, its frame left unacked: it stays in progress.
    app.post_version("weapon-balance", "1.1.0", balance(52))
        .await;
    let deployed = app
        .post_json(
            "/api/v1/deployments",
            &json!({"config": "weapon-balance", "version": "1.1.0", "strategy": "Direct"}),
        )
        .await;
    assert_eq!(deployed.status, 201, "{:?}", deployed.body);
    let id = deployed.body["id"].as_str().unwrap().to_owned();

    let complaint = json!({"kind": "complaint", "serverId": "prod-1", "category": "lag"});
    let body = || Some(("application/json", serde_json::to_vec(&complaint).unwrap()));
    let path = "/api/v1/metrics/player-feedback";
    let developer = app.token(Role::Developer, "dev");
    let operator = app.token(Role::Operator, "ops");
    let from_developer = app.request("POST", path, Some(&developer), body()).await;
    assert_eq!(from_developer.status, 201, "{:?}", from_developer.body);
    assert_eq!(from_developer.body["counted"], false, "stored, not counted");
    assert_eq!(from_developer.body["deployments"], json!([]));
    let from_operator = app.request("POST", path, Some(&operator), body()).await;
    assert_eq!(from_operator.body["counted"], true);
    assert_eq!(from_operator.body["deployments"], json!([id]));
    let from_own_key = app.request("POST", path, Some(&own_key), body()).await;
    assert_eq!(from_own_key.status, 201, "{:?}", from_own_key.body);
    assert_eq!(from_own_key.body["counted"], true);
    let from_other_key = app.request("POST", path, Some(&other_key), body()).await;
    assert_eq!(from_other_key.status, 403, "{:?}", from_other_key.body);
    let no_server = app
        .request(
            "POST",
            path,
            Some(&own_key),
            Some(("application/json", br#"{"kind":"complaint"}"#.to_vec())),
        )
        .await;
    assert_eq!(no_server.status, 422, "{:?}", no_server.body);
    // 30 at once per server count (the operator's and the key's among them;
    // one more may be earned meanwhile); the rest are stored only.
    let mut counted = 2; // the operator's and the server key's
    for _ in 0..40 {
        let answer = app.request("POST", path, Some(&own_key), body()).await;
        assert_eq!(answer.status, 201);
        counted += usize::from(answer.body["counted"] == true);
    }
    assert!((30..=31).contains(&counted), "{counted} counted");
    // What counted, and only that, is in the metrics.
    let aggregated = app.get("/api/v1/metrics/aggregated").await;
    assert_eq!(
        aggregated.body["total"]["complaints"].as_u64(),
        Some(counted as u64),
        "{:?}",
        aggregated.body
    );
}

// ---- 7. Upgrade floods --------------------------------------------------------

fn tight_sockets(settings: &mut Settings) {
    calm(settings);
    settings.rate_limit.upgrade_per_minute = 60;
    settings.rate_limit.upgrade_burst = 20;
    settings.hub.max_sessions = 6;
    settings.hub.max_sessions_per_key = 3;
}

/// The status, `code` and `Retry-After` of a refused upgrade.
fn refusal(
    result: Result<crate::sockets::Socket, tungstenite::Error>,
) -> (u16, String, Option<String>) {
    match result {
        Err(tungstenite::Error::Http(response)) => {
            let body: Value = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            (
                response.status().as_u16(),
                body["code"].as_str().unwrap_or_default().to_owned(),
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            )
        }
        Err(other) => panic!("not an HTTP refusal: {other}"),
        Ok(_) => (101, String::new(), None),
    }
}

fn random_key(i: usize) -> String {
    let tail: String = format!("{i:0>43}").chars().rev().collect();
    format!("hsk_{tail}")
}

async fn upgrade_floods_are_limited_and_sockets_capped(app: TestApp) {
    config_at_revision_one(&app, "weapon-balance", "staging").await;
    let (key, _) = key(&app, &[]).await;
    let mut innocent = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut innocent, hello_as("innocent", "staging")).await;
    receives_revision(&mut innocent, 1).await;

    // 400 parallel upgrades with made-up keys, from another address, while
    // REST keeps answering.
    let flood = futures_util::future::join_all((0..400).map(|i| {
        let key = random_key(i);
        let app = &app;
        async move { refusal(raw_from(app, [127, 0, 0, 2], Some(&key)).await) }
    }));
    let rest = async {
        let mut statuses = Vec::new();
        for _ in 0..10 {
            statuses.push(app.get("/api/v1/configs").await.status);
            statuses.push(app.request("GET", "/health", None, None).await.status);
        }
        statuses
    };
    let (refusals, rest_statuses) = futures_util::join!(flood, rest);
    assert!(rest_statuses.iter().all(|s| *s == 200), "{rest_statuses:?}");
    let unauthorized = refusals.iter().filter(|r| r.0 == 401).count();
    let limited: Vec<_> = refusals.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(unauthorized + limited.len(), 400, "{refusals:?}");
    assert!(
        unauthorized <= 20,
        "only the burst reached a lookup: {unauthorized}"
    );
    assert!(limited.len() >= 380);
    for (_, code, retry_after) in &limited {
        assert_eq!(code, "rate_limited");
        assert!(retry_after.is_some(), "429 carries Retry-After");
    }
    // The flooding address stays refused; others (the innocent's) do not.
    let (status, _, _) = refusal(raw_from(&app, [127, 0, 0, 2], Some(&key)).await);
    assert_eq!(status, 429);

    // Sockets per key, counted from the upgrade (no hello needed).
    let mut held = vec![raw(&app, Some(&key)).await.unwrap()];
    held.push(raw(&app, Some(&key)).await.unwrap());
    let (status, code, retry_after) = refusal(raw(&app, Some(&key)).await);
    assert_eq!(
        (status, code.as_str()),
        (429, "too_many_sockets_for_key"),
        "the innocent and two silent sockets hold the key's 3"
    );
    assert!(retry_after.is_some());
    // Sockets in all.
    let (other_key, _) = app.server_key(&[], &[]).await;
    for _ in 0..3 {
        held.push(raw(&app, Some(&other_key)).await.unwrap());
    }
    let (third_key, _) = app.server_key(&[], &[]).await;
    let (status, code, retry_after) = refusal(raw(&app, Some(&third_key)).await);
    assert_eq!((status, code.as_str()), (503, "too_many_sockets"));
    assert!(retry_after.is_some());
    // A closed socket frees its place.
    drop(held.pop());
    let mut freed = None;
    for _ in 0..100 {
        if let Ok(socket) = raw(&app, Some(&third_key)).await {
            freed = Some(socket);
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed.is_some(), "a place was freed");
    app.deploy("weapon-balance", "1.1.0", balance(50)).await;
    receives_revision(&mut innocent, 2).await;
}

on_both_databases!(
    a_key_cannot_take_over_another_keys_server_id with forget_at_once,
    a_keys_server_ids_are_capped with few_ids_per_key,
    acks_and_resyncs_outside_a_sessions_subscriptions_change_nothing with no_approvals,
    a_histogram_length_bomb_is_refused_without_allocating_it with calm,
    counters_that_would_overflow_are_refused with calm,
    a_key_revoked_before_hello_closes_its_sockets_and_welcomes_none with calm,
    an_unbounded_hello_is_refused_and_persistence_goes_on with production_frames,
    a_secret_stays_sealed_when_its_schema_stops_marking_it,
    feedback_counts_in_production_only_from_operators_and_the_servers_own_key with no_approvals,
    upgrade_floods_are_limited_and_sockets_capped with tight_sockets,
);

#[actix_web::test]
async fn metrics_frames_past_a_sessions_rate_are_dropped_with_an_error() {
    let app = crate::helpers::spawn_app(crate::helpers::Db::Sqlite)
        .await
        .unwrap();
    config_at_revision_one(&app, "weapon-balance", "staging").await;
    let (key, _) = key(&app, &[]).await;
    let mut socket = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut socket, hello_as("chatty", "staging")).await;
    receives_revision(&mut socket, 1).await;
    let report = protocol::encode(&ServerMessage::Metrics(Box::new(MetricsReport {
        seq: 1,
        window_ms: 300,
        players: 5,
        ..Default::default()
    })));
    for _ in 0..20 {
        send(&mut socket, report.clone()).await;
    }
    let (code, message) = next_error(&mut socket).await;
    assert_eq!(code, "rate_limited", "{message}");
    let counted = server(&app, "chatty").await["metricsFrames"]
        .as_u64()
        .unwrap();
    assert!(
        (4..=6).contains(&counted),
        "a burst of 4 (and what 20 frames' time earns) is counted, not 20: {counted}"
    );
    // The session goes on.
    app.deploy("weapon-balance", "1.1.0", balance(50)).await;
    receives_revision(&mut socket, 2).await;
}
