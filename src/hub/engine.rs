//! The deployment engine: one actor per deployment (see
//! `hotswap_actors::deployment`), driving the [`DeploymentRun`] below.
//!
//! Every state change is written to the store (with its audit row, and the
//! config's active revision when it moves) **before** its effect goes out:
//! only then does the assignment the hub serves from change, and only then
//! are frames pushed (`Hub::reconcile`). A hub killed at any moment restarts
//! from the stored state, and every server's revision is one that a stored
//! deployment or the config's active revision accounts for.
//!
//! What a server runs is `Serving::desired`: the in-flight deployment's
//! assignment if it covers the server, else the newest standing layer
//! (a completed deployment narrowed by regions or tags) covering it, else
//! the config's active revision.

use super::{
    Hub,
    deployments::{
        CohortSummary, CohortView, DeploymentError, DeploymentView, LiveStatus,
        NewDeploymentRequest, ParseState, RollbackRecord, RollbackRequest, RollbackStatusView,
        RunRecord, ServerProgressView, ServerState, ThresholdsRequest, merge_rules, status_name,
        view,
    },
};
use crate::{
    catalog::{Actor, DeploymentTarget, views::rfc3339},
    domain::{
        judgement::{Judgement, RankSettings, Rule, Verdict, default_rules, judge},
        kinds::Strategy,
        rollout::{
            Assignment, BUCKETS, Cover, DEFAULT_CANARY_PHASES, DEFAULT_REGION_ORDER,
            DeploymentState, Event as Transition, Scope, bucket, check_phases, parse_duration,
            percent_limit, transition,
        },
        window::{Report, SlidingWindow},
    },
    store::{StoreError, audit, hub as store_hub, now_ms},
};
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use hotswap_actors::{DeploymentDriver, DeploymentHandle, Fanout, Flow, ServerRecord};
use hotswap_client::protocol::Health;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};
use tokio::sync::oneshot;

pub(super) type RunHandle = DeploymentHandle<Command, Event>;

/// The largest A/B variant weight (weights are relative shares).
const MAX_VARIANT_WEIGHT: f64 = 1_000_000.0;

/// One A/B variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct VariantPlan {
    pub name: String,
    pub version: String,
    pub revision: i64,
    pub weight: f64,
}

/// What a deployment was asked to do, as the engine understood it (stored
/// as the row's `spec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Plan {
    /// Canary: percentages. Blue-green: the green share, then 100. Direct: 100.
    pub phases: Vec<f64>,
    pub phase_interval_ms: u64,
    pub auto_promote: bool,
    pub batch_size: usize,
    pub batch_interval_ms: u64,
    pub stop_on_failure: bool,
    pub verification_ms: u64,
    pub keep_blue_ms: u64,
    #[serde(default)]
    pub scope: Scope,
    /// Geographic: the order of the regions.
    #[serde(default)]
    pub region_order: Vec<String>,
    /// Geographic: regions rolled back on their own.
    #[serde(default)]
    pub excluded_regions: Vec<String>,
    #[serde(default)]
    pub variants: Vec<VariantPlan>,
    pub rules: Vec<Rule>,
    pub rank: RankSettings,
    pub needs_approval: bool,
}

impl Plan {
    /// The servers a finished deployment keeps (its last phase, whole).
    pub(super) fn full_cover(&self, strategy: Strategy) -> Cover {
        match strategy {
            Strategy::Geographic => Cover::Regions(self.regions_through(usize::MAX)),
            Strategy::ABTest => self.variant_cover(),
            _ => Cover::Below(BUCKETS),
        }
    }

    fn regions_through(&self, phase: usize) -> Vec<String> {
        self.region_order
            .iter()
            .take(phase.saturating_add(1))
            .filter(|r| {
                !self
                    .excluded_regions
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(r))
            })
            .cloned()
            .collect()
    }

    fn variant_cover(&self) -> Cover {
        Cover::Variants(
            self.variants
                .iter()
                .map(|v| (v.weight, v.revision))
                .collect(),
        )
    }

    /// Whether finishing leaves some servers out (then it stays a layer).
    pub(super) fn scoped(&self, strategy: Strategy) -> bool {
        !self.scope.is_everything() || strategy == Strategy::Geographic
    }
}

/// The in-flight deployment of a config, as the hot paths see it.
#[derive(Debug, Clone)]
pub(super) struct LiveRun {
    pub assignment: Arc<Assignment>,
    pub record: Arc<RunRecord>,
    pub handle: Option<RunHandle>,
    /// Cohort names: variants (A/B) by index.
    pub variant_names: Arc<[Arc<str>]>,
}

/// How the hub serves one config.
#[derive(Debug, Clone)]
pub(super) struct Serving {
    pub environment: String,
    /// The config's active revision.
    pub base: Option<i64>,
    /// Completed scoped deployments still in force, newest first.
    pub layers: Vec<Arc<Assignment>>,
    pub live: Option<LiveRun>,
}

/// The little of a server that decides what it runs.
pub(super) struct Who<'a> {
    pub server_id: &'a str,
    pub region: &'a str,
    pub tags: &'a [String],
    pub operator_tags: &'a [String],
}

impl<'a> Who<'a> {
    pub fn of(record: &'a ServerRecord) -> Self {
        Self {
            server_id: &record.server_id,
            region: &record.region,
            tags: &record.tags,
            operator_tags: &record.operator_tags,
        }
    }

    fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().chain(self.operator_tags).any(|t| t == tag)
    }

    fn revision_in(&self, assignment: &Assignment) -> Option<i64> {
        assignment.revision_for(self.server_id, self.region, |t| self.has_tag(t))
    }
}

pub(super) const BASELINE: &str = "baseline";
pub(super) const CANARY: &str = "canary";
// Shared, so counting a fleet's cohorts is a reference count per server.
static BASELINE_NAME: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
static CANARY_NAME: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();

fn cohort_name(cell: &std::sync::OnceLock<Arc<str>>, name: &str) -> Arc<str> {
    cell.get_or_init(|| Arc::from(name)).clone()
}

impl Serving {
    pub fn new(environment: &str) -> Self {
        Self {
            environment: environment.to_owned(),
            base: None,
            layers: Vec::new(),
            live: None,
        }
    }

    /// What the server runs outside the in-flight deployment.
    pub fn settled(&self, who: &Who) -> Option<i64> {
        self.layers
            .iter()
            .find_map(|layer| who.revision_in(layer))
            .or(self.base)
    }

    /// What the server should run, and whether the in-flight deployment says so.
    pub fn desired(&self, who: &Who) -> Option<(i64, bool)> {
        self.live
            .as_ref()
            .and_then(|live| who.revision_in(&live.assignment))
            .map(|r| (r, true))
            .or_else(|| self.settled(who).map(|r| (r, false)))
    }

    /// The server's cohort in the in-flight deployment: covered and on its
    /// revision, or outside and on the settled one; `None` in between.
    pub fn cohort_of(&self, who: &Who, applied: Option<i64>) -> Option<Arc<str>> {
        let live = self.live.as_ref()?;
        match who.revision_in(&live.assignment) {
            Some(revision) if applied == Some(revision) => Some(match &live.assignment.cover {
                Cover::Variants(variants) => {
                    let weights: Vec<f64> = variants.iter().map(|v| v.0).collect();
                    let index = crate::domain::rollout::variant(
                        bucket(&live.assignment.deployment_id, who.server_id),
                        &weights,
                    )?;
                    live.variant_names.get(index)?.clone()
                }
                _ => cohort_name(&CANARY_NAME, CANARY),
            }),
            Some(_) => None,
            None if applied.is_some() && applied == self.settled(who) => {
                Some(cohort_name(&BASELINE_NAME, BASELINE))
            }
            None => None,
        }
    }
}

/// Whether a step pushes what servers miss, or the frames of the state it
/// steps from were pushed just now (a second pass would find nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frames {
    Reconcile,
    JustPushed,
}

/// What operators can ask of a deployment.
#[derive(Debug)]
pub enum Action {
    Approve,
    Pause,
    Resume,
    Promote,
    Cancel,
    /// Cancelled because a new deployment of the config replaces it.
    Supersede(String),
    Rollback(RollbackRequest),
    Thresholds(ThresholdsRequest),
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Promote => "promote",
            Action::Cancel | Action::Supersede(_) => "cancel",
            Action::Rollback(_) => "rollback",
            Action::Thresholds(_) => "rollback-thresholds",
        }
    }
}

#[derive(Debug)]
pub(super) enum Command {
    Control {
        action: Action,
        actor: Actor,
        reply: oneshot::Sender<Result<(), DeploymentError>>,
    },
    /// The hub is stopping: stop without touching the deployment.
    Shutdown,
}

#[derive(Debug)]
pub(super) enum Event {
    Metrics {
        cohort: Arc<str>,
        region: Arc<str>,
        report: Arc<Report>,
        at_ms: i64,
    },
    Complaints {
        cohort: Arc<str>,
        region: Arc<str>,
        count: u64,
        at_ms: i64,
    },
}

/// Builds the plan of a new deployment from its request and the settings.
pub(super) fn plan_for(
    hub: &Hub,
    request: &NewDeploymentRequest,
    variants: Vec<VariantPlan>,
) -> Result<Plan, DeploymentError> {
    let settings = &hub.deployment_settings;
    let invalid = |why: String| DeploymentError::Invalid(why);
    let duration =
        |value: &Option<Value>, name: &str, default: u64| -> Result<u64, DeploymentError> {
            value
                .as_ref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| invalid(format!("{name}: {e}")))
                .map(|v| v.unwrap_or(default))
        };
    let strategy = request.strategy;
    let mut phases = match strategy {
        Strategy::Canary => request
            .phases
            .clone()
            .unwrap_or_else(|| DEFAULT_CANARY_PHASES.to_vec()),
        Strategy::BlueGreen => {
            let green = request
                .green_percentage
                .unwrap_or(settings.green_percentage);
            if !(green > 0.0 && green < 100.0) {
                return Err(invalid("greenPercentage must be between 0 and 100".into()));
            }
            vec![green, 100.0]
        }
        _ => vec![100.0],
    };
    if strategy == Strategy::Canary {
        if let Some(first) = request.canary_percentage {
            if request.phases.is_none() {
                phases.retain(|p| *p > first);
            }
            if phases.first() != Some(&first) {
                phases.insert(0, first);
            }
            phases.retain(|p| *p >= first);
        }
    } else if request.phases.is_some() || request.canary_percentage.is_some() {
        return Err(invalid(format!(
            "phases and canaryPercentage apply to Canary deployments, not {strategy}"
        )));
    }
    check_phases(&phases).map_err(|e| invalid(format!("phases: {e}")))?;
    let clean = |list: &Option<Vec<String>>, what: &str| -> Result<Vec<String>, DeploymentError> {
        let list = list.clone().unwrap_or_default();
        if list.len() > 64 || list.iter().any(|r| r.is_empty() || r.len() > 64) {
            return Err(invalid(format!(
                "{what}: at most 64 names of 1-64 characters"
            )));
        }
        Ok(list)
    };
    let regions = clean(&request.regions, "regions")?;
    let tags = clean(&request.tags, "tags")?;
    let (scope, region_order) = if strategy == Strategy::Geographic {
        let order = if regions.is_empty() {
            DEFAULT_REGION_ORDER.iter().map(|r| r.to_string()).collect()
        } else {
            regions
        };
        (
            Scope {
                regions: order.clone(),
                tags,
            },
            order,
        )
    } else {
        (Scope { regions, tags }, Vec::new())
    };
    if (strategy == Strategy::ABTest) == variants.is_empty() {
        return Err(invalid(
            "variants are required for ABTest and apply to nothing else".into(),
        ));
    }
    let mut rules = default_rules();
    if request.health_check_enabled == Some(false) {
        rules.retain(|r| r.metric != crate::domain::judgement::Metric::HealthCheckFailures);
    }
    if let Some(changes) = &request.thresholds {
        merge_rules(&mut rules, changes)?;
    }
    let confidence = request.confidence.unwrap_or(settings.confidence);
    if !(0.5..1.0).contains(&confidence) {
        return Err(invalid("confidence must be in [0.5, 1)".into()));
    }
    let batch_size = request.batch_size.unwrap_or(settings.batch_size);
    if batch_size == 0 {
        return Err(invalid("batchSize must be at least 1".into()));
    }
    Ok(Plan {
        phases,
        phase_interval_ms: duration(
            &request.phase_interval,
            "phaseInterval",
            settings.phase_interval_ms,
        )?,
        auto_promote: request.auto_promote.unwrap_or(true),
        batch_size,
        batch_interval_ms: duration(
            &request.batch_interval,
            "batchInterval",
            settings.batch_interval_ms,
        )?,
        stop_on_failure: request.stop_on_failure.unwrap_or(true),
        verification_ms: duration(
            &request.verification_period,
            "verificationPeriod",
            settings.verification_ms,
        )?,
        keep_blue_ms: duration(
            &request.keep_blue_duration,
            "keepBlueDuration",
            settings.keep_blue_ms,
        )?,
        scope,
        region_order,
        excluded_regions: Vec::new(),
        variants,
        rules,
        rank: RankSettings {
            confidence,
            ..RankSettings::default()
        },
        needs_approval: false,
    })
}

/// The state a stored row is in.
pub(super) fn state_of(row: &store_hub::DeploymentRow) -> DeploymentState {
    let phase = usize::try_from(row.phase).unwrap_or(0);
    match row.status.parse_state() {
        DeploymentState::InProgress { .. } => DeploymentState::InProgress { phase },
        DeploymentState::Paused { .. } => DeploymentState::Paused { phase },
        other => other,
    }
}

/// A deployment's mutable state, owned by its actor.
pub(super) struct DeploymentRun {
    hub: Arc<Hub>,
    record: Arc<RunRecord>,
    row: store_hub::DeploymentRow,
    plan: Plan,
    strategy: Strategy,
    state: DeploymentState,
    windows: HashMap<Arc<str>, SlidingWindow>,
    region_windows: HashMap<(Arc<str>, Arc<str>), SlidingWindow>,
    last: Option<Judgement>,
    evaluated_at: Option<i64>,
    warning: Option<String>,
    rollback_deadline_ms: Option<i64>,
    handle: Option<RunHandle>,
}

impl std::fmt::Debug for DeploymentRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentRun")
            .field("id", &self.row.id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl DeploymentRun {
    pub fn new(hub: Arc<Hub>, record: Arc<RunRecord>, plan: Plan) -> Result<Self, DeploymentError> {
        let row = record.row();
        let strategy: Strategy = row
            .strategy
            .parse()
            .map_err(|e: String| DeploymentError::Invalid(e))?;
        let state = state_of(&row);
        let rollback_deadline_ms = (state == DeploymentState::RollingBack)
            .then(|| now_ms() + hub.deployment_settings.rollback_ack_timeout_ms as i64);
        Ok(Self {
            hub,
            record,
            row,
            plan,
            strategy,
            state,
            windows: HashMap::new(),
            region_windows: HashMap::new(),
            last: None,
            evaluated_at: None,
            warning: None,
            rollback_deadline_ms,
            handle: None,
        })
    }

    pub fn set_handle(&mut self, handle: RunHandle) {
        self.handle = Some(handle);
    }

    fn phase(&self) -> usize {
        match self.state {
            DeploymentState::InProgress { phase } | DeploymentState::Paused { phase } => phase,
            _ => 0,
        }
    }

    /// Phases the strategy has (Rolling: open-ended until everyone is covered).
    fn phase_count(&self) -> usize {
        match self.strategy {
            Strategy::Canary | Strategy::BlueGreen => self.plan.phases.len(),
            Strategy::Geographic => self.plan.region_order.len().max(1),
            Strategy::Rolling => usize::MAX,
            Strategy::Direct | Strategy::ABTest => 1,
        }
    }

    /// Who the deployment covers in its current state.
    pub fn cover(&self) -> Cover {
        match self.state {
            DeploymentState::InProgress { phase } | DeploymentState::Paused { phase } => {
                match self.strategy {
                    Strategy::Direct => Cover::Below(BUCKETS),
                    Strategy::Canary | Strategy::BlueGreen => Cover::Below(percent_limit(
                        self.plan.phases[phase.min(self.plan.phases.len() - 1)],
                    )),
                    Strategy::Rolling => Cover::Below(
                        self.row
                            .cover_bucket
                            .map_or(0, |b| b.clamp(0, i64::from(BUCKETS)) as u32),
                    ),
                    Strategy::Geographic => Cover::Regions(self.plan.regions_through(phase)),
                    Strategy::ABTest => self.plan.variant_cover(),
                }
            }
            DeploymentState::Completed => self.plan.full_cover(self.strategy),
            _ => Cover::Nobody,
        }
    }

    pub fn assignment(&self) -> Arc<Assignment> {
        Arc::new(Assignment {
            deployment_id: self.row.id.clone(),
            revision: self.row.revision,
            scope: self.plan.scope.clone(),
            cover: self.cover(),
        })
    }

    pub fn variant_names(&self) -> Arc<[Arc<str>]> {
        self.plan
            .variants
            .iter()
            .map(|v| Arc::from(v.name.as_str()))
            .collect()
    }

    /// Stores the move to `next` (with its audit row and, when given, the
    /// config's new active revision); only then changes what servers get.
    async fn commit(
        &mut self,
        next: DeploymentState,
        actor: &Actor,
        action: &'static str,
        details: Value,
        active_revision: Option<i64>,
        change_row: impl FnOnce(&mut store_hub::DeploymentRow),
    ) -> Result<(), DeploymentError> {
        let now = now_ms();
        let mut row = self.row.clone();
        row.status = status_name(next).to_owned();
        row.phase = match next {
            DeploymentState::InProgress { phase } | DeploymentState::Paused { phase } => {
                phase as i64
            }
            _ => row.phase,
        };
        if matches!(next, DeploymentState::InProgress { phase } if phase != self.phase() || !matches!(self.state, DeploymentState::InProgress { .. } | DeploymentState::Paused { .. }))
        {
            row.phase_started_at = Some(now);
        }
        if next.is_finished() && next != DeploymentState::Completed
            || next == DeploymentState::Completed && self.state != DeploymentState::Completed
        {
            row.completed_at = Some(now);
        }
        row.updated_at = Some(now);
        row.spec = serde_json::to_string(&self.plan).expect("a plan serializes");
        let (targets, _, acked, failed) = self.record.counts(None);
        (row.target_count, row.acked_count, row.failed_count) = (targets, acked, failed);
        change_row(&mut row);
        // What a rollback moves back is part of its decision: a hub
        // restarted before the servers acked waits for them.
        let moved_back = (next == DeploymentState::RollingBack).then(|| {
            let mut ids: Vec<Arc<str>> = self.record.on_revision(row.revision);
            ids.extend(
                self.hub
                    .registry
                    .holding(&row.config_name, &row.environment, row.revision),
            );
            ids.sort();
            ids.dedup();
            serde_json::to_string(&ids).expect("ids serialize")
        });
        let mut tx = self.hub.store.begin().await?;
        store_hub::save_deployment(&mut tx, &row).await?;
        if let Some(ids) = &moved_back {
            store_hub::set_rollback_targets(&mut tx, &row.id, ids).await?;
        }
        if let Some(revision) = active_revision {
            store_hub::set_active_revision(&mut tx, &row.config_id, revision).await?;
        }
        audit::record(
            &mut tx,
            actor.audit_entry(action, format!("deployments/{}", row.id), details),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        tracing::info!(deployment = %row.id, config = %row.config_name, status = %row.status, phase = row.phase, action, "deployment moved");
        self.row = row.clone();
        self.state = next;
        self.record.set_row(row);
        Ok(())
    }

    /// Makes the hub serve the current state, pushes what changed, and
    /// publishes the new state.
    async fn apply(&mut self) {
        self.serve().await;
        self.publish();
    }

    /// Makes the hub serve the current state, and pushes what changed.
    async fn serve(&mut self) {
        let assignment = self.assignment();
        let config = self.row.config_name.clone();
        {
            let mut serving = self.hub.serving_write();
            let entry = serving
                .entry(config.clone())
                .or_insert_with(|| Serving::new(&self.row.environment));
            match self.state {
                DeploymentState::Completed => {
                    if self.plan.scoped(self.strategy) {
                        entry.layers.retain(|l| l.deployment_id != self.row.id);
                        entry.layers.insert(0, assignment);
                        entry.layers.truncate(64);
                    } else {
                        entry.base = Some(self.row.revision);
                        entry.layers.clear();
                    }
                    entry.live = None;
                }
                state if state.is_finished() => {
                    if entry
                        .live
                        .as_ref()
                        .is_some_and(|l| l.assignment.deployment_id == self.row.id)
                    {
                        entry.live = None;
                    }
                }
                _ => {
                    entry.live = Some(LiveRun {
                        assignment,
                        record: self.record.clone(),
                        handle: self.handle.clone(),
                        variant_names: self.variant_names(),
                    });
                }
            }
        }
        self.hub.reconcile(&config).await;
    }

    fn fold(
        &mut self,
        cohort: Arc<str>,
        region: Arc<str>,
        at_ms: i64,
        add: impl Fn(&mut SlidingWindow, i64),
    ) {
        let settings = &self.hub.deployment_settings;
        let new_window = || {
            SlidingWindow::new(
                settings.window_ms.max(settings.fast_window_ms),
                1_000.min(settings.fast_window_ms.max(1)),
            )
        };
        add(
            self.windows
                .entry(cohort.clone())
                .or_insert_with(new_window),
            at_ms,
        );
        add(
            self.region_windows
                .entry((cohort, region))
                .or_insert_with(new_window),
            at_ms,
        );
    }

    /// Judges the canary (or each variant) against the baseline over both
    /// windows: a rollback from either, a hold from the long one.
    fn evaluate(&mut self, now: i64) -> Verdict {
        let settings = self.hub.deployment_settings.clone();
        let (control, treatments): (Arc<str>, Vec<Arc<str>>) = if self.strategy == Strategy::ABTest
        {
            let names = self.variant_names();
            (names[0].clone(), names[1..].to_vec())
        } else {
            (Arc::from(BASELINE), vec![Arc::from(CANARY)])
        };
        let mut snapshot = |cohort: &Arc<str>, last: u64| {
            self.windows
                .get_mut(cohort)
                .map(|w| w.snapshot_last(now, last))
                .unwrap_or_default()
        };
        let mut worst: Option<(Verdict, Judgement)> = None;
        for treatment in &treatments {
            let long = judge(
                &self.plan.rules,
                &self.plan.rank,
                &snapshot(&control, settings.window_ms),
                &snapshot(treatment, settings.window_ms),
            );
            let fast = judge(
                &self.plan.rules,
                &self.plan.rank,
                &snapshot(&control, settings.fast_window_ms),
                &snapshot(treatment, settings.fast_window_ms),
            );
            let (verdict, judgement) = if fast.verdict == Verdict::Rollback {
                (Verdict::Rollback, fast)
            } else {
                (long.verdict, long)
            };
            let rank = |v: Verdict| match v {
                Verdict::NotEnoughData => 0,
                Verdict::Healthy => 1,
                Verdict::Hold => 2,
                Verdict::Rollback => 3,
            };
            if worst.as_ref().is_none_or(|(w, _)| rank(verdict) > rank(*w)) {
                worst = Some((verdict, judgement));
            }
        }
        let (verdict, judgement) = worst.expect("at least one treatment");
        self.warning = (verdict == Verdict::Hold).then(|| {
            format!(
                "warning on {}: auto-promotion holds",
                judgement
                    .deciding_metric()
                    .map(|m| format!("{m:?}"))
                    .unwrap_or_default()
            )
        });
        self.last = Some(judgement);
        self.evaluated_at = Some(now);
        verdict
    }

    /// Publishes cohorts, windows and the last judgement for the API.
    fn publish(&mut self) {
        let now = now_ms();
        let settings = self.hub.deployment_settings.clone();
        let sizes = self
            .hub
            .cohort_sizes(&self.row.config_name, &self.row.environment);
        let mut names: Vec<Arc<str>> = self.windows.keys().cloned().collect();
        for name in sizes.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names.sort();
        let mut cohorts = Vec::new();
        for name in names {
            let (window, fast_window) = match self.windows.get_mut(&name) {
                Some(w) => (
                    CohortSummary::of(&w.snapshot_last(now, settings.window_ms)),
                    CohortSummary::of(&w.snapshot_last(now, settings.fast_window_ms)),
                ),
                None => Default::default(),
            };
            let regions: BTreeMap<String, CohortSummary> = self
                .region_windows
                .iter_mut()
                .filter(|((cohort, _), _)| *cohort == name)
                .map(|((_, region), w)| {
                    (
                        region.to_string(),
                        CohortSummary::of(&w.snapshot_last(now, settings.window_ms)),
                    )
                })
                .collect();
            cohorts.push(CohortView {
                servers: sizes.get(&name).copied().unwrap_or(0),
                cohort: name.to_string(),
                window,
                fast_window,
                regions,
            });
        }
        self.record.set_live(LiveStatus {
            cohorts,
            judgement: self.last.clone(),
            evaluated_at: self.evaluated_at.map(rfc3339),
            warning: self.warning.clone(),
            dropped_metric_events: self.handle.as_ref().map_or(0, |h| h.dropped_events()),
            window_ms: settings.window_ms,
            fast_window_ms: settings.fast_window_ms,
        });
    }

    /// Moves to the next phase (or completes).
    async fn advance(&mut self, actor: &Actor, why: &str) -> Result<(), DeploymentError> {
        let phase = self.phase();
        if self.strategy == Strategy::Rolling {
            let current = self.row.cover_bucket.unwrap_or(0);
            let next = self.hub.next_rolling_limit(
                &self.row.config_name,
                &self.row.environment,
                &self.assignment(),
                u32::try_from(current.max(0)).unwrap_or(BUCKETS),
                self.plan.batch_size,
            );
            if next >= BUCKETS {
                return self.complete(actor).await;
            }
            let next_state = DeploymentState::InProgress { phase: phase + 1 };
            self.commit(
                next_state,
                actor,
                "deployment.advance",
                json!({ "phase": phase + 1, "coverBucket": next, "why": why }),
                None,
                |row| row.cover_bucket = Some(i64::from(next)),
            )
            .await?;
            self.apply().await;
            return Ok(());
        }
        let next = transition(
            self.state,
            Transition::Advance {
                phases: self.phase_count(),
            },
        )
        .map_err(|e| DeploymentError::Conflict(e.to_string()))?;
        if next == DeploymentState::Completed {
            return self.complete(actor).await;
        }
        self.commit(
            next,
            actor,
            "deployment.advance",
            json!({ "phase": phase + 1, "why": why }),
            None,
            |_| {},
        )
        .await?;
        self.apply().await;
        Ok(())
    }

    async fn complete(&mut self, actor: &Actor) -> Result<(), DeploymentError> {
        let scoped = self.plan.scoped(self.strategy);
        let revision = self.row.revision;
        self.commit(
            DeploymentState::Completed,
            actor,
            "deployment.complete",
            json!({ "revision": revision, "scoped": scoped }),
            (!scoped).then_some(revision),
            |row| row.cover_bucket = row.cover_bucket.map(|_| i64::from(BUCKETS)),
        )
        .await?;
        self.apply().await;
        Ok(())
    }

    /// Rolls back: every server that got the new revision gets its previous
    /// one; done when they all acked (or the ack timeout passed).
    pub async fn rollback(
        &mut self,
        actor: &Actor,
        request: RollbackRequest,
        breach: Option<&Judgement>,
        detected_at: i64,
    ) -> Result<(), DeploymentError> {
        if let Some(region) = request.region.clone() {
            return self.rollback_region(actor, region).await;
        }
        let from_completed = self.state == DeploymentState::Completed;
        let next = transition(self.state, Transition::Rollback)
            .map_err(|e| DeploymentError::Conflict(e.to_string()))?;
        let scoped = self.plan.scoped(self.strategy);
        let to_revision = self.row.previous_revision;
        if to_revision.is_none() && !scoped {
            return Err(DeploymentError::Conflict(
                "this is the config's first deployment: there is no previous revision to roll back to".into(),
            ));
        }
        let deciding = breach.and_then(|j| {
            let metric = j.deciding_metric()?.clone();
            let rule = j
                .rules
                .iter()
                .filter(|r| r.metric == metric)
                .max_by_key(|r| r.level);
            Some((metric, rule.cloned()))
        });
        let now = now_ms();
        let mut record = RollbackRecord {
            trigger: if breach.is_some() {
                "automatic"
            } else {
                "manual"
            }
            .into(),
            reason: request.reason.clone().unwrap_or_else(|| match &deciding {
                Some((metric, _)) => format!("critical breach of {metric:?}"),
                None if breach.is_some() => "critical breach".into(),
                None => format!("rolled back by {}", actor.subject),
            }),
            by: actor.subject.clone(),
            to_revision,
            detected_at: rfc3339(detected_at),
            rollback_started_at: rfc3339(now),
            ..Default::default()
        };
        if let Some((metric, rule)) = deciding {
            record.metric = Some(metric);
            if let Some(rule) = rule {
                record.observed = rule.canary;
                record.baseline = rule.baseline;
                record.change = rule.change;
                record.p_value = rule.p_value;
            }
        }
        let text = serde_json::to_string(&record).expect("a record serializes");
        let active = (from_completed && !scoped).then_some(to_revision).flatten();
        self.commit(
            next,
            actor,
            "deployment.rollback",
            serde_json::to_value(&record).expect("a record serializes"),
            active,
            |row| row.rollback = Some(text),
        )
        .await?;
        self.rollback_deadline_ms =
            Some(now + self.hub.deployment_settings.rollback_ack_timeout_ms as i64);
        if from_completed {
            let mut serving = self.hub.serving_write();
            if let Some(entry) = serving.get_mut(&self.row.config_name) {
                if scoped {
                    entry.layers.retain(|l| l.deployment_id != self.row.id);
                } else {
                    entry.base = to_revision;
                }
            }
        }
        self.hub.alert(&self.row, &record);
        self.apply().await;
        Ok(())
    }

    /// Geographic: one region goes back; the deployment pauses for a decision.
    async fn rollback_region(
        &mut self,
        actor: &Actor,
        region: String,
    ) -> Result<(), DeploymentError> {
        if self.strategy != Strategy::Geographic {
            return Err(DeploymentError::Invalid(
                "region applies to Geographic deployments".into(),
            ));
        }
        if !self
            .plan
            .region_order
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&region))
        {
            return Err(DeploymentError::Invalid(format!(
                "{region} is not one of this deployment's regions"
            )));
        }
        let phase = match self.state {
            DeploymentState::InProgress { phase } | DeploymentState::Paused { phase } => phase,
            other => {
                return Err(DeploymentError::Conflict(format!(
                    "cannot roll back a region of a deployment that is {}",
                    status_name(other)
                )));
            }
        };
        if !self
            .plan
            .excluded_regions
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&region))
        {
            self.plan.excluded_regions.push(region.clone());
        }
        self.commit(
            DeploymentState::Paused { phase },
            actor,
            "deployment.rollback-region",
            json!({ "region": region }),
            None,
            |_| {},
        )
        .await?;
        self.apply().await;
        Ok(())
    }

    async fn control(&mut self, action: Action, actor: &Actor) -> Result<(), DeploymentError> {
        let name = action.name();
        let simple = |state, event| {
            transition(state, event).map_err(|_| {
                DeploymentError::Conflict(format!(
                    "cannot {name} a deployment that is {}",
                    status_name(state)
                ))
            })
        };
        match action {
            Action::Approve => {
                if actor.subject == self.row.created_by {
                    return Err(DeploymentError::Forbidden(
                        "a deployment is approved by an admin other than its creator".into(),
                    ));
                }
                let next = simple(self.state, Transition::Approve)?;
                let by = actor.subject.clone();
                self.commit(next, actor, "deployment.approve", json!({}), None, |row| {
                    row.approved_by = Some(by)
                })
                .await?;
                if self.strategy == Strategy::Rolling {
                    return self.first_batch(actor).await;
                }
                self.serve().await;
                // A Direct deployment with nothing to wait for completes now.
                self.step(Frames::JustPushed).await?;
            }
            Action::Pause => {
                let next = simple(self.state, Transition::Pause)?;
                self.commit(next, actor, "deployment.pause", json!({}), None, |_| {})
                    .await?;
                self.publish();
            }
            Action::Resume => {
                let next = simple(self.state, Transition::Resume)?;
                self.commit(next, actor, "deployment.resume", json!({}), None, |_| {})
                    .await?;
                self.publish();
            }
            Action::Promote => {
                simple(
                    self.state,
                    Transition::Advance {
                        phases: self.phase_count(),
                    },
                )?;
                if self.strategy == Strategy::ABTest {
                    return Err(DeploymentError::Conflict(
                        "an A/B test has no next phase: cancel it or roll it back".into(),
                    ));
                }
                self.advance(actor, "promoted by an operator").await?;
            }
            Action::Cancel | Action::Supersede(_) => {
                let next = simple(self.state, Transition::Cancel)?;
                let details = match &action {
                    Action::Supersede(by) => json!({ "supersededBy": by }),
                    _ => json!({}),
                };
                self.commit(next, actor, "deployment.cancel", details, None, |_| {})
                    .await?;
                self.apply().await;
            }
            Action::Rollback(request) => {
                self.rollback(actor, request, None, now_ms()).await?;
            }
            Action::Thresholds(request) => {
                if self.state.is_finished() || self.state == DeploymentState::RollingBack {
                    return Err(DeploymentError::Conflict(format!(
                        "cannot change the thresholds of a deployment that is {}",
                        status_name(self.state)
                    )));
                }
                let mut rules = self.plan.rules.clone();
                merge_rules(&mut rules, &request.thresholds)?;
                let before = (self.plan.rules.clone(), self.plan.rank);
                self.plan.rules = rules;
                if let Some(confidence) = request.confidence {
                    if !(0.5..1.0).contains(&confidence) {
                        self.plan.rules = before.0;
                        return Err(DeploymentError::Invalid(
                            "confidence must be in [0.5, 1)".into(),
                        ));
                    }
                    self.plan.rank.confidence = confidence;
                }
                let details =
                    json!({ "rules": self.plan.rules, "confidence": self.plan.rank.confidence });
                if let Err(error) = self
                    .commit(
                        self.state,
                        actor,
                        "deployment.rollback-thresholds",
                        details,
                        None,
                        |_| {},
                    )
                    .await
                {
                    (self.plan.rules, self.plan.rank) = before;
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Rolling: covers the first batch.
    pub async fn first_batch(&mut self, actor: &Actor) -> Result<(), DeploymentError> {
        let limit = self.hub.next_rolling_limit(
            &self.row.config_name,
            &self.row.environment,
            &self.assignment(),
            0,
            self.plan.batch_size,
        );
        if limit >= BUCKETS {
            return self.complete(actor).await;
        }
        self.commit(
            self.state,
            actor,
            "deployment.advance",
            json!({ "phase": 0, "coverBucket": limit }),
            None,
            |row| row.cover_bucket = Some(i64::from(limit)),
        )
        .await?;
        self.apply().await;
        Ok(())
    }

    /// One evaluation: judge, roll back on a critical breach, advance when
    /// due. `frames` says whether this state's frames went out just now
    /// (a fresh deployment's first step) or servers may need them.
    async fn step(&mut self, frames: Frames) -> Result<(), DeploymentError> {
        let now = now_ms();
        let system = Actor::system();
        match self.state {
            DeploymentState::InProgress { .. } | DeploymentState::Paused { .. } => {
                let verdict = self.evaluate(now);
                if verdict == Verdict::Rollback {
                    let judgement = self.last.clone();
                    if self.row.previous_revision.is_some() || self.plan.scoped(self.strategy) {
                        tracing::warn!(deployment = %self.row.id, "critical breach: rolling back");
                        return self
                            .rollback(&system, RollbackRequest::default(), judgement.as_ref(), now)
                            .await;
                    }
                    if matches!(self.state, DeploymentState::InProgress { .. }) {
                        self.warning = Some("critical breach, but the config has no previous revision to roll back to: paused".into());
                        self.commit(
                            DeploymentState::Paused {
                                phase: self.phase(),
                            },
                            &system,
                            "deployment.pause",
                            json!({ "why": "critical breach without a previous revision" }),
                            None,
                            |_| {},
                        )
                        .await?;
                    }
                    return Ok(());
                }
                let DeploymentState::InProgress { phase } = self.state else {
                    return Ok(());
                };
                // Servers skipped while unhealthy, or whose frame was lost,
                // get what their cohort runs.
                if frames == Frames::Reconcile {
                    self.hub.reconcile(&self.row.config_name).await;
                }
                let revision_acks = self.record.counts(None);
                let failures = self.record.failures();
                if self.strategy == Strategy::Rolling
                    && self.plan.stop_on_failure
                    && !failures.is_empty()
                {
                    let (server, error) = &failures[0];
                    return self
                        .rollback(
                            &system,
                            RollbackRequest {
                                region: None,
                                reason: Some(format!(
                                    "server {server} failed to apply: {}",
                                    error.as_deref().unwrap_or("no reason given")
                                )),
                            },
                            None,
                            now,
                        )
                        .await;
                }
                let acked = revision_acks.1 == 0;
                let elapsed = now - self.row.phase_started_at.unwrap_or(now);
                let holding = verdict == Verdict::Hold;
                let due = |interval: u64| acked && !holding && elapsed >= interval as i64;
                let last_phase = phase + 1 >= self.phase_count();
                match self.strategy {
                    Strategy::Direct => {
                        if acked {
                            self.complete(&system).await?;
                        }
                    }
                    Strategy::Canary | Strategy::Geographic => {
                        if last_phase && acked {
                            self.complete(&system).await?;
                        } else if self.plan.auto_promote && due(self.plan.phase_interval_ms) {
                            self.advance(&system, "the phase stayed healthy for its interval")
                                .await?;
                        }
                    }
                    Strategy::Rolling => {
                        if self.plan.auto_promote && due(self.plan.batch_interval_ms) {
                            self.advance(&system, "the batch acked and stayed healthy")
                                .await?;
                        }
                    }
                    Strategy::BlueGreen => {
                        let wait = if phase == 0 {
                            self.plan.verification_ms
                        } else {
                            self.plan.keep_blue_ms
                        };
                        if (phase > 0 || self.plan.auto_promote) && due(wait) {
                            let why = if phase == 0 {
                                "green verified: switching"
                            } else {
                                "blue no longer kept"
                            };
                            self.advance(&system, why).await?;
                        }
                    }
                    Strategy::ABTest => {}
                }
            }
            DeploymentState::RollingBack => {
                let waiting = self.record.waiting();
                let overdue = self.rollback_deadline_ms.is_some_and(|d| now >= d);
                if waiting.is_empty() || overdue {
                    let mut record: RollbackRecord = self
                        .row
                        .rollback
                        .as_deref()
                        .and_then(|r| serde_json::from_str(r).ok())
                        .unwrap_or_default();
                    record.rollback_completed_at = Some(rfc3339(now));
                    let detected = chrono::DateTime::parse_from_rfc3339(&record.detected_at)
                        .map(|d| d.timestamp_millis())
                        .unwrap_or(now);
                    record.duration_ms = Some(now - detected);
                    record.unacked = waiting;
                    let text = serde_json::to_string(&record).expect("a record serializes");
                    self.commit(
                        DeploymentState::RolledBack,
                        &system,
                        "deployment.rolled-back",
                        serde_json::to_value(&record).expect("a record serializes"),
                        None,
                        |row| row.rollback = Some(text),
                    )
                    .await?;
                    self.apply().await;
                }
            }
            _ => {}
        }
        self.publish();
        Ok(())
    }
}

impl DeploymentDriver for DeploymentRun {
    type Command = Command;
    type Event = Event;

    fn every(&self) -> Duration {
        Duration::from_millis(self.hub.deployment_settings.evaluate_every_ms.max(10))
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Metrics {
                cohort,
                region,
                report,
                at_ms,
            } => self.fold(cohort, region, at_ms, |w, at| w.fold(at, &report)),
            Event::Complaints {
                cohort,
                region,
                count,
                at_ms,
            } => self.fold(cohort, region, at_ms, |w, at| w.add_complaints(at, count)),
        }
    }

    fn command(&mut self, command: Command) -> LocalBoxFuture<'_, Flow> {
        Box::pin(async move {
            match command {
                Command::Shutdown => return Flow::Stop,
                Command::Control {
                    action,
                    actor,
                    reply,
                } => {
                    let result = self.control(action, &actor).await;
                    if let Err(error) = &result {
                        tracing::info!(deployment = %self.row.id, error = %error, "deployment command refused");
                    }
                    let _ = reply.send(result);
                }
            }
            self.flow()
        })
    }

    fn tick(&mut self) -> LocalBoxFuture<'_, Flow> {
        Box::pin(async move {
            if let Err(error) = self.step(Frames::Reconcile).await {
                tracing::warn!(deployment = %self.row.id, error = %error, "deployment step failed; will retry");
            }
            self.flow()
        })
    }
}

impl DeploymentRun {
    fn flow(&self) -> Flow {
        if self.state.is_finished() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }
}

impl Hub {
    pub(super) fn serving_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Serving>> {
        hotswap_client::sync::read(&self.serving)
    }

    pub(super) fn serving_write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Serving>> {
        hotswap_client::sync::write(&self.serving)
    }

    /// Servers per cohort of the config's in-flight deployment.
    fn cohort_sizes(&self, config: &str, environment: &str) -> HashMap<Arc<str>, usize> {
        let Some(serving) = self.serving_read().get(config).cloned() else {
            return HashMap::new();
        };
        let mut sizes = HashMap::new();
        self.registry.for_each_connected(config, |record| {
            if record.environment != environment {
                return;
            }
            if let Some(cohort) =
                serving.cohort_of(&Who::of(record), record.applied.get(config).copied())
            {
                *sizes.entry(cohort).or_insert(0) += 1;
            }
        });
        sizes
    }

    /// Rolling: the bucket limit covering `batch` more healthy in-scope
    /// servers than `current` does; `BUCKETS` when none would be left out.
    fn next_rolling_limit(
        &self,
        config: &str,
        environment: &str,
        assignment: &Assignment,
        current: u32,
        batch: usize,
    ) -> u32 {
        let mut uncovered: Vec<u32> = self
            .registry
            .targets_with(config, |record| {
                let who = Who::of(record);
                (record.environment == environment
                    && record.status == Health::Healthy
                    && assignment
                        .scope
                        .contains(&record.region, |t| who.has_tag(t)))
                .then(|| bucket(&assignment.deployment_id, &record.server_id))
            })
            .into_iter()
            .map(|(_, b)| b)
            .filter(|b| *b >= current)
            .collect();
        uncovered.sort_unstable();
        if uncovered.len() <= batch {
            BUCKETS
        } else {
            uncovered[batch - 1] + 1
        }
    }

    /// Pushes to every connected server of `config` whatever it should run
    /// and does not (nor has on its way); the in-flight deployment, if any,
    /// tracks the servers it moves. One frame per (from, to) pair.
    pub(super) async fn reconcile(&self, config: &str) -> usize {
        let Some(serving) = self.serving_read().get(config).cloned() else {
            return 0;
        };
        let record = serving.live.as_ref().map(|l| l.record.clone());
        let deployment = serving
            .live
            .as_ref()
            .map(|l| l.assignment.deployment_id.clone());
        let picks = self.registry.targets_with(config, |server| {
            if server.environment != serving.environment {
                return None;
            }
            let who = Who::of(server);
            let (target, from_live) = serving.desired(&who)?;
            let applied = server.applied.get(config).copied();
            // Unhealthy servers are not moved onto a new revision mid-deployment.
            let fresh = from_live && applied != Some(target) && server.status != Health::Healthy;
            (!fresh).then_some((target, from_live))
        });
        let mut groups: BTreeMap<(Option<i64>, i64), Vec<hotswap_actors::ConnectedTarget>> =
            BTreeMap::new();
        // Every target is claimed before the first frame leaves.
        let mut claims = record.as_ref().map(|r| r.claims());
        if let Some(claims) = &mut claims {
            claims.reserve_for(picks.len());
        }
        for (server, (target, from_live)) in picks {
            // The deployment tracks the servers it covers, and those it
            // moved and now moves back (a rollback, a cancel), and only
            // those: a server outside it is no target, and nothing it acks
            // counts.
            let claims = claims
                .as_mut()
                .filter(|c| from_live || c.tracks(&server.server_id));
            if server.applied == Some(target) {
                if let Some(claims) = claims {
                    claims.already_on(&server.server_id, target);
                }
                continue;
            }
            if claims.is_some_and(|c| !c.claim(&server.server_id, target)) {
                continue;
            }
            groups
                .entry((server.applied, target))
                .or_default()
                .push(server);
        }
        drop(claims);
        let mut pushed = 0;
        for ((from, to), servers) in groups {
            let frame: Option<Bytes> = self
                .frame_towards(config, from, to, deployment.as_deref())
                .await;
            // Every frame is queued before any writer wakes; each worker
            // then wakes its own sessions (`hotswap_actors::Fanout`).
            let mut fanout = Fanout::new();
            for server in servers {
                let delivered = match &frame {
                    Some(frame) => self.push_to(&mut fanout, &server.outbox, frame.clone()),
                    None => false,
                };
                if !delivered && let Some(record) = &record {
                    record.server_gone(&server.server_id);
                }
                pushed += usize::from(delivered);
            }
            fanout.wake();
        }
        if pushed > 0 {
            // Behind the writers just woken on this worker: what callers do
            // next (counts, cohorts, the answer) waits until the frames are out.
            tokio::task::yield_now().await;
        }
        pushed
    }

    /// Starts a deployment: checked, persisted with its audit row, then
    /// served and pushed; its actor runs it from there.
    pub async fn deploy(
        self: &Arc<Self>,
        actor: &Actor,
        request: NewDeploymentRequest,
    ) -> Result<DeploymentView, DeploymentError> {
        let strategy = request.strategy;
        let (target, variants) = self.resolve_targets(&request).await?;
        if let Some(environment) = &request.environment
            && *environment != target.environment
        {
            return Err(DeploymentError::Invalid(format!(
                "{} is a {} config, not {environment}",
                target.config, target.environment
            )));
        }
        let policy = self.policy(&target.environment);
        if policy.breaking_needs_approval && target.breaking && !target.approved {
            return Err(DeploymentError::ApprovalRequired {
                config: target.config,
                version: target.version,
            });
        }
        let mut plan = plan_for(self, &request, variants)?;
        plan.needs_approval = policy.deployment_needs_approval;
        let id = uuid::Uuid::now_v7().to_string();
        // Reserve the config: from here on a second deployment of it is refused.
        let previous = loop {
            let superseded = {
                let mut serving = self.serving_write();
                let running = self.runs.running();
                let entry = serving
                    .entry(target.config.clone())
                    .or_insert_with(|| Serving::new(&target.environment));
                match &entry.live {
                    Some(live) if request.supersede == Some(true) => Some(live.clone()),
                    Some(live) => {
                        return Err(DeploymentError::InProgress(
                            live.assignment.deployment_id.clone(),
                        ));
                    }
                    None if running >= self.deployment_settings.max_concurrent => {
                        return Err(DeploymentError::TooMany(running));
                    }
                    None => {
                        let placeholder = store_hub::DeploymentRow {
                            id: id.clone(),
                            config_id: target.config_id.clone(),
                            config_name: target.config.clone(),
                            version: target.version.clone(),
                            revision: target.revision,
                            previous_revision: entry.base,
                            strategy: strategy.as_str().into(),
                            environment: target.environment.clone(),
                            status: "Pending".into(),
                            created_by: actor.subject.clone(),
                            created_at: now_ms(),
                            completed_at: None,
                            target_count: 0,
                            acked_count: 0,
                            failed_count: 0,
                            spec: serde_json::to_string(&plan).expect("a plan serializes"),
                            phase: 0,
                            phase_started_at: None,
                            cover_bucket: None,
                            approved_by: None,
                            rollback: None,
                            updated_at: None,
                            scoped: i64::from(plan.scoped(strategy)),
                        };
                        let record = RunRecord::new(placeholder);
                        entry.live = Some(LiveRun {
                            assignment: Arc::new(Assignment {
                                deployment_id: id.clone(),
                                revision: target.revision,
                                scope: plan.scope.clone(),
                                cover: Cover::Nobody,
                            }),
                            record: record.clone(),
                            handle: None,
                            variant_names: Arc::from(Vec::new()),
                        });
                        self.runs.insert(record);
                        None
                    }
                }
            };
            match superseded {
                Some(live) => {
                    let Some(handle) = live.handle else {
                        return Err(DeploymentError::InProgress(
                            live.assignment.deployment_id.clone(),
                        ));
                    };
                    self.send(&handle, Action::Supersede(id.clone()), actor)
                        .await?;
                }
                None => break self.serving_read().get(&target.config).and_then(|s| s.base),
            }
        };
        let record = self.runs.get(&id).expect("the run was just reserved");
        let mut row = record.row();
        row.previous_revision = previous;
        let needs_approval = plan.needs_approval;
        let state = transition(
            DeploymentState::Pending,
            Transition::Start { needs_approval },
        )
        .expect("a pending deployment starts");
        row.status = status_name(state).into();
        row.phase_started_at = Some(row.created_at);
        row.updated_at = Some(row.created_at);
        let stored = async {
            let mut tx = self.store.begin().await?;
            store_hub::insert_deployment(&mut tx, &row).await?;
            audit::record(
                &mut tx,
                actor.audit_entry(
                    "deployment.create",
                    format!("deployments/{}", row.id),
                    json!({ "config": target.config, "version": target.version, "revision": target.revision, "previousRevision": previous, "strategy": strategy.as_str(), "plan": plan }),
                ),
            )
            .await?;
            tx.commit().await.map_err(StoreError::from)
        }
        .await;
        if let Err(error) = stored {
            self.unreserve(&target.config, &id);
            return Err(error.into());
        }
        record.set_row(row);
        let mut run = DeploymentRun::new(self.clone(), record.clone(), plan)?;
        if strategy == Strategy::Rolling && state != DeploymentState::AwaitingApproval {
            if let Err(error) = run.first_batch(actor).await {
                tracing::warn!(deployment = %id, error = %error, "could not start the first batch; the actor retries");
            }
        } else {
            // Published by the step below.
            run.serve().await;
        }
        // A first evaluation now: a Direct deployment with nothing to wait
        // for completes before the answer goes out.
        if let Err(error) = run.step(Frames::JustPushed).await {
            tracing::warn!(deployment = %id, error = %error, "first step failed; the actor retries");
        }
        self.spawn_run(run);
        Ok(record.view())
    }

    fn unreserve(&self, config: &str, id: &str) {
        let mut serving = self.serving_write();
        if let Some(entry) = serving.get_mut(config)
            && entry
                .live
                .as_ref()
                .is_some_and(|l| l.assignment.deployment_id == id)
        {
            entry.live = None;
        }
        self.runs.remove(id);
    }

    /// Starts the actor of `run` and hands its handle to the hot paths.
    fn spawn_run(&self, mut run: DeploymentRun) {
        let config = run.row.config_name.clone();
        let id = run.row.id.clone();
        let finished = run.state.is_finished();
        if finished {
            return;
        }
        let mailbox = self.deployment_settings.mailbox;
        let assignment = run.assignment();
        let names = run.variant_names();
        let record = run.record.clone();
        let handle = hotswap_actors::deployment::spawn(mailbox, |handle| {
            run.set_handle(handle.clone());
            run
        });
        let mut serving = self.serving_write();
        if let Some(entry) = serving.get_mut(&config) {
            match &mut entry.live {
                Some(live) if live.assignment.deployment_id == id => live.handle = Some(handle),
                Some(_) => {}
                None => {
                    entry.live = Some(LiveRun {
                        assignment,
                        record,
                        handle: Some(handle),
                        variant_names: names,
                    })
                }
            }
        }
    }

    /// Sends an action to a running deployment's actor and waits for its answer.
    async fn send(
        &self,
        handle: &RunHandle,
        action: Action,
        actor: &Actor,
    ) -> Result<(), DeploymentError> {
        let (reply, answer) = oneshot::channel();
        handle
            .command(Command::Control {
                action,
                actor: actor.clone(),
                reply,
            })
            .await
            .map_err(|_| DeploymentError::Stopping)?;
        answer.await.map_err(|_| DeploymentError::Stopping)?
    }

    /// An operator's action on a deployment.
    pub async fn control(
        self: &Arc<Self>,
        id: &str,
        action: Action,
        actor: &Actor,
    ) -> Result<DeploymentView, DeploymentError> {
        let row = self.deployment_row(id).await?;
        let live = self
            .serving_read()
            .get(&row.config_name)
            .and_then(|s| s.live.clone())
            .filter(|l| l.assignment.deployment_id == row.id);
        match live.and_then(|l| l.handle) {
            Some(handle) => self.send(&handle, action, actor).await?,
            None => match action {
                Action::Rollback(request) if row.status == "Completed" => {
                    self.kill_switch(row, request, actor).await?
                }
                action => {
                    return Err(DeploymentError::Conflict(format!(
                        "cannot {} a deployment that is {}",
                        action.name(),
                        row.status
                    )));
                }
            },
        }
        self.deployment(id).await
    }

    /// Rolls back a completed deployment: the newest completed one of its
    /// config, with nothing in flight.
    async fn kill_switch(
        self: &Arc<Self>,
        row: store_hub::DeploymentRow,
        request: RollbackRequest,
        actor: &Actor,
    ) -> Result<(), DeploymentError> {
        let plan: Plan = serde_json::from_str(&row.spec).map_err(|e| {
            DeploymentError::Conflict(format!("this deployment's plan cannot be read: {e}"))
        })?;
        let strategy: Strategy = row.strategy.parse().map_err(DeploymentError::Invalid)?;
        {
            let serving = self.serving_read();
            let entry = serving.get(&row.config_name);
            if let Some(live) = entry.and_then(|e| e.live.as_ref()) {
                return Err(DeploymentError::InProgress(
                    live.assignment.deployment_id.clone(),
                ));
            }
            let current = if plan.scoped(strategy) {
                entry
                    .and_then(|e| e.layers.first())
                    .map(|l| l.deployment_id == row.id)
            } else {
                entry.map(|e| e.base == Some(row.revision) && e.layers.is_empty())
            };
            if current != Some(true) {
                return Err(DeploymentError::Conflict(
                    "only the config's newest completed deployment can be rolled back; deploy the version you want instead".into(),
                ));
            }
        }
        let record = RunRecord::new(row.clone());
        self.runs.insert(record.clone());
        let mut run = DeploymentRun::new(self.clone(), record, plan)?;
        run.rollback(actor, request, None, now_ms()).await?;
        self.spawn_run(run);
        Ok(())
    }

    async fn deployment_row(&self, id: &str) -> Result<store_hub::DeploymentRow, DeploymentError> {
        if let Some(record) = self.runs.get(id) {
            return Ok(record.row());
        }
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(DeploymentError::NotFound(id.to_owned()));
        }
        let mut conn = self.store.conn().await?;
        store_hub::deployment(&mut conn, id)
            .await?
            .ok_or_else(|| DeploymentError::NotFound(id.to_owned()))
    }

    /// A deployment: live progress if this hub drives it, else the stored record.
    pub async fn deployment(&self, id: &str) -> Result<DeploymentView, DeploymentError> {
        if let Some(record) = self.runs.get(id) {
            return Ok(record.view());
        }
        Ok(view(&self.deployment_row(id).await?))
    }

    /// A page of a deployment's servers (by id, after `after`), and whether
    /// more follow. Empty once the hub no longer holds its per-server detail.
    pub async fn deployment_servers(
        &self,
        id: &str,
        state: Option<ServerState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ServerProgressView>, bool), DeploymentError> {
        if let Some(record) = self.runs.get(id) {
            return Ok(record.servers_page(state, after, limit));
        }
        self.deployment_row(id).await?;
        Ok((Vec::new(), false))
    }

    /// Deployments, newest first.
    pub async fn deployments(
        &self,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeploymentView>, DeploymentError> {
        let mut conn = self.store.conn().await?;
        let rows = store_hub::deployments(&mut conn, before, limit).await?;
        Ok(rows
            .iter()
            .map(|row| {
                self.runs
                    .get(&row.id)
                    .map_or_else(|| view(row), |r| r.view())
            })
            .collect())
    }

    pub async fn rollback_status(&self, id: &str) -> Result<RollbackStatusView, DeploymentError> {
        let view = self.deployment(id).await?;
        let row = self.deployment_row(id).await?;
        let plan: Option<Plan> = serde_json::from_str(&row.spec).ok();
        let rolling_back = view.status == "RollingBack";
        Ok(RollbackStatusView {
            deployment_id: view.id,
            automatic: !DeploymentState::is_finished(state_of(&row)),
            status: view.status,
            rollback: view.rollback,
            waiting_for: if rolling_back {
                self.runs.get(id).map(|r| r.waiting()).unwrap_or_default()
            } else {
                Vec::new()
            },
            rules: plan.map(|p| p.rules).unwrap_or_default(),
            judgement: view.live.and_then(|l| l.judgement),
        })
    }

    /// The deployment's version (or variants) as revisions.
    async fn resolve_targets(
        &self,
        request: &NewDeploymentRequest,
    ) -> Result<(DeploymentTarget, Vec<VariantPlan>), DeploymentError> {
        if request.strategy != Strategy::ABTest {
            let version = request.version.as_deref().ok_or_else(|| {
                DeploymentError::Invalid(format!(
                    "version is required for a {} deployment",
                    request.strategy
                ))
            })?;
            if request.variants.is_some() {
                return Err(DeploymentError::Invalid(
                    "variants apply to ABTest deployments".into(),
                ));
            }
            return Ok((
                self.catalog
                    .deployment_target(&request.config, version)
                    .await?,
                Vec::new(),
            ));
        }
        let variants = request.variants.clone().unwrap_or_default();
        if !(2..=8).contains(&variants.len()) {
            return Err(DeploymentError::Invalid(
                "an A/B test has 2 to 8 variants".into(),
            ));
        }
        if variants
            .iter()
            .any(|v| !v.weight.is_finite() || v.weight <= 0.0 || v.weight > MAX_VARIANT_WEIGHT)
        {
            return Err(DeploymentError::Invalid(format!(
                "variant weights are positive numbers up to {MAX_VARIANT_WEIGHT} (relative shares)"
            )));
        }
        let mut plans: Vec<VariantPlan> = Vec::new();
        let mut last = None;
        for (index, variant) in variants.iter().enumerate() {
            let target = self
                .catalog
                .deployment_target(&request.config, &variant.version)
                .await?;
            let name = variant
                .name
                .clone()
                .unwrap_or_else(|| char::from(b'A' + index as u8).to_string());
            if name.is_empty()
                || name.len() > 32
                || plans.iter().any(|p| p.name == name)
                || name == BASELINE
                || name == CANARY
            {
                return Err(DeploymentError::Invalid(format!(
                    "variant names are 1-32 characters, unique, and not {BASELINE} or {CANARY}"
                )));
            }
            if self.policy(&target.environment).breaking_needs_approval
                && target.breaking
                && !target.approved
            {
                return Err(DeploymentError::ApprovalRequired {
                    config: target.config,
                    version: target.version,
                });
            }
            plans.push(VariantPlan {
                name,
                version: target.version.clone(),
                revision: target.revision,
                weight: variant.weight,
            });
            last = Some(target);
        }
        Ok((last.expect("at least two variants"), plans))
    }

    /// Resumes the deployments a previous run left unfinished.
    pub(super) async fn resume(
        self: &Arc<Self>,
        rows: Vec<store_hub::DeploymentRow>,
    ) -> anyhow::Result<()> {
        for row in rows {
            let plan: Plan = match serde_json::from_str(&row.spec) {
                Ok(plan) => plan,
                Err(error) => {
                    tracing::error!(deployment = %row.id, error = %error, "cannot read a deployment's plan; marking it failed");
                    let mut failed = row.clone();
                    failed.status = "Failed".into();
                    failed.completed_at = Some(now_ms());
                    let mut tx = self.store.begin().await?;
                    store_hub::save_deployment(&mut tx, &failed).await?;
                    tx.commit().await?;
                    continue;
                }
            };
            let record = RunRecord::new(row.clone());
            // A rollback interrupted by a restart waits for the servers it
            // was moving back (recorded with its decision) until they ack
            // the previous revision, or the ack timeout lists them as
            // unacked: per-server progress lives in memory only.
            if state_of(&row) == DeploymentState::RollingBack
                && let Some(previous) = row.previous_revision
            {
                let mut conn = self.store.conn().await?;
                let targets = store_hub::rollback_targets(&mut conn, &row.id).await?;
                drop(conn);
                let mut claims = record.claims();
                for server in targets {
                    claims.claim(&Arc::from(server.as_str()), previous);
                }
            }
            self.runs.insert(record.clone());
            let run = DeploymentRun::new(self.clone(), record.clone(), plan)?;
            {
                let mut serving = self.serving_write();
                let entry = serving
                    .entry(row.config_name.clone())
                    .or_insert_with(|| Serving::new(&row.environment));
                entry.live = Some(LiveRun {
                    assignment: run.assignment(),
                    record,
                    handle: None,
                    variant_names: run.variant_names(),
                });
            }
            tracing::info!(deployment = %row.id, status = %row.status, phase = row.phase, "resuming a deployment");
            self.spawn_run(run);
        }
        Ok(())
    }

    /// Stops every deployment actor (the hub is shutting down) and waits
    /// (up to 5 s) until each has finished the step it was in, so none is
    /// cut off mid-transaction. Their state stays in the store; the next
    /// start resumes them.
    pub async fn stop_runs(&self) {
        let handles: Vec<RunHandle> = self
            .serving_read()
            .values()
            .filter_map(|s| s.live.as_ref()?.handle.clone())
            .collect();
        for handle in &handles {
            let _ = handle.command(Command::Shutdown).await;
        }
        let all = futures_util::future::join_all(handles.iter().map(|h| h.stopped()));
        if actix_web::rt::time::timeout(Duration::from_secs(5), all)
            .await
            .is_err()
        {
            tracing::warn!("a deployment actor did not stop within 5 s");
        }
    }

    /// Posts a rollback alert to the webhook, if one is set (fire and forget).
    fn alert(&self, row: &store_hub::DeploymentRow, record: &RollbackRecord) {
        let url = self.deployment_settings.alert_webhook.trim().to_owned();
        if url.is_empty() {
            return;
        }
        let body = json!({
            "event": "deployment.rollback",
            "deployment": row.id,
            "config": row.config_name,
            "version": row.version,
            "revision": row.revision,
            "environment": row.environment,
            "rollback": record,
        });
        actix_web::rt::spawn(async move {
            let result = awc::Client::builder()
                .timeout(Duration::from_secs(5))
                .finish()
                .post(&url)
                .send_json(&body)
                .await;
            match result {
                Ok(response) if response.status().is_success() => {
                    tracing::info!(%url, "rollback alert sent");
                }
                Ok(response) => {
                    tracing::warn!(%url, status = %response.status(), "the alert webhook refused the rollback alert")
                }
                Err(error) => {
                    tracing::warn!(%url, error = %error, "could not send the rollback alert")
                }
            }
        });
    }
}
