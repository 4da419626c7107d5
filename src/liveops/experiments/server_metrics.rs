//! Experiments over server metrics. Game servers split each `metrics`
//! frame by experiment variant (the players they resolved into each); the
//! hub checks the split at the edge (`hub::metrics`) and hands it here
//! with the sending server's subscriptions. A share counts only for a
//! running experiment on a config the server subscribes to, and only for
//! a variant the experiment has. Each share gives each server metric an
//! amount over a weight (`domain::experiments::metrics::observe`), summed
//! per (experiment, metric, variant) in memory and added to the store's
//! sums in batches by one task (every `liveops.assignment_flush_ms`, and
//! once more when the hub stops). Results read the store's sums plus what
//! is still in memory, under the same lock the writer holds, so nothing
//! is counted twice or missed and a read never writes.

use super::LiveOps;
use crate::{
    domain::experiments::{
        metrics::{MetricSource, RatioSums, VariantSample, observe},
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

/// (experiment id, metric storage key, variant).
type Key = (String, String, String);

/// Observations not yet stored.
#[derive(Debug, Default)]
pub struct ServerSums {
    pending: Mutex<HashMap<Key, RatioSums>>,
    /// Held through each write, and by readers: a read sees every
    /// observation once, stored or pending.
    writing: tokio::sync::Mutex<()>,
}

/// Keys kept in memory between writes, at most (one per running
/// experiment, server metric and variant: at most 8 × 10 each).
const PENDING_KEYS: usize = 100_000;

fn add(pending: &mut HashMap<Key, RatioSums>, key: Key, more: &RatioSums) {
    if pending.len() >= PENDING_KEYS && !pending.contains_key(&key) {
        return;
    }
    pending.entry(key).or_default().merge(more);
}

impl LiveOps {
    /// Folds a report's variant shares into the running experiments that
    /// read server metrics. `subscriptions`: the sending server's configs.
    pub(in crate::liveops) fn fold_variant_samples(
        &self,
        subscriptions: &[String],
        samples: Vec<VariantSample>,
    ) {
        let definitions = self.definitions();
        let mut observed: Vec<(Key, f64, f64)> = Vec::new();
        for sample in &samples {
            let Some(entry) = definitions.experiments.get(&sample.experiment) else {
                continue;
            };
            if entry.status != Status::Running
                || !subscriptions
                    .iter()
                    .any(|c| c.as_str() == entry.spec.config.as_str())
                || !entry.spec.variants.iter().any(|v| v.id == sample.variant)
            {
                continue;
            }
            for metric in &entry.spec.metrics {
                let MetricSource::Server { metric: read, .. } = &metric.source else {
                    continue;
                };
                if let Some((x, n)) = observe(metric.kind, read, sample) {
                    observed.push((
                        (
                            entry.id.clone(),
                            metric.storage_key(),
                            sample.variant.clone(),
                        ),
                        x,
                        n,
                    ));
                }
            }
        }
        if observed.is_empty() {
            return;
        }
        let mut pending = lock(&self.server_sums.pending);
        for (key, x, n) in observed {
            let mut one = RatioSums::default();
            one.add(x, n);
            add(&mut pending, key, &one);
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
                sums: *sums,
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
                    add(&mut pending, key, &sums);
                }
                false
            }
        }
    }

    /// An experiment's sums over server reports by (metric storage key,
    /// variant): the stored ones plus those still in memory.
    pub(in crate::liveops) async fn server_metric_sums(
        &self,
        experiment_id: &str,
    ) -> crate::store::StoreResult<HashMap<(String, String), RatioSums>> {
        let _writing = self.server_sums.writing.lock().await;
        let mut conn = self.store.conn().await?;
        let mut sums: HashMap<(String, String), RatioSums> =
            store::server_sums(&mut conn, experiment_id)
                .await?
                .into_iter()
                .map(|row| ((row.metric, row.variant), row.sums))
                .collect();
        drop(conn);
        for ((id, metric, variant), more) in lock(&self.server_sums.pending).iter() {
            if id == experiment_id {
                sums.entry((metric.clone(), variant.clone()))
                    .or_default()
                    .merge(more);
            }
        }
        Ok(sums)
    }

    /// Starts the task that stores observations in batches (it ends when
    /// the hub's live ops go).
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
                if liveops.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                liveops.flush_server_sums().await;
            }
        });
    }
}
