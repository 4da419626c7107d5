//! An experiment's results, read from the units' telemetry: per metric and
//! variant the store's sums over units (events after each player's
//! assignment), or over reports for server metrics
//! (`server_metrics.rs`), then the domain's statistics. The smallest sequential
//! p-value of each (metric, variant) is kept in memory and in the store,
//! so the always-valid p-value survives a restart.
//!
//! Each started experiment has a watcher task: it finishes the experiment
//! at its `endTime`, and reads its guardrails every
//! `liveops.guardrail_interval_ms` while it runs, pausing it on a breach.

use super::{
    ExperimentEntry, LiveOps, LiveOpsResult,
    views::{ResultsView, results_view},
};
use crate::{
    catalog::Actor,
    domain::experiments::{
        results::{
            Looks, MetricOutcome, Sample, Sums, guardrail_breach, metric_outcome_of, split_check,
        },
        spec::{Control, MetricKind, MetricSource, Status},
    },
    store::cluster::experiment_resource,
    store::experiments::{self as store, Reading},
};
use hotswap_client::sync::lock;
use std::{collections::HashMap, sync::Arc, time::Duration};

/// Looks kept as JSON: `"metric/variant"` → p.
fn looks_json(looks: &Looks) -> String {
    let map: serde_json::Map<String, serde_json::Value> = looks
        .iter()
        .map(|((metric, variant), p)| (format!("{metric}/{variant}"), serde_json::json!(p)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

pub(in crate::liveops) fn looks_of(text: &str) -> Looks {
    serde_json::from_str::<HashMap<String, f64>>(text)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, p)| {
            let (metric, variant) = key.split_once('/')?;
            Some(((metric.to_owned(), variant.to_owned()), p))
        })
        .collect()
}

impl LiveOps {
    /// Per metric, each variant's sums, in the spec's order.
    async fn outcomes(
        &self,
        entry: &ExperimentEntry,
    ) -> LiveOpsResult<(Vec<u64>, Vec<MetricOutcome>)> {
        self.assignments.flush().await;
        let until = entry
            .finished_at
            .unwrap_or_else(|| self.now_ms().max(crate::store::now_ms()))
            + 1;
        // Read before a connection is held: it takes one of its own.
        let from_servers = if entry
            .spec
            .metrics
            .iter()
            .any(|m| matches!(m.source, MetricSource::Server { .. }))
        {
            self.server_metric_sums(&entry.id).await?
        } else {
            HashMap::new()
        };
        let mut conn = self.store.conn().await?;
        let assigned: HashMap<String, i64> = store::units_per_variant(&mut conn, &entry.id)
            .await?
            .into_iter()
            .collect();
        let units: Vec<u64> = entry
            .spec
            .variants
            .iter()
            .map(|v| assigned.get(&v.id).copied().unwrap_or(0).max(0) as u64)
            .collect();
        // Each variant's sample, in the spec's order.
        let in_order = |sample_of: &dyn Fn(&str) -> Sample| -> Vec<Sample> {
            entry
                .spec
                .variants
                .iter()
                .map(|v| sample_of(&v.id))
                .collect()
        };
        let mut samples_per_metric = Vec::with_capacity(entry.spec.metrics.len());
        for metric in &entry.spec.metrics {
            let MetricSource::Telemetry {
                event,
                field,
                equals,
            } = &metric.source
            else {
                let key = metric.storage_key();
                samples_per_metric.push(in_order(&|variant| {
                    let sums = from_servers.get(&(key.clone(), variant.to_owned()));
                    Sample::Mean(sums.copied().unwrap_or_default().sample())
                }));
                continue;
            };
            let reading = match metric.kind {
                MetricKind::Binomial => Reading::Any,
                MetricKind::Count => Reading::Count,
                MetricKind::Sum => Reading::Sum,
                MetricKind::Duration => Reading::Mean,
            };
            let rows = store::metric_sums(
                &mut conn,
                self.store.backend(),
                &entry.id,
                event,
                field.as_deref(),
                equals.as_deref(),
                reading,
                until,
            )
            .await?;
            let by_variant: HashMap<String, Sums> = rows
                .into_iter()
                .map(|(variant, n, total, squares)| {
                    (
                        variant,
                        Sums {
                            units: n.max(0) as u64,
                            total,
                            squares,
                        },
                    )
                })
                .collect();
            let rate = metric.is_rate();
            samples_per_metric.push(in_order(&|variant| {
                by_variant
                    .get(variant)
                    .copied()
                    .unwrap_or_default()
                    .sample(rate)
            }));
        }
        // On a cluster every node looks: the smallest p-values any node
        // stored are this node's too (a look never raises them).
        let stored = if self.hub.in_cluster() {
            store::by_name(&mut conn, entry.name())
                .await?
                .filter(|row| row.id == entry.id)
                .map(|row| looks_of(&row.looks))
        } else {
            None
        };
        drop(conn);
        let (outcomes, json) = {
            let mut all = lock(&self.looks);
            let looks = all.entry(entry.id.clone()).or_default();
            for (key, p) in stored.into_iter().flatten() {
                let mine = looks.entry(key).or_insert(p);
                *mine = mine.min(p);
            }
            let outcomes: Vec<MetricOutcome> = samples_per_metric
                .iter()
                .enumerate()
                .map(|(index, samples)| metric_outcome_of(&entry.spec, index, samples, looks))
                .collect();
            (outcomes, looks_json(looks))
        };
        if entry.status != Status::Finished {
            let mut conn = self.store.conn().await?;
            store::set_looks(&mut conn, &entry.id, &json).await?;
        }
        Ok((units, outcomes))
    }

    /// `GET /experiments/{name}/results`.
    pub async fn experiment_results(&self, name: &str) -> LiveOpsResult<ResultsView> {
        let entry = self.experiment_entry(name)?;
        let (units, outcomes) = self.outcomes(&entry).await?;
        let split = split_check(&entry.spec, &units);
        Ok(results_view(
            &entry,
            &units,
            split.as_ref(),
            &outcomes,
            self.now_ms(),
        ))
    }

    /// Whether this node runs a watcher of experiment `name`.
    pub(in crate::liveops) fn watching(&self, name: &str) -> bool {
        lock(&self.watchers)
            .get(name)
            .is_some_and(|handle| !handle.is_finished())
    }

    /// Starts the watcher of a started experiment on this node, in a
    /// cluster only if this node holds (or takes) its lease: one node
    /// watches each experiment.
    pub(in crate::liveops) async fn watch(self: &Arc<Self>, name: &str) {
        if self.hub.in_cluster() && !self.watching(name) {
            let Ok(entry) = self.experiment_entry(name) else {
                return;
            };
            if !matches!(entry.status, Status::Running | Status::Paused) {
                return;
            }
            let resource = experiment_resource(&entry.id);
            if self.hub.held_epoch(&resource).is_none() {
                let taken = match self.store.conn().await {
                    Ok(mut conn) => self.hub.take_lease(&mut conn, &resource).await,
                    Err(error) => Err(error),
                };
                match taken {
                    Ok(Some(_)) => {
                        tracing::info!(experiment = %name, "this node watches the experiment");
                    }
                    Ok(None) => return,
                    Err(error) => {
                        tracing::warn!(experiment = %name, %error, "cannot take an experiment's lease; retried");
                        return;
                    }
                }
            }
        }
        self.watch_experiment(name);
    }

    /// Starts the watcher of a started experiment (one per experiment;
    /// nothing for drafts and finished ones; in a cluster, only under its
    /// lease: see [`LiveOps::watch`]). It stops when the experiment
    /// finishes, and in a cluster when the lease is lost (given up once
    /// the experiment finished).
    pub(in crate::liveops) fn watch_experiment(self: &Arc<Self>, name: &str) {
        let mut watchers = lock(&self.watchers);
        watchers.retain(|_, handle| !handle.is_finished());
        if watchers.contains_key(name) || self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let liveops = Arc::downgrade(self);
        let name_owned = name.to_owned();
        let handle = tokio::spawn(async move {
            loop {
                let Some(liveops) = liveops.upgrade() else {
                    return;
                };
                let Some(entry) = liveops.definitions().experiments.get(&name_owned).cloned()
                else {
                    return;
                };
                let resource = experiment_resource(&entry.id);
                if liveops.hub.held_epoch(&resource).is_none() {
                    // Another node took it over (this one was cut off).
                    return;
                }
                if !matches!(entry.status, Status::Running | Status::Paused) {
                    liveops.hub.give_up_lease(&resource);
                    return;
                }
                let now = liveops.now_ms();
                if let Some(end) = entry.spec.end_ms.filter(|end| now >= *end) {
                    let reason = format!(
                        "ended at its endTime ({})",
                        crate::catalog::views::rfc3339(end)
                    );
                    if let Err(error) = liveops
                        .control_experiment(
                            &Actor::system(),
                            &name_owned,
                            Control::Finish,
                            Some(reason),
                        )
                        .await
                    {
                        tracing::warn!(experiment = %name_owned, %error, "an experiment could not finish at its end; retried");
                    } else {
                        liveops.hub.give_up_lease(&resource);
                        return;
                    }
                }
                if entry.status == Status::Running && !entry.spec.guardrails.is_empty() {
                    liveops.check_guardrails(&entry).await;
                }
                let interval =
                    Duration::from_millis(liveops.settings.guardrail_interval_ms.max(50));
                let clock = liveops.clock.clone();
                drop(liveops);
                clock.sleep_until(entry.spec.end_ms, interval).await;
            }
        });
        watchers.insert(name.to_owned(), handle);
    }

    async fn check_guardrails(self: &Arc<Self>, entry: &Arc<ExperimentEntry>) {
        let (units, outcomes) = match self.outcomes(entry).await {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(experiment = %entry.name(), %error, "guardrails not read; retried");
                return;
            }
        };
        // Units in control: its assigned units for a telemetry metric, its
        // reports for a server metric.
        let assigned = units[entry.spec.control];
        let control_units = |metric: &str| {
            let from_servers = entry
                .spec
                .metrics
                .iter()
                .any(|m| m.name == metric && matches!(m.source, MetricSource::Server { .. }));
            if from_servers {
                outcomes
                    .iter()
                    .find(|o| o.metric == metric)
                    .map_or(0, |o| o.variants[entry.spec.control].units)
            } else {
                assigned
            }
        };
        let Some(breach) = guardrail_breach(&entry.spec.guardrails, &outcomes, control_units)
        else {
            return;
        };
        tracing::warn!(experiment = %entry.name(), variant = %breach.variant, metric = %breach.metric,
            relative = breach.relative, p = breach.sequential_p, "a guardrail paused an experiment");
        if let Err(error) = self
            .control_experiment(
                &Actor::system(),
                entry.name(),
                Control::Pause,
                Some(breach.describe()),
            )
            .await
        {
            tracing::warn!(experiment = %entry.name(), %error, "a guardrail breach could not pause the experiment");
        }
    }
}
