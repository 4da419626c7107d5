//! Player experiments (A/B/n) on one hub: definitions checked and written
//! with their audit row, then published in the `Definitions` (the variant
//! is the last layer of every player's resolution, on the hub and in the
//! SDK, from the same `ExperimentDefinition`); the lifecycle `Draft →
//! Running ⇄ Paused → Finished`; promotion of a winner to a config version
//! and, if asked, a deployment.
//!
//! # Layout
//! - `mod.rs`: [`ExperimentEntry`], create, revise, controls.
//! - `promote.rs`: a winner promoted to a version and, if asked, deployed.
//! - `assignments.rs`: who gets which variant, first assignments written
//!   in batches off the request path (sticky), pins when weights change.
//! - `results.rs`: results from telemetry (`store/`'s sums, the domain's
//!   statistics), the guardrails, and the watcher task of each started
//!   experiment (its end time, its guardrails).
//! - `server_metrics.rs`: observations from the servers' reports split by
//!   variant, summed and stored in batches, for metrics over server metrics.
//! - `views.rs`: response bodies.

mod assignments;
mod promote;
mod results;
mod server_metrics;
pub mod views;

pub(super) use assignments::{Assignments, pins_of};
pub use promote::PromoteRequest;
pub(super) use results::looks_of;
pub(super) use server_metrics::ServerSums;

use super::{LiveOps, LiveOpsError, LiveOpsResult, invalid};
use crate::{
    catalog::{Actor, CatalogError, PatchCheck},
    domain::{
        experiments::{
            ExperimentDefinition, VariantDefinition,
            spec::{Control, ExperimentSpec, Status, next_status},
        },
        live_event::patch_paths,
        secrets,
    },
    store::{StoreError, audit, cluster::experiment_resource, experiments as store},
};
use serde_json::{Value, json};
use std::{collections::BTreeMap, sync::Arc};
use views::ExperimentList;

/// An experiment as the hub keeps it.
#[derive(Debug, Clone)]
pub struct ExperimentEntry {
    pub id: String,
    pub revision: i64,
    /// The definition as accepted (the request body).
    pub body: Value,
    pub spec: ExperimentSpec,
    pub status: Status,
    pub status_reason: Option<String>,
    pub winner: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// What resolution reads (pins included), shared with servers.
    pub definition: Arc<ExperimentDefinition>,
}

impl ExperimentEntry {
    pub fn name(&self) -> &str {
        self.spec.name.as_str()
    }

    fn row(&self) -> store::ExperimentRow {
        store::ExperimentRow {
            id: self.id.clone(),
            name: self.name().to_owned(),
            revision: self.revision,
            spec: self.body.to_string(),
            config: Some(self.spec.config.as_str().to_owned()),
            status: self.status.name().to_owned(),
            status_reason: self.status_reason.clone(),
            winner: self.winner.clone(),
            looks: "{}".into(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            created_by: self.created_by.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The definition resolution reads.
pub(super) fn definition_of(
    spec: &ExperimentSpec,
    pins: BTreeMap<String, String>,
) -> ExperimentDefinition {
    ExperimentDefinition {
        name: spec.name.as_str().to_owned(),
        config: spec.config.as_str().to_owned(),
        unit: spec.unit.clone(),
        variants: spec
            .variants
            .iter()
            .map(|v| VariantDefinition {
                id: v.id.clone(),
                weight: v.weight,
                patch: v.patch.clone(),
            })
            .collect(),
        segments: spec.audience.segments.clone(),
        percentage: spec.audience.percentage,
        start_ms: spec.start_ms,
        end_ms: spec.end_ms,
        pins,
    }
}

/// Reads a stored experiment (`None`: it no longer parses; logged).
pub(super) fn entry_of(row: &store::ExperimentRow) -> Option<ExperimentEntry> {
    let body: Value = serde_json::from_str(&row.spec).ok()?;
    let spec = match ExperimentSpec::parse(&body) {
        Ok(spec) => spec,
        Err(error) => {
            tracing::error!(experiment = %row.name, path = %error.path, message = %error.message,
                "a stored experiment no longer parses; skipped");
            return None;
        }
    };
    Some(ExperimentEntry {
        id: row.id.clone(),
        revision: row.revision,
        definition: Arc::new(definition_of(&spec, BTreeMap::new())),
        body,
        spec,
        status: Status::parse(&row.status).unwrap_or(Status::Draft),
        status_reason: row.status_reason.clone(),
        winner: row.winner.clone(),
        started_at: row.started_at,
        finished_at: row.finished_at,
        created_by: row.created_by.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

impl LiveOps {
    /// Every check of an experiment that needs more than its body: the
    /// config, each variant's patch on top of it (valid, no secret value),
    /// segments, and the telemetry event types its metrics read.
    async fn check_experiment(&self, spec: &ExperimentSpec) -> LiveOpsResult<()> {
        let config = spec.config.as_str();
        if self.hub.active_revision(config).is_none() {
            self.catalog
                .get_config(config)
                .await
                .map_err(|error| match error {
                    CatalogError::ConfigNotFound(name) => {
                        invalid("/config", format!("config {name:?} does not exist"))
                    }
                    other => other.into(),
                })?;
            return Err(invalid(
                "/config",
                format!("config {config:?} has no deployed revision for the variants to patch"),
            ));
        }
        for (index, variant) in spec.variants.iter().enumerate() {
            if index == spec.control {
                continue;
            }
            let at = format!("/variants/{index}/patch");
            match self.catalog.check_patch(config, &variant.patch).await {
                Ok(PatchCheck::Valid { secret_paths }) => {
                    if let Some(path) = patch_paths(&variant.patch)
                        .into_iter()
                        .find(|p| secrets::holds_secret(p, &secret_paths))
                    {
                        return Err(invalid(
                            &format!("{at}{path}"),
                            "a variant cannot change a secret value (x-secret)",
                        ));
                    }
                }
                Ok(PatchCheck::Invalid(report)) => {
                    let issue = report.errors.first();
                    return Err(invalid(
                        &format!("{at}{}", issue.map(|i| i.path.as_str()).unwrap_or("")),
                        format!(
                            "the variant's patch breaks config {config:?}: {}",
                            issue.map(|i| i.message.as_str()).unwrap_or("invalid")
                        ),
                    ));
                }
                Err(
                    error @ (CatalogError::InvalidField { .. }
                    | CatalogError::DocumentTooDeep { .. }
                    | CatalogError::DocumentTooLarge { .. }),
                ) => return Err(invalid(&at, error.to_string())),
                Err(other) => return Err(other.into()),
            }
        }
        let definitions = self.definitions();
        for (index, segment) in spec.audience.segments.iter().enumerate() {
            if definitions.book.get(segment).is_none() {
                return Err(invalid(
                    &format!("/audience/segments/{index}"),
                    format!("segment {segment:?} does not exist"),
                ));
            }
        }
        let known = hotswap_client::sync::read(&self.event_types).clone();
        if let Some(known) = known {
            for (index, metric) in spec.metrics.iter().enumerate() {
                if let Some(event) = metric.event().filter(|event| !known(event)) {
                    return Err(invalid(
                        &format!("/metrics/{index}/event"),
                        format!(
                            "{event:?} is not a registered telemetry event type (GET /api/v1/telemetry/event-types)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Experiments by name.
    pub fn experiments(&self) -> ExperimentList {
        let definitions = self.definitions();
        ExperimentList {
            items: definitions
                .experiments
                .values()
                .map(|e| views::experiment_view(e))
                .collect(),
        }
    }

    pub fn experiment(&self, name: &str) -> LiveOpsResult<Value> {
        let definitions = self.definitions();
        let entry = definitions
            .experiments
            .get(name)
            .ok_or_else(|| LiveOpsError::ExperimentNotFound(name.to_owned()))?;
        Ok(views::experiment_view(entry))
    }

    fn experiment_entry(&self, name: &str) -> LiveOpsResult<Arc<ExperimentEntry>> {
        self.definitions()
            .experiments
            .get(name)
            .cloned()
            .ok_or_else(|| LiveOpsError::ExperimentNotFound(name.to_owned()))
    }

    pub async fn create_experiment(
        self: &Arc<Self>,
        actor: &Actor,
        body: Value,
    ) -> LiveOpsResult<Value> {
        let spec = ExperimentSpec::parse(&body).map_err(|e| invalid(&e.path, e.message))?;
        let writing = self.writes.lock().await;
        let name = spec.name.as_str().to_owned();
        {
            let mut conn = self.store.conn().await?;
            if store::by_name(&mut conn, &name).await?.is_some() {
                return Err(LiveOpsError::ExperimentExists(name));
            }
        }
        let open = self
            .definitions()
            .experiments
            .values()
            .filter(|e| e.status != Status::Finished)
            .count();
        if open >= self.settings.max_experiments {
            return Err(invalid(
                "/name",
                format!(
                    "at most {} experiments may be drafts, running or paused at once",
                    self.settings.max_experiments
                ),
            ));
        }
        self.check_experiment(&spec).await?;
        let now = crate::store::now_ms();
        let entry = ExperimentEntry {
            id: uuid::Uuid::now_v7().to_string(),
            revision: 1,
            definition: Arc::new(definition_of(&spec, BTreeMap::new())),
            body,
            spec,
            status: Status::Draft,
            status_reason: None,
            winner: None,
            started_at: None,
            finished_at: None,
            created_by: actor.subject.clone(),
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.store.begin().await?;
        store::insert(&mut tx, &entry.row()).await?;
        audit::record(
            &mut tx,
            actor.audit_entry(
                "experiment.create",
                format!("experiments/{name}"),
                json!({
                    "config": entry.spec.config.as_str(),
                    "variants": entry.spec.variants.iter().map(|v| json!({"id": v.id, "weight": v.weight})).collect::<Vec<_>>(),
                }),
            ),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.hub.announce_liveops();
        let view = views::experiment_view(&entry);
        self.publish_experiment(entry);
        drop(writing);
        Ok(view)
    }

    /// Replaces an experiment's definition: all of a draft; of a started
    /// one only what leaves its units and their variants' patches as they
    /// are. New weights move only units not assigned yet: the others are
    /// pinned to their first variant.
    pub async fn update_experiment(
        self: &Arc<Self>,
        actor: &Actor,
        name: &str,
        body: Value,
    ) -> LiveOpsResult<Value> {
        let spec = ExperimentSpec::parse(&body).map_err(|e| invalid(&e.path, e.message))?;
        let writing = self.writes.lock().await;
        let current = self.experiment_entry(name)?;
        current
            .spec
            .check_revision(&spec, current.status)
            .map_err(|e| {
                if current.status == Status::Finished {
                    LiveOpsError::InvalidTransition {
                        state: current.status.name(),
                        reason: e.message,
                    }
                } else {
                    invalid(&e.path, e.message)
                }
            })?;
        self.check_experiment(&spec).await?;
        let pins = if current.status == Status::Draft {
            BTreeMap::new()
        } else if spec.weights() != current.spec.weights() {
            self.pins_for(&current, &spec).await?
        } else {
            current.definition.pins.clone()
        };
        let mut next = (*current).clone();
        next.revision += 1;
        next.updated_at = crate::store::now_ms();
        next.definition = Arc::new(definition_of(&spec, pins));
        next.spec = spec;
        next.body = body;
        self.write_experiment(
            actor,
            &current,
            &next,
            "experiment.update",
            json!({
                "revision": next.revision,
                "weights": next.spec.weights(),
                "pinnedUnits": next.definition.pins.len(),
            }),
        )
        .await?;
        let view = views::experiment_view(&next);
        let repin = next.status != Status::Draft && next.spec.weights() != current.spec.weights();
        let id = next.id.clone();
        self.publish_experiment(next);
        if repin {
            // A lookup that read the old weights just before the new ones
            // were published stored its first variant after the pins were
            // worked out: pin those too, once they are written.
            self.pin_stragglers(name, &id).await;
        }
        drop(writing);
        Ok(view)
    }

    /// Works the pins of a started experiment out again from every stored
    /// assignment and publishes them if some were missing.
    async fn pin_stragglers(&self, name: &str, id: &str) {
        let pins = async {
            if !self.assignments.flush().await {
                return None;
            }
            let mut conn = self.store.conn().await.ok()?;
            store::unit_variants(&mut conn, id).await.ok()
        }
        .await;
        let Some(units) = pins else {
            tracing::warn!(experiment = %name, "assignments stored during a weight change not read; pinned at the next start-up");
            return;
        };
        let Ok(entry) = self.experiment_entry(name) else {
            return;
        };
        let pins = pins_of(&entry.spec, units);
        if pins.len() <= entry.definition.pins.len() {
            return;
        }
        if pins.len() > self.settings.max_pins {
            tracing::warn!(experiment = %name, pins = pins.len(), max = self.settings.max_pins,
                "players placed during a weight change are past liveops.max_pins: not pinned until the next start-up");
            return;
        }
        let mut next = (*entry).clone();
        next.definition = Arc::new(definition_of(&entry.spec, pins));
        self.publish_experiment(next);
    }

    /// Writes `next` over `current` (compare-and-swap on the revision)
    /// with its audit row.
    async fn write_experiment(
        &self,
        actor: &Actor,
        current: &ExperimentEntry,
        next: &ExperimentEntry,
        action: &'static str,
        details: Value,
    ) -> LiveOpsResult<()> {
        let mut tx = self.store.begin().await?;
        // The hub's own moves (its end time, a guardrail) are its watcher's,
        // which in a cluster runs on the node holding the experiment's
        // lease: a node that lost it writes nothing.
        if actor.role.is_none() && self.hub.in_cluster() {
            let resource = experiment_resource(&next.id);
            let epoch = self.hub.held_epoch(&resource);
            if !self.hub.fence_lease(&mut tx, &resource, epoch).await? {
                return Err(LiveOpsError::Elsewhere(format!(
                    "experiment {} is watched by another node",
                    next.name()
                )));
            }
        }
        match store::update(&mut tx, &next.row(), current.revision).await {
            Ok(true) => {}
            Ok(false) => return Err(LiveOpsError::Catalog(CatalogError::Conflict)),
            // The one started experiment per config is the store's rule
            // too: another node started one on it meanwhile.
            Err(StoreError::Conflict) => {
                drop(tx);
                let config = next.spec.config.as_str().to_owned();
                let mut conn = self.store.conn().await?;
                let other = store::started_on(&mut conn, &config)
                    .await?
                    .unwrap_or_else(|| "another experiment".into());
                return Err(LiveOpsError::ExperimentClash { config, other });
            }
            Err(error) => return Err(error.into()),
        }
        audit::record(
            &mut tx,
            actor.audit_entry(action, format!("experiments/{}", next.name()), details),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.hub.announce_liveops();
        Ok(())
    }

    fn publish_experiment(&self, entry: ExperimentEntry) {
        if entry.status == Status::Finished {
            // Nobody is assigned any more: its players' hashes go.
            self.assignments.forget(&entry.id);
        }
        self.change(|d| {
            d.experiments
                .insert(entry.name().to_owned(), Arc::new(entry));
        });
    }

    /// `start`, `pause`, `resume`, `finish`. Starting refuses a second
    /// started experiment on the same config (two variants could not both
    /// be the last layer).
    pub async fn control_experiment(
        self: &Arc<Self>,
        actor: &Actor,
        name: &str,
        control: Control,
        reason: Option<String>,
    ) -> LiveOpsResult<Value> {
        let writing = self.writes.lock().await;
        let current = self.experiment_entry(name)?;
        let status = next_status(current.status, control).map_err(|reason| {
            LiveOpsError::InvalidTransition {
                state: current.status.name(),
                reason,
            }
        })?;
        if control == Control::Start {
            if let Some(other) = self.definitions().experiments.values().find(|e| {
                e.name() != name
                    && e.spec.config == current.spec.config
                    && matches!(e.status, Status::Running | Status::Paused)
            }) {
                return Err(LiveOpsError::ExperimentClash {
                    config: current.spec.config.to_string(),
                    other: other.name().to_owned(),
                });
            }
            // The config and patches are checked again on today's base.
            self.check_experiment(&current.spec).await?;
        }
        let now = crate::store::now_ms();
        let mut next = (*current).clone();
        next.revision += 1;
        next.status = status;
        next.status_reason = reason.clone();
        next.updated_at = now;
        if control == Control::Start {
            next.started_at = Some(now);
        }
        if status == Status::Finished {
            next.finished_at = Some(now);
        }
        self.write_experiment(
            actor,
            &current,
            &next,
            match control {
                Control::Start => "experiment.start",
                Control::Pause => "experiment.pause",
                Control::Resume => "experiment.resume",
                Control::Finish => "experiment.finish",
            },
            json!({"status": status.name(), "reason": reason}),
        )
        .await?;
        let view = views::experiment_view(&next);
        self.publish_experiment(next);
        drop(writing);
        if status == Status::Finished {
            self.assignments.flush().await;
        } else {
            self.watch(name).await;
        }
        Ok(view)
    }
}
