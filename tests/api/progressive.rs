//! Progressive deployments end to end: real SDK clients whose simulated
//! players report metrics, healthy or regressing, against a real hub.

use crate::helpers::{Db, TestApp, balance, spawn_app_on, spawn_app_with};
use crate::on_both_databases;
use hotswap_client::{Client, ClientConfig, ConnectionState, protocol::Health};
use serde_json::{Value, json};
use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

const WAIT: Duration = Duration::from_secs(15);
pub(crate) const CONFIG: &str = "loot-tables";

/// How the players of servers on the bad revision behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    Healthy = 0,
    Crashes,
    Churn,
    Complaints,
    ShortSessions,
    LessEngagement,
    Errors,
    Latency,
    Unhealthy,
    /// Crashes ×3, but each server has a single player: too few samples.
    TinyCrashes,
}

const ALL_MODES: [Mode; 10] = [
    Mode::Healthy,
    Mode::Crashes,
    Mode::Churn,
    Mode::Complaints,
    Mode::ShortSessions,
    Mode::LessEngagement,
    Mode::Errors,
    Mode::Latency,
    Mode::Unhealthy,
    Mode::TinyCrashes,
];

/// Simulated game servers: each reports its players every 100 ms.
pub(crate) struct Fleet {
    clients: Vec<Arc<Client>>,
    mode: Arc<AtomicU8>,
    bad_revision: Arc<AtomicI64>,
    tiny: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Fleet {
    pub(crate) async fn start(
        app: &TestApp,
        key: &str,
        n: usize,
        region: impl Fn(usize) -> &'static str,
    ) -> Self {
        Self::start_on(&[app.ws_url()], key, n, region).await
    }

    /// Server `i` connects to `urls[i % urls.len()]` (nodes of a cluster).
    pub(crate) async fn start_on(
        urls: &[String],
        key: &str,
        n: usize,
        region: impl Fn(usize) -> &'static str,
    ) -> Self {
        let mode = Arc::new(AtomicU8::new(Mode::Healthy as u8));
        let bad_revision = Arc::new(AtomicI64::new(-1));
        let tiny = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for i in 0..n {
            let config = ClientConfig::new(urls[i % urls.len()].clone(), key, format!("gs-{i:03}"))
                .region(region(i))
                .environment("staging")
                .subscribe(CONFIG)
                .backoff(Duration::from_millis(50), Duration::from_millis(300));
            let client = Arc::new(Client::start(config).expect("client starts"));
            clients.push(client.clone());
            let (mode, bad, tiny, stop) = (
                mode.clone(),
                bad_revision.clone(),
                tiny.clone(),
                stop.clone(),
            );
            actix_web::rt::spawn(async move {
                let mut seed = 0x9e37_79b9_u64.wrapping_mul(i as u64 + 1);
                let mut noise = move |range: u64| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed % range.max(1)
                };
                while !stop.load(Ordering::Relaxed) {
                    let on_bad = client.revisions().get(CONFIG).copied()
                        == Some(bad.load(Ordering::Relaxed));
                    let mode = if on_bad {
                        ALL_MODES[mode.load(Ordering::Relaxed) as usize]
                    } else {
                        Mode::Healthy
                    };
                    simulate(&client, mode, tiny.load(Ordering::Relaxed), &mut noise);
                    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        for client in &clients {
            assert!(
                client
                    .wait_for_state(WAIT, |s| matches!(s, ConnectionState::Connected { .. }))
                    .await
            );
        }
        Fleet {
            clients,
            mode,
            bad_revision,
            tiny,
            stop,
        }
    }

    /// Waits (up to [`WAIT`]) until the deployment's revision reached a
    /// server and both its cohorts have more than 20 reports.
    pub(crate) async fn wait_cohorts_filled(&self, app: &TestApp, id: &str, revision: i64) {
        let deadline = Instant::now() + WAIT;
        while self.on(revision).is_empty() || !cohorts_filled(&deployment(app, id).await) {
            assert!(Instant::now() < deadline, "cohorts never filled");
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn regress(&self, revision: i64, mode: Mode) {
        self.bad_revision.store(revision, Ordering::Relaxed);
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    pub(crate) fn on(&self, revision: i64) -> BTreeSet<usize> {
        self.clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.revisions().get(CONFIG) == Some(&revision))
            .map(|(i, _)| i)
            .collect()
    }

    /// Waits until every server runs exactly `revision` (rollbacks go down).
    pub(crate) async fn all_on(&self, revision: i64) -> bool {
        let deadline = Instant::now() + WAIT;
        while self.on(revision).len() < self.clients.len() {
            if Instant::now() > deadline {
                return false;
            }
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    pub(crate) async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            if let Ok(client) = Arc::try_unwrap(client) {
                client.stop().await;
            }
        }
    }
}

/// One 100 ms tick of a server's players.
fn simulate(client: &Client, mode: Mode, tiny: bool, noise: &mut impl FnMut(u64) -> u64) {
    let players = if tiny || mode == Mode::TinyCrashes {
        1
    } else {
        200
    };
    client.set_players(players);
    client.set_health(if mode == Mode::Unhealthy {
        Health::Unhealthy
    } else {
        Health::Healthy
    });
    let m = client.metrics();
    let scale = u64::from(players);
    let jitter = |n: &mut dyn FnMut(u64) -> u64, base: u64| base + n(base / 4 + 1);
    let mut n = |r| noise(r);
    let started = match mode {
        Mode::LessEngagement => jitter(&mut n, scale / 20),
        _ => jitter(&mut n, scale / 10),
    };
    let churned = match mode {
        Mode::Churn => jitter(&mut n, scale / 30),
        _ => jitter(&mut n, scale / 100),
    };
    let crashes = match mode {
        Mode::Crashes => jitter(&mut n, scale / 30),
        Mode::TinyCrashes => 1,
        _ => jitter(&mut n, scale / 100),
    };
    let requests = scale * 5;
    let errors = match mode {
        Mode::Errors => jitter(&mut n, requests / 30),
        _ => jitter(&mut n, requests / 100),
    };
    let complaints = match mode {
        Mode::Complaints => jitter(&mut n, scale / 20),
        _ => 0,
    };
    m.add_counts(
        started, started, churned, crashes, errors, requests, complaints, 0,
    );
    for _ in 0..(scale / 10).max(1) {
        let latency = 20 + n(40);
        m.record_latency_ms(if mode == Mode::Latency {
            latency * 3
        } else {
            latency
        });
        let session = 300 + n(600);
        m.record_session_end(if mode == Mode::ShortSessions {
            session / 2
        } else {
            session
        });
    }
}

pub(crate) async fn setup(app: &TestApp) -> String {
    assert_eq!(
        app.create_config(CONFIG, "GameBalance", "staging")
            .await
            .status,
        201
    );
    let first = app.deploy(CONFIG, "1.0.0", balance(45)).await;
    assert_eq!(
        first.body["status"], "Completed",
        "no servers yet: {:?}",
        first.body
    );
    app.server_key(&[], &[]).await.0
}

pub(crate) async fn start_deployment(
    app: &TestApp,
    version: &str,
    damage: u32,
    plan: Value,
) -> String {
    let uploaded = app.post_version(CONFIG, version, balance(damage)).await;
    assert_eq!(uploaded.status, 201, "{:?}", uploaded.body);
    let mut body = json!({ "config": CONFIG, "version": version });
    for (k, v) in plan.as_object().unwrap() {
        body[k] = v.clone();
    }
    let created = app.post_json("/api/v1/deployments", &body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body["id"].as_str().unwrap().to_owned()
}

/// A server connecting now gets `revision`.
async fn newcomer_gets(app: &TestApp, key: &str, server_id: &str, revision: i64) -> bool {
    newcomer_in(app, key, server_id, "EU-WEST", revision).await
}

/// A server of `region` connecting now gets `revision`.
async fn newcomer_in(
    app: &TestApp,
    key: &str,
    server_id: &str,
    region: &str,
    revision: i64,
) -> bool {
    let client = Client::start(
        ClientConfig::new(app.ws_url(), key, server_id)
            .region(region)
            .environment("staging")
            .subscribe(CONFIG),
    )
    .expect("client starts");
    // The first frame is the whole document: exact, not "at least".
    let got = client.wait_for_revision(CONFIG, 0, WAIT).await
        && client.revisions().get(CONFIG) == Some(&revision);
    client.stop().await;
    got
}

/// Whether a deployment's view has two cohorts with more than 20 reports.
fn cohorts_filled(view: &Value) -> bool {
    view["live"]["cohorts"].as_array().is_some_and(|c| {
        c.iter()
            .filter(|c| c["window"]["reports"].as_u64() > Some(20))
            .count()
            >= 2
    })
}

pub(crate) async fn deployment(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/deployments/{id}")).await.body
}

/// Polls until the deployment's status is `status`.
async fn wait_status(app: &TestApp, id: &str, status: &str) -> Value {
    app.wait_deployment_status(id, status).await
}

async fn control(app: &TestApp, id: &str, action: &str) -> crate::helpers::Response {
    app.post_empty(&format!("/api/v1/deployments/{id}/{action}"))
        .await
}

async fn a_canary_advances_through_every_phase_and_completes(app: TestApp) {
    let key = setup(&app).await;
    let fleet = Fleet::start(&app, &key, 40, |_| "EU-WEST").await;
    assert!(fleet.all_on(1).await);
    let id = start_deployment(
        &app,
        "1.1.0",
        50,
        json!({ "strategy": "Canary", "phaseInterval": 0.4 }),
    )
    .await;
    // Phases in order, each covering a superset of the previous one.
    let mut seen_phases = Vec::new();
    let mut covered: BTreeSet<usize> = BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let view = deployment(&app, &id).await;
        let phase = view["phase"].as_i64().unwrap();
        if view["status"] == "InProgress" && seen_phases.last() != Some(&phase) {
            seen_phases.push(phase);
        }
        let now_on = fleet.on(2);
        assert!(
            covered.is_subset(&now_on) || view["status"] != "InProgress",
            "a server left the canary: {covered:?} → {now_on:?}"
        );
        covered = now_on;
        if view["status"] == "Completed" {
            break;
        }
        assert!(Instant::now() < deadline, "{view}");
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
    // The last phase completes at its last ack, maybe before a look saw
    // it in progress; the audit trail below shows each advance.
    assert!(
        seen_phases == [0, 1, 2, 3] || seen_phases == [0, 1, 2],
        "10 → 30 → 50 → 100 %: {seen_phases:?}"
    );
    assert!(fleet.all_on(2).await);
    assert!(
        newcomer_gets(&app, &key, "late-1", 2).await,
        "the config's active revision moved"
    );
    let trail = app
        .get(&format!("/api/v1/audit?resource=deployments/{id}"))
        .await;
    let advances = trail.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "deployment.advance")
        .count();
    assert_eq!(advances, 3);
    fleet.stop().await;
}

/// Each critical rule, one deployment each: the canary's players regress,
/// the hub rolls back by itself, every server returns to the previous
/// revision, and the record says what, when and how long.
async fn each_critical_rule_rolls_back_by_itself(app: TestApp) {
    let key = setup(&app).await;
    let fleet = Fleet::start(&app, &key, 30, |_| "EU-WEST").await;
    assert!(fleet.all_on(1).await);
    let cases = [
        (Mode::Crashes, "crashRate"),
        (Mode::Churn, "churnRate"),
        (Mode::Complaints, "complaintRate"),
        (Mode::ShortSessions, "sessionDuration"),
        (Mode::LessEngagement, "engagement"),
        (Mode::Errors, "errorRate"),
        (Mode::Latency, "p99Latency"),
        (Mode::Unhealthy, "healthCheckFailures"),
    ];
    for (round, (mode, metric)) in cases.into_iter().enumerate() {
        fleet.regress(-1, Mode::Healthy);
        let version = format!("1.{}.0", round + 1);
        let id = start_deployment(
            &app,
            &version,
            50 + round as u32,
            json!({ "strategy": "Canary", "phases": [50, 100], "phaseInterval": "PT1H" }),
        )
        .await;
        let view = deployment(&app, &id).await;
        let revision = view["revision"].as_i64().unwrap();
        let previous = view["previousRevision"].as_i64().unwrap();
        // Let both cohorts report healthy numbers first.
        fleet.wait_cohorts_filled(&app, &id, revision).await;
        let canary = fleet.on(revision);
        assert!(
            (5..=25).contains(&canary.len()),
            "about half of 30 servers: {}",
            canary.len()
        );
        assert_eq!(
            deployment(&app, &id).await["status"],
            "InProgress",
            "healthy: no rollback"
        );
        let injected = Instant::now();
        fleet.regress(revision, mode);
        let view = wait_status(&app, &id, "RolledBack").await;
        assert!(fleet.all_on(previous).await, "{mode:?}: every server back");
        let back = injected.elapsed();
        let rollback = &view["rollback"];
        assert_eq!(rollback["trigger"], "automatic", "{mode:?}: {rollback}");
        assert_eq!(
            rollback["metric"],
            metric,
            "{mode:?}: {}",
            serde_json::to_string_pretty(&view).unwrap()
        );
        assert_eq!(rollback["toRevision"], previous);
        for field in ["detectedAt", "rollbackStartedAt", "rollbackCompletedAt"] {
            assert!(rollback[field].is_string(), "{field}: {rollback}");
        }
        assert!(
            rollback["observed"].is_number() && rollback["baseline"].is_number(),
            "{rollback}"
        );
        assert_eq!(rollback["unacked"], json!([]));
        let status = app
            .get(&format!("/api/v1/deployments/{id}/rollback-status"))
            .await;
        assert_eq!(status.body["rollback"]["metric"], metric);
        eprintln!(
            "ROLLBACK {metric}: injected regression → every server back on the previous revision in {} ms (detection → last ack {} ms)",
            back.as_millis(),
            rollback["durationMs"]
        );
    }
    fleet.stop().await;
}

/// Noise, and a regression in a cohort too small to judge, roll nothing back.
async fn noise_and_small_samples_do_not_roll_back(app: TestApp) {
    let key = setup(&app).await;
    let fleet = Fleet::start(&app, &key, 20, |_| "EU-WEST").await;
    assert!(fleet.all_on(1).await);
    let id = start_deployment(
        &app,
        "1.1.0",
        50,
        json!({ "strategy": "Canary", "phases": [50, 100], "phaseInterval": "PT1H" }),
    )
    .await;
    // Healthy players with per-server noise for 3 s (the fast window is 2 s).
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    let view = deployment(&app, &id).await;
    assert_eq!(view["status"], "InProgress", "{view}");
    assert_ne!(view["live"]["judgement"]["verdict"], "rollback", "{view}");
    assert_eq!(
        control(&app, &id, "cancel").await.body["status"],
        "Cancelled"
    );
    fleet.stop().await;
    // Eight servers with one player each, the canary's crashing three
    // times as often: far too few players to judge, so nothing rolls back.
    let fleet = Fleet::start(&app, &key, 8, |_| "EU-WEST").await;
    fleet.tiny.store(true, Ordering::Relaxed);
    assert!(fleet.all_on(1).await);
    // A canary with servers in it (a 50 % canary of 8 is empty once in 256:
    // then another is started, so the regression really runs).
    let mut attempt = 0;
    let (id, revision) = loop {
        let id = start_deployment(
            &app,
            &format!("1.2.{attempt}"),
            51,
            json!({ "strategy": "Canary", "phases": [50, 100], "phaseInterval": "PT1H" }),
        )
        .await;
        let revision = deployment(&app, &id).await["revision"].as_i64().unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while fleet.on(revision).is_empty() && Instant::now() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        if !fleet.on(revision).is_empty() {
            break (id, revision);
        }
        assert_eq!(control(&app, &id, "cancel").await.status, 200);
        attempt += 1;
        assert!(attempt < 4, "four empty canaries in a row");
    };
    fleet.regress(revision, Mode::TinyCrashes);
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    let view = deployment(&app, &id).await;
    assert_eq!(view["status"], "InProgress", "{view}");
    let crash = view["live"]["judgement"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metric"] == "crashRate")
        .unwrap()
        .clone();
    assert_eq!(crash["level"], "notEnoughData", "{crash}");
    fleet.stop().await;
}

async fn rolling_blue_green_and_geographic_go_in_order(app: TestApp) {
    let key = setup(&app).await;
    let regions = ["EU-WEST", "NA-WEST", "APAC"];
    let fleet = Fleet::start(&app, &key, 24, |i| regions[i % 3]).await;
    assert!(fleet.all_on(1).await);

    // Rolling: batches of 5, each acked before the next.
    let id = start_deployment(
        &app,
        "1.1.0",
        50,
        json!({ "strategy": "Rolling", "batchSize": 5, "batchInterval": 0.15 }),
    )
    .await;
    let mut counts = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let on = fleet.on(2).len();
        if counts.last() != Some(&on) {
            counts.push(on);
        }
        if deployment(&app, &id).await["status"] == "Completed" {
            break;
        }
        assert!(Instant::now() < deadline);
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fleet.all_on(2).await);
    assert!(counts.windows(2).all(|w| w[1] >= w[0]), "{counts:?}");
    // A batch is a bucket limit: servers sharing a bucket (a birthday
    // collision, a few runs in a hundred) move together, past the size.
    let mut buckets: Vec<u32> = (0..24)
        .map(|i| hotswap::domain::rollout::bucket(&id, &format!("gs-{i:03}")))
        .collect();
    buckets.sort_unstable();
    let tied = buckets.windows(2).filter(|w| w[0] == w[1]).count();
    assert!(
        counts.windows(2).all(|w| w[1] - w[0] <= 5 + tied),
        "never more than one batch at once: {counts:?} ({tied} tied buckets)"
    );
    if tied == 0 {
        assert!(counts.contains(&5) && counts.contains(&10), "{counts:?}");
    }

    // Blue-green: the green half first, then everyone, then blue is let go.
    let id = start_deployment(
        &app,
        "1.2.0",
        51,
        json!({ "strategy": "BlueGreen", "verificationPeriod": 0.5, "keepBlueDuration": 0.5 }),
    )
    .await;
    let deadline = Instant::now() + WAIT;
    while fleet.on(3).is_empty() {
        assert!(Instant::now() < deadline);
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    actix_web::rt::time::sleep(Duration::from_millis(150)).await;
    let green = fleet.on(3).len();
    assert!((4..=20).contains(&green), "about half is green: {green}");
    let view = deployment(&app, &id).await;
    assert_eq!(
        (view["status"].as_str(), view["phase"].as_i64()),
        (Some("InProgress"), Some(0))
    );
    assert!(fleet.all_on(3).await, "the switch");
    let switched = deployment(&app, &id).await;
    assert_eq!(switched["phase"], 1, "blue kept warm after the switch");
    wait_status(&app, &id, "Completed").await;

    // Geographic: EU-WEST, then NA-WEST, then APAC.
    let id = start_deployment(
        &app,
        "1.3.0",
        52,
        json!({ "strategy": "Geographic", "regions": regions, "phaseInterval": 0.4 }),
    )
    .await;
    let region_of = |i: usize| regions[i % 3];
    let mut order: Vec<&str> = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let on: BTreeSet<&str> = fleet.on(4).into_iter().map(region_of).collect();
        for region in regions {
            if on.contains(region) && !order.contains(&region) {
                order.push(region);
            }
        }
        // A region is covered whole before the next one starts.
        for (index, region) in order.iter().enumerate() {
            if index + 1 < order.len() {
                assert!(
                    (0..24)
                        .filter(|i| region_of(*i) == *region)
                        .all(|i| fleet.on(4).contains(&i)),
                    "{region} not whole when the next region started"
                );
            }
        }
        if deployment(&app, &id).await["status"] == "Completed" {
            break;
        }
        assert!(Instant::now() < deadline);
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(order, regions);
    assert!(fleet.all_on(4).await);
    fleet.stop().await;
}

async fn operators_pause_resume_promote_cancel_and_roll_back(app: TestApp) {
    let key = setup(&app).await;
    let fleet = Fleet::start(&app, &key, 20, |_| "EU-WEST").await;
    assert!(fleet.all_on(1).await);
    let id = start_deployment(
        &app,
        "1.1.0",
        50,
        json!({ "strategy": "Canary", "phases": [25, 50, 100], "autoPromote": false, "phaseInterval": 0 }),
    )
    .await;
    let developer = app.token(hotswap::Role::Developer, "dev");
    assert_eq!(
        app.request(
            "POST",
            &format!("/api/v1/deployments/{id}/pause"),
            Some(&developer),
            None
        )
        .await
        .status,
        403
    );
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(deployment(&app, &id).await["phase"], 0, "no auto-promotion");
    assert_eq!(control(&app, &id, "pause").await.body["status"], "Paused");
    assert_eq!(control(&app, &id, "pause").await.status, 409);
    // Paused, it is still judged, and what it sees is published.
    let judged = |view: Value| view["live"]["evaluatedAt"].as_str().map(str::to_owned);
    let before = judged(deployment(&app, &id).await);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let after = judged(deployment(&app, &id).await);
    assert!(
        after.is_some() && after > before,
        "paused, evaluated at {before:?} then {after:?}"
    );
    let resumed = control(&app, &id, "resume").await;
    assert_eq!(resumed.body["status"], "InProgress");
    let promoted = control(&app, &id, "promote").await;
    assert_eq!(
        (
            promoted.body["status"].as_str(),
            promoted.body["phase"].as_i64()
        ),
        (Some("InProgress"), Some(1))
    );
    let half = fleet.on(2).len();
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(fleet.on(2).len() >= half);
    // Thresholds can change while it runs.
    let tightened = app
        .post_json(
            &format!("/api/v1/deployments/{id}/rollback-thresholds"),
            &json!({ "thresholds": [{ "metric": "crashRate", "warning": 0.01, "critical": 0.02 }] }),
        )
        .await;
    assert_eq!(tightened.status, 200, "{:?}", tightened.body);
    let crash = tightened.body["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metric"] == "crashRate")
        .unwrap()
        .clone();
    assert_eq!(crash["critical"], 0.02);
    let bad = app
        .post_json(
            &format!("/api/v1/deployments/{id}/rollback-thresholds"),
            &json!({ "thresholds": [{ "metric": "crashRate", "warning": 0.5, "critical": 0.1 }] }),
        )
        .await;
    assert_eq!(bad.status, 422);
    // Cancel: whoever got 1.1.0 goes back to 1.0.0.
    let cancelled = control(&app, &id, "cancel").await;
    assert_eq!(
        cancelled.body["status"], "Cancelled",
        "{:?}",
        cancelled.body
    );
    assert!(fleet.all_on(1).await);
    assert_eq!(control(&app, &id, "resume").await.status, 409);

    // A manual rollback mid-deployment.
    let id = start_deployment(
        &app,
        "1.2.0",
        51,
        json!({ "strategy": "Canary", "phases": [50, 100], "autoPromote": false }),
    )
    .await;
    let rolled = control(&app, &id, "rollback").await;
    assert_eq!(rolled.status, 200, "{:?}", rolled.body);
    let view = wait_status(&app, &id, "RolledBack").await;
    assert_eq!(view["rollback"]["trigger"], "manual");
    assert!(fleet.all_on(1).await);

    // The kill switch: a completed deployment rolled back on every server.
    let id = start_deployment(&app, "1.3.0", 52, json!({ "strategy": "Direct" })).await;
    wait_status(&app, &id, "Completed").await;
    assert!(fleet.all_on(4).await);
    let started = Instant::now();
    assert_eq!(control(&app, &id, "rollback").await.status, 200);
    assert!(fleet.all_on(1).await, "every server back on 1.0.0");
    let view = wait_status(&app, &id, "RolledBack").await;
    eprintln!(
        "KILL SWITCH: 20 servers back in {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(view["rollback"]["toRevision"], 1);
    assert!(
        newcomer_gets(&app, &key, "late-1", 1).await,
        "the active revision went back"
    );
    assert_eq!(
        control(&app, &id, "rollback").await.status,
        409,
        "not twice"
    );

    // Supersede: a second deployment replaces one in flight only when asked.
    let first = start_deployment(
        &app,
        "1.4.0",
        53,
        json!({ "strategy": "Canary", "autoPromote": false }),
    )
    .await;
    app.post_version(CONFIG, "1.5.0", balance(54)).await;
    let clash = app
        .post_json(
            "/api/v1/deployments",
            &json!({ "config": CONFIG, "version": "1.5.0", "strategy": "Direct" }),
        )
        .await;
    assert_eq!(clash.status, 409);
    assert_eq!(clash.body["code"], "deployment_in_progress");
    let replaced = app
        .post_json(
            "/api/v1/deployments",
            &json!({ "config": CONFIG, "version": "1.5.0", "strategy": "Direct", "supersede": true }),
        )
        .await;
    assert_eq!(replaced.status, 201, "{:?}", replaced.body);
    assert_eq!(deployment(&app, &first).await["status"], "Cancelled");
    assert!(fleet.all_on(6).await);
    fleet.stop().await;
}

async fn an_ab_test_splits_servers_by_variant_and_keeps_metrics_per_variant(app: TestApp) {
    let key = setup(&app).await;
    let fleet = Fleet::start(&app, &key, 20, |_| "EU-WEST").await;
    assert!(fleet.all_on(1).await);
    app.post_version(CONFIG, "1.1.0", balance(60)).await;
    // Weights that would overflow a sum are refused.
    let overflowing = app
        .post_json(
            "/api/v1/deployments",
            &json!({ "config": CONFIG, "strategy": "ABTest", "variants": [
                { "name": "control", "version": "1.0.0", "weight": 1e308 },
                { "name": "boosted", "version": "1.1.0", "weight": 1e308 },
            ]}),
        )
        .await;
    assert_eq!(overflowing.status, 422, "{:?}", overflowing.body);
    assert_eq!(overflowing.body["code"], "invalid_deployment");
    let created = app
        .post_json(
            "/api/v1/deployments",
            &json!({ "config": CONFIG, "strategy": "ABTest", "variants": [
                { "name": "control", "version": "1.0.0", "weight": 50 },
                { "name": "boosted", "version": "1.1.0", "weight": 50 },
            ]}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + WAIT;
    loop {
        let view = deployment(&app, &id).await;
        let cohorts = view["live"]["cohorts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let reports = |name: &str| {
            cohorts
                .iter()
                .find(|c| c["cohort"] == name)
                .and_then(|c| c["window"]["reports"].as_u64())
                .unwrap_or(0)
        };
        if reports("control") > 5 && reports("boosted") > 5 {
            let servers: u64 = cohorts.iter().map(|c| c["servers"].as_u64().unwrap()).sum();
            assert_eq!(servers, 20, "{cohorts:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{view}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let boosted = fleet.on(2).len();
    assert!((4..=16).contains(&boosted), "{boosted}");
    assert_eq!(fleet.on(1).len() + boosted, 20);
    assert_eq!(control(&app, &id, "promote").await.status, 409);
    assert_eq!(
        control(&app, &id, "cancel").await.body["status"],
        "Cancelled"
    );
    assert!(fleet.all_on(1).await);
    fleet.stop().await;
}

async fn metrics_are_aggregated_and_feedback_counts_in_cohorts(app: TestApp) {
    let key = setup(&app).await;
    // 12 servers: a 50 % canary of them is empty once in 4,096 runs.
    let fleet = Fleet::start(
        &app,
        &key,
        12,
        |i| if i % 2 == 0 { "EU-WEST" } else { "APAC" },
    )
    .await;
    assert!(fleet.all_on(1).await);
    let id = start_deployment(
        &app,
        "1.1.0",
        50,
        json!({ "strategy": "Canary", "phases": [50, 100], "autoPromote": false }),
    )
    .await;
    // Both cohorts report, into the minute aggregates.
    let by_deployment = format!("/api/v1/metrics/aggregated?deployment={id}");
    let deadline = Instant::now() + WAIT;
    let (all, cohorts) = loop {
        let all = app.get("/api/v1/metrics/aggregated?window=PT5M").await;
        assert_eq!(all.status, 200, "{:?}", all.body);
        let cohorts = app.get(&by_deployment).await.body["cohorts"].clone();
        let reported = |name: &str| cohorts[name]["reports"].as_u64().unwrap_or(0) > 0;
        if all.body["total"]["reports"].as_u64().unwrap() >= 12
            && reported("baseline")
            && reported("canary")
        {
            break (all, cohorts);
        }
        assert!(Instant::now() < deadline, "{:?} {cohorts:?}", all.body);
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(all.body["total"]["latencyMs"]["p99"].as_u64().unwrap() >= 20);
    let eu = app
        .get("/api/v1/metrics/aggregated?region=EU-WEST&window=300")
        .await;
    // Read after EU's, so reports that arrived between the two reads do not
    // make one region outnumber an older total.
    let all_after = app.get("/api/v1/metrics/aggregated?window=PT5M").await;
    assert!(
        eu.body["total"]["reports"].as_u64().unwrap()
            < all_after.body["total"]["reports"].as_u64().unwrap(),
        "{:?} {:?}",
        eu.body,
        all_after.body
    );
    assert_eq!(
        cohorts.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["baseline", "canary"],
        "{cohorts:?}"
    );
    let forever = app.get("/api/v1/metrics/aggregated?window=forever").await;
    assert_eq!(
        (forever.status, forever.body["code"].as_str()),
        (400, Some("invalid_query"))
    );
    assert_eq!(
        app.get("/api/v1/metrics/aggregated?deployment=")
            .await
            .status,
        200,
        "an empty filter is no filter"
    );

    // A complaint about a canary server (one of the deployment's own)
    // counts in the canary cohort.
    let canary = app
        .get(&format!("/api/v1/deployments/{id}/servers"))
        .await
        .body["items"][0]["serverId"]
        .as_str()
        .expect("the canary has servers")
        .to_owned();
    let before = app
        .get(&format!("/api/v1/deployments/{id}/metrics"))
        .await
        .body;
    let complaints = |body: &Value| {
        body["cohorts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cohort"] == "canary")
            .map_or(0, |c| c["window"]["complaints"].as_u64().unwrap())
    };
    let receipt = app
        .post_json(
            "/api/v1/metrics/player-feedback",
            &json!({ "kind": "complaint", "serverId": canary, "playerId": "p-17", "category": "balance", "message": "the new shotgun is broken" }),
        )
        .await;
    assert_eq!(receipt.status, 201, "{:?}", receipt.body);
    assert_eq!(receipt.body["deployments"], json!([id]));
    let deadline = Instant::now() + WAIT;
    while complaints(
        &app.get(&format!("/api/v1/deployments/{id}/metrics"))
            .await
            .body,
    ) <= complaints(&before)
    {
        assert!(Instant::now() < deadline);
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    for bad in [
        json!({ "kind": "rating", "rating": 9 }),
        json!({ "kind": "shout" }),
        json!({ "kind": "complaint", "serverId": "nobody" }),
        json!({ "kind": "complaint", "message": "" }),
    ] {
        assert_eq!(
            app.post_json("/api/v1/metrics/player-feedback", &bad)
                .await
                .status,
            422,
            "{bad}"
        );
    }
    fleet.stop().await;
}

/// Geographic: one region rolled back on its own while the others go on.
async fn a_geographic_region_rolls_back_alone(app: TestApp) {
    let key = setup(&app).await;
    let regions = ["EU-WEST", "NA-WEST", "APAC"];
    let region_of = |i: usize| regions[i % 3];
    let fleet = Fleet::start(&app, &key, 18, region_of).await;
    assert!(fleet.all_on(1).await);
    let id = start_deployment(
        &app,
        "1.1.0",
        50,
        json!({ "strategy": "Geographic", "regions": regions, "phaseInterval": 60 }),
    )
    .await;
    let in_region =
        |region: &str| -> BTreeSet<usize> { (0..18).filter(|i| region_of(*i) == region).collect() };
    let deadline = Instant::now() + WAIT;
    while fleet.on(2) != in_region("EU-WEST") {
        assert!(
            Instant::now() < deadline,
            "EU-WEST first: {:?}",
            fleet.on(2)
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }

    let path = format!("/api/v1/deployments/{id}/rollback");
    let unknown = app.post_json(&path, &json!({ "region": "MARS" })).await;
    assert_eq!(unknown.status, 422, "{:?}", unknown.body);
    assert_eq!(
        unknown.headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    let rolled = app
        .post_json(
            &path,
            &json!({ "region": "EU-WEST", "reason": "desync reports" }),
        )
        .await;
    assert_eq!(rolled.status, 200, "{:?}", rolled.body);
    assert_eq!(rolled.body["status"], "Paused", "{:?}", rolled.body);
    assert!(fleet.all_on(1).await, "EU-WEST is back on 1.0.0");
    assert!(fleet.on(2).is_empty());

    // Resumed and promoted: the other regions go on, EU-WEST stays back.
    assert_eq!(
        control(&app, &id, "resume").await.body["status"],
        "InProgress"
    );
    let promoted = control(&app, &id, "promote").await;
    assert_eq!(promoted.body["phase"], 1, "{:?}", promoted.body);
    let deadline = Instant::now() + WAIT;
    while fleet.on(2) != in_region("NA-WEST") {
        assert!(Instant::now() < deadline, "NA-WEST next: {:?}", fleet.on(2));
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    control(&app, &id, "promote").await;
    control(&app, &id, "promote").await;
    wait_status(&app, &id, "Completed").await;
    let expected: BTreeSet<usize> = in_region("NA-WEST")
        .union(&in_region("APAC"))
        .copied()
        .collect();
    let deadline = Instant::now() + WAIT;
    while fleet.on(2) != expected {
        assert!(Instant::now() < deadline, "{:?}", fleet.on(2));
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(newcomer_in(&app, &key, "late-eu", "EU-WEST", 1).await);
    assert!(newcomer_in(&app, &key, "late-apac", "APAC", 2).await);
    let audit = app
        .get(&format!("/api/v1/audit?resource=deployments/{id}"))
        .await;
    assert_eq!(audit.status, 200, "{:?}", audit.body);
    let region_rollback = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "deployment.rollback-region")
        .cloned();
    assert_eq!(
        region_rollback.expect("audited")["summary"]["region"],
        "EU-WEST"
    );
    fleet.stop().await;
}

/// No tick for a minute: within the test, only an ack moves a deployment.
fn ticks_a_minute_apart(settings: &mut hotswap::settings::Settings) {
    settings.deployments.evaluate_every_ms = 60_000;
}

/// The next frame of `weapon-balance`, which must be `revision` (not acked).
async fn frame_of(socket: &mut crate::sockets::Socket, revision: i64) {
    use hotswap_client::protocol::HubMessage;
    loop {
        match crate::sockets::next_message(socket).await {
            Ok(
                HubMessage::Snapshot { revision: got, .. }
                | HubMessage::Delta { revision: got, .. },
            ) => {
                assert_eq!(got, revision);
                return;
            }
            Ok(_) => continue,
            Err(code) => panic!("closed ({code:?}) before revision {revision}"),
        }
    }
}

/// `weapon-balance` at 1.0.0 on raw servers of these ids, each welcomed
/// and on it; then a Direct deployment of 1.1.0 (revision 2), its id.
async fn direct_to_raw_servers(
    app: &TestApp,
    ids: &[&str],
) -> (Vec<crate::sockets::Socket>, String) {
    deploy_to_raw_servers(app, ids, json!({"strategy": "Direct"})).await
}

/// As [`direct_to_raw_servers`], with the deployment's `plan`.
async fn deploy_to_raw_servers(
    app: &TestApp,
    ids: &[&str],
    plan: Value,
) -> (Vec<crate::sockets::Socket>, String) {
    use crate::attacks::{config_at_revision_one, hello_as, key, receives_revision, welcomed};
    config_at_revision_one(app, "weapon-balance", "staging").await;
    let (key, _) = key(app, &[]).await;
    let mut sockets = Vec::new();
    for id in ids {
        let mut socket = crate::sockets::raw(app, Some(&key)).await.unwrap();
        welcomed(&mut socket, hello_as(id, "staging")).await;
        receives_revision(&mut socket, 1).await;
        sockets.push(socket);
    }
    app.post_version("weapon-balance", "1.1.0", balance(52))
        .await;
    let mut body = json!({"config": "weapon-balance", "version": "1.1.0"});
    for (k, v) in plan.as_object().unwrap() {
        body[k] = v.clone();
    }
    let created = app.post_json("/api/v1/deployments", &body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    (sockets, id)
}

/// Three servers each get `revision`; the first two ack and the
/// deployment stays `waiting`; the third acks and it is `moved` within 5 s
/// (the tick is a minute away). Its view then.
async fn acked_one_by_one(
    app: &TestApp,
    id: &str,
    sockets: &mut [crate::sockets::Socket],
    revision: i64,
    waiting: &str,
    moved: &str,
) -> Value {
    use hotswap_client::protocol::{self, ServerMessage};
    let ack = protocol::encode(&ServerMessage::Ack(protocol::Ack {
        config: "weapon-balance".into(),
        revision,
        ok: true,
        error: None,
        apply_micros: 10,
    }));
    for socket in sockets.iter_mut() {
        frame_of(socket, revision).await;
    }
    for socket in &mut sockets[..2] {
        crate::sockets::send(socket, ack.clone()).await;
    }
    let deadline = Instant::now() + WAIT;
    let view = loop {
        let view = deployment(app, id).await;
        if view["acked"] == 2 || Instant::now() > deadline {
            break view;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (
            view["status"].as_str(),
            view["acked"].as_i64(),
            view["pushed"].as_i64()
        ),
        (Some(waiting), Some(2), Some(1)),
        "{view}"
    );
    let acked_at = Instant::now();
    crate::sockets::send(&mut sockets[2], ack).await;
    let view = wait_status(app, id, moved).await;
    assert!(
        acked_at.elapsed() < Duration::from_secs(5),
        "{moved} {:?} after the last ack",
        acked_at.elapsed()
    );
    view
}

/// A direct deployment waits only for its servers' acks: it completes at
/// the last one, not at the next tick (a minute away here); so does its
/// kill switch.
async fn the_last_ack_completes_a_deployment_and_its_kill_switch_at_once(app: TestApp) {
    let (mut sockets, id) = direct_to_raw_servers(&app, &["gs-0", "gs-1", "gs-2"]).await;
    // Two of three acked: it waits for the third, then moves at its ack.
    let view = acked_one_by_one(&app, &id, &mut sockets, 2, "InProgress", "Completed").await;
    assert_eq!(
        (view["acked"].as_i64(), view["pushed"].as_i64()),
        (Some(3), Some(0))
    );

    // The kill switch tracks the servers it moves back: rolling back until
    // the last of them acked, rolled back at that ack.
    let rolled = app
        .post_empty(&format!("/api/v1/deployments/{id}/rollback"))
        .await;
    assert_eq!(rolled.status, 200, "{:?}", rolled.body);
    let view = acked_one_by_one(&app, &id, &mut sockets, 1, "RollingBack", "RolledBack").await;
    assert_eq!(view["rollback"]["toRevision"], 1);
}

/// A server that fails to apply answers, but its failure never steps the
/// run: it is sent the revision again by the step the last good ack asks
/// for, then at the next evaluation (a minute away here), not again and
/// again at once.
async fn a_failing_server_does_not_step_a_deployment_again_and_again(app: TestApp) {
    use hotswap_client::protocol::{self, ServerMessage};
    let (mut sockets, id) = direct_to_raw_servers(&app, &["good", "broken"]).await;
    let ack = |ok: bool| {
        protocol::encode(&ServerMessage::Ack(protocol::Ack {
            config: "weapon-balance".into(),
            revision: 2,
            ok,
            error: (!ok).then(|| "rejected".into()),
            apply_micros: 10,
        }))
    };
    frame_of(&mut sockets[1], 2).await;
    crate::sockets::send(&mut sockets[1], ack(false)).await;
    frame_of(&mut sockets[0], 2).await;
    crate::sockets::send(&mut sockets[0], ack(true)).await;
    // The good server's ack was the last: its early step sends the broken
    // one the revision again. Its failure steps nothing; but when it comes
    // back before that step counts, nobody is left waiting and the
    // deployment completes (a failure answers), whose reconcile sends the
    // active revision once more. A failure that stepped the run would make
    // it dozens of times here.
    let mut again = 0;
    while let Ok(frame) = tokio::time::timeout(
        Duration::from_millis(1500),
        crate::sockets::next_message(&mut sockets[1]),
    )
    .await
    {
        assert!(frame.is_ok(), "closed: {frame:?}");
        again += 1;
        assert!(
            again <= 2,
            "sent again and again: {again} times, now {frame:?}"
        );
        crate::sockets::send(&mut sockets[1], ack(false)).await;
    }
    let view = deployment(&app, &id).await;
    let status = view["status"].as_str();
    assert!(
        status == Some("InProgress") || (status == Some("Completed") && again == 2),
        "{view}"
    );
    assert_eq!(
        (view["acked"].as_i64(), view["failed"].as_i64()),
        (Some(1), Some(1)),
        "{view}"
    );
}

/// A rolling deployment that stops on failure rolls back once a server of
/// its batch fails to apply (seen before the step sends it the revision
/// again).
async fn a_rolling_deployment_stops_on_a_failed_server(app: TestApp) {
    use hotswap_client::protocol::{self, HubMessage, ServerMessage};
    let (mut sockets, id) = deploy_to_raw_servers(
        &app,
        &["r-0", "r-1", "r-2"],
        json!({"strategy": "Rolling", "batchSize": 2, "stopOnFailure": true}),
    )
    .await;
    let failed = protocol::encode(&ServerMessage::Ack(protocol::Ack {
        config: "weapon-balance".into(),
        revision: 2,
        ok: false,
        error: Some("rejected".into()),
        apply_micros: 10,
    }));
    // Those of the first batch get 1.1.0 and fail to apply it. All three
    // are read at once: a socket left unread misses the hub's heartbeats
    // (300 ms here) and is dropped as dead.
    let in_batch = futures_util::future::join_all(sockets.iter_mut().map(|socket| {
        let failed = failed.clone();
        async move {
            let got = tokio::time::timeout(
                Duration::from_millis(1000),
                crate::sockets::next_message(socket),
            )
            .await;
            let sent = matches!(
                got,
                Ok(Ok(HubMessage::Snapshot { revision: 2, .. }
                    | HubMessage::Delta { revision: 2, .. }))
            );
            if sent {
                crate::sockets::send(socket, failed).await;
            }
            sent
        }
    }))
    .await
    .into_iter()
    .filter(|sent| *sent)
    .count();
    assert_eq!(in_batch, 2, "a batch of two");
    let view = wait_status(&app, &id, "RolledBack").await;
    let reason = view["rollback"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("failed to apply: rejected"), "{view}");
}

on_both_databases!(
    a_rolling_deployment_stops_on_a_failed_server,
    the_last_ack_completes_a_deployment_and_its_kill_switch_at_once with ticks_a_minute_apart,
    a_failing_server_does_not_step_a_deployment_again_and_again with ticks_a_minute_apart,
    a_geographic_region_rolls_back_alone,
    a_canary_advances_through_every_phase_and_completes,
    each_critical_rule_rolls_back_by_itself,
    noise_and_small_samples_do_not_roll_back,
    rolling_blue_green_and_geographic_go_in_order,
    operators_pause_resume_promote_cancel_and_roll_back,
    an_ab_test_splits_servers_by_variant_and_keeps_metrics_per_variant,
    metrics_are_aggregated_and_feedback_counts_in_cohorts,
);

/// A hub killed mid-deployment: a new process on the same store resumes
/// it in its phase, with the same canary servers, and finishes it.
async fn a_restarted_hub_resumes_and_finishes_a_deployment(db: Db) {
    let Some(app) = crate::helpers::spawn_app(db).await else {
        return;
    };
    let key = setup(&app).await;
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
    let fleet = Fleet::start(&app, &key, 20, |_| "EU-WEST").await;
    assert!(fleet.all_on(1).await);
    let id = start_deployment(
        &app,
        "1.1.0",
        50,
        json!({ "strategy": "Canary", "phases": [30, 60, 100], "autoPromote": false }),
    )
    .await;
    let deadline = Instant::now() + WAIT;
    while deployment(&app, &id).await["pushed"] != 0 {
        assert!(Instant::now() < deadline);
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let canary = fleet.on(2);
    app.shutdown.shutdown().await;
    let (db, url, dir) = app.into_parts();
    let again = spawn_app_on(db, url, dir, move |s| s.bind = format!("127.0.0.1:{port}")).await;
    for client in &fleet.clients {
        assert!(
            client
                .wait_for_state(WAIT, |s| matches!(s, ConnectionState::Connected { .. }))
                .await
        );
    }
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    let view = deployment(&again, &id).await;
    assert_eq!(
        (view["status"].as_str(), view["phase"].as_i64()),
        (Some("InProgress"), Some(0)),
        "{view}"
    );
    assert_eq!(fleet.on(2), canary, "the same canary after the restart");
    let promoted = control(&again, &id, "promote").await;
    assert_eq!(promoted.status, 200, "{:?}", promoted.body);
    let grown = {
        let deadline = Instant::now() + WAIT;
        loop {
            let on = fleet.on(2);
            if on.len() > canary.len() {
                break on;
            }
            assert!(Instant::now() < deadline);
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(canary.is_subset(&grown));
    control(&again, &id, "promote").await;
    wait_status(&again, &id, "Completed").await;
    assert!(fleet.all_on(2).await);
    fleet.stop().await;
}

#[actix_web::test]
async fn a_restarted_hub_resumes_and_finishes_a_deployment_on_sqlite() {
    a_restarted_hub_resumes_and_finishes_a_deployment(Db::Sqlite).await;
}

#[actix_web::test]
async fn a_restarted_hub_resumes_and_finishes_a_deployment_on_postgres() {
    a_restarted_hub_resumes_and_finishes_a_deployment(Db::Postgres).await;
}

/// A rollback posts an alert to the webhook.
#[actix_web::test]
async fn a_rollback_alerts_the_webhook() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = format!("http://{}/alerts", listener.local_addr().unwrap());
    let received = Arc::new(std::sync::Mutex::new(String::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut buffer = vec![0u8; 64 * 1024];
            let mut text = String::new();
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buffer[..n]));
                if text.contains("deployment.rollback") && text.trim_end().ends_with('}') {
                    break;
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
            *sink.lock().unwrap() = text;
        }
    });
    let app = spawn_app_with(Db::Sqlite, |s| s.deployments.alert_webhook = hook)
        .await
        .unwrap();
    let key = setup(&app).await;
    let fleet = Fleet::start(&app, &key, 4, |_| "EU-WEST").await;
    assert!(fleet.all_on(1).await);
    let id = start_deployment(
        &app,
        "1.1.0",
        50,
        json!({ "strategy": "Canary", "autoPromote": false }),
    )
    .await;
    control(&app, &id, "rollback").await;
    wait_status(&app, &id, "RolledBack").await;
    let deadline = Instant::now() + WAIT;
    while !received.lock().unwrap().contains(&id) {
        assert!(Instant::now() < deadline, "no alert arrived");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let text = received.lock().unwrap().clone();
    assert!(text.starts_with("POST /alerts"), "{text}");
    assert!(text.contains("\"trigger\":\"manual\""), "{text}");
    fleet.stop().await;
}

/// A live event rolled out as a canary with a crash guardrail: when the
/// players of the servers in the event crash, the guardrail rolls its
/// deployment back, every server returns to the base revision, and the
/// event ends `RolledBack`.
async fn a_live_event_guardrail_breach_ends_the_event_and_restores_servers(app: TestApp) {
    let key = setup(&app).await;
    let fleet = Fleet::start(&app, &key, 30, |_| "EU-WEST").await;
    assert!(fleet.all_on(1).await);
    let start = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    let end = start + chrono::Duration::hours(1);
    let created = app
        .post_json(
            "/api/v1/live-events",
            &json!({
                "name": "crash-prone-festival",
                "eventType": "SeasonalPromotion",
                "overrides": [{"config": CONFIG, "patch": {"weapons": {"rifle": {"damage": 99}}}}],
                "schedule": {"startTime": start.to_rfc3339(), "endTime": end.to_rfc3339()},
                "rollout": {"strategy": "Canary", "phases": [50, 100], "phaseInterval": "PT1H"},
                "guardrails": [{"metric": "crashRate", "warning": 0.015, "critical": 0.02}],
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    // The event's version (revision 2) reaches about half of the servers.
    let deadline = Instant::now() + WAIT;
    while fleet.on(2).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the event never reached a server: {:?}",
            app.get("/api/v1/live-events/crash-prone-festival")
                .await
                .body
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let event = app
        .get("/api/v1/live-events/crash-prone-festival")
        .await
        .body;
    assert_eq!(event["state"], "Active", "{event:?}");
    let versions = app
        .get(&format!("/api/v1/configs/{CONFIG}/versions"))
        .await
        .body;
    assert_eq!(
        versions["items"][0]["version"], "1.0.1-event.1",
        "{versions:?}"
    );
    // Healthy numbers from both cohorts first, then the event's players crash.
    let deadline = Instant::now() + WAIT;
    loop {
        let deployments = app.get("/api/v1/deployments").await.body;
        let id = deployments["items"][0]["id"].as_str().unwrap().to_owned();
        if cohorts_filled(&deployment(&app, &id).await) {
            break;
        }
        assert!(Instant::now() < deadline, "cohorts never filled");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.regress(2, Mode::Crashes);
    let deadline = Instant::now() + WAIT;
    let mut event = Value::Null;
    while Instant::now() < deadline {
        event = app
            .get("/api/v1/live-events/crash-prone-festival")
            .await
            .body;
        if event["state"] == "RolledBack" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(event["state"], "RolledBack", "{event:?}");
    assert!(
        fleet.all_on(1).await,
        "every server back on the base revision"
    );
    let audit = app
        .get("/api/v1/audit?resource=live-events/crash-prone-festival")
        .await
        .body;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["action"] == "live-event.rollback"),
        "{audit:?}"
    );
    fleet.stop().await;
}

on_both_databases!(a_live_event_guardrail_breach_ends_the_event_and_restores_servers);
