//! The hub as game servers' sessions see it: `hello` (parsed, checked
//! against the key, the server id claimed), acks and resyncs (only for the
//! session's own subscriptions), the frame that brings one server to what
//! it should run, closed sessions, and the [`SessionHost`] the session
//! actors call.

use super::{Dirty, Hub, Ingest, engine::Serving, lock, metrics};
use crate::domain::layers::Source;
use crate::store::now_ms;
use crate::{
    domain::server_hello::{self, IdClaim, ServerHello},
    store::server_bindings,
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use hotswap_actors::{
    CloseReason, FrameError, Hello, HelloOutcome, Outbox, Refusal, ServerRecord, SessionHost,
};
use hotswap_client::protocol::{self, Health, HubMessage, MetricsReport, close_code};
use std::sync::{Arc, atomic::Ordering};

pub(super) fn key_revoked() -> CloseReason {
    CloseReason::new(close_code::KEY_REVOKED, "the API key was revoked")
}

fn taken() -> CloseReason {
    CloseReason::new(
        close_code::POLICY_VIOLATION,
        "this serverId is registered to another API key; an admin may release it \
         (DELETE /api/v1/game-servers/{id})",
    )
}

/// An `error` frame for an ack or resync naming a config the session may
/// not speak of (the name is quoted shortened: it came from the client).
fn not_subscribed(config: &str) -> FrameError {
    let shown: String = config
        .chars()
        .take(64)
        .filter(|c| !c.is_control())
        .collect();
    FrameError::new(
        "not_subscribed",
        format!("{shown:?} is not a config this server subscribed to in its environment"),
    )
}

impl Hub {
    async fn on_hello(
        self: Arc<Self>,
        hello: Hello,
        outbox: Outbox,
    ) -> Result<HelloOutcome, Refusal> {
        let Hello {
            session_id,
            key,
            message,
        } = hello;
        let refuse = |why: String| Err(CloseReason::new(close_code::POLICY_VIOLATION, why));
        let hello = match ServerHello::parse(message) {
            Ok(hello) => hello,
            Err(error) => return refuse(error.to_string()),
        };
        // The key was live when the socket upgraded; it may have been
        // revoked since.
        if self.gate.is_revoked(&key.key_id) {
            return Err(key_revoked());
        }
        let environment = hello.environment.as_str();
        if !key.environments.is_empty() && !key.environments.iter().any(|e| e == environment) {
            return refuse(format!(
                "this API key may not serve environment {environment}"
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
        if hello.capacity > self.settings.max_players_per_server {
            return refuse(format!(
                "hello.capacity: at most {} players per server (got {})",
                self.settings.max_players_per_server, hello.capacity
            ));
        }
        if self.stopping.load(Ordering::Acquire) {
            self.send_away(&outbox);
            return Ok(HelloOutcome { frames: Vec::new() });
        }
        self.claim_server_id(&hello.server_id, &key.key_id).await?;
        let operator_tags = self.stored_operator_tags(&hello.server_id).await;
        let now = now_ms();
        let subscriptions = hello.subscription_names();
        let record = ServerRecord {
            server_id: hello.server_id.clone(),
            key_id: key.key_id.clone(),
            region: hello.region.clone(),
            environment: environment.to_owned(),
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
            liveops: hello.liveops,
            subscriptions: subscriptions.clone(),
            applied: hello.known.clone(),
            connected: true,
            session_id: Some(session_id.clone()),
            connected_since_ms: Some(now),
            last_seen_ms: now,
            stale: false,
            disconnect_reason: None,
            metrics_frames: 0,
            last_metrics_ms: None,
        };
        // The welcome goes out before the session is in the registry: a
        // push from a deployment in flight (which may be waiting on the
        // same document read as this hello) can never overtake it.
        let welcome = Bytes::from(protocol::encode(&HubMessage::Welcome {
            session_id: session_id.clone(),
            // The interval its session keeps: a server's own liveness
            // check counts in it.
            heartbeat_ms: self.settings.heartbeat_interval_ms(),
            metrics_ms: self.settings.metrics_ms,
            server_time_ms: now,
            hub_node: self.settings.node_name.clone(),
        }));
        if outbox.push(welcome).is_err() {
            // Closed meanwhile: nothing to register.
            return Ok(HelloOutcome { frames: Vec::new() });
        }
        let replaced = self.registry.connect(record, outbox.clone());
        if let Some(tags) = operator_tags {
            self.registry.set_operator_tags(&hello.server_id, tags);
        }
        if let Some(replaced) = replaced {
            replaced.close(CloseReason::new(
                close_code::REPLACED,
                "another connection with the same serverId replaced this one",
            ));
        }
        if self.stopping.load(Ordering::Acquire) {
            // Shutdown began during this hello and its `reconnect` went to
            // the servers registered before this one: this one goes too.
            self.send_away(&outbox);
            return Ok(HelloOutcome { frames: Vec::new() });
        }
        lock(&self.first_seen)
            .entry(hello.server_id.clone())
            .or_insert(now);
        self.mark_dirty(&hello.server_id, Dirty::Row);

        let mut frames = Vec::new();
        if hello.liveops
            && let Some((_, definitions)) = hotswap_client::sync::read(&self.liveops_frame).clone()
        {
            frames.push(definitions);
        }
        let Some(record) = self.registry.get(&hello.server_id) else {
            return Ok(HelloOutcome { frames });
        };
        for config in &subscriptions {
            let Some((environment, desired)) = self.desired(config, &record) else {
                continue;
            };
            if environment != hello.environment.as_str() {
                frames.push(Bytes::from(protocol::encode(&HubMessage::Error {
                    code: "environment_mismatch".into(),
                    message: format!(
                        "{config} is a {environment} config; this server is {}",
                        hello.environment
                    ),
                })));
                continue;
            }
            if desired.is_none() {
                continue;
            }
            let known = hello.known.get(config).copied();
            if let Some(frame) = self.frame_for_server(config, known, &record).await {
                frames.push(frame);
            }
        }
        Ok(HelloOutcome { frames })
    }

    /// Binds `server_id` to `key_id` or refuses the `hello`: an id belongs
    /// to the API key that first registered it (a restarted server may
    /// replace its own session; another key may not take it over, unless
    /// its holder was revoked). A known server's holder is in the registry;
    /// an unknown id (new, or forgotten as stale) is bound in the store.
    async fn claim_server_id(&self, server_id: &str, key_id: &str) -> Result<(), Refusal> {
        let unavailable = || {
            CloseReason::new(
                close_code::TRY_AGAIN_LATER,
                "the hub cannot check this serverId now; reconnect later",
            )
        };
        let holder = match self.registry.read_then(server_id, |r| r.key_id.clone()) {
            Some(holder) => holder,
            None => self.binder.bind(server_id, key_id).await.map_err(|error| {
                tracing::warn!(%error, "cannot bind a server id");
                unavailable()
            })?,
        };
        match server_hello::claim_server_id(&holder, key_id, self.gate.is_revoked(&holder)) {
            IdClaim::Held => Ok(()),
            IdClaim::TakeOver => {
                let moved = async {
                    let mut tx = self.store.begin().await?;
                    let moved =
                        server_bindings::rebind(&mut tx, server_id, &holder, key_id, now_ms())
                            .await?
                            || server_bindings::bind(&mut tx, server_id, key_id, now_ms()).await?
                                == key_id;
                    tx.commit().await?;
                    anyhow::Ok(moved)
                };
                match moved.await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(taken()),
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot rebind a server id");
                        Err(unavailable())
                    }
                }
            }
            IdClaim::HeldByAnother => Err(taken()),
        }
    }

    /// Records an ack. Only a config the server subscribed to in its
    /// `hello`, served in its own environment, is accepted; and only a
    /// target of the deployment in flight counts for it.
    fn on_ack(&self, server_id: &str, ack: protocol::Ack) -> Result<(), FrameError> {
        let protocol::Ack {
            config,
            revision,
            ok,
            error,
            apply_micros,
        } = ack;
        self.stats.acks.fetch_add(1, Ordering::Relaxed);
        if config == hotswap_client::liveops::LIVEOPS_CONFIG {
            // Definitions acked: nothing to track but that the session asked.
            return match self.registry.read_then(server_id, |r| r.liveops) {
                Some(true) => Ok(()),
                _ => Err(not_subscribed(&config)),
            };
        }
        // One look at the config's serving state, under the registry's
        // lock (the lock order): whether it is served to this server, and
        // its deployment in flight. The server is noted for the flusher
        // under the same lock.
        let accepted = self.registry.progress_then(server_id, |record| {
            let Some(live) =
                self.served_to(record, &config, |s| s.live().map(|l| l.record.clone()))
            else {
                return (None, false);
            };
            if ok {
                // In place when known: no key copy per ack.
                match record.applied.get_mut(&config) {
                    Some(applied) => *applied = revision,
                    None => {
                        record.applied.insert(config.clone(), revision);
                    }
                }
            }
            (Some(live), ok)
        });
        let Some(Some(live)) = accepted else {
            return Err(not_subscribed(&config));
        };
        if ok && apply_micros > 0 {
            self.meters
                .reload_seconds
                .observe(apply_micros as f64 / 1_000_000.0);
        }
        let Some(record) = live else {
            return Ok(());
        };
        let acked = record.ack(server_id, revision, ok, error, apply_micros);
        if acked.last {
            // Nobody left to answer: the run steps now, not at its next
            // tick (it decides whether that moves anything).
            self.step_now(&config, &record);
        }
        if let Some(acked_ms) = acked.delivered_ms {
            // Push to ack, less the server's own apply time: the delivery.
            let apply_ms = i64::try_from(apply_micros / 1000).unwrap_or(i64::MAX);
            let delivered_ms = acked_ms.saturating_sub(apply_ms).max(0);
            self.meters
                .delivery_seconds
                .observe(delivered_ms as f64 / 1000.0);
            if self.tracer.enabled() {
                self.instance_span(&record, server_id, revision, acked_ms, apply_micros);
            }
        }
        Ok(())
    }

    /// Asks the run whose record is `record`, if still the one in flight
    /// for `config`, to step now.
    fn step_now(&self, config: &str, record: &Arc<crate::hub::deployments::RunRecord>) {
        let serving = self.serving_read();
        let handle = serving
            .get(config)
            .and_then(|s| s.live())
            .filter(|l| Arc::ptr_eq(&l.record, record))
            .and_then(|l| l.handle.as_ref());
        if let Some(handle) = handle {
            handle.step_now();
        }
    }

    /// A `config.deploy.instance` span for one server's push and ack (the
    /// first few of each deployment).
    fn instance_span(
        &self,
        record: &crate::hub::deployments::RunRecord,
        server_id: &str,
        revision: i64,
        delivered_ms: i64,
        apply_micros: u64,
    ) {
        use crate::observability::traces::AttrValue;
        let deployment = hotswap_client::sync::lock(&record.row).id.clone();
        let Some(parent) = self.deploy_parent(&deployment) else {
            return;
        };
        if !self.tracer.sample_instance(&deployment) {
            return;
        }
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let started = now_ns.saturating_sub(delivered_ms.max(0) as u64 * 1_000_000);
        let mut span = self
            .tracer
            .start_at("config.deploy.instance", Some(parent), started);
        span.set("server.id", AttrValue::Text(server_id.to_owned()));
        span.set("revision", AttrValue::Int(revision));
        span.set(
            "apply.micros",
            AttrValue::Int(apply_micros.min(i64::MAX as u64) as i64),
        );
        span.end();
    }

    /// Whether `record` subscribed to `config` and the config is served in
    /// the server's environment (what acks and resyncs may name).
    fn serves(&self, record: &ServerRecord, config: &str) -> bool {
        self.served_to(record, config, |_| ()).is_some()
    }

    /// What `read` takes from `config`'s serving state, when `config` is
    /// served to `record`: it subscribed, and the config serves its
    /// environment.
    fn served_to<R>(
        &self,
        record: &ServerRecord,
        config: &str,
        read: impl FnOnce(&Serving) -> R,
    ) -> Option<R> {
        if !record.subscriptions.iter().any(|s| s == config) {
            return None;
        }
        self.serving_read()
            .get(config)
            .filter(|s| s.environment == record.environment)
            .map(read)
    }

    async fn on_resync(
        self: Arc<Self>,
        server_id: String,
        config: String,
    ) -> Result<Option<Bytes>, FrameError> {
        let Some(record) = self.registry.get(&server_id) else {
            return Ok(None);
        };
        if !self.serves(&record, &config) {
            return Err(not_subscribed(&config));
        }
        // `None` as the known revision: a resync always gets a snapshot.
        Ok(self.frame_for_server(&config, None, &record).await)
    }

    /// The frame bringing one server to what it should run, built so that a
    /// deployment moving during the build cannot be overtaken by an older
    /// frame: what the server should run is read again after every await,
    /// and the frame rebuilt if it moved. A server that already holds it
    /// counts as acked for the deployment in flight.
    async fn frame_for_server(
        &self,
        config: &str,
        known: Option<i64>,
        record: &ServerRecord,
    ) -> Option<Bytes> {
        let current = || {
            let serving = self.serving_read();
            let entry = serving.get(config)?;
            let resolved = entry.desired(record)?;
            // The deployment in flight follows the servers it covers, and
            // those it moves back (a rollback after a restart, say).
            let live = entry
                .live()
                .filter(|l| {
                    resolved.source == Source::InFlight || l.record.tracks(&record.server_id)
                })
                .map(|l| (l.record.clone(), l.deployment_id.clone()));
            Some((resolved.revision, live))
        };
        let (mut target, mut live) = current()?;
        for _ in 0..5 {
            if known == Some(target) {
                if let Some((run, _)) = &live {
                    run.already_on(&record.server_id, target);
                }
                return None;
            }
            if let Some((run, _)) = &live {
                run.pushed(&record.server_id, target);
            }
            let frame = self
                .frame_towards(config, known, target, live.as_ref().map(|(_, id)| &**id))
                .await;
            match current() {
                Some((now, now_live)) if now != target => (target, live) = (now, now_live),
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
            self.mark_dirty(server_id, Dirty::Row);
            let runs: Vec<_> = self
                .serving_read()
                .values()
                .filter_map(|s| s.live().map(|l| l.record.clone()))
                .collect();
            for run in runs {
                run.server_gone(server_id);
            }
        }
    }
}

/// The hub as sessions see it.
pub(super) struct HubHost(pub(super) Arc<Hub>);

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
        self.0.registry.progress_then(server_id, |record| {
            record.players = players;
            record.status = status;
            record.load = load.filter(|l| l.is_finite());
            record.last_seen_ms = now;
            ((), true)
        });
    }

    fn ack(&self, server_id: &str, ack: protocol::Ack) -> Result<(), FrameError> {
        self.0.on_ack(server_id, ack)
    }

    fn resync(
        &self,
        server_id: &str,
        config: &str,
    ) -> BoxFuture<'static, Result<Option<Bytes>, FrameError>> {
        Box::pin(
            self.0
                .clone()
                .on_resync(server_id.to_owned(), config.to_owned()),
        )
    }

    fn metrics(&self, server_id: &str, report: MetricsReport) -> Result<(), FrameError> {
        let hub = &self.0;
        let capacity = hub
            .registry
            .read_then(server_id, |record| record.capacity)
            .unwrap_or(0);
        let allowed = metrics::players_allowed(capacity, hub.settings.max_players_per_server);
        let histograms = metrics::validate(&report, allowed)
            .map_err(|why| FrameError::new("invalid_metrics", why))?;
        // A split that does not add up costs the split only: the report
        // still counts (deployments judge on it), and the server is told.
        let (samples, bad_split) = match metrics::validate_variants(&report) {
            Ok(samples) => (samples, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        let split = !samples.is_empty();
        hub.stats.metrics_frames.fetch_add(1, Ordering::Relaxed);
        let at = now_ms();
        let counted = hub.registry.update_then(server_id, |record| {
            record.metrics_frames += 1;
            record.players = report.players;
            let since = record
                .last_metrics_ms
                .or(record.connected_since_ms)
                .unwrap_or(at);
            record.last_metrics_ms = Some(at);
            let elapsed = u64::try_from(at - since).unwrap_or(0);
            let subscriptions = split.then(|| record.subscriptions.clone());
            (hub.destinations(record, true, at), elapsed, subscriptions)
        });
        let counted = counted.map(|(to, elapsed, subscriptions)| {
            if let (Some(subscriptions), Some(sink)) = (subscriptions, hub.variant_sink.get()) {
                sink(&subscriptions, samples);
            }
            (to, elapsed)
        });
        if let Some((to, elapsed)) = counted {
            let decoded = Arc::new(metrics::decode(
                &report,
                histograms,
                to.healthy,
                hub.settings.metrics_ms,
                elapsed,
            ));
            hub.ingest(to, Ingest::Report(decoded));
        }
        match bad_split {
            Some(why) => Err(FrameError::new("invalid_variant_metrics", why)),
            None => Ok(()),
        }
    }

    fn closed(&self, server_id: &str, session_id: &str, stale: bool, reason: Option<CloseReason>) {
        self.0.on_closed(server_id, session_id, stale, reason);
    }
}
