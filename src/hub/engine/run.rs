//! A deployment's state, owned by its actor: the stored row and plan, the
//! cohorts' metric windows, the last judgement. Every change is committed
//! to the store before it is served.

use super::{
    LiveRun, RunHandle,
    serving::{BASELINE, CANARY, Serving},
};
use crate::{
    catalog::{Actor, views::rfc3339},
    domain::{
        evaluation::{decisive, hold_warning, worst},
        judgement::{Judgement, Verdict, judge},
        kinds::Strategy,
        plan::Plan,
        rollout::{Assignment, Cover, DeploymentState},
        window::SlidingWindow,
    },
    hub::{
        Hub,
        deployments::{CohortSummary, CohortView, DeploymentError, LiveStatus, RunRecord},
    },
    store::{StoreError, audit, hub as store_hub, now_ms},
};
use serde_json::Value;
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

/// A deployment's mutable state, owned by its actor.
pub(super) struct DeploymentRun {
    pub(super) hub: Arc<Hub>,
    pub(super) record: Arc<RunRecord>,
    pub(super) row: store_hub::DeploymentRow,
    pub(super) plan: Plan,
    pub(super) strategy: Strategy,
    pub(super) state: DeploymentState,
    windows: HashMap<Arc<str>, SlidingWindow>,
    region_windows: HashMap<(Arc<str>, Arc<str>), SlidingWindow>,
    pub(super) last: Option<Judgement>,
    evaluated_at: Option<i64>,
    pub(super) warning: Option<String>,
    pub(super) rollback_deadline_ms: Option<i64>,
    /// When this run decided to roll back (for the rollback's duration).
    rollback_began_ms: Option<i64>,
    /// The `rollback.execute` span while it rolls back.
    rollback_span: Option<crate::observability::traces::Span>,
    handle: Option<RunHandle>,
    /// The run's last state change pushed frames (`serve`) and no step
    /// since found everyone answered: the good ack that leaves nobody
    /// waiting may step it early (`DeploymentDriver::nudged`). Only `serve`
    /// sets it; a step only clears it, and an early step takes it, so
    /// acks (a failing server answering again and again, a server
    /// reconnecting and acking) buy at most one early step per state
    /// change, never a stream of fleet walks.
    pub(super) awaiting_acks: bool,
    /// In a cluster, the epoch of the lease this run was started under:
    /// its writes are fenced by it, and it stops once the node no longer
    /// holds the lease under it (another node, or this one again after it
    /// lapsed, drives the deployment with a new run).
    pub(super) epoch: Option<i64>,
}

impl std::fmt::Debug for DeploymentRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentRun")
            .field("id", &self.row.id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// When a stored rollback record says the rollback started (Unix ms).
fn rollback_started_at(record: Option<&str>) -> Option<i64> {
    let record: serde_json::Value = serde_json::from_str(record?).ok()?;
    chrono::DateTime::parse_from_rfc3339(record["rollbackStartedAt"].as_str()?)
        .ok()
        .map(|t| t.timestamp_millis())
}

impl DeploymentRun {
    pub fn new(hub: Arc<Hub>, record: Arc<RunRecord>, plan: Plan) -> Result<Self, DeploymentError> {
        let row = record.row();
        let strategy: Strategy = row
            .strategy
            .parse()
            .map_err(|e: String| DeploymentError::Invalid(e))?;
        let state = DeploymentState::from_stored(&row.status, row.phase);
        let rollback_deadline_ms = (state == DeploymentState::RollingBack)
            .then(|| now_ms() + hub.deployment_settings.rollback_ack_timeout_ms as i64);
        // A rollback resumed after a restart: its duration runs from when
        // it was decided, as stored.
        let rollback_began_ms = (state == DeploymentState::RollingBack)
            .then(|| rollback_started_at(row.rollback.as_deref()))
            .flatten();
        let epoch = hub.lease_epoch(&row.id);
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
            rollback_began_ms,
            rollback_span: None,
            handle: None,
            awaiting_acks: false,
            epoch,
        })
    }

    /// The run's own actor handle, once it has an actor.
    pub(super) fn handle(&self) -> Option<RunHandle> {
        self.handle.clone()
    }

    pub fn set_handle(&mut self, handle: RunHandle) {
        self.handle = Some(handle);
    }

    pub(super) fn phase(&self) -> usize {
        self.state.phase().unwrap_or(0)
    }

    /// Phases the strategy has (Rolling: open-ended until everyone is covered).
    pub(super) fn phase_count(&self) -> usize {
        self.plan.phase_count(self.strategy)
    }

    /// Who the deployment covers in its current state.
    pub fn cover(&self) -> Cover {
        self.plan
            .cover(self.strategy, self.state, self.row.cover_bucket)
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
    pub(super) async fn commit(
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
        row.status = next.name().to_owned();
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
        let tally = self.record.tally();
        (row.target_count, row.acked_count, row.failed_count) =
            (tally.targets, tally.acked, tally.failed);
        change_row(&mut row);
        // What a rollback moves back is part of its decision: a hub
        // restarted before the servers acked waits for them.
        let moved_back = (next == DeploymentState::RollingBack).then(|| {
            let ids = union_of(
                self.record.on_revision(row.revision),
                self.hub
                    .registry
                    .holding(&row.config_name, &row.environment, row.revision),
            );
            serde_json::to_string(&ids).expect("ids serialize")
        });
        let mut tx = self.hub.store.begin().await?;
        // In a cluster: only while this node still holds the lease.
        self.hub
            .fence(&mut tx, &row.id, &row.config_name, self.epoch)
            .await?;
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
        self.hub.bump_generation(&row.config_name);
        tracing::info!(deployment = %row.id, config = %row.config_name, version = %row.version, status = %row.status, phase = row.phase, action, "deployment moved");
        let meters = &self.hub.meters;
        match next {
            DeploymentState::Completed if self.state != DeploymentState::Completed => {
                meters.deployments_completed.inc();
                meters
                    .deployment_seconds
                    .observe((now - row.created_at).max(0) as f64 / 1000.0);
            }
            DeploymentState::RollingBack if self.state != DeploymentState::RollingBack => {
                meters.deployments_rolled_back.inc();
                self.rollback_began_ms = Some(now);
                if let Some(parent) = self.hub.deploy_parent(&row.id) {
                    let mut span = self.hub.tracer.start("rollback.execute", Some(parent));
                    span.set(
                        "reason",
                        crate::observability::traces::AttrValue::Text(action.to_owned()),
                    );
                    self.rollback_span = Some(span);
                }
            }
            DeploymentState::RolledBack => {
                if let Some(began) = self.rollback_began_ms.take() {
                    meters
                        .rollback_seconds
                        .observe((now - began).max(0) as f64 / 1000.0);
                }
                if let Some(span) = self.rollback_span.take() {
                    span.end();
                }
            }
            _ => {}
        }
        if next.is_finished() {
            self.hub.lease_done(&row.id);
            // The deployment's own span ends with it.
            let span = hotswap_client::sync::lock(&self.hub.deploy_spans).remove(&row.id);
            if let Some(mut span) = span {
                span.set(
                    "status",
                    crate::observability::traces::AttrValue::Text(row.status.clone()),
                );
                if next != DeploymentState::Completed {
                    span.fail(format!("deployment {}", row.status));
                }
                span.end();
            }
            self.hub.tracer.forget(&row.id);
        }
        self.row = row.clone();
        self.state = next;
        self.record.set_row(row);
        Ok(())
    }

    /// Makes the hub serve the current state, pushes what changed, and
    /// publishes the new state.
    pub(super) async fn apply(&mut self) {
        self.serve().await;
        self.publish();
    }

    /// Makes the hub serve the current state, and pushes what changed.
    pub(super) async fn serve(&mut self) {
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
                        entry.layers_mut().stand(assignment);
                    } else {
                        entry.layers_mut().activate(self.row.revision);
                    }
                    entry.land(&self.row.id);
                }
                state if state.is_finished() => entry.land(&self.row.id),
                _ => entry.fly(assignment, self.live_run()),
            }
        }
        // The other nodes bring their servers to the state just stored
        // (committed already), while this node pushes to its own.
        self.hub.announce_change(&config);
        let span = self
            .hub
            .deploy_parent(&self.row.id)
            .map(|parent| self.hub.tracer.start("config.distribute", Some(parent)));
        if self.hub.reconcile(&config).await > 0 {
            self.awaiting_acks = true;
        }
        if let Some(mut span) = span {
            span.set(
                "status",
                crate::observability::traces::AttrValue::Text(self.row.status.clone()),
            );
            span.end();
        }
    }

    /// The run as the hot paths see it while it is in flight.
    pub(super) fn live_run(&self) -> LiveRun {
        LiveRun {
            deployment_id: Arc::from(self.row.id.as_str()),
            record: self.record.clone(),
            handle: self.handle.clone(),
            variant_names: self.variant_names(),
            mirror: false,
        }
    }

    pub(super) fn fold(
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
    /// windows; the judgement acted on is `domain::evaluation`'s choice.
    pub(super) fn evaluate(&mut self, now: i64) -> Verdict {
        let (window_ms, fast_window_ms) = (
            self.hub.deployment_settings.window_ms,
            self.hub.deployment_settings.fast_window_ms,
        );
        let (control, treatments): (Arc<str>, Vec<Arc<str>>) = if self.strategy == Strategy::ABTest
        {
            let names = self.variant_names();
            (names[0].clone(), names[1..].to_vec())
        } else {
            (Arc::from(BASELINE), vec![Arc::from(CANARY)])
        };
        let windows = &mut self.windows;
        let mut snapshot = |cohort: &Arc<str>, last: u64| {
            windows
                .get_mut(cohort)
                .map(|w| w.snapshot_last(now, last))
                .unwrap_or_default()
        };
        let (rules, rank) = (&self.plan.rules, &self.plan.rank);
        let mut judgements = Vec::with_capacity(treatments.len());
        for treatment in &treatments {
            let long = judge(
                rules,
                rank,
                &snapshot(&control, window_ms),
                &snapshot(treatment, window_ms),
            );
            let fast = judge(
                rules,
                rank,
                &snapshot(&control, fast_window_ms),
                &snapshot(treatment, fast_window_ms),
            );
            judgements.push(decisive(long, fast));
        }
        let judgement = worst(judgements).expect("at least one treatment");
        let verdict = judgement.verdict;
        self.warning = hold_warning(&judgement);
        self.last = Some(judgement);
        self.evaluated_at = Some(now);
        verdict
    }

    /// Publishes cohorts, windows and the last judgement for the API.
    pub(super) fn publish(&mut self) {
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
        // After the live status, so the feed reads the new one.
        self.hub.feed.deployment_changed(&self.row.id);
    }
}

/// The servers a run moved, then those of `held` it did not: each once,
/// in no order that means anything. Not sorted: the kill switch computes
/// this for 10,000 servers before its frame may leave, and the sort
/// (an id compare is a cache miss each) took 2–3 ms of the ~5.
fn union_of(moved: Vec<Arc<str>>, held: Vec<Arc<str>>) -> Vec<Arc<str>> {
    if moved.is_empty() {
        // A registry entry is one per server: already distinct.
        return held;
    }
    let seen: std::collections::HashSet<Arc<str>, ahash::RandomState> =
        moved.iter().cloned().collect();
    let mut ids = moved;
    ids.extend(held.into_iter().filter(|id| !seen.contains(id)));
    ids
}

#[cfg(test)]
mod tests {
    use super::{rollback_started_at, union_of};
    use std::sync::Arc;

    #[test]
    fn a_rollback_moves_back_each_server_once() {
        let ids = |v: &[&str]| v.iter().map(|s| Arc::<str>::from(*s)).collect::<Vec<_>>();
        let mut both = union_of(ids(&["b", "a"]), ids(&["c", "a", "d"]));
        both.sort();
        assert_eq!(both, ids(&["a", "b", "c", "d"]));
        assert_eq!(union_of(Vec::new(), ids(&["x", "y"])), ids(&["x", "y"]));
        assert_eq!(union_of(ids(&["x"]), Vec::new()), ids(&["x"]));
    }

    #[test]
    fn a_resumed_rollback_is_timed_from_its_stored_start() {
        let record = r#"{"trigger":"manual","rollbackStartedAt":"2026-12-03T10:00:00.250Z"}"#;
        assert_eq!(rollback_started_at(Some(record)), Some(1_796_292_000_250));
        assert_eq!(rollback_started_at(Some("{}")), None);
        assert_eq!(rollback_started_at(Some("not json")), None);
        assert_eq!(rollback_started_at(None), None);
    }
}
