//! Experiments on a cluster: made, started and read from any node, the
//! same variants everywhere, one node watching each started experiment
//! (its end time, its guardrails), one started experiment per config.

use crate::cluster::{cluster, setup, wait_for};
use crate::helpers::TestApp;
use crate::progressive::CONFIG;
use serde_json::json;

/// A two-variant experiment on the cluster's config, ending at `end`.
fn experiment_on_config(name: &str, end: Option<String>) -> serde_json::Value {
    let mut body = json!({
        "name": name,
        "config": CONFIG,
        "variants": [
            {"id": "control", "weight": 50, "patch": {}},
            {"id": "hot", "weight": 50, "patch": {"weapons": {"rifle": {"damage": 60}}}}
        ],
        "metrics": [{"name": "runs", "kind": "count", "event": "run_end"}]
    });
    if let Some(end) = end {
        body["endTime"] = json!(end);
    }
    body
}

/// The variant of `config` a node's resolution gives a player.
async fn variant_on(node: &TestApp, player: &str) -> Option<String> {
    let answer = node
        .get(&format!(
            "/api/v1/players/{player}/config?configs={CONFIG}&region=EU-WEST"
        ))
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["configs"][CONFIG]["layers"]
        .as_array()?
        .iter()
        .filter_map(|l| l.as_str())
        .find_map(|l| l.split_once('/').map(|(_, v)| v.to_owned()))
}

/// An experiment made on A is started from B; every node resolves players
/// alike; B (which watches it) stops, another node takes its watch and
/// finishes it at its end time, once (one audited finish); two experiments
/// on one config started at once from two nodes: one wins, the other is
/// refused (the store's rule, whichever node's memory lags).
#[actix_web::test]
async fn an_experiment_is_run_from_any_node_and_watched_by_one() {
    let Some(cluster) = cluster(3).await else {
        return;
    };
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    setup(a).await;
    let end = (chrono::Utc::now() + chrono::Duration::seconds(8))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let made = a
        .post_json(
            "/api/v1/experiments",
            &experiment_on_config("timed", Some(end)),
        )
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    wait_for("B knows the experiment", async || {
        b.get("/api/v1/experiments/timed").await.status == 200
    })
    .await;
    let started = b.post_empty("/api/v1/experiments/timed/start").await;
    assert_eq!(started.status, 200, "{:?}", started.body);
    wait_for("A reads it running", async || {
        a.get("/api/v1/experiments/timed").await.body["status"] == "Running"
    })
    .await;
    let mut variants = std::collections::BTreeSet::new();
    for i in 0..20 {
        let player = format!("player-{i}");
        let on_a = variant_on(a, &player).await;
        assert_eq!(on_a, variant_on(b, &player).await, "{player} on A and B");
        variants.insert(on_a);
    }
    assert!(variants.len() > 1, "players split: {variants:?}");

    // Two drafts on the same config; once `timed` is finished, they are
    // started at once from two nodes: one wins.
    for name in ["left", "right"] {
        let made = a
            .post_json("/api/v1/experiments", &experiment_on_config(name, None))
            .await;
        assert_eq!(made.status, 201, "{:?}", made.body);
    }
    wait_for("C knows both drafts", async || {
        c.get("/api/v1/experiments/right").await.status == 200
    })
    .await;

    // B watched `timed` (it started it): B stops; A or C takes the watch
    // and finishes it at its end time.
    b.hub.stop_runs().await;
    wait_for("it finished at its end time", async || {
        a.get("/api/v1/experiments/timed").await.body["status"] == "Finished"
    })
    .await;
    let finished = a.get("/api/v1/experiments/timed").await;
    assert!(
        finished.body["statusReason"]
            .as_str()
            .is_some_and(|r| r.contains("endTime")),
        "{:?}",
        finished.body
    );
    let trail = a.get("/api/v1/audit?resource=experiments/timed").await;
    let finishes = trail.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["action"] == "experiment.finish")
        .count();
    assert_eq!(finishes, 1, "{:?}", trail.body);

    wait_for("C reads it finished", async || {
        c.get("/api/v1/experiments/timed").await.body["status"] == "Finished"
    })
    .await;
    let (left, right) = futures_util::join!(
        a.post_empty("/api/v1/experiments/left/start"),
        c.post_empty("/api/v1/experiments/right/start"),
    );
    let mut statuses = [left.status, right.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 409],
        "one start wins: {:?} {:?}",
        left.body,
        right.body
    );
    let refused = if left.status == 409 { &left } else { &right };
    assert_eq!(
        refused.body["code"], "experiment_conflict",
        "{:?}",
        refused.body
    );
    cluster.stop().await;
}
