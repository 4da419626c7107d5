//! Deployments through the API: requests, errors, views, and the in-memory
//! record of each deployment this hub drives (per-server progress and the
//! status its actor last published). The engine itself is `engine.rs`.

use crate::store::now_ms;
use crate::{
    catalog::{CatalogError, views::rfc3339},
    domain::{
        judgement::{Comparison, Judgement, Metric, Rule},
        kinds::Strategy,
        rollout::DeploymentState,
    },
    store::{StoreError, hub as store_hub},
};
use hotswap_client::sync::lock;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

/// `POST /api/v1/deployments`. Durations are ISO 8601 (`PT5M`) or seconds.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewDeploymentRequest {
    pub config: String,
    /// The version to deploy (for `ABTest`, give `variants` instead).
    pub version: Option<String>,
    /// Must be the config's environment when given.
    pub environment: Option<String>,
    pub strategy: Strategy,
    /// Canary percentages, increasing, ending at 100 (default 10, 30, 50, 100).
    pub phases: Option<Vec<f64>>,
    /// Sets the first canary phase.
    pub canary_percentage: Option<f64>,
    #[schema(value_type = Option<String>, example = "PT5M")]
    pub phase_interval: Option<Value>,
    /// Advance by itself when a phase stayed healthy for its interval (default true).
    pub auto_promote: Option<bool>,
    pub batch_size: Option<usize>,
    #[schema(value_type = Option<String>, example = "PT2M")]
    pub batch_interval: Option<Value>,
    /// Rolling: a server that fails to apply rolls the deployment back (default true).
    pub stop_on_failure: Option<bool>,
    #[schema(value_type = Option<String>, example = "PT10M")]
    pub verification_period: Option<Value>,
    #[schema(value_type = Option<String>, example = "PT30M")]
    pub keep_blue_duration: Option<Value>,
    /// Blue-green: the green share of the servers, percent.
    pub green_percentage: Option<f64>,
    /// Only servers in these regions; for `Geographic`, the order of the phases.
    pub regions: Option<Vec<String>>,
    /// Only servers carrying every one of these tags.
    pub tags: Option<Vec<String>>,
    pub variants: Option<Vec<VariantRequest>>,
    /// Rollback rules: each replaces the default rule of its metric, or adds one.
    pub thresholds: Option<Vec<RuleRequest>>,
    /// Confidence a difference needs (default from settings, 0.99).
    pub confidence: Option<f64>,
    /// `false` drops the health-check rule.
    pub health_check_enabled: Option<bool>,
    /// Cancel the in-flight deployment of this config and take its place.
    pub supersede: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VariantRequest {
    pub name: Option<String>,
    pub version: String,
    pub weight: f64,
}

/// A rollback rule, or a change to a default one.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleRequest {
    pub metric: Metric,
    pub comparison: Option<Comparison>,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    pub min_sample: Option<u64>,
    /// `false` removes the rule.
    pub enabled: Option<bool>,
}

/// `POST /deployments/{id}/rollback-thresholds`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThresholdsRequest {
    pub thresholds: Vec<RuleRequest>,
    pub confidence: Option<f64>,
}

/// `POST /deployments/{id}/rollback` (body optional).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = DeploymentRollbackRequest)]
pub struct RollbackRequest {
    /// Geographic: roll back this region only (the deployment pauses).
    pub region: Option<String>,
    pub reason: Option<String>,
}

/// Merges rule requests into `rules`.
pub fn merge_rules(rules: &mut Vec<Rule>, changes: &[RuleRequest]) -> Result<(), DeploymentError> {
    for change in changes {
        let invalid =
            |why: &str| DeploymentError::Invalid(format!("thresholds: {:?}: {why}", change.metric));
        for value in [change.warning, change.critical].into_iter().flatten() {
            if !value.is_finite() || value < 0.0 {
                return Err(invalid(
                    "thresholds are non-negative fractions (0.05 = 5 %)",
                ));
            }
        }
        let position = rules.iter().position(|r| r.metric == change.metric);
        if change.enabled == Some(false) {
            if let Some(position) = position {
                rules.remove(position);
            }
            continue;
        }
        match position {
            Some(position) => {
                let rule = &mut rules[position];
                if let Some(comparison) = change.comparison {
                    rule.comparison = comparison;
                }
                if change.warning.is_some() {
                    rule.warning = change.warning;
                }
                if let Some(critical) = change.critical {
                    rule.critical = critical;
                }
                if let Some(min_sample) = change.min_sample {
                    rule.min_sample = min_sample;
                }
                if rule.warning.is_some_and(|w| w > rule.critical) {
                    return Err(invalid(
                        "the warning level must not be above the critical one",
                    ));
                }
            }
            None => {
                let (Some(comparison), Some(critical)) = (change.comparison, change.critical)
                else {
                    return Err(invalid(
                        "a new rule needs a comparison and a critical level",
                    ));
                };
                if change.warning.is_some_and(|w| w > critical) {
                    return Err(invalid(
                        "the warning level must not be above the critical one",
                    ));
                }
                rules.push(Rule {
                    metric: change.metric.clone(),
                    comparison,
                    warning: change.warning,
                    critical,
                    min_sample: change.min_sample.unwrap_or(100),
                });
            }
        }
    }
    if rules.len() > 64 {
        return Err(DeploymentError::Invalid("at most 64 rollback rules".into()));
    }
    Ok(())
}

/// Why a deployment request or command cannot go through.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Invalid(String),
    /// A query parameter that cannot be read.
    #[error("invalid query parameter: {0}")]
    InvalidQuery(String),
    #[error(
        "version {version} of {config} has breaking changes and needs an admin's approval before a production deployment"
    )]
    ApprovalRequired { config: String, version: String },
    #[error(
        "deployment {0} of this config is still in progress; pass \"supersede\": true to replace it"
    )]
    InProgress(String),
    #[error("{0} deployments are running, the most this hub runs at once")]
    TooMany(usize),
    #[error("deployment {0} does not exist")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the deployment engine is shutting down")]
    Stopping,
}

impl From<StoreError> for DeploymentError {
    fn from(error: StoreError) -> Self {
        DeploymentError::Catalog(error.into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    Pushed,
    Acked,
    Failed,
}

/// One server's part in a deployment: the revision it was sent and how that went.
#[derive(Debug, Clone)]
pub(super) struct ServerProgress {
    pub revision: i64,
    pub state: ServerState,
    pub error: Option<String>,
    pub apply_micros: Option<u64>,
    pub updated_at_ms: i64,
}

impl ServerProgress {
    /// A frame carrying `revision` is on its way, as of `at_ms`.
    fn pushed(revision: i64, at_ms: i64) -> Self {
        Self {
            revision,
            state: ServerState::Pushed,
            error: None,
            apply_micros: None,
            updated_at_ms: at_ms,
        }
    }

    fn view(&self, server_id: &str) -> ServerProgressView {
        ServerProgressView {
            server_id: server_id.to_owned(),
            revision: self.revision,
            state: self.state,
            error: self.error.clone(),
            apply_micros: self.apply_micros,
            updated_at: rfc3339(self.updated_at_ms),
        }
    }
}

/// Why and when a deployment rolled back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRecord {
    /// `automatic` (a critical breach) or `manual`.
    pub trigger: String,
    pub reason: String,
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// The canary's value and the baseline's when a rule decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The region rolled back alone (geographic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The revision the servers went back to (absent: the config had none).
    pub to_revision: Option<i64>,
    pub detected_at: String,
    pub rollback_started_at: String,
    pub rollback_completed_at: Option<String>,
    /// Milliseconds from detection to the last ack.
    pub duration_ms: Option<i64>,
    /// Servers that had not acked the previous revision when the rollback was closed.
    #[serde(default)]
    pub unacked: Vec<String>,
}

/// One cohort's numbers in a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CohortSummary {
    pub reports: u64,
    /// Sum of `players` over the reports (player-intervals).
    pub players: u64,
    pub sessions_started: u64,
    pub sessions_ended: u64,
    pub churned: u64,
    pub crashes: u64,
    pub errors: u64,
    pub requests: u64,
    pub complaints: u64,
    pub purchases: u64,
    pub churn_rate: Option<f64>,
    pub crash_rate: Option<f64>,
    pub complaint_rate: Option<f64>,
    pub error_rate: Option<f64>,
    pub health_check_failure_rate: Option<f64>,
    pub latency_ms: Option<Percentiles>,
    pub session_secs: Option<Percentiles>,
    pub fps: Option<Percentiles>,
    pub custom: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl CohortSummary {
    pub fn of(w: &crate::domain::judgement::CohortWindow) -> Self {
        let rate = |events: u64, n: u64| (n > 0).then(|| events as f64 / n as f64);
        let percentiles = |h: &crate::domain::stats::SparseHistogram| {
            Some(Percentiles {
                count: h.count(),
                mean: h.mean()?,
                p50: h.quantile(0.5)?,
                p90: h.quantile(0.9)?,
                p99: h.quantile(0.99)?,
                max: h.buckets().last()?.0,
            })
        };
        Self {
            reports: w.reports,
            players: w.players,
            sessions_started: w.sessions_started,
            sessions_ended: w.sessions_ended,
            churned: w.churned,
            crashes: w.crashes,
            errors: w.errors,
            requests: w.requests,
            complaints: w.complaints,
            purchases: w.purchases,
            churn_rate: rate(w.churned, w.players),
            crash_rate: rate(w.crashes, w.players),
            complaint_rate: rate(w.complaints, w.players),
            error_rate: rate(w.errors, w.requests),
            health_check_failure_rate: rate(w.health_failures, w.health_checks),
            latency_ms: percentiles(&w.latency_ms),
            session_secs: percentiles(&w.session_secs),
            fps: percentiles(&w.fps),
            custom: w
                .custom
                .iter()
                .filter(|(_, (_, n))| *n > 0)
                .map(|(k, (sum, n))| (k.clone(), sum / *n as f64))
                .collect(),
        }
    }
}

/// A cohort: which servers, how many, and their numbers over both windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CohortView {
    /// `baseline`, `canary`, or a variant's name.
    pub cohort: String,
    pub servers: usize,
    pub window: CohortSummary,
    pub fast_window: CohortSummary,
    /// The long window per region.
    pub regions: BTreeMap<String, CohortSummary>,
}

/// What a deployment's actor last published.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveStatus {
    pub cohorts: Vec<CohortView>,
    /// The last evaluation of the canary against the baseline.
    pub judgement: Option<Judgement>,
    pub evaluated_at: Option<String>,
    /// A warning holding auto-promotion, if any.
    pub warning: Option<String>,
    /// Metric events dropped because the actor's mailbox was full.
    pub dropped_metric_events: u64,
    pub window_ms: u64,
    pub fast_window_ms: u64,
}

/// Per server id, its part in a deployment. Keys are the registry's own
/// ids (`Arc<str>`): a pass over 10,000 servers copies none. Hashed, not
/// ordered: a fan-out claims every server, the API's id order is sorted
/// out when asked for.
pub(super) type ServerMap = HashMap<Arc<str>, ServerProgress>;

/// A deployment's per-server progress, locked for one reconcile pass
/// (whose pushes all leave at one time).
pub(super) struct Claims<'a> {
    servers: std::sync::MutexGuard<'a, ServerMap>,
    at_ms: i64,
}

impl Claims<'_> {
    /// Room for `servers` in all (a first pass over a fleet grows the map
    /// once, not a dozen times).
    pub fn reserve_for(&mut self, servers: usize) {
        let more = servers.saturating_sub(self.servers.len());
        self.servers.reserve(more);
    }

    /// Claims the push of `revision` to `server_id`: false when a frame
    /// carrying it is already on its way or the server has acked it (a
    /// registry read taken before that ack landed must not send it twice);
    /// else registers the push (before the frame leaves, so an early ack
    /// cannot be overwritten by its own registration) and returns true.
    pub fn claim(&mut self, server_id: &Arc<str>, revision: i64) -> bool {
        claim(
            &mut self.servers,
            server_id,
            || server_id.clone(),
            revision,
            self.at_ms,
        )
    }

    /// Whether the deployment has sent this server anything.
    pub fn tracks(&self, server_id: &str) -> bool {
        self.servers.contains_key(server_id)
    }

    /// The server already runs `revision`: it counts as acked.
    pub fn already_on(&mut self, server_id: &Arc<str>, revision: i64) {
        ack(
            &mut self.servers,
            server_id,
            || server_id.clone(),
            revision,
            true,
            None,
            0,
        );
    }
}

fn claim(
    servers: &mut ServerMap,
    server_id: &str,
    key: impl FnOnce() -> Arc<str>,
    revision: i64,
    at_ms: i64,
) -> bool {
    if servers.get(server_id).is_some_and(|p| {
        p.revision == revision && matches!(p.state, ServerState::Pushed | ServerState::Acked)
    }) {
        return false;
    }
    set_pushed(servers, server_id, key, revision, at_ms);
    true
}

/// A frame carrying `revision` is on its way to `server_id` (the key is
/// made only for a server not in the map yet).
fn set_pushed(
    servers: &mut ServerMap,
    server_id: &str,
    key: impl FnOnce() -> Arc<str>,
    revision: i64,
    at_ms: i64,
) {
    match servers.get_mut(server_id) {
        Some(p) => *p = ServerProgress::pushed(revision, at_ms),
        None => {
            servers.insert(key(), ServerProgress::pushed(revision, at_ms));
        }
    }
}

fn ack(
    servers: &mut ServerMap,
    server_id: &str,
    key: impl FnOnce() -> Arc<str>,
    revision: i64,
    ok: bool,
    error: Option<String>,
    apply_micros: u64,
) -> bool {
    let progress = match servers.get_mut(server_id) {
        // Already known: the time of the first ack stays.
        Some(p) if p.revision == revision && p.state == ServerState::Acked && ok => {
            return true;
        }
        Some(p) if p.revision == revision => p,
        Some(_) => return false,
        None if ok => servers.entry(key()).or_insert(ServerProgress {
            revision,
            state: ServerState::Acked,
            error: None,
            apply_micros: None,
            updated_at_ms: 0,
        }),
        None => return false,
    };
    progress.state = if ok {
        ServerState::Acked
    } else {
        ServerState::Failed
    };
    progress.error = error.filter(|_| !ok).map(|e| e.chars().take(500).collect());
    progress.apply_micros = Some(apply_micros);
    progress.updated_at_ms = now_ms();
    true
}

/// The shared record of one deployment this hub drives.
#[derive(Debug)]
pub(super) struct RunRecord {
    pub row: Mutex<store_hub::DeploymentRow>,
    pub live: Mutex<LiveStatus>,
    pub servers: Mutex<ServerMap>,
}

impl RunRecord {
    pub fn new(row: store_hub::DeploymentRow) -> Arc<Self> {
        Arc::new(Self {
            row: Mutex::new(row),
            live: Mutex::new(LiveStatus::default()),
            servers: Mutex::new(ServerMap::new()),
        })
    }

    pub fn row(&self) -> store_hub::DeploymentRow {
        lock(&self.row).clone()
    }

    pub fn set_row(&self, row: store_hub::DeploymentRow) {
        *lock(&self.row) = row;
    }

    pub fn set_live(&self, live: LiveStatus) {
        *lock(&self.live) = live;
    }

    pub fn live(&self) -> LiveStatus {
        lock(&self.live).clone()
    }

    /// A frame carrying `revision` went to `server_id`.
    pub fn pushed(&self, server_id: &str, revision: i64) {
        set_pushed(
            &mut lock(&self.servers),
            server_id,
            || Arc::from(server_id),
            revision,
            now_ms(),
        );
    }

    /// Whether the deployment has sent this server anything.
    pub fn tracks(&self, server_id: &str) -> bool {
        lock(&self.servers).contains_key(server_id)
    }

    /// Servers sent (or found on) `revision`.
    pub fn on_revision(&self, revision: i64) -> Vec<Arc<str>> {
        lock(&self.servers)
            .iter()
            .filter(|(_, p)| p.revision == revision)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The per-server progress, locked for a pass over many servers (one
    /// lock rather than one per server).
    pub fn claims(&self) -> Claims<'_> {
        Claims {
            servers: lock(&self.servers),
            at_ms: now_ms(),
        }
    }

    /// Records a server's ack of `revision`; false if the server was not
    /// waited on for it. Only a target of this deployment (a server a frame
    /// went to) counts: an ack from any other server changes nothing.
    pub fn ack(
        &self,
        server_id: &str,
        revision: i64,
        ok: bool,
        error: Option<String>,
        apply_micros: u64,
    ) -> bool {
        let mut servers = lock(&self.servers);
        if !servers.contains_key(server_id) {
            return false;
        }
        ack(
            &mut servers,
            server_id,
            || unreachable!("the server is in the map"),
            revision,
            ok,
            error,
            apply_micros,
        )
    }

    /// The hub found a server already on `revision` (it came back holding
    /// it): it counts as acked.
    pub fn already_on(&self, server_id: &str, revision: i64) {
        ack(
            &mut lock(&self.servers),
            server_id,
            || Arc::from(server_id),
            revision,
            true,
            None,
            0,
        );
    }

    /// A server went away: what it had not acked failed.
    pub fn server_gone(&self, server_id: &str) {
        if let Some(progress) = lock(&self.servers)
            .get_mut(server_id)
            .filter(|p| p.state == ServerState::Pushed)
        {
            progress.state = ServerState::Failed;
            progress.error = Some("disconnected before acking".into());
            progress.updated_at_ms = now_ms();
        }
    }

    /// `(targets, pushed, acked, failed)`, optionally only for `revision`.
    pub fn counts(&self, revision: Option<i64>) -> (i64, i64, i64, i64) {
        tally(
            lock(&self.servers)
                .values()
                .filter(|p| revision.is_none_or(|r| p.revision == r)),
        )
    }

    /// Whether the server acked a revision of this deployment after `since_ms`.
    pub fn switched_since(&self, server_id: &str, since_ms: i64) -> bool {
        lock(&self.servers)
            .get(server_id)
            .is_some_and(|p| p.updated_at_ms > since_ms)
    }

    /// Servers still to ack, by id.
    pub fn waiting(&self) -> Vec<String> {
        let servers = lock(&self.servers);
        by_id(
            &servers,
            |p| p.state == ServerState::Pushed,
            None,
            usize::MAX,
        )
        .into_iter()
        .map(|(id, _)| id.to_owned())
        .collect()
    }

    /// Servers that failed to apply, with their error, by id.
    pub fn failures(&self) -> Vec<(String, Option<String>)> {
        let servers = lock(&self.servers);
        let failed = |p: &ServerProgress| {
            p.state == ServerState::Failed
                && p.error.as_deref() != Some("disconnected before acking")
        };
        by_id(&servers, failed, None, usize::MAX)
            .into_iter()
            .map(|(id, p)| (id.to_owned(), p.error.clone()))
            .collect()
    }

    /// The deployment with its counts and its first [`VIEW_SERVERS`]
    /// servers (a fleet's worth goes through [`RunRecord::servers_page`]).
    pub fn view(&self) -> DeploymentView {
        let mut view = view(&self.row());
        let servers = lock(&self.servers);
        if !servers.is_empty() {
            let (_, pushed, acked, failed) = tally(servers.values());
            view.targets = servers.len() as i64;
            (view.pushed, view.acked, view.failed) = (pushed, acked, failed);
        }
        view.servers = by_id(&servers, |_| true, None, VIEW_SERVERS)
            .into_iter()
            .map(|(id, p)| p.view(id))
            .collect();
        drop(servers);
        view.live = Some(self.live());
        view
    }

    /// Up to `limit` servers after `after` (by id), in `state` if given, and
    /// whether more follow.
    pub fn servers_page(
        &self,
        state: Option<ServerState>,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<ServerProgressView>, bool) {
        let servers = lock(&self.servers);
        let keep = |p: &ServerProgress| state.is_none_or(|s| p.state == s);
        let mut page = by_id(&servers, keep, after, limit.saturating_add(1));
        let more = page.len() > limit;
        page.truncate(limit);
        (page.into_iter().map(|(id, p)| p.view(id)).collect(), more)
    }
}

/// The first `limit` servers by id after `after` that `keep` keeps (a
/// partial sort: linear in the servers, `limit log limit` for the page).
fn by_id<'a>(
    servers: &'a ServerMap,
    keep: impl Fn(&ServerProgress) -> bool,
    after: Option<&str>,
    limit: usize,
) -> Vec<(&'a str, &'a ServerProgress)> {
    let mut matching: Vec<(&str, &ServerProgress)> = servers
        .iter()
        .map(|(id, p)| (&**id, p))
        .filter(|(id, p)| after.is_none_or(|after| *id > after) && keep(p))
        .collect();
    if matching.len() > limit && limit > 0 {
        matching.select_nth_unstable_by(limit - 1, |a, b| a.0.cmp(b.0));
    }
    matching.truncate(limit);
    matching.sort_unstable_by(|a, b| a.0.cmp(b.0));
    matching
}

/// Servers a deployment's view carries; the rest page through
/// `GET /deployments/{id}/servers`.
pub const VIEW_SERVERS: usize = 100;

/// `(targets, pushed, acked, failed)` of some servers.
fn tally<'a>(servers: impl Iterator<Item = &'a ServerProgress>) -> (i64, i64, i64, i64) {
    let mut counts = (0, 0, 0, 0);
    for p in servers {
        counts.0 += 1;
        match p.state {
            ServerState::Pushed => counts.1 += 1,
            ServerState::Acked => counts.2 += 1,
            ServerState::Failed => counts.3 += 1,
        }
    }
    counts
}

/// Deployments this hub drives (running, and the newest finished ones).
#[derive(Debug, Default)]
pub(super) struct Runs {
    map: Mutex<HashMap<String, Arc<RunRecord>>>,
}

/// Finished deployments kept in memory with their per-server detail.
const KEEP_FINISHED: usize = 64;

impl Runs {
    pub fn get(&self, id: &str) -> Option<Arc<RunRecord>> {
        lock(&self.map).get(id).cloned()
    }

    pub fn insert(&self, record: Arc<RunRecord>) {
        let mut map = lock(&self.map);
        let mut finished: Vec<(i64, String)> = map
            .values()
            .map(|r| r.row())
            .filter(|r| r.status.parse_state().is_finished())
            .map(|r| (r.created_at, r.id))
            .collect();
        if finished.len() >= KEEP_FINISHED {
            finished.sort();
            for (_, id) in &finished[..finished.len() + 1 - KEEP_FINISHED] {
                map.remove(id);
            }
        }
        let id = record.row().id;
        map.insert(id, record);
    }

    pub fn remove(&self, id: &str) {
        lock(&self.map).remove(id);
    }

    /// Deployments not finished.
    pub fn running(&self) -> usize {
        lock(&self.map)
            .values()
            .filter(|r| !r.row().status.parse_state().is_finished())
            .count()
    }
}

/// Reads a stored status back into a state.
pub(super) trait ParseState {
    fn parse_state(&self) -> DeploymentState;
}

impl ParseState for String {
    fn parse_state(&self) -> DeploymentState {
        match self.as_str() {
            "Pending" => DeploymentState::Pending,
            "AwaitingApproval" => DeploymentState::AwaitingApproval,
            "InProgress" => DeploymentState::InProgress { phase: 0 },
            "Paused" => DeploymentState::Paused { phase: 0 },
            "RollingBack" => DeploymentState::RollingBack,
            "RolledBack" => DeploymentState::RolledBack,
            "Cancelled" => DeploymentState::Cancelled,
            "Failed" => DeploymentState::Failed,
            _ => DeploymentState::Completed,
        }
    }
}

/// A state's stored name.
pub(super) fn status_name(state: DeploymentState) -> &'static str {
    match state {
        DeploymentState::Pending => "Pending",
        DeploymentState::AwaitingApproval => "AwaitingApproval",
        DeploymentState::InProgress { .. } => "InProgress",
        DeploymentState::Paused { .. } => "Paused",
        DeploymentState::Completed => "Completed",
        DeploymentState::RollingBack => "RollingBack",
        DeploymentState::RolledBack => "RolledBack",
        DeploymentState::Cancelled => "Cancelled",
        DeploymentState::Failed => "Failed",
    }
}

/// What a deployment looks like through the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    pub id: String,
    pub config: String,
    pub version: String,
    pub revision: i64,
    pub previous_revision: Option<i64>,
    pub strategy: String,
    pub environment: String,
    /// `Pending`, `AwaitingApproval`, `InProgress`, `Paused`, `Completed`,
    /// `RollingBack`, `RolledBack`, `Cancelled` or `Failed`.
    pub status: String,
    /// Canary step, rolling batch, region index or blue-green step (0 = green, 1 = switched).
    pub phase: i64,
    pub phase_started_at: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub approved_by: Option<String>,
    pub completed_at: Option<String>,
    pub updated_at: Option<String>,
    /// The plan the engine follows (strategy options, scope, rollback rules).
    #[schema(value_type = Object)]
    pub plan: Value,
    pub rollback: Option<RollbackRecord>,
    pub targets: i64,
    pub pushed: i64,
    pub acked: i64,
    pub failed: i64,
    /// The first 100 servers by id, while this hub tracks the deployment;
    /// `GET /deployments/{id}/servers` pages through all of them.
    pub servers: Vec<ServerProgressView>,
    /// Cohorts, their metrics and the last judgement, while this hub drives it.
    pub live: Option<LiveStatus>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerProgressView {
    pub server_id: String,
    /// The revision sent to this server (the previous one during a rollback).
    pub revision: i64,
    pub state: ServerState,
    pub error: Option<String>,
    pub apply_micros: Option<u64>,
    pub updated_at: String,
}

pub(super) fn view(row: &store_hub::DeploymentRow) -> DeploymentView {
    DeploymentView {
        id: row.id.clone(),
        config: row.config_name.clone(),
        version: row.version.clone(),
        revision: row.revision,
        previous_revision: row.previous_revision,
        strategy: row.strategy.clone(),
        environment: row.environment.clone(),
        status: row.status.clone(),
        phase: row.phase,
        phase_started_at: row.phase_started_at.map(rfc3339),
        created_by: row.created_by.clone(),
        created_at: rfc3339(row.created_at),
        approved_by: row.approved_by.clone(),
        completed_at: row.completed_at.map(rfc3339),
        updated_at: row.updated_at.map(rfc3339),
        plan: serde_json::from_str(&row.spec).unwrap_or(Value::Null),
        rollback: row
            .rollback
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok()),
        targets: row.target_count,
        pushed: 0,
        acked: row.acked_count,
        failed: row.failed_count,
        servers: Vec::new(),
        live: None,
    }
}

/// `GET /deployments/{id}/rollback-status`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatusView {
    pub deployment_id: String,
    pub status: String,
    /// Whether a critical breach rolls this deployment back by itself.
    pub automatic: bool,
    pub rollback: Option<RollbackRecord>,
    /// Servers yet to ack the previous revision (during a rollback).
    pub waiting_for: Vec<String>,
    pub rules: Vec<Rule>,
    pub judgement: Option<Judgement>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_is_claimed_once_and_an_ack_settles_it() {
        let mut servers = ServerMap::new();
        let id: Arc<str> = Arc::from("eu-1");
        let key = || id.clone();
        assert!(claim(&mut servers, "eu-1", key, 2, 0), "first claim");
        assert!(
            !claim(&mut servers, "eu-1", key, 2, 0),
            "already on its way"
        );
        assert!(
            Arc::ptr_eq(servers.keys().next().unwrap(), &id),
            "the id is shared, not copied"
        );
        assert!(
            !ack(&mut servers, "eu-1", key, 1, true, None, 5),
            "not waited on for 1"
        );
        assert!(ack(&mut servers, "eu-1", key, 2, true, None, 5));
        assert!(
            !claim(&mut servers, "eu-1", key, 2, 0),
            "acked: nothing to send again"
        );
        assert_eq!(tally(servers.values()), (1, 0, 1, 0));
        // A rollback sends the previous revision: a new claim.
        assert!(claim(&mut servers, "eu-1", key, 1, 0));
        assert!(ack(
            &mut servers,
            "eu-1",
            key,
            1,
            false,
            Some("bad".into()),
            9
        ));
        assert_eq!(tally(servers.values()), (1, 0, 0, 1));
        assert_eq!(servers["eu-1"].error.as_deref(), Some("bad"));
        // An ack from a server never pushed to (it came back on the target).
        assert!(ack(
            &mut servers,
            "na-2",
            || Arc::from("na-2"),
            1,
            true,
            None,
            0
        ));
        assert!(!ack(
            &mut servers,
            "ap-3",
            || Arc::from("ap-3"),
            1,
            false,
            None,
            0
        ));
        assert_eq!(tally(servers.values()), (2, 0, 1, 1));
    }

    #[test]
    fn pages_of_servers_come_in_id_order() {
        let mut servers = ServerMap::new();
        for i in (0..250).rev() {
            let id = format!("s-{i:03}");
            claim(&mut servers, &id, || Arc::from(id.as_str()), 1, 0);
            if i % 3 == 0 {
                ack(&mut servers, &id, || unreachable!(), 1, true, None, 1);
            }
        }
        let ids = |page: Vec<(&str, &ServerProgress)>| -> Vec<String> {
            page.into_iter().map(|(id, _)| id.to_owned()).collect()
        };
        let expected: Vec<String> = (0..250).map(|i| format!("s-{i:03}")).collect();
        assert_eq!(ids(by_id(&servers, |_| true, None, 100)), expected[..100]);
        assert_eq!(
            ids(by_id(&servers, |_| true, Some("s-099"), 100)),
            expected[100..200]
        );
        assert_eq!(
            ids(by_id(&servers, |_| true, Some("s-199"), 100)),
            expected[200..]
        );
        assert!(by_id(&servers, |_| true, Some("s-249"), 100).is_empty());
        let acked: Vec<String> = (0..250).step_by(3).map(|i| format!("s-{i:03}")).collect();
        let only_acked = |p: &ServerProgress| p.state == ServerState::Acked;
        assert_eq!(ids(by_id(&servers, only_acked, None, 1000)), acked);
        assert_eq!(
            ids(by_id(&servers, only_acked, Some("s-100"), 2)),
            ["s-102", "s-105"]
        );
        assert!(by_id(&servers, |_| true, None, 0).is_empty());
    }
}
