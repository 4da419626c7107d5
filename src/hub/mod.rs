//! The hub: what each game server should run, the frames that bring it
//! there, fan-out, acks, and Direct deployments. Sessions (in `actors/`)
//! call in through [`SessionHost`]; REST calls in through [`Hub`].
//!
//! **Architecture invariant:** the hot paths (fan-out, acks, heartbeats,
//! metrics) touch no database. Known servers are written to the store by a
//! background flusher, in batches.
//!
//! # Layout
//! - `mod.rs`: [`Hub`], its `SessionHost` side, background tasks, shutdown.
//! - `documents.rs`: opened documents, patches and encoded frames, shared.
//! - `deployments.rs`: Direct deployments and their per-server progress.
//! - `metrics.rs`: validating and counting `metrics` frames.

pub mod deployments;
mod documents;
mod metrics;

pub use deployments::{DeploymentView, NewDeploymentRequest, ServerProgressView};

use crate::{
    catalog::Catalog,
    settings::HubSettings,
    store::{Store, hub as store_hub},
};
use bytes::Bytes;
use deployments::DeploymentTracker;
use documents::{DocumentCache, now_ms};
use futures_util::future::BoxFuture;
use hotswap_actors::{
    CloseReason, Hello, HelloOutcome, Outbox, Refusal, Registry, ServerRecord, SessionHost,
};
use hotswap_client::protocol::{self, Health, HubMessage, MetricsReport, close_code};
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Most subscriptions and tags one server may declare.
const MAX_SUBSCRIPTIONS: usize = 100;
const MAX_TAGS: usize = 32;

/// The config a server should run, as the hub serves it right now.
#[derive(Debug, Clone)]
struct Active {
    environment: String,
    revision: i64,
}

/// Counters for observability and the load test.
#[derive(Debug, Default)]
pub struct HubStats {
    pub metrics_frames: AtomicU64,
    pub acks: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub frames_pushed: AtomicU64,
}

pub struct Hub {
    catalog: Catalog,
    store: Store,
    registry: Arc<Registry>,
    settings: HubSettings,
    active: RwLock<HashMap<String, Active>>,
    documents: DocumentCache,
    deployments: DeploymentTracker,
    /// Servers whose record changed since the last flush.
    dirty: Mutex<HashSet<String>>,
    /// Deployment records to write at the next flush.
    dirty_deployments: Mutex<HashMap<String, store_hub::DeploymentRow>>,
    first_seen: Mutex<HashMap<String, i64>>,
    pub stats: HubStats,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

fn sane(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && !text.chars().any(char::is_control)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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
    ) -> anyhow::Result<Arc<Self>> {
        let mut conn = store.conn().await?;
        let active = store_hub::active_revisions(&mut conn)
            .await?
            .into_iter()
            .map(|(name, environment, revision)| {
                (
                    name,
                    Active {
                        environment,
                        revision,
                    },
                )
            })
            .collect();
        let rows = store_hub::game_servers(&mut conn).await?;
        let unfinished = store_hub::unfinished_deployments(&mut conn).await?;
        drop(conn);
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
                    }
                })
                .collect(),
        );
        let hub = Arc::new(Hub {
            catalog,
            store,
            registry,
            settings,
            active: RwLock::new(active),
            documents: DocumentCache::default(),
            deployments: DeploymentTracker::default(),
            dirty: Mutex::new(HashSet::new()),
            dirty_deployments: Mutex::new(HashMap::new()),
            first_seen: Mutex::new(first_seen),
            stats: HubStats::default(),
        });
        hub.close_out_interrupted(unfinished).await?;
        Ok(hub)
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
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

    fn active(&self, config: &str) -> Option<Active> {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(config)
            .cloned()
    }

    fn set_active(&self, config: &str, environment: &str, revision: i64) {
        self.active
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                config.to_owned(),
                Active {
                    environment: environment.to_owned(),
                    revision,
                },
            );
    }

    fn mark_dirty(&self, server_id: &str) {
        lock(&self.dirty).insert(server_id.to_owned());
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

    /// Queues a frame to one server; a full queue closes the session.
    fn push(&self, outbox: &Outbox, frame: Bytes) -> bool {
        match outbox.push(frame) {
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

    async fn on_hello(
        self: Arc<Self>,
        hello: Hello,
        outbox: Outbox,
    ) -> Result<HelloOutcome, Refusal> {
        let Hello {
            session_id,
            key,
            message: hello,
        } = hello;
        let refuse = |why: String| Err(CloseReason::new(close_code::POLICY_VIOLATION, why));
        if !sane(&hello.server_id, 128) {
            return refuse("serverId must be 1-128 printable characters".into());
        }
        if !sane(&hello.region, 64) {
            return refuse("region must be 1-64 printable characters".into());
        }
        if !["development", "staging", "production"].contains(&hello.environment.as_str()) {
            return refuse(format!(
                "environment {:?} is not development, staging or production",
                hello.environment
            ));
        }
        if !key.environments.is_empty() && !key.environments.contains(&hello.environment) {
            return refuse(format!(
                "this API key may not serve environment {}",
                hello.environment
            ));
        }
        if !key.regions.is_empty()
            && !key
                .regions
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&hello.region))
        {
            return refuse(format!(
                "this API key may not serve region {}",
                hello.region
            ));
        }
        if hello.subscriptions.len() > MAX_SUBSCRIPTIONS
            || hello
                .subscriptions
                .iter()
                .any(|s| crate::domain::names::Slug::parse(s).is_err())
        {
            return refuse(format!(
                "subscriptions must be at most {MAX_SUBSCRIPTIONS} config names"
            ));
        }
        if hello.tags.len() > MAX_TAGS || hello.tags.iter().any(|t| !sane(t, 64)) {
            return refuse(format!("tags must be at most {MAX_TAGS} short strings"));
        }
        let now = now_ms();
        let mut subscriptions = hello.subscriptions.clone();
        subscriptions.sort();
        subscriptions.dedup();
        let record = ServerRecord {
            server_id: hello.server_id.clone(),
            key_id: key.key_id.clone(),
            region: hello.region.clone(),
            environment: hello.environment.clone(),
            tags: hello.tags.clone(),
            operator_tags: Vec::new(),
            capacity: hello.capacity,
            players: hello.players,
            status: Health::Healthy,
            load: None,
            hostname: hello.hostname.clone(),
            address: hello.address.clone(),
            build: hello.build.clone(),
            sdk: hello.sdk.clone(),
            subscriptions: subscriptions.clone(),
            applied: hello.known.clone(),
            connected: true,
            session_id: Some(session_id.clone()),
            connected_since_ms: Some(now),
            last_seen_ms: now,
            stale: false,
            disconnect_reason: None,
            metrics_frames: 0,
        };
        if let Some(replaced) = self.registry.connect(record, outbox) {
            replaced.close(CloseReason::new(
                close_code::REPLACED,
                "another connection with the same serverId replaced this one",
            ));
        }
        lock(&self.first_seen)
            .entry(hello.server_id.clone())
            .or_insert(now);
        self.mark_dirty(&hello.server_id);

        let mut frames = vec![Bytes::from(protocol::encode(&HubMessage::Welcome {
            session_id: session_id.clone(),
            heartbeat_ms: self.settings.heartbeat_ms,
            metrics_ms: self.settings.metrics_ms,
            server_time_ms: now,
            hub_node: self.settings.node_name.clone(),
        }))];
        for config in &subscriptions {
            let Some(active) = self.active(config) else {
                continue;
            };
            if active.environment != hello.environment {
                frames.push(Bytes::from(protocol::encode(&HubMessage::Error {
                    code: "environment_mismatch".into(),
                    message: format!(
                        "{config} is a {} config; this server is {}",
                        active.environment, hello.environment
                    ),
                })));
                continue;
            }
            let known = hello.known.get(config).copied();
            if let Some(frame) = self
                .frame_for_server(config, known, active.revision, &hello.server_id)
                .await
            {
                frames.push(frame);
            }
        }
        Ok(HelloOutcome { frames })
    }

    fn on_ack(&self, server_id: &str, ack: protocol::Ack) {
        let protocol::Ack {
            config,
            revision,
            ok,
            error,
            apply_micros,
        } = ack;
        self.stats.acks.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.registry.update(server_id, |record| {
                record.applied.insert(config.clone(), revision);
            });
            self.mark_dirty(server_id);
        }
        if let Some(finished) =
            self.deployments
                .ack(&config, server_id, revision, ok, error, apply_micros)
        {
            self.persist_progress(finished);
        }
    }

    async fn on_resync(self: Arc<Self>, server_id: String, config: String) -> Option<Bytes> {
        let record = self.registry.get(&server_id)?;
        let active = self
            .active(&config)
            .filter(|a| a.environment == record.environment)?;
        // `None` as the known revision: a resync always gets a snapshot.
        self.frame_for_server(&config, None, active.revision, &server_id)
            .await
    }

    /// The frame bringing one server to what it should run, built so that a
    /// deployment starting during the build cannot be overtaken by an older
    /// frame: the active revision is read again after every await, and the
    /// frame rebuilt if it moved. A server that already holds the target
    /// counts as acked for the deployment in flight.
    async fn frame_for_server(
        &self,
        config: &str,
        known: Option<i64>,
        mut target: i64,
        server_id: &str,
    ) -> Option<Bytes> {
        for _ in 0..5 {
            let deployment = self.deployments.in_flight(config, target);
            if known == Some(target) {
                if let Some(finished) = self
                    .deployments
                    .ack(config, server_id, target, true, None, 0)
                {
                    self.persist_progress(finished);
                }
                return None;
            }
            if let Some(deployment) = &deployment {
                self.deployments.add_target(deployment, server_id);
            }
            let frame = self
                .frame_towards(config, known, target, deployment.as_deref())
                .await;
            match self.active(config) {
                Some(now) if now.revision != target => target = now.revision,
                _ => return frame,
            }
        }
        None
    }

    fn on_closed(
        &self,
        server_id: &str,
        session_id: &str,
        stale: bool,
        reason: Option<CloseReason>,
    ) {
        if reason
            .as_ref()
            .is_some_and(|r| r.code == close_code::SLOW_CONSUMER)
        {
            self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
        let reason = reason.map(|r| format!("{}: {}", r.code, r.description));
        if self
            .registry
            .disconnect(server_id, session_id, stale, reason, now_ms())
        {
            self.mark_dirty(server_id);
            for finished in self.deployments.server_gone(server_id) {
                self.persist_progress(finished);
            }
        }
    }

    /// Writes changed server records and deployment progress in one transaction.
    pub async fn flush(&self) -> anyhow::Result<usize> {
        let ids: Vec<String> = lock(&self.dirty).drain().collect();
        let deployments: Vec<store_hub::DeploymentRow> = lock(&self.dirty_deployments)
            .drain()
            .map(|(_, row)| row)
            .collect();
        if ids.is_empty() && deployments.is_empty() {
            return Ok(0);
        }
        let rows: Vec<store_hub::GameServerRow> = ids
            .iter()
            .filter_map(|id| self.registry.get(id))
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
        let result = self.write_batch(&rows, &deployments).await;
        if result.is_err() {
            // Keep them for the next flush; a newer state queued meanwhile wins.
            lock(&self.dirty).extend(ids);
            let mut pending = lock(&self.dirty_deployments);
            for row in deployments {
                pending.entry(row.id.clone()).or_insert(row);
            }
        }
        result
    }

    async fn write_batch(
        &self,
        rows: &[store_hub::GameServerRow],
        deployments: &[store_hub::DeploymentRow],
    ) -> anyhow::Result<usize> {
        let mut tx = self.store.begin().await?;
        for row in rows {
            store_hub::upsert_game_server(&mut tx, row).await?;
        }
        for row in deployments {
            let counts = (row.target_count, row.acked_count, row.failed_count);
            store_hub::update_deployment(&mut tx, &row.id, &row.status, counts, row.completed_at)
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len() + deployments.len())
    }

    /// Forgets servers disconnected for longer than `stale_after_secs`.
    pub async fn prune(&self) -> anyhow::Result<usize> {
        let before = now_ms() - (self.settings.stale_after_secs as i64) * 1000;
        let gone = self.registry.prune_disconnected(before);
        if !gone.is_empty() {
            let mut tx = self.store.begin().await?;
            store_hub::delete_game_servers(&mut tx, &gone).await?;
            tx.commit().await?;
            let mut first_seen = lock(&self.first_seen);
            for id in &gone {
                first_seen.remove(id);
            }
        }
        Ok(gone.len())
    }

    /// The flusher and the janitor, until the runtime stops.
    pub fn start_background_tasks(self: &Arc<Self>) {
        let hub = self.clone();
        actix_web::rt::spawn(async move {
            let mut every = actix_web::rt::time::interval(Duration::from_secs(1));
            let mut ticks = 0u64;
            loop {
                every.tick().await;
                if let Err(error) = hub.flush().await {
                    tracing::warn!(error = %error, "could not persist game servers; will retry");
                }
                ticks += 1;
                if !ticks.is_multiple_of(10) {
                    continue;
                }
                if let Err(error) = hub.prune().await {
                    tracing::warn!(error = %error, "could not prune stale game servers");
                }
            }
        });
    }

    /// Graceful shutdown: every server is told to come back at a random
    /// moment within the reconnect window (so they do not all return in the
    /// same second), then its socket is closed; known servers are flushed.
    pub async fn shutdown(&self) {
        let window = self.settings.reconnect_window_ms.max(1);
        let outboxes = self.registry.all_outboxes();
        tracing::info!(
            servers = outboxes.len(),
            window_ms = window,
            "telling game servers to reconnect"
        );
        for outbox in outboxes {
            let jitter: [u8; 8] = crate::auth::keyfile::random_bytes();
            let retry_after_ms = u64::from_le_bytes(jitter) % window;
            let frame = Bytes::from(protocol::encode(&HubMessage::Reconnect { retry_after_ms }));
            let _ = outbox.push(frame);
            outbox.close_after_queued(CloseReason::new(
                close_code::GOING_AWAY,
                "the hub is shutting down",
            ));
        }
        if let Err(error) = self.flush().await {
            tracing::warn!(error = %error, "could not persist game servers at shutdown");
        }
    }

    /// Closes the sessions of a revoked API key.
    pub fn close_sessions_of_key(&self, key_id: &str) -> usize {
        self.registry.close_by_key(
            key_id,
            &CloseReason::new(close_code::KEY_REVOKED, "the API key was revoked"),
        )
    }

    /// Deregisters a server, closing its session.
    pub async fn deregister(&self, server_id: &str) -> anyhow::Result<bool> {
        let removed = self
            .registry
            .remove(
                server_id,
                CloseReason::new(
                    close_code::DEREGISTERED,
                    "an operator deregistered this server",
                ),
            )
            .is_some();
        if removed {
            lock(&self.first_seen).remove(server_id);
            let mut tx = self.store.begin().await?;
            store_hub::delete_game_servers(&mut tx, &[server_id.to_owned()]).await?;
            tx.commit().await?;
        }
        Ok(removed)
    }

    /// Replaces a server's operator tags.
    pub fn set_operator_tags(&self, server_id: &str, tags: Vec<String>) -> bool {
        let done = self.registry.set_operator_tags(server_id, tags);
        if done {
            self.mark_dirty(server_id);
        }
        done
    }
}

/// The hub as sessions see it.
struct HubHost(Arc<Hub>);

impl SessionHost for HubHost {
    fn hello(
        &self,
        hello: Hello,
        outbox: Outbox,
    ) -> BoxFuture<'static, Result<HelloOutcome, Refusal>> {
        let hub = self.0.clone();
        Box::pin(hub.on_hello(hello, outbox))
    }

    fn heartbeat(&self, server_id: &str, players: u32, status: Health, load: Option<f64>) {
        let now = now_ms();
        self.0.registry.update(server_id, |record| {
            record.players = players;
            record.status = status;
            record.load = load.filter(|l| l.is_finite());
            record.last_seen_ms = now;
        });
        self.0.mark_dirty(server_id);
    }

    fn ack(&self, server_id: &str, ack: protocol::Ack) {
        self.0.on_ack(server_id, ack);
    }

    fn resync(&self, server_id: &str, config: &str) -> BoxFuture<'static, Option<Bytes>> {
        Box::pin(
            self.0
                .clone()
                .on_resync(server_id.to_owned(), config.to_owned()),
        )
    }

    fn metrics(&self, server_id: &str, report: MetricsReport) -> Result<(), String> {
        metrics::validate(&report)?;
        self.0.stats.metrics_frames.fetch_add(1, Ordering::Relaxed);
        self.0.registry.update(server_id, |record| {
            record.metrics_frames += 1;
            record.players = report.players;
        });
        Ok(())
    }

    fn closed(&self, server_id: &str, session_id: &str, stale: bool, reason: Option<CloseReason>) {
        self.0.on_closed(server_id, session_id, stale, reason);
    }
}
