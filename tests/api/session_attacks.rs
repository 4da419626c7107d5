//! Attacks through a game server's own socket (issue 14, second review):
//! one server outweighing its cohort, a stream of snapshots bought with a
//! few bytes of `resync`, custom metrics summing to infinity, and a burst
//! of new server ids releasing the bindings of servers still connected.

use crate::attacks::{
    calm, config_at_revision_one, forget_at_once, hello_as, key, receives_revision, server,
    welcomed,
};
use crate::helpers::TestApp;
use crate::on_both_databases;
use crate::sockets::{close_of, hello_message, next_error, next_message, raw, send};
use hotswap::settings::Settings;
use hotswap_client::protocol::{self, HubMessage, MetricsReport, ServerMessage, close_code};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

fn metrics(seq: u64, window_ms: u64, players: u32) -> Vec<u8> {
    protocol::encode(&ServerMessage::Metrics(Box::new(MetricsReport {
        seq,
        window_ms,
        players,
        ..Default::default()
    })))
}

fn hello_with_capacity(server_id: &str, capacity: u32) -> Vec<u8> {
    let mut hello = hello_message(server_id, "staging", BTreeMap::new());
    hello.capacity = capacity;
    protocol::encode(&ServerMessage::Hello(hello))
}

/// The aggregated numbers of the last five minutes, once `reports` arrived.
async fn aggregated_after(app: &TestApp, reports: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = app.get("/api/v1/metrics/aggregated?window=PT5M").await;
        assert_eq!(all.status, 200, "{:?}", all.body);
        if all.body["total"]["reports"].as_u64().unwrap_or(0) >= reports {
            return all.body["total"].clone();
        }
        assert!(Instant::now() < deadline, "{:?}", all.body);
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- 5. One server outweighing its cohort ----------------------------------

async fn a_server_counts_no_more_players_than_it_declared_nor_more_time_than_passed(app: TestApp) {
    config_at_revision_one(&app, "weapon-balance", "staging").await;
    let (key, _) = key(&app, &[]).await;
    // A capacity past the hub's cap is refused at hello.
    let mut boastful = raw(&app, Some(&key)).await.unwrap();
    send(&mut boastful, hello_with_capacity("boastful", 1_000_000)).await;
    let (code, reason) = close_of(&mut boastful).await;
    assert_eq!(code, Some(close_code::POLICY_VIOLATION));
    assert!(reason.contains("hello.capacity"), "{reason}");

    // Declared 1, reports 100,000: refused, counts for nothing.
    let mut small = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut small, hello_with_capacity("small", 1)).await;
    receives_revision(&mut small, 1).await;
    send(&mut small, metrics(1, 300, 100_000)).await;
    let (code, message) = next_error(&mut small).await;
    assert_eq!(code, "invalid_metrics");
    assert!(message.contains("more than the 1"), "{message}");

    // Four reports at once, each claiming an hour: they weigh the time
    // that passed (a tenth of an interval each, at least), not 10 hours.
    let mut hasty = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut hasty, hello_with_capacity("hasty", 100)).await;
    receives_revision(&mut hasty, 1).await;
    for seq in 1..=4 {
        send(&mut hasty, metrics(seq, 3_600_000, 100)).await;
    }
    let total = aggregated_after(&app, 4).await;
    let players = total["players"].as_u64().unwrap();
    assert!(
        players < 4 * 100,
        "4 reports of 100 players within a second weighed {players} player-intervals"
    );
    // Custom values that would sum to infinity are refused (once the
    // session's metrics budget has refilled).
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    let mut custom = MetricsReport {
        seq: 5,
        window_ms: 300,
        players: 10,
        ..Default::default()
    };
    custom.custom.insert("queueSecs".into(), 1.7e308);
    send(
        &mut hasty,
        protocol::encode(&ServerMessage::Metrics(Box::new(custom))),
    )
    .await;
    assert_eq!(next_error(&mut hasty).await.0, "invalid_metrics");
    assert_eq!(server(&app, "hasty").await["metricsFrames"], 4);
    // A split by variant that does not add up costs the split only: the
    // report counts, and the server is told why its split did not.
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    let split = |variant: &str, players| hotswap_client::protocol::VariantMetrics {
        experiment: "rifle".into(),
        variant: variant.into(),
        players,
        ..Default::default()
    };
    let overcounted = MetricsReport {
        seq: 6,
        window_ms: 300,
        players: 10,
        experiments: vec![split("control", 8), split("hot", 8)],
        ..Default::default()
    };
    send(
        &mut hasty,
        protocol::encode(&ServerMessage::Metrics(Box::new(overcounted))),
    )
    .await;
    let (code, message) = next_error(&mut hasty).await;
    assert_eq!(code, "invalid_variant_metrics");
    assert!(message.contains("more players"), "{message}");
    assert_eq!(server(&app, "hasty").await["metricsFrames"], 5);
    // Past the 16 shares a report may carry, the rest are read past,
    // never built, and the split refused.
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    let crowded = MetricsReport {
        seq: 7,
        window_ms: 300,
        players: 10,
        experiments: (0..1_500).map(|n| split(&n.to_string(), 0)).collect(),
        ..Default::default()
    };
    send(
        &mut hasty,
        protocol::encode(&ServerMessage::Metrics(Box::new(crowded))),
    )
    .await;
    let (code, message) = next_error(&mut hasty).await;
    assert_eq!(code, "invalid_variant_metrics");
    assert!(message.contains("at most 16"), "{message}");
    assert_eq!(server(&app, "hasty").await["metricsFrames"], 6);
}

// ---- 6. Snapshots bought with a few bytes of resync ------------------------

/// Room for the burst of answers in the session's queue.
fn roomy_queue(settings: &mut Settings) {
    calm(settings);
    settings.hub.session_queue = 64;
}

/// A document of about 40 KB: each snapshot costs the hub that much.
fn heavy(damage: u32) -> Value {
    let weapons: serde_json::Map<String, Value> = (0..400)
        .map(|i| {
            (
                format!("weapon-{i:03}"),
                serde_json::json!({"damage": damage, "fireRate": 600, "reloadTime": 2.5}),
            )
        })
        .collect();
    serde_json::json!({ "weapons": weapons })
}

async fn resyncs_are_paced_and_coalesced_never_dropped(app: TestApp) {
    let created = app
        .create_config("weapon-balance", "GameBalance", "staging")
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    app.deploy("weapon-balance", "1.0.0", heavy(45)).await;
    let (key, _) = key(&app, &[]).await;
    let mut innocent = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut innocent, hello_as("innocent", "staging")).await;
    receives_revision(&mut innocent, 1).await;
    let mut flood = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut flood, hello_as("flood", "staging")).await;
    receives_revision(&mut flood, 1).await;

    // 2,000 resyncs in a burst: answered 16 at once, then one at a time,
    // the rest coalesced into the one waiting.
    let resync = protocol::encode(&ServerMessage::Resync {
        config: "weapon-balance".into(),
    });
    for _ in 0..2_000 {
        send(&mut flood, resync.clone()).await;
    }
    let mut snapshots = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2_500) {
        match tokio::time::timeout(Duration::from_millis(200), next_message(&mut flood)).await {
            Ok(Ok(HubMessage::Snapshot { .. })) => snapshots += 1,
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(code)) => panic!("the flooding session closed: {code:?}"),
        }
    }
    assert!(
        (16..=20).contains(&snapshots),
        "{snapshots} snapshots for 2,000 resyncs in 2.5 s"
    );
    // The server that asked is not refused: a later resync is answered.
    send(&mut flood, resync.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(HubMessage::Snapshot { .. }) = next_message(&mut flood).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a paced resync was never answered"
        );
    }
    // The innocent server is served as ever.
    app.deploy("weapon-balance", "1.1.0", heavy(50)).await;
    receives_revision(&mut innocent, 2).await;
}

// ---- 9. New ids in a burst never release connected servers' ids -------------

fn three_ids_per_key(settings: &mut Settings) {
    forget_at_once(settings);
    calm(settings);
    settings.hub.max_server_ids_per_key = 3;
}

async fn a_burst_of_new_ids_keeps_every_connected_servers_binding(app: TestApp) {
    config_at_revision_one(&app, "weapon-balance", "staging").await;
    let (key, key_id) = key(&app, &[]).await;
    // Six new ids at once, past a cap of three, none flushed yet.
    let mut sockets = Vec::new();
    for i in 0..6 {
        let mut socket = raw(&app, Some(&key)).await.unwrap();
        welcomed(&mut socket, hello_as(&format!("burst-{i}"), "staging")).await;
        sockets.push(socket);
    }
    let bindings = || async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
        let (held,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM game_server_bindings WHERE key_id = $1")
                .bind(&key_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        held
    };
    assert_eq!(bindings().await, 6, "connected servers keep their ids");
    let (other_key, _) = app.server_key(&[], &[]).await;
    for i in 0..6 {
        let mut intruder = raw(&app, Some(&other_key)).await.unwrap();
        send(&mut intruder, hello_as(&format!("burst-{i}"), "staging")).await;
        assert_eq!(
            close_of(&mut intruder).await.0,
            Some(close_code::POLICY_VIOLATION),
            "burst-{i} was taken over"
        );
    }
    // Once they are gone and forgotten, the cap applies at the next claim.
    drop(sockets);
    for i in 0..6 {
        let id = format!("burst-{i}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while server(&app, &id).await["connected"] != false {
            assert!(Instant::now() < deadline, "{id} stays connected");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
    actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    app.hub.flush().await.unwrap();
    app.hub.prune().await.unwrap();
    let mut next = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut next, hello_as("burst-next", "staging")).await;
    assert!(
        bindings().await <= 3,
        "the cap holds once servers are forgotten"
    );
}

on_both_databases!(
    a_server_counts_no_more_players_than_it_declared_nor_more_time_than_passed with calm,
    resyncs_are_paced_and_coalesced_never_dropped with roomy_queue,
    a_burst_of_new_ids_keeps_every_connected_servers_binding with three_ids_per_key,
);
