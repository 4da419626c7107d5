//! Experiments over server metrics. Game servers split each `metrics`
//! frame by experiment variant (the players they resolved into each); the
//! hub checks the split at the edge (`hub::metrics`) and hands it here.
//! Each variant's share of a report is one observation per server metric
//! of its running experiment (`domain::experiments::metrics::observe`),
//! summed in memory and added to the store's sums in batches by one task
//! (every `liveops.assignment_flush_ms`). Results read the store after a
//! flush, so what was accepted before a read is in it.

use super::LiveOps;
use crate::{
    domain::experiments::{
        metrics::{MetricSource, VariantSample, observe},
        results::Sums,
        spec::Status,
    },
    store::experiments::{self as store, ServerSumsRow},
};
use hotswap_client::sync::lock;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// (experiment id, metric, variant).
type Key = (String, String, String);

/// Observations not yet stored.
#[derive(Debug, Default)]
pub struct ServerSums {
    pending: Mutex<HashMap<Key, Sums>>,
    /// One write at a time: a read after a flush sees every earlier one.
    writing: tokio::sync::Mutex<()>,
}

/// Keys kept in memory between writes, at most (one per experiment,
/// server metric and variant: at most 8 × 10 per running experiment).
const PENDING_KEYS: usize = 100_000;

fn add(pending: &mut HashMap<Key, Sums>, key: Key, more: Sums) {
    if pending.len() >= PENDING_KEYS && !pending.contains_key(&key) {
        return;
    }
    let sums = pending.entry(key).or_default();
    sums.units += more.units;
    sums.total += more.total;
    sums.squares += more.squares;
}

impl LiveOps {
    /// Folds a report's variant shares into the running experiments that
    /// read server metrics (shares of other experiments, or of variants an
    /// experiment does not have, are left out).
    pub(in crate::liveops) fn fold_variant_samples(&self, samples: Vec<VariantSample>) {
        let definitions = self.definitions();
        let mut observed = Vec::new();
        for sample in &samples {
            let Some(entry) = definitions.experiments.get(&sample.experiment) else {
                continue;
            };
            if entry.status != Status::Running
                || !entry.spec.variants.iter().any(|v| v.id == sample.variant)
            {
                continue;
            }
            for metric in &entry.spec.metrics {
                let MetricSource::Server { metric: read, .. } = &metric.source else {
                    continue;
                };
                if let Some(x) = observe(metric.kind, read, sample) {
                    observed.push((
                        (
                            entry.id.clone(),
                            metric.name.clone(),
                            sample.variant.clone(),
                        ),
                        Sums {
                            units: 1,
                            total: x,
                            squares: x * x,
                        },
                    ));
                }
            }
        }
        if observed.is_empty() {
            return;
        }
        let mut pending = lock(&self.server_sums.pending);
        for (key, sums) in observed {
            add(&mut pending, key, sums);
        }
    }

    /// Adds what was observed to the store; false when the write failed
    /// (kept for the next one).
    pub(in crate::liveops) async fn flush_server_sums(&self) -> bool {
        let _writing = self.server_sums.writing.lock().await;
        let taken = std::mem::take(&mut *lock(&self.server_sums.pending));
        if taken.is_empty() {
            return true;
        }
        let rows: Vec<ServerSumsRow> = taken
            .iter()
            .map(|((experiment_id, metric, variant), sums)| ServerSumsRow {
                experiment_id: experiment_id.clone(),
                metric: metric.clone(),
                variant: variant.clone(),
                reports: i64::try_from(sums.units).unwrap_or(i64::MAX),
                total: sums.total,
                squares: sums.squares,
            })
            .collect();
        let written = async {
            let mut tx = self.store.begin().await?;
            store::add_server_sums(&mut tx, &rows).await?;
            tx.commit().await?;
            Ok::<(), crate::store::StoreError>(())
        }
        .await;
        match written {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, rows = rows.len(), "experiment server metrics not stored; retried");
                let mut pending = lock(&self.server_sums.pending);
                for (key, sums) in taken {
                    add(&mut pending, key, sums);
                }
                false
            }
        }
    }

    /// Per server metric of the experiment, by metric name, each variant's
    /// stored sums (after a flush).
    pub(in crate::liveops) async fn server_metric_sums(
        &self,
        experiment_id: &str,
    ) -> crate::store::StoreResult<HashMap<(String, String), Sums>> {
        self.flush_server_sums().await;
        let mut conn = self.store.conn().await?;
        Ok(store::server_sums(&mut conn, experiment_id)
            .await?
            .into_iter()
            .map(|(metric, variant, reports, total, squares)| {
                (
                    (metric, variant),
                    Sums {
                        units: reports.max(0) as u64,
                        total,
                        squares,
                    },
                )
            })
            .collect())
    }

    /// Starts the task that stores observations in batches.
    pub(in crate::liveops) fn start_server_sums(self: &Arc<Self>) {
        let liveops = Arc::downgrade(self);
        let every = Duration::from_millis(self.settings.assignment_flush_ms.max(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(liveops) = liveops.upgrade() else {
                    return;
                };
                liveops.flush_server_sums().await;
            }
        });
    }
}
