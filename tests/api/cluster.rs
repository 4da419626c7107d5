//! Several hubs on one PostgreSQL database and one Redis: a deployment
//! started on one node reaches the servers connected to the others, its
//! owner waits for their acks and judges their metrics, and rolls back
//! servers wherever they are connected.
//!
//! The nodes here run in this test's process (each a whole hub on its
//! own port with its own node id, store pool, Redis link and tasks);
//! `cluster_processes.rs` kills real hub processes.

use crate::helpers::balance;
use crate::helpers::{Db, PrivateRedis, TestApp, postgres_schema_url, spawn_app_on};
use crate::progressive::{CONFIG, Fleet, Mode, deployment, start_deployment};
use hotswap::settings::SecretString;
use serde_json::json;
use std::time::{Duration, Instant};

/// Nodes of one cluster, its Redis and the key folder they share.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<TestApp>,
    pub(crate) redis: Option<PrivateRedis>,
    _keys: tempfile::TempDir,
}

/// `n` nodes on a fresh PostgreSQL schema and a private Redis; `None`
/// (with a printed reason) when PostgreSQL is unreachable outside CI.
pub(crate) async fn cluster(n: usize) -> Option<Cluster> {
    Some(cluster_on(n, postgres_schema_url().await?).await)
}

/// `n` nodes on the database at `url` and a private Redis.
pub(crate) async fn cluster_on(n: usize, url: String) -> Cluster {
    cluster_with(n, url, |_| {}).await
}

/// [`cluster_on`], each node's settings adjusted by `customize` last.
pub(crate) async fn cluster_with(
    n: usize,
    url: String,
    customize: impl Fn(&mut hotswap::settings::Settings) + Clone + 'static,
) -> Cluster {
    let redis = PrivateRedis::start(None);
    let keys = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for i in 0..n {
        let (redis_url, keys, customize) = (redis.url(), keys.path().to_owned(), customize.clone());
        let node = spawn_app_on(
            Db::Postgres,
            url.clone(),
            tempfile::tempdir().unwrap(),
            move |settings| {
                // One signing and secrets key for the cluster.
                settings.data_dir = keys;
                settings.redis.url = Some(SecretString::new(redis_url));
                settings.redis.timeout_ms = 300;
                settings.cluster.node_id = Some(format!("node-{}", char::from(b'a' + i as u8)));
                settings.cluster.lease_ms = 1_500;
                settings.cluster.reconcile_ms = 500;
                settings.cluster.share_ms = 50;
                customize(settings);
            },
        )
        .await;
        nodes.push(node);
    }
    Cluster {
        nodes,
        redis: Some(redis),
        _keys: keys,
    }
}

impl Cluster {
    pub(crate) async fn stop(self) {
        for node in &self.nodes {
            node.hub.stop_runs().await;
        }
        // Cluster tasks in the middle of a query finish it and end.
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The config and its first version, deployed from `node` (it completes
/// once every node up said it served it), and a server key.
pub(crate) async fn setup(node: &TestApp) -> String {
    assert_eq!(
        node.create_config(CONFIG, "GameBalance", "staging")
            .await
            .status,
        201
    );
    let first = node.deploy(CONFIG, "1.0.0", balance(45)).await;
    let id = first.body["id"].as_str().unwrap().to_owned();
    node.wait_deployment_status(&id, "Completed").await;
    node.server_key(&[], &[]).await.0
}

/// `n` servers spread over `nodes`, every one on the first version.
pub(crate) async fn fleet_on(nodes: &[&TestApp], key: &str, n: usize) -> Fleet {
    let urls: Vec<String> = nodes.iter().map(|node| node.ws_url()).collect();
    let fleet = Fleet::start_on(&urls, key, n, |_| "EU-WEST").await;
    assert!(
        fleet.all_on(1).await,
        "servers on every node run the first version"
    );
    fleet
}

/// A canary of version 1.1.0 from `node` (halves, one-hour phases).
pub(crate) async fn start_canary(node: &TestApp) -> String {
    start_deployment(
        node,
        "1.1.0",
        50,
        json!({ "strategy": "Canary", "phases": [50, 100], "phaseInterval": "PT1H" }),
    )
    .await
}

pub(crate) async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Servers on all three nodes; a Direct deployment created on node A:
/// every server gets it, and A completes it only once the servers on B
/// and C acked (their acks cross to A); B and C read it as A stored it.
#[actix_web::test]
async fn a_deployment_started_on_one_node_reaches_servers_on_every_node() {
    let Some(cluster) = cluster(3).await else {
        return;
    };
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let key = setup(a).await;
    let fleet = Fleet::start_on(
        &[a.ws_url(), b.ws_url(), c.ws_url()],
        &key,
        9,
        |_| "EU-WEST",
    )
    .await;
    assert!(
        fleet.all_on(1).await,
        "servers on B and C get the active revision A deployed"
    );
    let id = start_deployment(a, "1.1.0", 50, json!({ "strategy": "Direct" })).await;
    assert!(fleet.all_on(2).await, "every server, wherever connected");
    let view = a.wait_deployment_status(&id, "Completed").await;
    assert_eq!(
        (view["targets"].as_i64(), view["acked"].as_i64()),
        (Some(9), Some(9)),
        "A counted the acks of the servers on B and C: {view}"
    );
    // B and C learn it from A's next word on the deployment (at most a
    // second or so later), not at the same instant.
    for node in [b, c] {
        node.wait_deployment_status(&id, "Completed").await;
    }
    // A second deployment of the config from node B while none is in
    // flight works the same way round.
    let second = start_deployment(b, "1.2.0", 51, json!({ "strategy": "Direct" })).await;
    assert!(fleet.all_on(3).await);
    let view = b.wait_deployment_status(&second, "Completed").await;
    assert_eq!(view["acked"].as_i64(), Some(9), "{view}");
    fleet.stop().await;
    cluster.stop().await;
}

/// No server on node A; a canary created there is judged on the metrics
/// of the servers on B and C (sent as slices), rolled back by A, and the
/// rollback reaches every server.
#[actix_web::test]
async fn a_canary_is_judged_on_metrics_from_other_nodes_and_rolled_back_everywhere() {
    let Some(cluster) = cluster(3).await else {
        return;
    };
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let key = setup(a).await;
    let fleet = fleet_on(&[b, c], &key, 30).await;
    let id = start_canary(a).await;
    fleet.wait_cohorts_filled(a, &id, 2).await;
    let canary = fleet.on(2);
    assert!((5..=25).contains(&canary.len()), "{}", canary.len());
    let view = deployment(a, &id).await;
    assert_eq!(view["status"], "InProgress", "healthy: {view}");
    assert_eq!(
        view["targets"].as_i64(),
        Some(canary.len() as i64),
        "A tracks the canary servers on B and C: {view}"
    );
    let injected = Instant::now();
    fleet.regress(2, Mode::Crashes);
    let view = a.wait_deployment_status(&id, "RolledBack").await;
    assert!(fleet.all_on(1).await, "every server back");
    eprintln!(
        "cluster canary: regression to every server back in {} ms",
        injected.elapsed().as_millis()
    );
    assert_eq!(view["rollback"]["trigger"], "automatic", "{view}");
    assert_eq!(view["rollback"]["metric"], "crashRate", "{view}");
    assert_eq!(view["rollback"]["unacked"], json!([]), "{view}");
    wait_for("B reads the rollback", async || {
        deployment(b, &id).await["status"] == "RolledBack"
    })
    .await;
    fleet.stop().await;
    cluster.stop().await;
}

/// A canary driven by node A, paused from node B, resumed from node C and
/// rolled back from B: each action is carried out by A (the owner), and
/// the answer reads what A stored.
#[actix_web::test]
async fn operators_act_on_a_deployment_from_any_node() {
    let Some(cluster) = cluster(3).await else {
        return;
    };
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let key = setup(a).await;
    let fleet = fleet_on(&[a, b, c], &key, 12).await;
    let id = start_canary(a).await;
    let act = async |node: &TestApp, action: &str| {
        node.post_empty(&format!("/api/v1/deployments/{id}/{action}"))
            .await
    };
    let paused = act(b, "pause").await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    assert_eq!(paused.body["status"], "Paused", "{:?}", paused.body);
    assert_eq!(deployment(a, &id).await["status"], "Paused");
    let refused = act(c, "pause").await;
    assert_eq!(
        refused.status, 409,
        "the owner's refusal: {:?}",
        refused.body
    );
    let resumed = act(c, "resume").await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    assert_eq!(resumed.body["status"], "InProgress", "{:?}", resumed.body);
    let rolled = b
        .post_json(
            &format!("/api/v1/deployments/{id}/rollback"),
            &json!({ "reason": "from node B" }),
        )
        .await;
    assert_eq!(rolled.status, 200, "{:?}", rolled.body);
    assert!(fleet.all_on(1).await, "every server back");
    let view = a.wait_deployment_status(&id, "RolledBack").await;
    assert_eq!(view["rollback"]["reason"], "from node B", "{view}");
    assert_eq!(view["rollback"]["by"], crate::helpers::TEST_ADMIN, "{view}");
    fleet.stop().await;
    cluster.stop().await;
}

/// Redis goes away: the nodes keep serving their servers and REST, and a
/// deployment still reaches every server (each node reads the store every
/// `reconcile_ms`); Redis comes back on its port and, without a restart,
/// announcements and acks cross again.
#[actix_web::test]
async fn with_redis_down_nodes_keep_serving_and_catch_up_from_the_store() {
    let Some(mut cluster) = cluster(3).await else {
        return;
    };
    let key = setup(&cluster.nodes[0]).await;
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let fleet = fleet_on(&[a, b, c], &key, 9).await;
    let redis = cluster.redis.take().unwrap();
    let port = redis.port;
    drop(redis);
    let down = Instant::now();
    let id = start_deployment(a, "1.1.0", 50, json!({ "strategy": "Direct" })).await;
    assert!(fleet.all_on(2).await, "every server, through the store");
    eprintln!(
        "cluster without Redis: every server on the new revision {} ms after the deployment began",
        down.elapsed().as_millis()
    );
    a.wait_deployment_status(&id, "Completed").await;
    for node in [b, c] {
        let seen = node.get(&format!("/api/v1/deployments/{id}")).await;
        assert_eq!(seen.status, 200, "{:?}", seen.body);
        let ready = node.get("/ready").await;
        assert_eq!(ready.status, 503, "Redis is down: {:?}", ready.body);
        wait_for("the list says it is partial", async || {
            let list = node.get("/api/v1/game-servers").await.body;
            list["partial"] == true && list["items"].as_array().map(Vec::len) == Some(9)
        })
        .await;
    }
    let _back = PrivateRedis::start(Some(port));
    for node in [a, b, c] {
        wait_for("ready again", async || {
            node.get("/ready").await.status == 200
        })
        .await;
    }
    // Subscriptions come back within 2 s, and nodes hear each other's
    // `alive` every second.
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    let second = start_deployment(b, "1.2.0", 51, json!({ "strategy": "Direct" })).await;
    assert!(fleet.all_on(3).await);
    let view = b.wait_deployment_status(&second, "Completed").await;
    assert_eq!(view["acked"].as_i64(), Some(9), "acks cross again: {view}");
    wait_for("whole lists again", async || {
        let list = c.get("/api/v1/game-servers?connected=true").await.body;
        list.get("partial").is_none() && list["connected"] == 9
    })
    .await;
    fleet.stop().await;
    cluster.stop().await;
}

/// A server-wide live event created on node B starts once (one node holds
/// its lease and activates it; one deployment carries its override to the
/// servers on every node), every node's REST answers show it active, and
/// an operator ends it from node C (carried out by the event's owner).
#[actix_web::test]
async fn a_live_event_activates_once_and_is_ended_from_any_node() {
    let Some(cluster) = cluster(3).await else {
        return;
    };
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let key = setup(a).await;
    let fleet = fleet_on(&[a, b, c], &key, 9).await;
    let start = chrono::Utc::now() + chrono::Duration::seconds(2);
    let event = json!({
        "name": "double-loot",
        "displayName": "Double loot",
        "eventType": "LimitedTimeOffer",
        "overrides": [{ "config": CONFIG, "patch": { "weapons": { "rifle": { "damage": 90 } } } }],
        "schedule": {
            "startTime": start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "endTime": (start + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        },
    });
    let created = b.post_json("/api/v1/live-events", &event).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert!(
        fleet.all_on(2).await,
        "the event's override reached every server"
    );
    for node in [a, b, c] {
        wait_for("every node shows the event active", async || {
            node.get("/api/v1/live-events/double-loot").await.body["state"] == "Active"
        })
        .await;
    }
    let ended = c.post_empty("/api/v1/live-events/double-loot/end").await;
    assert_eq!(ended.status, 200, "{:?}", ended.body);
    assert!(fleet.all_on(1).await, "the override is undone everywhere");
    // Once: one activation in the trail, one deployment for its override.
    let trail = a.get("/api/v1/audit?limit=1000").await;
    let started = trail.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["action"] == "live-event.state" && row["summary"]["to"] == "Active")
        .count();
    assert_eq!(started, 1, "{}", trail.body);
    let deployments = a.get(&format!("/api/v1/deployments?config={CONFIG}")).await;
    assert_eq!(
        deployments.body["items"].as_array().map(Vec::len),
        Some(2),
        "the first version's and the event's: {}",
        deployments.body
    );
    fleet.stop().await;
    cluster.stop().await;
}

/// Someone who can publish on Redis but does not have the cluster's key
/// cannot act through it: a forged action (unsigned, or signed with
/// another key) is refused and counted, and the deployment stays as it is.
#[actix_web::test]
async fn forged_messages_on_redis_are_refused() {
    let Some(cluster) = cluster(2).await else {
        return;
    };
    let [a, b] = [&cluster.nodes[0], &cluster.nodes[1]];
    let key = setup(a).await;
    let fleet = fleet_on(&[a, b], &key, 6).await;
    let id = start_canary(a).await;
    let now = chrono::Utc::now().timestamp_millis();
    let forged = json!({
        "from": "node-b",
        "at": now,
        "message": {
            "type": "command", "request": "forged-1", "deployment": id,
            "action": { "action": "pause" },
            "actor": { "subject": "mallory", "role": "admin", "source": null, "request_id": null },
        },
    })
    .to_string();
    let port = cluster.redis.as_ref().unwrap().port.to_string();
    for payload in [forged.clone(), format!("{}.{forged}", "0".repeat(64))] {
        let published = std::process::Command::new("redis-cli")
            .args(["-p", &port, "PUBLISH", "hotswap:cluster", &payload])
            .output()
            .expect("redis-cli runs");
        assert!(published.status.success());
    }
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(deployment(a, &id).await["status"], "InProgress");
    let metrics = a
        .client
        .get(a.url("/metrics"))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hotswap_cluster_messages_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(refused >= 2.0, "both refused: {refused}");
    fleet.stop().await;
    cluster.stop().await;
}

/// A caller's rate limit is the cluster's: its burst spent on node A, the
/// next request on node B is refused with Retry-After too.
#[actix_web::test]
async fn a_principal_spends_one_budget_across_the_nodes() {
    let Some(url) = postgres_schema_url().await else {
        return;
    };
    let cluster = cluster_with(2, url, |settings| {
        settings.rate_limit.principal_per_minute = 6;
        settings.rate_limit.principal_burst = 4;
    })
    .await;
    let [a, b] = [&cluster.nodes[0], &cluster.nodes[1]];
    let token = a.token(hotswap::Role::Viewer, "carol");
    let get = async |node: &TestApp| {
        node.request("GET", "/api/v1/configs", Some(&token), None)
            .await
    };
    for _ in 0..2 {
        assert_eq!(get(a).await.status, 200);
        assert_eq!(get(b).await.status, 200);
    }
    // Each node alone would allow two more; the cluster's budget is spent.
    let refused = get(b).await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(get(a).await.status, 429);
    // Another principal has its own budget.
    let other = a.token(hotswap::Role::Viewer, "dave");
    assert_eq!(
        b.request("GET", "/api/v1/configs", Some(&other), None)
            .await
            .status,
        200
    );
    cluster.stop().await;
}

/// A segment made and changed on node A is known on node B (its book
/// rebuilt from the store), so B's players are matched against it.
#[actix_web::test]
async fn segments_changed_on_one_node_reach_the_others() {
    let Some(cluster) = cluster(2).await else {
        return;
    };
    let [a, b] = [&cluster.nodes[0], &cluster.nodes[1]];
    let made = a
        .post_json(
            "/api/v1/segments",
            &json!({ "name": "testers", "description": "QA accounts", "members": ["p1"] }),
        )
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    wait_for("B knows the segment", async || {
        b.get("/api/v1/segments/testers").await.body["members"] == 1
    })
    .await;
    let moved = a
        .post_json(
            "/api/v1/segments/testers/members",
            &json!({ "add": ["p2", "p3"] }),
        )
        .await;
    assert_eq!(moved.status, 200, "{:?}", moved.body);
    wait_for("B has its new members", async || {
        b.get("/api/v1/segments/testers").await.body["members"] == 3
    })
    .await;
    cluster.stop().await;
}
