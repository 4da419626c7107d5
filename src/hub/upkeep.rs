//! The hub's background work and its end: the 1 s flusher (known servers,
//! deployment counts, finished metric minutes, in one transaction), the
//! janitor (stale servers, metrics past retention, lapsed id bindings),
//! and graceful shutdown (every server told when to come back).

use super::{Dirty, Hub, json_text};
use crate::store::{hub as store_hub, now_ms, server_bindings};
use bytes::Bytes;
use hotswap_actors::{CloseReason, Fanout, Outbox};
use hotswap_client::{
    protocol::{self, HubMessage, close_code},
    sync::lock,
};
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

/// A server sent away when less than this is left of the reconnect window
/// is told a moment within this much (ms).
const LATE_SPREAD_MS: u64 = 1_000;

impl Hub {
    /// Writes changed server records, deployment counts and finished metric
    /// minutes in one transaction (one flush at a time: the shutdown's
    /// waits for the flusher's, whose values are older).
    pub async fn flush(&self) -> anyhow::Result<usize> {
        let _one_at_a_time = self.flushing.lock().await;
        // Rows (a hello, a goodbye) and retried flushes are in `dirty`; the
        // servers whose acks and heartbeats moved are noted in the registry.
        let marked = std::mem::take(&mut *lock(&self.dirty));
        let mut dirty: Vec<(Arc<str>, Dirty)> = self
            .registry
            .take_progressed()
            .into_iter()
            .filter(|id| !marked.contains_key(&**id))
            .map(|id| (id, Dirty::Progress))
            .collect();
        dirty.extend(marked.into_iter().map(|(id, what)| (Arc::from(id), what)));
        // In key order: neighbouring ids share index pages (0.86–0.94× the
        // CPU of hash order in `scripts/bench-flush.py`). One transaction,
        // not several: each commit writes every page its rows touched to
        // the WAL, and a thousand servers stored in no order of their ids
        // touch most of the table's pages (a thousand a transaction cost
        // 2.8× one).
        dirty.sort_unstable();
        // What was taken goes back unless its commit is known to have
        // succeeded: a failed write, a panic, or the flush dropped mid-write
        // (the shutdown's timeout) keeps it all for the next flush.
        let mut taken = Taken {
            hub: self,
            dirty,
            minutes: self.aggregates.take_finished(now_ms()),
            committed: false,
        };
        let deployments: Vec<(String, (i64, i64, i64))> = self
            .serving_read()
            .values()
            .filter_map(|s| s.live())
            // A deployment another node drives: its counts are the owner's to write.
            .filter(|l| !l.mirror)
            .map(|l| {
                let tally = l.record.tally();
                (
                    l.deployment_id.to_string(),
                    (tally.targets, tally.acked, tally.failed),
                )
            })
            .collect();
        let (dirty, minutes) = (&taken.dirty, &taken.minutes);
        if dirty.is_empty() && deployments.is_empty() && minutes.is_empty() {
            return Ok(0);
        }
        // One registry look per hundred rows (not one per row): acks wait
        // on its lock a hundred times after a push to 10,000 servers, each
        // time for a hundred rows' worth (an `applied` map may hold 256
        // configs).
        let progress_ids: Vec<&str> = dirty
            .iter()
            .filter(|(_, what)| *what == Dirty::Progress)
            .map(|(id, _)| &**id)
            .collect();
        let progress: Vec<store_hub::GameServerProgress> = progress_ids
            .chunks(100)
            .flat_map(|ids| {
                self.registry
                    .read_each(ids.iter().copied(), |r| store_hub::GameServerProgress {
                        server_id: r.server_id.clone(),
                        players: i64::from(r.players),
                        applied: json_text(&r.applied),
                        last_seen: r.last_seen_ms,
                    })
            })
            .collect();
        let rows: Vec<store_hub::GameServerRow> = dirty
            .iter()
            .filter(|(_, what)| *what == Dirty::Row)
            .filter_map(|(id, _)| self.registry.get(id))
            .map(|r| store_hub::GameServerRow {
                first_seen: lock(&self.first_seen)
                    .get(&r.server_id)
                    .copied()
                    .unwrap_or(r.last_seen_ms),
                server_id: r.server_id,
                key_id: r.key_id,
                region: r.region,
                environment: r.environment,
                tags: json_text(&r.tags),
                operator_tags: json_text(&r.operator_tags),
                capacity: i64::from(r.capacity),
                players: i64::from(r.players),
                hostname: r.hostname,
                address: r.address,
                build: r.build,
                sdk: r.sdk,
                subscriptions: json_text(&r.subscriptions),
                applied: json_text(&r.applied),
                last_seen: r.last_seen_ms,
            })
            .collect();
        let result = self
            .write_batch(&rows, &progress, &deployments, minutes)
            .await;
        taken.committed = result.is_ok();
        result
    }

    pub(super) async fn write_batch(
        &self,
        rows: &[store_hub::GameServerRow],
        progress: &[store_hub::GameServerProgress],
        deployments: &[(String, (i64, i64, i64))],
        minutes: &[store_hub::MetricMinuteRow],
    ) -> anyhow::Result<usize> {
        let mut tx = self.store.begin().await?;
        store_hub::upsert_game_servers(&mut tx, rows).await?;
        store_hub::update_game_server_progress(&mut tx, progress).await?;
        for (id, counts) in deployments {
            store_hub::update_counts(&mut tx, id, *counts).await?;
        }
        for minute in minutes {
            store_hub::insert_metric_minute(&mut tx, minute).await?;
        }
        tx.commit().await?;
        Ok(rows.len() + progress.len() + deployments.len() + minutes.len())
    }

    /// Drops metric minutes and feedback past the retention period.
    pub async fn expire_metrics(&self) -> anyhow::Result<u64> {
        let days = self.deployment_settings.metrics_retention_days.max(1) as i64;
        let mut tx = self.store.begin().await?;
        let removed = store_hub::expire_metrics(&mut tx, now_ms() - days * 86_400_000).await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// Forgets servers disconnected for longer than `stale_after_secs`:
    /// their rows go from the store first, then from memory (a server that
    /// reconnected meanwhile stays in both: its next flush writes its row
    /// again). Their ids stay bound to their keys for
    /// `server_id_binding_days`.
    pub async fn prune(&self) -> anyhow::Result<usize> {
        let now = now_ms();
        let before = now - (self.settings.stale_after_secs as i64) * 1000;
        let candidates = self.registry.stale_candidates(before);
        if candidates.is_empty() {
            return Ok(0);
        }
        let mut tx = self.store.begin().await?;
        store_hub::delete_game_servers(&mut tx, &candidates).await?;
        server_bindings::touch(&mut tx, &candidates, now).await?;
        tx.commit().await?;
        let gone = self.registry.prune_disconnected(before, &candidates);
        let mut first_seen = lock(&self.first_seen);
        for id in &gone {
            first_seen.remove(id);
        }
        drop(first_seen);
        // Deleted from the store but back meanwhile: written again.
        for id in candidates.iter().filter(|id| !gone.contains(id)) {
            self.mark_dirty(id, Dirty::Row);
        }
        Ok(gone.len())
    }

    /// Drops the bindings of server ids not seen for `server_id_binding_days`.
    pub async fn expire_bindings(&self) -> anyhow::Result<u64> {
        let days = self.settings.server_id_binding_days.max(1) as i64;
        let mut tx = self.store.begin().await?;
        let expired = server_bindings::expire(&mut tx, now_ms() - days * 86_400_000).await?;
        tx.commit().await?;
        Ok(expired)
    }

    /// The flusher and the janitor, until the runtime stops.
    pub fn start_background_tasks(self: &Arc<Self>) {
        let hub = self.clone();
        actix_web::rt::spawn(async move {
            let mut every = actix_web::rt::time::interval(Duration::from_secs(1));
            let mut ticks = 0u64;
            loop {
                every.tick().await;
                // A panic in one step (a bug) is logged; the flusher and
                // the janitor go on at the next tick.
                let step = std::panic::AssertUnwindSafe(hub.background_step(ticks));
                if futures_util::FutureExt::catch_unwind(step).await.is_err() {
                    tracing::error!(
                        "a background step of the hub panicked; it runs again next tick"
                    );
                }
                ticks += 1;
            }
        });
    }

    /// One tick of the flusher and the janitor (`ticks` before this one).
    pub(super) async fn background_step(&self, ticks: u64) {
        if let Err(error) = self.flush().await {
            tracing::warn!(error = %error, "could not persist game servers; will retry");
        }
        let ticks = ticks + 1;
        if !ticks.is_multiple_of(10) {
            return;
        }
        if let Err(error) = self.prune().await {
            tracing::warn!(error = %error, "could not prune stale game servers");
        }
        self.regions.retain(&self.registry.regions());
        self.feedback_rate.retain_recent();
        if ticks.is_multiple_of(3_600) {
            if let Err(error) = self.expire_metrics().await {
                tracing::warn!(error = %error, "could not expire old metric aggregates");
            }
            if let Err(error) = self.expire_bindings().await {
                tracing::warn!(error = %error, "could not expire old server id bindings");
            }
        }
    }

    /// Graceful shutdown: every server is told to come back at a random
    /// moment within the reconnect window (so they do not all return in the
    /// same second), then its socket is closed; known servers are flushed.
    /// Servers that say hello from the moment it begins (before the
    /// sockets close, or while the listener still accepts) are told the
    /// same, not welcomed.
    pub async fn shutdown(&self) {
        // Before the registry is read: a hello that registers after the
        // read (under the registry's lock) sees it (see `on_hello`).
        self.stopping.store(true, Ordering::Release);
        // The shutdown waits on the sockets open now; those that come later
        // (servers sent away come back while the listener still accepts)
        // are sent away in turn, not waited for.
        self.sockets.close_door();
        self.stop_runs().await;
        // Deployments still running resume on the next start; their spans
        // end here, said so.
        let running: Vec<String> = hotswap_client::sync::lock(&self.deploy_spans)
            .keys()
            .cloned()
            .collect();
        for id in running {
            self.end_deploy_span(
                &id,
                "the hub stopped; the deployment resumes on its next start",
            );
        }
        let outboxes = self.registry.all_outboxes();
        let _ = self.sent_away_from.set(std::time::Instant::now());
        tracing::info!(
            servers = outboxes.len(),
            window_ms = self.settings.reconnect_window_ms,
            "telling game servers to reconnect"
        );
        // Queued at once, woken per worker from its own thread (a fan-out):
        // woken one by one from here, 10,000 sockets took 1.2 s to be told.
        let mut fanout = Fanout::new();
        for outbox in outboxes {
            let (frame, reason) = self.going_away();
            let _ = fanout.push_then_close(&outbox, frame, reason);
        }
        fanout.wake();
        // Bounded (a stuck store must not keep the hub from stopping), and
        // tried twice (a flush that failed, on a PostgreSQL deadlock with
        // another node, say, put its rows back for the next one).
        for attempt in 1..=2 {
            match tokio::time::timeout(Duration::from_secs(10), self.flush()).await {
                Ok(Ok(_)) => break,
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, attempt, "could not persist game servers at shutdown");
                }
                Err(_) => {
                    tracing::warn!(
                        attempt,
                        "persisting game servers at shutdown took over 10 s"
                    );
                }
            }
        }
    }

    /// Tells one server to come back at a random moment within the
    /// reconnect window, then closes its socket. The window runs from the
    /// moment every server was told: a server sent away later (it said
    /// hello while the hub was stopping) gets a moment in what is left of
    /// it, so it does not stretch the storm. A second call for the same
    /// outbox does nothing (it is closing already).
    pub(super) fn send_away(&self, outbox: &Outbox) {
        let (frame, reason) = self.going_away();
        let _ = outbox.push(frame);
        outbox.close_after_queued(reason);
    }

    /// A `reconnect` frame with its moment (see [`Hub::send_away`]), and
    /// the close that follows it.
    pub(super) fn going_away(&self) -> (Bytes, CloseReason) {
        let elapsed = self
            .sent_away_from
            .get()
            .map_or(0, |since| since.elapsed().as_millis() as u64);
        // Past the window (a server sent away came straight back while the
        // listener still accepts), a second of its own, never at once: told
        // 0 ms, such servers looped on the stopping hub as fast as it
        // answered.
        let left = self
            .settings
            .reconnect_window_ms
            .saturating_sub(elapsed)
            .max(LATE_SPREAD_MS);
        let jitter: [u8; 8] = crate::auth::keyfile::random_bytes();
        let retry_after_ms = 1 + u64::from_le_bytes(jitter) % (left - 1);
        let frame = Bytes::from(protocol::encode(&HubMessage::Reconnect { retry_after_ms }));
        (
            frame,
            CloseReason::new(close_code::GOING_AWAY, "the hub is shutting down"),
        )
    }
}

/// What one flush took to write: put back for the next flush when it is
/// dropped before its commit succeeded (an error, a panic, or the flush
/// itself dropped by a timeout while it waited on the store). A commit
/// whose answer was lost is written again, as after any failed commit:
/// rows and progress are idempotent; a metric minute may then be counted
/// twice, the same trade a failed commit's retry makes.
struct Taken<'a> {
    hub: &'a Hub,
    dirty: Vec<(Arc<str>, Dirty)>,
    minutes: Vec<store_hub::MetricMinuteRow>,
    committed: bool,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for (id, what) in self.dirty.drain(..) {
            self.hub.mark_dirty(&id, what);
        }
        if !self.minutes.is_empty() {
            self.hub.aggregates.retry(std::mem::take(&mut self.minutes));
        }
    }
}
