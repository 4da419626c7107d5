//! `GET /metrics` on both databases: Prometheus text that moves with what
//! the hub does (configs, deployments, acks, resolutions, telemetry) and
//! reads the fleet's state at the scrape; open, with no id in a label;
//! and every metric the
//! Grafana dashboard (`deploy/grafana/hotswap.json`) queries exists.

use crate::helpers::{TestApp, balance, connected, sdk_config};
use crate::on_both_databases;
use serde_json::{Value, json};
use std::time::Duration;

/// The scrape's text (as an admin).
pub(crate) async fn scrape(app: &TestApp) -> String {
    let answer = app
        .client
        .get(app.url("/metrics"))
        .insert_header(("Authorization", format!("Bearer {}", app.admin_token)))
        .send()
        .await
        .unwrap()
        .body()
        .limit(4 * 1024 * 1024)
        .await
        .unwrap();
    String::from_utf8(answer.to_vec()).unwrap()
}

/// The value of one sample (its name with labels, as written).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

async fn the_hubs_metrics_follow_what_it_does(app: TestApp) {
    // Open, like /health.
    let anonymous = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 200);
    assert!(anonymous.headers().get("content-type").is_some_and(|t| {
        t.to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    }));
    let before = scrape(&app).await;
    assert!(before.trim_end().ends_with("# EOF"), "{before}");
    let created = sample(&before, "hotswap_configs_created_total");

    let made = app
        .create_config("weapon-balance", "GameBalance", "staging")
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let (key, _) = app.server_key(&[], &[]).await;
    let server = connected(sdk_config(&app, &key, "arena-1")).await;
    server.set_players(37);
    let deployed = app.deploy("weapon-balance", "1.0.0", balance(45)).await;
    app.wait_deployment_status(deployed.body["id"].as_str().unwrap(), "Completed")
        .await;
    assert!(
        server
            .wait_for_revision("weapon-balance", 1, Duration::from_secs(10))
            .await
    );
    // A bad document is a validation failure.
    let refused = app
        .post_version("weapon-balance", "1.0.1", json!({"weapons": "none"}))
        .await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    let looked_up = app
        .get("/api/v1/players/p-1/config?configs=weapon-balance&region=EU-WEST")
        .await;
    assert_eq!(looked_up.status, 200, "{:?}", looked_up.body);
    let sent = app
        .telemetry(
            &key,
            &json!({"playerId": "p-1", "events": [
                {"eventType": "session_start", "eventTime": chrono::Utc::now().to_rfc3339(), "payload": {}},
                {"eventType": "no_such_type", "eventTime": chrono::Utc::now().to_rfc3339(), "payload": {}}
            ]}),
        )
        .await;
    assert_eq!(sent.status, 200, "{:?}", sent.body);

    // The players and the ack arrive with the server's next frames.
    let mut after = String::new();
    for _ in 0..100 {
        after = scrape(&app).await;
        if sample(&after, "hotswap_players_online") == 37.0
            && sample(&after, "hotswap_delivery_latency_seconds_count") >= 1.0
        {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sample(&after, "hotswap_configs_created_total"),
        created + 1.0
    );
    assert!(sample(&after, "hotswap_config_versions_uploaded_total") >= 1.0);
    assert!(sample(&after, "hotswap_config_validation_failures_total") >= 1.0);
    assert!(sample(&after, "hotswap_config_validation_duration_seconds_count") >= 2.0);
    assert_eq!(
        sample(
            &after,
            "hotswap_deployments_started_total{strategy=\"Direct\"}"
        ),
        1.0
    );
    assert_eq!(sample(&after, "hotswap_game_servers_connected"), 1.0);
    assert_eq!(sample(&after, "hotswap_game_servers_healthy"), 1.0);
    assert_eq!(sample(&after, "hotswap_players_online"), 37.0);
    assert_eq!(sample(&after, "hotswap_configs_active"), 1.0);
    assert!(sample(&after, "hotswap_frames_sent_total") >= 1.0);
    assert!(sample(&after, "hotswap_acks_total") >= 1.0);
    assert!(sample(&after, "hotswap_config_reload_duration_seconds_count") >= 1.0);
    assert!(sample(&after, "hotswap_delivery_latency_seconds_count") >= 1.0);
    assert_eq!(sample(&after, "hotswap_resolution_requests_total"), 1.0);
    assert_eq!(
        sample(&after, "hotswap_telemetry_events_accepted_total"),
        1.0
    );
    assert_eq!(
        sample(&after, "hotswap_telemetry_events_rejected_total"),
        1.0
    );
    // The pool holds at least the connection the scrape's own reads used.
    let pool = sample(&after, "hotswap_store_connections{state=\"idle\"}")
        + sample(&after, "hotswap_store_connections{state=\"in_use\"}");
    assert!(pool >= 1.0, "{pool}");
    // No player, server or config id in any label.
    for line in after.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("arena-1") && !line.contains("p-1") && !line.contains("weapon-balance"),
            "{line}"
        );
    }
    server.stop().await;
}

async fn every_metric_the_grafana_dashboard_queries_exists(app: TestApp) {
    let text = scrape(&app).await;
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/hotswap.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("hotswap_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 20, "{queried:?}");
    for name in &queried {
        let family = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_total"))
            .unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which /metrics does not export"
        );
    }
}

on_both_databases!(
    the_hubs_metrics_follow_what_it_does,
    every_metric_the_grafana_dashboard_queries_exists,
);
