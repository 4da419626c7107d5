//! The connection task: one socket to the hub at a time, snapshots and
//! deltas verified before the swap, acks, heartbeats, metrics, and
//! reconnecting with full-jitter backoff.

use crate::state::{AppliedConfig, ConfigChange, ConnectionState, Shared, health_of};
use crate::sync::lock;
use crate::{
    checksum::document_checksum,
    protocol::{self, HubMessage, ServerMessage, close_code},
    signature,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
/// A random duration in `[0, bound)` (full jitter).
fn jitter(bound: Duration) -> Duration {
    let nanos = bound.as_nanos().max(1) as u64;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos() as u64;
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15 ^ (std::process::id() as u64) << 32;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    Duration::from_nanos(x % nanos)
}

/// Resolves when a stop is requested (the guard `wait_for` returns is
/// dropped here, so no lock is held across an await).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await.map(|_| ());
}

/// How one session ended.
enum Ended {
    /// The hub asked to come back after this long.
    Reconnect(Duration),
    /// Closed or failed: back off.
    Lost,
    Stopped,
}

pub(crate) async fn run(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    loop {
        let welcomes = shared.stats.welcomes.load(Ordering::Relaxed);
        // The session watches `stopped` itself, so it can say goodbye.
        let ended = session(&shared, &mut stopped).await;
        if shared.stats.welcomes.load(Ordering::Relaxed) != welcomes {
            // It was a good session: back off from the start again.
            failures = 0;
        }
        let delay = match ended {
            Ended::Stopped => {
                let _ = shared.state.send_replace(ConnectionState::Stopped);
                return;
            }
            Ended::Reconnect(after) => {
                failures = 0;
                after
            }
            Ended::Lost => {
                failures = failures.saturating_add(1);
                let cap = shared
                    .config
                    .initial_backoff
                    .saturating_mul(1 << failures.min(16))
                    .min(shared.config.max_backoff);
                jitter(cap)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop_requested(&mut stopped) => {
                let _ = shared.state.send_replace(ConnectionState::Stopped);
                return;
            }
        }
    }
}

async fn session(shared: &Arc<Shared>, stopped: &mut watch::Receiver<bool>) -> Ended {
    let config = &shared.config;
    let _ = shared.state.send_replace(ConnectionState::Connecting);
    let mut request = match config.endpoint().into_client_request() {
        Ok(request) => request,
        Err(error) => {
            let _ = shared.state.send_replace(ConnectionState::Disconnected {
                code: None,
                reason: error.to_string(),
            });
            return Ended::Lost;
        }
    };
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", config.api_key)) {
        request.headers_mut().insert("authorization", value);
    }
    let socket = match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => socket,
        Err(error) => {
            let _ = shared.state.send_replace(ConnectionState::Disconnected {
                code: None,
                reason: error.to_string(),
            });
            return Ended::Lost;
        }
    };
    shared.stats.connects.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    let hello = ServerMessage::Hello(protocol::Hello {
        server_id: config.server_id.clone(),
        region: config.region.clone(),
        environment: config.environment.clone(),
        tags: config.tags.clone(),
        capacity: config.capacity,
        players: shared.players.load(Ordering::Relaxed),
        subscriptions: config.subscriptions.clone(),
        known: shared
            .configs
            .load()
            .iter()
            .map(|(k, v)| (k.clone(), v.revision))
            .collect(),
        hostname: config.hostname.clone(),
        address: None,
        build: config.build.clone(),
        sdk: Some(concat!("hotswap-client-rust/", env!("CARGO_PKG_VERSION")).into()),
        liveops: config.liveops,
    });
    if sink
        .send(Message::Binary(protocol::encode(&hello).into()))
        .await
        .is_err()
    {
        return Ended::Lost;
    }
    let mut heartbeat = tokio::time::interval(Duration::from_secs(10));
    let mut metrics = tokio::time::interval(Duration::from_secs(10));
    heartbeat.reset();
    metrics.reset();
    // What players did while no hub listened cannot be placed in a cohort
    // reliably (the revision may have changed meanwhile): start afresh.
    let _ = shared.metrics.take(0, 0);
    let mut last_metrics = Instant::now();
    let mut last_heard = Instant::now();
    let mut heartbeat_every = Duration::from_secs(10);
    let mut reconnect_after: Option<Duration> = None;
    loop {
        let outgoing: Option<ServerMessage> = tokio::select! {
            _ = stop_requested(stopped) => {
                let _ = sink.send(Message::Close(None)).await;
                return Ended::Stopped;
            }
            _ = heartbeat.tick() => {
                // The hub pings every interval: silence this long is a dead connection.
                if last_heard.elapsed() > heartbeat_every * 3 {
                    let reason = "nothing heard from the hub for 3 heartbeat intervals".to_owned();
                    let _ = shared.state.send_replace(ConnectionState::Disconnected { code: None, reason });
                    return Ended::Lost;
                }
                Some(ServerMessage::Heartbeat {
                    players: shared.players.load(Ordering::Relaxed),
                    status: health_of(shared.health.load(Ordering::Relaxed)),
                    load: None,
                })
            }
            _ = metrics.tick() => {
                let window = last_metrics.elapsed().as_millis() as u64;
                last_metrics = Instant::now();
                Some(ServerMessage::Metrics(Box::new(shared.metrics.take(window, shared.players.load(Ordering::Relaxed)))))
            }
            incoming = stream.next() => { last_heard = Instant::now(); match incoming {
                Some(Ok(Message::Binary(frame))) => {
                    match protocol::decode::<HubMessage>(&frame, protocol::HUB_MESSAGE_TYPES) {
                        Ok(HubMessage::Welcome { session_id, heartbeat_ms, metrics_ms, .. }) => {
                            heartbeat_every = Duration::from_millis(heartbeat_ms.max(10));
                    heartbeat = tokio::time::interval(heartbeat_every);
                            metrics = tokio::time::interval(Duration::from_millis(metrics_ms.max(10)));
                            heartbeat.reset();
                            metrics.reset();
                            shared.stats.welcomes.fetch_add(1, Ordering::Relaxed);
                    let _ = shared.state.send_replace(ConnectionState::Connected { session_id });
                            None
                        }
                        Ok(HubMessage::Snapshot { config, revision, version, content, checksum, signature, sent_at_ms, .. }) => {
                            shared.stats.snapshots.fetch_add(1, Ordering::Relaxed);
                            Some(apply(shared, config, None, revision, version, Update::Whole(content), checksum, signature, sent_at_ms))
                        }
                        Ok(HubMessage::Delta { config, base_revision, revision, version, patch, checksum, signature, sent_at_ms, .. }) => {
                            shared.stats.deltas.fetch_add(1, Ordering::Relaxed);
                            Some(apply(shared, config, Some(base_revision), revision, version, Update::Patch(patch), checksum, signature, sent_at_ms))
                        }
                        Ok(HubMessage::Reconnect { retry_after_ms }) => {
                            shared.stats.reconnect_requests.fetch_add(1, Ordering::Relaxed);
                            reconnect_after = Some(Duration::from_millis(retry_after_ms));
                            None
                        }
                        Ok(HubMessage::LiveOps { revision, segments, events, experiments }) => {
                            let definitions = crate::liveops::Definitions::from_frame(revision, segments, events, experiments);
                            shared.liveops.store(Some(Arc::new(definitions)));
                            Some(ServerMessage::Ack(protocol::Ack {
                                config: crate::liveops::LIVEOPS_CONFIG.into(),
                                revision,
                                ok: true,
                                error: None,
                                apply_micros: 0,
                            }))
                        }
                        Ok(HubMessage::Event { name, phase, occurrence, region, rules, ends_at_ms, .. }) => {
                            shared.events.rcu(|events| {
                                let mut events = HashMap::clone(events);
                                events.insert(name.clone(), Arc::new(crate::state::LiveEventPhase {
                                    name: name.clone(), phase: phase.clone(), occurrence,
                                    region: region.clone(), rules: rules.clone(), ends_at_ms,
                                }));
                                events
                            });
                            None
                        }
                        Ok(HubMessage::Error { code, message }) => {
                            tracing::warn!(%code, %message, "the hub reported a problem");
                            None
                        }
                        // A newer hub's message types are ignored, as the protocol says.
                        Err(protocol::DecodeError::UnknownType(_)) => None,
                        Err(error) => {
                            tracing::warn!(%error, "undecodable frame from the hub");
                            None
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map(|f| (Some(u16::from(f.code)), f.reason.to_string())).unwrap_or((None, String::new()));
                    let _ = shared.state.send_replace(ConnectionState::Disconnected { code, reason });
                    return match (reconnect_after, code) {
                        (Some(after), _) => Ended::Reconnect(after),
                        (None, Some(close_code::GOING_AWAY)) => Ended::Lost,
                        _ => Ended::Lost,
                    };
                }
                Some(Ok(_)) => None,
                Some(Err(error)) => {
                    let _ = shared.state.send_replace(ConnectionState::Disconnected { code: None, reason: error.to_string() });
                    return reconnect_after.map_or(Ended::Lost, Ended::Reconnect);
                }
                None => {
                    let _ = shared.state.send_replace(ConnectionState::Disconnected { code: None, reason: "connection closed".into() });
                    return reconnect_after.map_or(Ended::Lost, Ended::Reconnect);
                }
            }},
        };
        let Some(message) = outgoing else { continue };
        if sink
            .send(Message::Binary(protocol::encode(&message).into()))
            .await
            .is_err()
        {
            return reconnect_after.map_or(Ended::Lost, Ended::Reconnect);
        }
    }
}

enum Update {
    Whole(Value),
    Patch(Value),
}

/// Verifies and applies one snapshot or delta; answers the `ack` (or the
/// `resync` a delta that cannot be applied calls for).
#[allow(clippy::too_many_arguments)]
fn apply(
    shared: &Arc<Shared>,
    config: String,
    base_revision: Option<i64>,
    revision: i64,
    version: String,
    update: Update,
    checksum: String,
    signature: Option<String>,
    sent_at_ms: i64,
) -> ServerMessage {
    let started = Instant::now();
    let current = shared.configs.load().get(&config).cloned();
    let resync = |why: &str| {
        tracing::debug!(%config, revision, why, "asking for a snapshot");
        shared.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        ServerMessage::Resync {
            config: config.clone(),
        }
    };
    let document = match update {
        Update::Whole(document) => document,
        Update::Patch(patch) => {
            let Some(current) = current
                .as_ref()
                .filter(|c| Some(c.revision) == base_revision)
            else {
                return resync("the delta's base is not the revision held");
            };
            let Ok(patch) = serde_json::from_value::<json_patch::Patch>(patch) else {
                return resync("the patch is malformed");
            };
            let mut document = current.document.clone();
            if json_patch::patch(&mut document, &patch).is_err() {
                return resync("the patch does not apply");
            }
            document
        }
    };
    let reject = |error: String| {
        shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
        ServerMessage::Ack(protocol::Ack {
            config: config.clone(),
            revision,
            ok: false,
            error: Some(error),
            apply_micros: started.elapsed().as_micros() as u64,
        })
    };
    if document_checksum(&document) != checksum {
        return if base_revision.is_some() {
            resync("checksum mismatch after the patch")
        } else {
            reject("checksum mismatch".into())
        };
    }
    if let Some(key) = &shared.config.signing_key {
        let verified = signature
            .as_deref()
            .map(|sig| signature::verify(key, &config, revision, &checksum, sig));
        match verified {
            Some(Ok(())) => {}
            Some(Err(error)) => return reject(format!("signature refused: {error}")),
            None => return reject("the document is not signed".into()),
        }
    }
    let applied = Arc::new(AppliedConfig {
        config: config.clone(),
        revision,
        version,
        document,
        checksum,
        signature,
    });
    let previous_revision = current.map(|c| c.revision);
    shared.configs.rcu(|configs| {
        let mut next = HashMap::clone(configs);
        next.insert(config.clone(), applied.clone());
        next
    });
    let apply_micros = started.elapsed().as_micros() as u64;
    let change = ConfigChange {
        config: config.clone(),
        previous_revision,
        current: applied,
        sent_at_ms,
    };
    for callback in lock(&shared.callbacks).iter() {
        callback(&change);
    }
    // The write goes on in the background (`stop` waits for the last one).
    let _ = shared.persist.write(&shared.configs.load());
    ServerMessage::Ack(protocol::Ack {
        config,
        revision,
        ok: true,
        error: None,
        apply_micros,
    })
}
