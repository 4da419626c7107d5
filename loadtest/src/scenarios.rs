//! The scenarios. Each starts from the same setup: a hub (started here or
//! targeted by URL), a config with one version deployed, an API key, and
//! every simulated server connected and on that version. `fanout` and
//! `kill-switch` live in `scenarios/push.rs`, the floor they are measured
//! against in `scenarios/floors.rs`, `chaos` in `scenarios/chaos.rs`,
//! `live-event` in `scenarios/live_event.rs`.

mod chaos;
mod floors;
mod live_event;
mod push;

use crate::{
    fleet::{Fleet, Layout},
    http::Api,
    hubproc::{HubProcess, Usage},
    now_us,
    players::PlayerModel,
    progress,
    report::{Report, Summary},
    worker::{Delivery, WorkerSpec},
};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    time::Duration,
};

/// Which scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Fanout,
    CanaryRollback,
    KillSwitch,
    ReconnectStorm,
    Soak,
    Chaos,
    LiveEvent,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::CanaryRollback => "canary-rollback",
            Scenario::KillSwitch => "kill-switch",
            Scenario::ReconnectStorm => "reconnect-storm",
            Scenario::Soak => "soak",
            Scenario::Chaos => "chaos",
            Scenario::LiveEvent => "live-event",
        }
    }
}

/// Everything a run needs (from the command line).
#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: Scenario,
    pub servers: usize,
    pub players: u64,
    /// Fan-out pushes, or rounds of the other scenarios.
    pub rounds: usize,
    pub duration: Duration,
    pub push_every: Duration,
    pub metrics_ms: u64,
    pub metrics: bool,
    pub per_process: usize,
    pub connect_concurrency: usize,
    pub regression_factor: f64,
    pub warmup: Duration,
    /// Soak: how long hub CPU is measured with metrics off, then on.
    pub ingest_window: Duration,
    pub hub_url: Option<String>,
    pub hub_pid: Option<u32>,
    /// Fanout: nginx + nchan measured beside the hub, round by round.
    pub nchan: bool,
    pub token: Option<String>,
    pub hub_bin: Option<PathBuf>,
    pub out: PathBuf,
    pub model: PlayerModel,
    /// Extra `KEY=VALUE` environment for a hub the harness starts.
    pub hub_env: Vec<(String, String)>,
    /// Hub nodes the harness starts (more than one: a cluster on
    /// `database_url` and `redis_url`).
    pub nodes: usize,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
}

const WAIT: Duration = Duration::from_secs(120);

/// The settings that make each node the harness starts one of a
/// cluster: the shared database and Redis, a cluster name of its own, and
/// one folder of keys (signing, secrets, tokens) for all.
fn cluster_settings(opts: &Options) -> anyhow::Result<Vec<(String, String)>> {
    let database = opts
        .database_url
        .clone()
        .context("--nodes above 1 needs --database-url (PostgreSQL)")?;
    let redis = opts
        .redis_url
        .clone()
        .context("--nodes above 1 needs --redis-url")?;
    let keys = opts.out.join("keys");
    std::fs::create_dir_all(&keys)?;
    let keys = std::fs::canonicalize(keys)?;
    // A schema of this run's own (with `psql`): runs never meet each
    // other's servers, keys or deployments.
    let schema = format!("hotswap_loadtest_{}", now_us());
    let created = std::process::Command::new("psql")
        .args([
            database.as_str(),
            "-q",
            "-c",
            &format!("CREATE SCHEMA {schema}"),
        ])
        .output()
        .context("running psql (Debian's postgresql-client) to create the run's schema")?;
    if !created.status.success() {
        bail!(
            "psql could not create schema {schema}: {}",
            String::from_utf8_lossy(&created.stderr).trim()
        );
    }
    let separator = if database.contains('?') { '&' } else { '?' };
    let database = format!("{database}{separator}options=-c%20search_path%3D{schema}");
    eprintln!("the cluster's store: schema {schema}");
    Ok(vec![
        ("HOTSWAP_DATABASE__URL".to_owned(), database),
        ("HOTSWAP_REDIS__URL".to_owned(), redis),
        (
            "HOTSWAP_CLUSTER__NAME".to_owned(),
            format!("loadtest-{}", now_us()),
        ),
        ("HOTSWAP_DATA_DIR".to_owned(), keys.display().to_string()),
    ])
}

/// CPU and memory of every node: summed.
fn nodes_usage(hub: &HubProcess, others: &[HubProcess]) -> Usage {
    let mut total = Usage::default();
    for node in std::iter::once(hub).chain(others) {
        if let Some(usage) = node.usage() {
            total.cpu_seconds += usage.cpu_seconds;
            total.rss_bytes += usage.rss_bytes;
            total.peak_rss_bytes += usage.peak_rss_bytes;
        }
    }
    total
}

/// A run in progress.
struct Run {
    opts: Options,
    api: Api,
    hub: Option<HubProcess>,
    /// The other nodes of a cluster the harness started.
    others: Vec<HubProcess>,
    fleet: Fleet,
    report: Report,
    config: String,
    revision: i64,
    versions: u32,
    /// CPU seconds of hub processes that have exited (restarts).
    cpu_before: f64,
    peak_rss: u64,
    lost: u64,
}

/// Runs the chosen scenario and writes the report; returns it.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let mut hub = None;
    let mut others = Vec::new();
    if opts.nodes > 1 && opts.hub_url.is_some() {
        bail!("--nodes starts the nodes itself: drop --hub-url");
    }
    if opts.nodes > 1 && matches!(opts.scenario, Scenario::ReconnectStorm | Scenario::Chaos) {
        bail!(
            "{} restarts one hub: run it with one node",
            opts.scenario.name()
        );
    }
    let api = match &opts.hub_url {
        Some(url) => Api::new(
            url,
            opts.token
                .as_deref()
                .context("--token (an admin token) is needed with --hub-url")?,
        )?,
        None => {
            let binary = match &opts.hub_bin {
                Some(binary) => binary.clone(),
                None => HubProcess::default_binary()?,
            };
            let mut settings = vec![(
                "HOTSWAP_HUB__METRICS_MS".to_owned(),
                opts.metrics_ms.to_string(),
            )];
            if opts.nodes > 1 {
                settings.extend(cluster_settings(&opts)?);
            }
            settings.extend(opts.hub_env.iter().cloned());
            eprintln!("starting the hub ({})", binary.display());
            let node = |i: usize| {
                let mut settings = settings.clone();
                if opts.nodes > 1 {
                    settings.push((
                        "HOTSWAP_CLUSTER__NODE_ID".to_owned(),
                        format!("loadtest-node-{i}"),
                    ));
                }
                settings
            };
            let process = HubProcess::start(&binary, &opts.out.join("hub"), &node(0)).await?;
            for i in 1..opts.nodes {
                eprintln!("starting node {i} of the cluster");
                others.push(
                    HubProcess::start(&binary, &opts.out.join(format!("hub-{i}")), &node(i))
                        .await?,
                );
            }
            let api = Api::new(&process.base_url(), &process.admin_token().await?)?;
            hub = Some(process);
            api
        }
    };
    if matches!(opts.scenario, Scenario::ReconnectStorm | Scenario::Chaos) && hub.is_none() {
        bail!(
            "{} restarts the hub: let the harness start it (no --hub-url)",
            opts.scenario.name()
        );
    }
    let stamp = now_us() / 1000;
    let config = format!("loadtest-{stamp}");
    api.post(
        "/api/v1/configs",
        &json!({"name": config, "configType": "GameBalance", "environment": "staging"}),
    )
    .await?
    .ok("creating the config")?;
    let key = api
        .post(
            "/api/v1/api-keys",
            &json!({"name": format!("loadtest {stamp}")}),
        )
        .await?
        .ok("creating the API key")?["key"]
        .as_str()
        .context("the API key reply has no key")?
        .to_owned();
    let usage = |hub: &Option<HubProcess>, pid: Option<u32>| -> Option<Usage> {
        match hub {
            Some(hub) => Some(nodes_usage(hub, &others)),
            None => crate::hubproc::usage(pid?),
        }
    };
    let before = usage(&hub, opts.hub_pid);
    let ws_url = format!("ws://{}/ws/v1/servers", api.host());
    let urls: Vec<String> = if others.is_empty() {
        Vec::new()
    } else {
        std::iter::once(ws_url.clone())
            .chain(
                others
                    .iter()
                    .map(|o| format!("ws://127.0.0.1:{}/ws/v1/servers", o.port)),
            )
            .collect()
    };
    let per_server =
        (opts.players / opts.servers.max(1) as u64).clamp(1, u64::from(u32::MAX)) as u32;
    let template = WorkerSpec {
        url: ws_url,
        urls,
        key,
        config: config.clone(),
        environment: "staging".into(),
        first: 0,
        count: 0,
        source: None,
        model: PlayerModel {
            players_per_server: per_server,
            ..opts.model.clone()
        },
        metrics_ms: opts.metrics_ms,
        metrics: false,
        connect_concurrency: opts.connect_concurrency,
    };
    let layout = Layout::plan(opts.servers, opts.per_process);
    let started = now_us();
    let fleet = Fleet::start(&template, opts.servers, &layout).await?;
    let mut run = Run {
        api,
        hub,
        others,
        fleet,
        report: Report::default(),
        config,
        revision: 0,
        versions: 0,
        cpu_before: 0.0,
        peak_rss: 0,
        lost: 0,
        opts,
    };
    let result = run.scenario(before, started).await;
    let status = run.fleet.status().await.ok();
    run.fleet.stop().await;
    if let Some(hub) = &mut run.hub {
        let _ = hub.stop().await;
    }
    for node in &mut run.others {
        let _ = node.stop().await;
    }
    result?;
    let mut report = run.report;
    if let Some(status) = status {
        report.set("outOfOrderFrames", json!(status.out_of_order));
        report.set("unstampedReads", json!(status.unstamped_reads));
        report.set("hubErrors", json!(status.hub_errors));
        report.set("hubCloses", json!(status.hub_closes));
        report.set("connectFailures", json!(status.connect_failures));
        report.set("lastConnectFailure", json!(status.last_failure));
        report.set("disconnects", json!(status.disconnects));
        report.row("out-of-order frames", status.out_of_order);
    }
    report.set("lostFrames", json!(run.lost));
    report.row("lost frames", run.lost);
    report.write(&run.opts.out)?;
    Ok(report)
}

impl Run {
    fn usage(&self) -> Option<Usage> {
        match &self.hub {
            Some(hub) => Some(nodes_usage(hub, &self.others)),
            None => crate::hubproc::usage(self.opts.hub_pid?),
        }
    }

    fn note_usage(&mut self) -> Option<Usage> {
        let usage = self.usage()?;
        self.peak_rss = self.peak_rss.max(usage.peak_rss_bytes);
        Some(usage)
    }

    async fn scenario(&mut self, before: Option<Usage>, started: u64) -> anyhow::Result<()> {
        let opts = self.opts.clone();
        self.report.set("scenario", json!(opts.scenario.name()));
        self.report.set("servers", json!(opts.servers));
        self.report.set("nodes", json!(opts.nodes));
        self.report.set("players", json!(opts.players));
        self.report.set("processes", json!(self.fleet.processes()));
        self.report.set("metricsMs", json!(opts.metrics_ms));
        self.report.set(
            "cores",
            json!(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            ),
        );
        self.report.row("scenario", opts.scenario.name());
        self.report.row(
            "servers / players / processes",
            format!(
                "{} / {} / {}",
                opts.servers,
                opts.players,
                self.fleet.processes()
            ),
        );
        // The first version, then everyone on it.
        self.revision = self.push(json!({"strategy": "Direct"})).await?.1;
        self.fleet
            .wait_all_on(self.revision, "connecting", WAIT)
            .await?;
        let connect_ms = (now_us() - started) as f64 / 1000.0;
        self.report.set("connectMs", json!(connect_ms));
        self.report.row(
            "all servers connected and synced in",
            format!("{connect_ms:.0} ms"),
        );
        self.fleet.collect().await?;
        // Idle memory: connected servers, no metrics yet.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let (Some(before), Some(after)) = (before, self.note_usage()) {
            let per_server =
                after.rss_bytes.saturating_sub(before.rss_bytes) / opts.servers.max(1) as u64;
            self.report.set("hubIdleRssBytes", json!(after.rss_bytes));
            self.report.set("rssPerServerBytes", json!(per_server));
            self.report.row(
                "hub RSS per idle connected server",
                format!(
                    "{:.1} KiB (hub {:.1} MiB)",
                    per_server as f64 / 1024.0,
                    after.rss_bytes as f64 / 1048576.0
                ),
            );
        }
        if opts.metrics {
            self.fleet
                .call(json!({"op": "metrics", "enabled": true}))
                .await?;
            tokio::time::sleep(Duration::from_millis(opts.metrics_ms.min(5000) * 2)).await;
        }
        match opts.scenario {
            Scenario::Fanout => self.fanout().await?,
            Scenario::CanaryRollback => self.canary_rollback().await?,
            Scenario::KillSwitch => self.kill_switch().await?,
            Scenario::ReconnectStorm => self.reconnect_storm().await?,
            Scenario::Soak => self.soak().await?,
            Scenario::Chaos => self.chaos().await?,
            Scenario::LiveEvent => self.live_event().await?,
        }
        if let Some(usage) = self.note_usage() {
            let cpu = self.cpu_before + usage.cpu_seconds;
            self.report
                .set("hubCpuSeconds", json!((cpu * 100.0).round() / 100.0));
            self.report
                .row("hub CPU seconds (whole run)", format!("{cpu:.2}"));
        }
        let clients = self.fleet.cpu_seconds();
        self.report
            .set("clientCpuSeconds", json!((clients * 100.0).round() / 100.0));
        self.report.row(
            "simulated servers' CPU seconds (whole run)",
            format!("{clients:.2}"),
        );
        if self.peak_rss > 0 {
            self.report.set("hubPeakRssBytes", json!(self.peak_rss));
            self.report.row(
                "hub peak RSS",
                format!("{:.1} MiB", self.peak_rss as f64 / 1048576.0),
            );
        }
        Ok(())
    }

    /// Uploads the next version and deploys it; (deployment id, revision,
    /// previous revision, request time in µs).
    async fn push(&mut self, plan: Value) -> anyhow::Result<(String, i64, i64, u64)> {
        self.versions += 1;
        let version = format!("1.{}.0", self.versions);
        let content = json!({
            "weapons": {"rifle": {"damage": 30 + self.versions % 900, "fireRate": 600, "reloadTime": 2.5}},
            "characters": {"tank": {"health": 200, "armor": 50, "abilities": {"shield": {"cooldown": 10.0}}}}
        });
        self.api
            .post(
                &format!("/api/v1/configs/{}/versions", self.config),
                &json!({"version": version, "content": content, "message": "load test"}),
            )
            .await?
            .ok("uploading a version")?;
        let mut body = json!({"config": self.config, "version": version});
        for (k, v) in plan.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        let at = now_us();
        let created = self
            .api
            .post("/api/v1/deployments", &body)
            .await?
            .ok("deploying")?;
        let id = created["id"].as_str().context("deployment id")?.to_owned();
        let revision = created["revision"]
            .as_i64()
            .context("deployment revision")?;
        let previous = created["previousRevision"].as_i64().unwrap_or(0);
        Ok((id, revision, previous, at))
    }

    async fn deployment(&self, id: &str) -> anyhow::Result<Value> {
        self.api
            .get(&format!("/api/v1/deployments/{id}"))
            .await?
            .ok("reading the deployment")
    }

    /// Polls the deployment until its status is one of `statuses`.
    async fn wait_status(
        &self,
        id: &str,
        statuses: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let view = self.deployment(id).await?;
            if statuses.iter().any(|s| view["status"] == *s) {
                return Ok(view);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "deployment {id} is {} after {timeout:?}, not {statuses:?}",
                    view["status"]
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The deliveries of `revision` received at or after `since_us`; counts
    /// servers that never got it as lost.
    async fn deliveries_of(
        &mut self,
        revision: i64,
        since_us: u64,
    ) -> anyhow::Result<Vec<Delivery>> {
        let all = self.fleet.collect().await?;
        let of: Vec<Delivery> = all
            .into_iter()
            .filter(|d| d.revision == revision && d.received_us >= since_us)
            .collect();
        let servers: HashSet<u32> = of.iter().map(|d| d.server).collect();
        self.lost += (self.opts.servers - servers.len().min(self.opts.servers)) as u64;
        Ok(of)
    }

    /// On a cluster: `GET /game-servers` on the first node lists every
    /// node's servers (the stored rows, its registry and the other nodes'
    /// rosters in Redis, worked out at most once a second). Reported as
    /// `serverList.*`: a list worked out anew (wall time, and the hubs' CPU
    /// summed over the nodes), and one of ten asked within that second.
    async fn cluster_server_list(&mut self) -> anyhow::Result<()> {
        let (mut fresh, mut cpu, mut shared) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            let before = self.usage().map(|u| u.cpu_seconds);
            let started = std::time::Instant::now();
            let reply = self.api.get("/api/v1/game-servers?connected=true").await?;
            fresh.push(started.elapsed().as_secs_f64() * 1000.0);
            if let (Some(before), Some(after)) = (before, self.usage()) {
                cpu.push((after.cpu_seconds - before) * 1000.0);
            }
            let listed = reply.body["items"].as_array().map_or(0, Vec::len);
            if reply.status != 200 || listed != self.opts.servers {
                bail!(
                    "GET /game-servers on the first node: {} with {listed} of {} servers",
                    reply.status,
                    self.opts.servers
                );
            }
            let started = std::time::Instant::now();
            for _ in 0..10 {
                self.api.get("/api/v1/game-servers?connected=true").await?;
            }
            shared.push(started.elapsed().as_secs_f64() * 100.0);
        }
        self.report.sample("serverList", "freshMs", &fresh);
        self.report.sample("serverList", "hubCpuMsFresh", &cpu);
        self.report.sample("serverList", "sharedMs", &shared);
        Ok(())
    }

    async fn canary_rollback(&mut self) -> anyhow::Result<()> {
        let (mut detection, mut last_ack, mut rollback_delivery) =
            (Vec::new(), Vec::new(), Vec::new());
        // A first phase that expects about ten servers at least: a small
        // fleet's 10 % may hold none (0.9^40 = 1.5 % of runs at 40
        // servers), and an empty canary waits out its hour.
        let first = (1000.0 / self.opts.servers.max(1) as f64)
            .clamp(10.0, 50.0)
            .round();
        let phases: Vec<f64> = std::iter::once(first)
            .chain([30.0, 50.0, 100.0].into_iter().filter(|p| *p > first))
            .collect();
        for round in 0..self.opts.rounds {
            let (id, revision, previous, _) = self
                .push(json!({"strategy": "Canary", "phases": phases, "phaseInterval": 3600}))
                .await?;
            // The canary cohort on the new revision, then a healthy warm-up.
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let status = self.fleet.status().await?;
                let on = status.revisions.get(&revision).copied().unwrap_or(0);
                let view = self.deployment(&id).await?;
                let targets = view["live"]["cohorts"].as_array().map_or(0, |c| c.len());
                if on > 0 && view["status"] == "InProgress" && targets > 0 {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("the canary never started: {view}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let warmup = self.opts.warmup;
            let steps = warmup.as_secs().max(1) as usize;
            for s in 0..=steps {
                progress(&format!("canary {} warm-up", round + 1), s, steps);
                tokio::time::sleep(warmup / steps as u32).await;
            }
            let view = self.deployment(&id).await?;
            if view["status"] != "InProgress" {
                bail!("the healthy canary did not stay in progress: {view}");
            }
            let injected = now_us();
            self.fleet
                .call(json!({"op": "regress", "revision": revision, "factor": self.opts.regression_factor}))
                .await?;
            let view = self
                .wait_status(&id, &["RolledBack", "Failed"], WAIT)
                .await?;
            self.fleet
                .wait_all_on(previous, "rolling back", WAIT)
                .await?;
            self.fleet
                .call(json!({"op": "regress", "revision": -1, "factor": 1.0}))
                .await?;
            let detected = view["rollback"]["detectedAt"]
                .as_str()
                .and_then(parse_rfc3339_ms)
                .context("the rollback has no detectedAt")?;
            detection.push(detected as f64 - injected as f64 / 1000.0);
            let canary = self.deliveries_of(previous, injected).await?;
            // Only the canary cohort got the new revision; the rest had nothing to do.
            self.lost = self
                .lost
                .saturating_sub((self.opts.servers - canary.len().min(self.opts.servers)) as u64);
            last_ack.push(latest_after(&canary, injected as f64 / 1000.0, |d| {
                d.acked_us
            }));
            rollback_delivery.extend(since_sent(&canary));
            self.report.section(
                "canaryRollback",
                &format!("round{}", round + 1),
                json!({"canaryServers": canary.len(), "rollback": view["rollback"]}),
            );
            eprintln!(
                "round {}: {} canary servers, rule {}, detected after {:.0} ms, last ack after {:.0} ms",
                round + 1,
                canary.len(),
                view["rollback"]["metric"],
                detection.last().unwrap_or(&0.0),
                last_ack.last().unwrap_or(&0.0)
            );
            self.revision = previous;
            self.note_usage();
        }
        self.report
            .sample("canaryRollback", "regressionToDetectionMs", &detection);
        self.report
            .sample("canaryRollback", "regressionToLastAckMs", &last_ack);
        self.report
            .sample("canaryRollback", "rollbackDeliveryMs", &rollback_delivery);
        self.report.series.push((
            "canary rollback: delivery per server".into(),
            rollback_delivery,
        ));
        Ok(())
    }

    async fn reconnect_storm(&mut self) -> anyhow::Result<()> {
        let n = self.opts.servers as u64;
        let (mut resynced, mut restart, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
        let (mut told, mut asked) = (Vec::new(), Vec::new());
        for round in 0..self.opts.rounds {
            let status_before = self.fleet.status().await?;
            let hub = self.hub.as_mut().context("the harness's own hub")?;
            let before = hub.usage().unwrap_or_default();
            let at = now_us();
            hub.restart().await?;
            self.cpu_before += before.cpu_seconds;
            self.peak_rss = self.peak_rss.max(before.peak_rss_bytes);
            restart.push((now_us() - at) as f64 / 1000.0);
            let deadline = tokio::time::Instant::now() + WAIT;
            let (last, told_last, asked_last) = loop {
                let (mut synced, mut last, mut told_last, mut asked_last) = (0u64, 0, 0, 0);
                for reply in self
                    .fleet
                    .call(json!({"op": "synced", "sinceUs": at, "revision": self.revision}))
                    .await?
                {
                    let n = |k: &str| reply[k].as_u64().unwrap_or(0);
                    synced += n("synced");
                    last = last.max(n("lastUs"));
                    told_last = told_last.max(n("toldLastUs"));
                    asked_last = asked_last.max(n("askedLastUs"));
                }
                progress(
                    &format!("resync {}", round + 1),
                    synced as usize,
                    n as usize,
                );
                if synced >= n {
                    break (last, told_last, asked_last);
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("only {synced} of {n} servers resynced after {WAIT:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            resynced.push((last - at) as f64 / 1000.0);
            told.push(told_last.saturating_sub(at) as f64 / 1000.0);
            asked.push(asked_last.saturating_sub(at) as f64 / 1000.0);
            if let Some(usage) = self.note_usage() {
                cpu.push(usage.cpu_seconds);
            }
            let status = self.fleet.status().await?;
            let closes: BTreeMap<&String, u64> = status
                .hub_closes
                .iter()
                .map(|(why, n)| (why, n - status_before.hub_closes.get(why).unwrap_or(&0)))
                .filter(|(_, n)| *n > 0)
                .collect();
            eprintln!(
                "round {}: hub back in {:.0} ms, last reconnect frame at {:.0} ms, last moment asked \
                 for {:.0} ms, all {n} servers resynced after {:.0} ms \
                 ({} welcomes, {} failed connects, closes {closes:?}, last failure {:?})",
                round + 1,
                restart.last().unwrap_or(&0.0),
                told.last().unwrap_or(&0.0),
                asked.last().unwrap_or(&0.0),
                resynced.last().unwrap_or(&0.0),
                status.welcomes - status_before.welcomes,
                status.connect_failures - status_before.connect_failures,
                status.last_failure,
            );
        }
        self.report
            .sample("reconnectStorm", "allResyncedMs", &resynced);
        self.report
            .sample("reconnectStorm", "hubRestartMs", &restart);
        // Stop -> the last `reconnect` frame received, and -> the latest
        // moment a server was asked to come back: the storm's own bound.
        self.report.sample("reconnectStorm", "lastToldMs", &told);
        self.report
            .sample("reconnectStorm", "lastAskedForMs", &asked);
        self.report.section(
            "reconnectStorm",
            "newHubCpuSecondsUntilResynced",
            json!(cpu),
        );
        self.report.row(
            "reconnectStorm: new hub CPU s until all resynced",
            format!("{cpu:.2?}"),
        );
        Ok(())
    }

    async fn soak(&mut self) -> anyhow::Result<()> {
        // Metric ingest: hub CPU with metrics off, then on, at the same load.
        let window = self.opts.ingest_window.max(Duration::from_secs(1));
        let rate = |a: Option<Usage>, b: Option<Usage>| match (a, b) {
            (Some(a), Some(b)) => Some((b.cpu_seconds - a.cpu_seconds) / window.as_secs_f64()),
            _ => None,
        };
        self.fleet
            .call(json!({"op": "metrics", "enabled": false}))
            .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let a = self.usage();
        tokio::time::sleep(window).await;
        let off = rate(a, self.usage());
        self.fleet
            .call(json!({"op": "metrics", "enabled": true}))
            .await?;
        tokio::time::sleep(Duration::from_millis(self.opts.metrics_ms + 500)).await;
        let sent_before = self.fleet.status().await?.metrics_sent;
        let b = self.usage();
        tokio::time::sleep(window).await;
        let on = rate(b, self.usage());
        let frames =
            (self.fleet.status().await?.metrics_sent - sent_before) as f64 / window.as_secs_f64();
        self.report
            .section("ingest", "framesPerSecond", json!(frames.round()));
        self.report
            .row("ingest: metric frames per second", format!("{frames:.0}"));
        if let (Some(off), Some(on)) = (off, on) {
            self.report.section("ingest", "hubCpuCoresIdle", json!(off));
            self.report
                .section("ingest", "hubCpuCoresWithMetrics", json!(on));
            self.report.section("ingest", "cpuCores", json!(on - off));
            self.report.row(
                "ingest: hub CPU cores for metrics",
                format!("{:.3} (idle {off:.3}, with metrics {on:.3})", on - off),
            );
        }
        if !self.opts.metrics {
            self.fleet
                .call(json!({"op": "metrics", "enabled": false}))
                .await?;
        }
        // Then everything at once: metrics, pushes, samples every second.
        let end = tokio::time::Instant::now() + self.opts.duration;
        let mut next_push = tokio::time::Instant::now();
        let (mut rss, mut delivery, mut cpu_rate) = (Vec::new(), Vec::new(), Vec::new());
        let mut last = self.usage();
        let mut pushes = 0;
        let total = self.opts.duration.as_secs().max(1) as usize;
        while tokio::time::Instant::now() < end {
            if tokio::time::Instant::now() >= next_push {
                let (id, revision, _, at) = self.push(json!({"strategy": "Direct"})).await?;
                self.fleet.wait_all_on(revision, "soak push", WAIT).await?;
                // Every server holds it before the hub has read every ack:
                // the next push would find this one still in progress (409).
                self.wait_status(&id, &["Completed"], WAIT).await?;
                let of = self.deliveries_of(revision, at).await?;
                delivery.extend(since_sent(&of));
                self.revision = revision;
                pushes += 1;
                next_push += self.opts.push_every;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.note_usage();
            if let (Some(a), Some(b)) = (last, now) {
                cpu_rate.push(b.cpu_seconds - a.cpu_seconds);
                rss.push(b.rss_bytes as f64 / 1048576.0);
            }
            last = now;
            let left = end
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs() as usize;
            progress("soak", total - left.min(total), total);
        }
        let status = self.fleet.status().await?;
        self.report
            .section("soak", "seconds", json!(self.opts.duration.as_secs()));
        self.report.section("soak", "pushes", json!(pushes));
        self.report
            .section("soak", "metricFramesSent", json!(status.metrics_sent));
        self.report
            .section("soak", "hubRssMiB", Summary::json(&rss));
        self.report
            .section("soak", "hubCpuCores", Summary::json(&cpu_rate));
        self.report.sample("soak", "deliveryMs", &delivery);
        if let (Some(r), Some(c)) = (Summary::of(&rss), Summary::of(&cpu_rate)) {
            self.report.row(
                "soak: hub RSS MiB (p50 / max)",
                format!("{:.1} / {:.1}", r.p50, r.max),
            );
            self.report.row(
                "soak: hub CPU cores (p50 / max)",
                format!("{:.2} / {:.2}", c.p50, c.max),
            );
        }
        self.report.row(
            "soak: pushes / metric frames",
            format!("{pushes} / {}", status.metrics_sent),
        );
        self.report
            .series
            .push(("soak: push delivery per server".into(), delivery));
        Ok(())
    }
}

/// Per frame: when it arrived, in ms after the hub's `sentAtMs`.
fn since_sent(of: &[Delivery]) -> Vec<f64> {
    of.iter()
        .map(|d| d.received_us as f64 / 1000.0 - d.sent_at_ms as f64)
        .collect()
}

/// The latest `at` (µs) of the frames, in ms after `from_ms` (0 if none).
fn latest_after(of: &[Delivery], from_ms: f64, at: impl Fn(&Delivery) -> u64) -> f64 {
    of.iter()
        .map(at)
        .max()
        .map_or(0.0, |t| t as f64 / 1000.0 - from_ms)
}

/// The first of `of`'s times (µs), in ms after `from_ms`.
fn earliest_after(of: &[Delivery], from_ms: f64, at: impl Fn(&Delivery) -> u64) -> f64 {
    of.iter()
        .map(at)
        .min()
        .map_or(0.0, |t| t as f64 / 1000.0 - from_ms)
}

/// `2026-11-21T10:00:00.123Z` (or `+00:00`) to Unix milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (clock, offset_min) = if let Some(clock) = time.strip_suffix('Z') {
        (clock, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (clock, offset) = time.split_at(at);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (h, mm) = offset[1..].split_once(':')?;
        (
            clock,
            sign * (h.parse::<i64>().ok()? * 60 + mm.parse::<i64>().ok()?),
        )
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    let ms = format!("{fraction:0<3}").get(..3)?.parse::<i64>().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + s * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_to_unix_milliseconds() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-21T10:00:00.123Z"),
            Some(1_795_255_200_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-21T11:00:00.123+01:00"),
            Some(1_795_255_200_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-03-01T00:00:01Z"),
            Some(951_868_801_000)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
