//! The hub: what each game server should run, the frames that bring it
//! there, fan-out, acks, metric ingest, and the deployment engine. Sessions
//! (in `actors/`) call in through [`SessionHost`]; REST calls in through [`Hub`].
//!
//! **Architecture invariant:** the hot paths (fan-out, acks, heartbeats,
//! metrics) touch no database. Known servers are written to the store by a
//! background flusher, in batches.
//!
//! # Layout
//! - `mod.rs`: [`Hub`], fan-out, metric ingest, background tasks, shutdown.
//! - `documents.rs`: opened documents, patches and encoded frames, shared.
//! - `engine.rs`: the deployment engine: plans, one actor per deployment,
//!   what each server should run (`Serving`), reconciling servers with it.
//! - `deployments.rs`: requests, errors and views of deployments, and the
//!   per-server progress of the ones this hub drives.
//! - `metrics.rs`: validating and decoding `metrics` frames.
//! - `hdr.rs`: HdrHistogram V2 bytes (plain or deflated) into sparse pairs,
//!   every length and parameter bounded before anything is allocated.
//! - `aggregates.rs`: per-minute metric aggregates for the store.
//! - `bindings.rs`: group commit of new server ids' bindings to their keys.
//! - `regions.rs`: the bounded set of region names metrics are kept under.
//! - `feedback.rs`: aggregated metrics queries and player feedback.
//! - `sessions.rs`: hello, acks, resyncs and closes of game servers'
//!   sessions, and the `SessionHost` the session actors call.

mod aggregates;
mod bindings;
pub mod deployments;
mod documents;
pub mod engine;
pub mod feedback;
mod hdr;
pub mod metrics;
mod regions;
mod sessions;

pub use deployments::{DeploymentView, NewDeploymentRequest, ServerProgressView};
pub use engine::Action;

use crate::domain::policy::{EnvironmentPolicy, policy, stored_environment};
use crate::store::now_ms;
use crate::{
    catalog::Catalog,
    domain::rollout::Assignment,
    settings::{DeploymentSettings, HubSettings},
    store::{Store, hub as store_hub, server_bindings},
};
use bytes::Bytes;
use deployments::Runs;
use documents::DocumentCache;
use engine::{Event, Serving, Who};
use hotswap_actors::{
    CloseReason, Fanout, GateLimits, Outbox, Registry, ServerRecord, SessionGate, SessionHost,
};
use hotswap_client::protocol::{self, Health, HubMessage, close_code};
use hotswap_client::sync::lock;
use sessions::{HubHost, key_revoked};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

/// Counters for observability and the load test.
#[derive(Debug, Default)]
pub struct HubStats {
    pub metrics_frames: AtomicU64,
    pub acks: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub frames_pushed: AtomicU64,
    /// Metric events a full deployment mailbox dropped.
    pub metric_events_dropped: AtomicU64,
}

pub struct Hub {
    catalog: Catalog,
    store: Store,
    registry: Arc<Registry>,
    /// Every open socket, hello or not, by API key; the caps; revoked keys.
    gate: Arc<SessionGate>,
    /// Binds new server ids to their keys, many per transaction.
    binder: bindings::BindingWriter,
    settings: HubSettings,
    deployment_settings: DeploymentSettings,
    /// Per config: active revision, standing layers, the deployment in flight.
    serving: RwLock<HashMap<String, Serving>>,
    documents: DocumentCache,
    runs: Runs,
    aggregates: aggregates::Aggregates,
    /// Region names metrics fold under (bounded; the rest is `(other)`).
    regions: regions::RegionNames,
    /// Complaints over REST that may count in cohorts, per server.
    feedback_rate: feedback::FeedbackRate,
    /// Servers whose record changed since the last flush, and how much.
    dirty: Mutex<HashMap<String, Dirty>>,
    first_seen: Mutex<HashMap<String, i64>>,
    /// Set when shutdown begins: a server saying hello from then on is told
    /// to reconnect, not welcomed (it would hold the stopping hub open).
    stopping: AtomicBool,
    /// When the servers were told to reconnect: their window's start.
    sent_away_from: std::sync::OnceLock<std::time::Instant>,
    pub stats: HubStats,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// What of a known server changed since the last flush: its running
/// state only (acks, heartbeats: a narrow update), or its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dirty {
    Progress,
    Row,
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain maps and lists serialize")
}

impl Hub {
    /// Loads active revisions and known servers from the store.
    pub async fn load(
        catalog: Catalog,
        store: Store,
        settings: HubSettings,
        deployment_settings: DeploymentSettings,
    ) -> anyhow::Result<Arc<Self>> {
        let mut conn = store.conn().await?;
        let mut serving: HashMap<String, Serving> = HashMap::new();
        for (name, environment, revision) in store_hub::active_revisions(&mut conn).await? {
            serving
                .entry(name)
                .or_insert_with(|| Serving::new(&environment))
                .base = Some(revision);
        }
        for row in store_hub::standing_layers(&mut conn).await? {
            let Ok(plan) = serde_json::from_str::<engine::Plan>(&row.spec) else {
                tracing::warn!(deployment = %row.id, "cannot read a completed deployment's plan; its layer is dropped");
                continue;
            };
            let Ok(strategy) = row.strategy.parse() else {
                continue;
            };
            let entry = serving
                .entry(row.config_name.clone())
                .or_insert_with(|| Serving::new(&row.environment));
            // Newest first, as the query returns them.
            entry.layers.push(Arc::new(Assignment {
                deployment_id: row.id.clone(),
                revision: row.revision,
                scope: plan.scope.clone(),
                cover: plan.full_cover(strategy),
            }));
        }
        let rows = store_hub::game_servers(&mut conn).await?;
        let unfinished = store_hub::unfinished_deployments(&mut conn).await?;
        let revoked = crate::store::api_keys::revoked_ids(&mut conn).await?;
        drop(conn);
        let gate = SessionGate::new(GateLimits {
            max_sessions: settings.max_sessions.max(1),
            max_sessions_per_key: settings.max_sessions_per_key.max(1),
        });
        gate.restore_revoked(revoked);
        let registry = Arc::new(Registry::default());
        let mut first_seen = HashMap::new();
        registry.restore(
            rows.into_iter()
                .map(|row| {
                    first_seen.insert(row.server_id.clone(), row.first_seen);
                    ServerRecord {
                        server_id: row.server_id,
                        key_id: row.key_id,
                        region: row.region,
                        environment: row.environment,
                        tags: serde_json::from_str(&row.tags).unwrap_or_default(),
                        operator_tags: serde_json::from_str(&row.operator_tags).unwrap_or_default(),
                        capacity: row.capacity as u32,
                        players: row.players as u32,
                        status: Health::Healthy,
                        load: None,
                        hostname: row.hostname,
                        address: row.address,
                        build: row.build,
                        sdk: row.sdk,
                        subscriptions: serde_json::from_str(&row.subscriptions).unwrap_or_default(),
                        applied: serde_json::from_str(&row.applied).unwrap_or_default(),
                        connected: false,
                        session_id: None,
                        connected_since_ms: None,
                        last_seen_ms: row.last_seen,
                        stale: false,
                        disconnect_reason: None,
                        metrics_frames: 0,
                        last_metrics_ms: None,
                    }
                })
                .collect(),
        );
        let binder = bindings::BindingWriter::start(
            store.clone(),
            registry.clone(),
            settings.max_server_ids_per_key,
        );
        let hub = Arc::new(Hub {
            catalog,
            store,
            registry,
            gate,
            binder,
            settings,
            deployment_settings,
            serving: RwLock::new(serving),
            documents: DocumentCache::default(),
            runs: Runs::default(),
            aggregates: aggregates::Aggregates::default(),
            regions: regions::RegionNames::default(),
            feedback_rate: feedback::feedback_rate(),
            dirty: Mutex::new(HashMap::new()),
            first_seen: Mutex::new(first_seen),
            stopping: AtomicBool::new(false),
            sent_away_from: std::sync::OnceLock::new(),
            stats: HubStats::default(),
        });
        hub.resume(unfinished).await?;
        Ok(hub)
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Admission of game-server sockets.
    pub fn gate(&self) -> &Arc<SessionGate> {
        &self.gate
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// The session side, for the socket endpoint.
    pub fn host(self: &Arc<Self>) -> Arc<dyn SessionHost> {
        Arc::new(HubHost(self.clone()))
    }

    pub fn deployment_settings(&self) -> &DeploymentSettings {
        &self.deployment_settings
    }

    /// What the environment (a stored name) asks of deployments, with
    /// this hub's approval settings.
    pub fn policy(&self, environment: &str) -> EnvironmentPolicy {
        policy(
            stored_environment(environment),
            &self.deployment_settings.approval_environments,
        )
    }

    /// What `record` should run of `config`: `(environment, desired)`.
    fn desired(&self, config: &str, record: &ServerRecord) -> Option<(String, Option<i64>)> {
        let serving = self.serving_read();
        let entry = serving.get(config)?;
        Some((
            entry.environment.clone(),
            entry
                .desired(&Who::of(record))
                .map(|(revision, _)| revision),
        ))
    }

    fn mark_dirty(&self, server_id: &str, what: Dirty) {
        let mut dirty = lock(&self.dirty);
        match dirty.get_mut(server_id) {
            Some(was) => *was = (*was).max(what),
            None => {
                dirty.insert(server_id.to_owned(), what);
            }
        }
    }

    /// The frame that brings a server holding `known` to `target` of
    /// `config`: nothing when it is there, a delta when the hub still has the
    /// base revision, a snapshot otherwise.
    async fn frame_towards(
        &self,
        config: &str,
        known: Option<i64>,
        target: i64,
        deployment: Option<&str>,
    ) -> Option<Bytes> {
        if known == Some(target) {
            return None;
        }
        let target_doc = match self.documents.document(&self.catalog, config, target).await {
            Ok(Some(doc)) => doc,
            Ok(None) => return None,
            Err(error) => {
                tracing::error!(%config, target, error = %error, "cannot load a document for servers");
                return None;
            }
        };
        let base = match known {
            Some(base) if base > 0 => self
                .documents
                .document(&self.catalog, config, base)
                .await
                .ok()
                .flatten(),
            _ => None,
        };
        Some(match base {
            Some(base) => self
                .documents
                .delta_or_snapshot(&base, &target_doc, deployment),
            None => self.documents.snapshot(&target_doc, deployment),
        })
    }

    /// Queues a frame to one server of a fan-out; a full queue closes the
    /// session.
    fn push_to(&self, fanout: &mut Fanout, outbox: &Outbox, frame: Bytes) -> bool {
        match fanout.push(outbox, frame) {
            Ok(()) => {
                self.stats.frames_pushed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(hotswap_actors::PushError::Full) => {
                outbox.close(CloseReason::new(
                    close_code::SLOW_CONSUMER,
                    "the server did not read its frames fast enough",
                ));
                false
            }
            Err(hotswap_actors::PushError::Closed) => false,
        }
    }

    /// Writes changed server records, deployment counts and finished metric
    /// minutes in one transaction.
    pub async fn flush(&self) -> anyhow::Result<usize> {
        let dirty: Vec<(String, Dirty)> = lock(&self.dirty).drain().collect();
        let deployments: Vec<(String, (i64, i64, i64))> = self
            .serving_read()
            .values()
            .filter_map(|s| s.live.as_ref())
            .map(|l| {
                let (targets, _, acked, failed) = l.record.counts(None);
                (l.assignment.deployment_id.clone(), (targets, acked, failed))
            })
            .collect();
        let minutes = self.aggregates.take_finished(now_ms());
        if dirty.is_empty() && deployments.is_empty() && minutes.is_empty() {
            return Ok(0);
        }
        let progress: Vec<store_hub::GameServerProgress> = dirty
            .iter()
            .filter(|(_, what)| *what == Dirty::Progress)
            .filter_map(|(id, _)| {
                self.registry
                    .read_then(id, |r| store_hub::GameServerProgress {
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
            .write_batch(&rows, &progress, &deployments, &minutes)
            .await;
        if result.is_err() {
            // Keep them for the next flush.
            for (id, what) in dirty {
                self.mark_dirty(&id, what);
            }
            self.aggregates.retry(minutes);
        }
        result
    }

    async fn write_batch(
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
    async fn background_step(&self, ticks: u64) {
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
        self.stop_runs().await;
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
        if let Err(error) = self.flush().await {
            tracing::warn!(error = %error, "could not persist game servers at shutdown");
        }
    }

    /// Tells one server to come back at a random moment within the
    /// reconnect window, then closes its socket. The window runs from the
    /// moment every server was told: a server sent away later (it said
    /// hello while the hub was stopping) gets a moment in what is left of
    /// it, so it does not stretch the storm. A second call for the same
    /// outbox does nothing (it is closing already).
    fn send_away(&self, outbox: &Outbox) {
        let (frame, reason) = self.going_away();
        let _ = outbox.push(frame);
        outbox.close_after_queued(reason);
    }

    /// A `reconnect` frame with its moment (see [`Hub::send_away`]), and
    /// the close that follows it.
    fn going_away(&self) -> (Bytes, CloseReason) {
        let elapsed = self
            .sent_away_from
            .get()
            .map_or(0, |since| since.elapsed().as_millis() as u64);
        let window = self
            .settings
            .reconnect_window_ms
            .saturating_sub(elapsed)
            .max(1);
        let jitter: [u8; 8] = crate::auth::keyfile::random_bytes();
        let retry_after_ms = u64::from_le_bytes(jitter) % window;
        let frame = Bytes::from(protocol::encode(&HubMessage::Reconnect { retry_after_ms }));
        (
            frame,
            CloseReason::new(close_code::GOING_AWAY, "the hub is shutting down"),
        )
    }

    /// Closes every socket of a revoked API key, whether it said hello or
    /// not, and refuses the key's sockets from now on.
    pub fn close_sessions_of_key(&self, key_id: &str) -> usize {
        self.gate.revoke(key_id, &key_revoked())
    }

    /// Deregisters a server and releases its id (any API key may register
    /// it next), audited: the store changes first, then its session is
    /// closed (4005). False when the hub knows neither the server nor a
    /// binding of its id.
    pub async fn deregister(
        &self,
        actor: &crate::catalog::Actor,
        server_id: &str,
    ) -> anyhow::Result<bool> {
        let known = self.registry.read_then(server_id, |_| ()).is_some();
        let mut tx = self.store.begin().await?;
        let released = server_bindings::release(&mut tx, server_id).await?;
        if !known && !released {
            return Ok(false);
        }
        store_hub::delete_game_servers(&mut tx, &[server_id.to_owned()]).await?;
        crate::store::audit::record(
            &mut tx,
            actor.audit_entry(
                "game-server.deregister",
                format!("game-servers/{server_id}"),
                serde_json::json!({ "connected": self.registry.read_then(server_id, |r| r.connected), "idReleased": released }),
            ),
        )
        .await?;
        tx.commit().await?;
        self.registry.remove(
            server_id,
            CloseReason::new(
                close_code::DEREGISTERED,
                "an admin deregistered this server and released its id",
            ),
        );
        lock(&self.first_seen).remove(server_id);
        lock(&self.dirty).remove(server_id);
        Ok(true)
    }

    /// Replaces a server's operator tags.
    pub fn set_operator_tags(&self, server_id: &str, tags: Vec<String>) -> bool {
        let done = self.registry.set_operator_tags(server_id, tags);
        if done {
            self.mark_dirty(server_id, Dirty::Row);
        }
        done
    }
}

/// What a server's players reported: a metrics frame, or feedback.
pub(crate) enum Ingest {
    Report(Arc<crate::domain::window::Report>),
    Complaints(u64),
}

/// Where one server's report goes: its region, and its cohort in every
/// deployment it takes part in, as of `at_ms`.
pub(crate) struct Destinations {
    at_ms: i64,
    region: Arc<str>,
    healthy: bool,
    cohorts: Vec<(Option<engine::RunHandle>, Arc<str>, Arc<str>)>,
}

/// The minute aggregates' key for every server of every deployment.
fn everyone() -> (Arc<str>, Arc<str>) {
    static EVERYONE: std::sync::OnceLock<(Arc<str>, Arc<str>)> = std::sync::OnceLock::new();
    EVERYONE
        .get_or_init(|| (Arc::from(aggregates::ALL), Arc::from("all")))
        .clone()
}

impl Hub {
    /// Where what `record`'s players report goes. Cheap enough to run under
    /// the registry's lock, which the metric path does to copy nothing of
    /// the record (lock order: registry, then serving, then a run's record;
    /// nothing takes them the other way round). `report`: a metrics report,
    /// which counts for no cohort if it began before the server switched.
    pub(crate) fn destinations(
        &self,
        record: &ServerRecord,
        report: bool,
        at_ms: i64,
    ) -> Destinations {
        let who = Who::of(record);
        let mut cohorts = Vec::new();
        let serving = self.serving_read();
        for config in &record.subscriptions {
            let Some(entry) = serving.get(config) else {
                continue;
            };
            let Some(live) = entry
                .live
                .as_ref()
                .filter(|_| entry.environment == record.environment)
            else {
                continue;
            };
            let Some(cohort) = entry.cohort_of(&who, record.applied.get(config).copied()) else {
                continue;
            };
            // A report that began before the server switched revision
            // mixes both: it counts for neither cohort.
            if report
                && live
                    .record
                    .switched_since(&record.server_id, at_ms - self.settings.metrics_ms as i64)
            {
                continue;
            }
            cohorts.push((
                live.handle.clone(),
                Arc::<str>::from(live.assignment.deployment_id.as_str()),
                cohort,
            ));
        }
        Destinations {
            at_ms,
            region: self.regions.name(&record.region, &record.key_id),
            healthy: record.status == Health::Healthy,
            cohorts,
        }
    }

    /// Folds what a server's players reported into the minute aggregates
    /// and into the cohort windows of every deployment the server is part of.
    fn ingest(&self, to: Destinations, ingest: Ingest) {
        let Destinations {
            at_ms: at,
            region,
            cohorts,
            ..
        } = to;
        let (all, everyone) = everyone();
        match &ingest {
            Ingest::Report(report) => self.aggregates.fold(at, &region, &all, &everyone, report),
            Ingest::Complaints(n) => self.aggregates.complaints(at, &region, &all, &everyone, *n),
        }
        for (handle, deployment, cohort) in cohorts {
            match &ingest {
                Ingest::Report(report) => {
                    self.aggregates
                        .fold(at, &region, &deployment, &cohort, report)
                }
                Ingest::Complaints(n) => {
                    self.aggregates
                        .complaints(at, &region, &deployment, &cohort, *n)
                }
            }
            let Some(handle) = handle else {
                continue;
            };
            let event = match &ingest {
                Ingest::Report(report) => Event::Metrics {
                    cohort,
                    region: region.clone(),
                    report: report.clone(),
                    at_ms: at,
                },
                Ingest::Complaints(count) => Event::Complaints {
                    cohort,
                    region: region.clone(),
                    count: *count,
                    at_ms: at,
                },
            };
            if !handle.event(event) {
                self.stats
                    .metric_events_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
