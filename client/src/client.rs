//! The game-server client: keeps one socket to the hub, applies snapshots
//! and deltas (checksum and signature verified before the swap), acks what
//! it applied, heartbeats, reports metrics, and reconnects by itself.
//!
//! Reads are wait-free: the configs live in an `ArcSwap`, so a game thread
//! calling [`Client::get`] never blocks on the network side.

use crate::sync::lock;
use crate::{
    checksum::document_checksum,
    metrics::MetricsRecorder,
    persist,
    protocol::{self, Health, HubMessage, ServerMessage, close_code},
    signature,
};
use arc_swap::ArcSwap;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{sync::watch, task::JoinHandle};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

/// How a server connects and who it is.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port` (the endpoint path is added when missing) or a full URL.
    pub url: String,
    pub api_key: String,
    pub server_id: String,
    pub region: String,
    pub environment: String,
    pub tags: Vec<String>,
    pub capacity: u32,
    pub subscriptions: Vec<String>,
    pub hostname: Option<String>,
    pub build: Option<String>,
    /// The hub's signing key (`GET /api/v1/signing-key`, base64). When set,
    /// a document whose signature does not verify is refused.
    pub signing_key: Option<String>,
    /// Keep the last good configs here, so a server restarted while the hub
    /// is down starts with them.
    pub persist_path: Option<PathBuf>,
    /// First reconnect delay; doubles per failure up to `max_backoff`, with full jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl ClientConfig {
    pub fn new(
        url: impl Into<String>,
        api_key: impl Into<String>,
        server_id: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            api_key: api_key.into(),
            server_id: server_id.into(),
            region: "default".into(),
            environment: "development".into(),
            tags: Vec::new(),
            capacity: 0,
            subscriptions: Vec::new(),
            hostname: None,
            build: None,
            signing_key: None,
            persist_path: None,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }

    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = environment.into();
        self
    }

    pub fn subscribe(mut self, config: impl Into<String>) -> Self {
        self.subscriptions.push(config.into());
        self
    }

    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    pub fn verify_with(mut self, signing_key: impl Into<String>) -> Self {
        self.signing_key = Some(signing_key.into());
        self
    }

    pub fn persist_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.persist_path = Some(path.into());
        self
    }

    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    fn endpoint(&self) -> String {
        let base = self.url.trim_end_matches('/');
        if base.ends_with(protocol::ENDPOINT_PATH) {
            base.to_owned()
        } else {
            format!("{base}{}", protocol::ENDPOINT_PATH)
        }
    }
}

/// One config as the server runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedConfig {
    pub config: String,
    pub revision: i64,
    pub version: String,
    pub document: Value,
    pub checksum: String,
    /// The hub's signature, kept so a persisted copy is verified again
    /// when it is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// What a change callback is told.
#[derive(Debug, Clone)]
pub struct ConfigChange {
    pub config: String,
    pub previous_revision: Option<i64>,
    pub current: Arc<AppliedConfig>,
    /// Hub clock when the frame was sent (same-host latency measurements).
    pub sent_at_ms: i64,
}

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    Connected {
        session_id: String,
    },
    /// The hub refused or closed the session (code and reason); the client retries.
    Disconnected {
        code: Option<u16>,
        reason: String,
    },
    Stopped,
}

/// Counters the client keeps about itself.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub snapshots: AtomicU64,
    pub deltas: AtomicU64,
    pub resyncs: AtomicU64,
    pub rejected: AtomicU64,
    pub connects: AtomicU64,
    /// Sessions that reached `welcome`.
    pub welcomes: AtomicU64,
    pub reconnect_requests: AtomicU64,
}

type Callback = Box<dyn Fn(&ConfigChange) + Send + Sync>;

struct Shared {
    config: ClientConfig,
    // Updated with `send_replace`: `send` drops the value when nobody is
    // subscribed, which would leave `Client::state` stale.
    configs: ArcSwap<HashMap<String, Arc<AppliedConfig>>>,
    callbacks: Mutex<Vec<Callback>>,
    metrics: MetricsRecorder,
    players: AtomicU32,
    health: AtomicU8,
    state: watch::Sender<ConnectionState>,
    stats: ClientStats,
    persist: persist::Writer,
}

/// A game server's handle on the hub. Dropping it stops the connection.
pub struct Client {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server_id", &self.shared.config.server_id)
            .finish_non_exhaustive()
    }
}

/// Why the client could not start.
#[derive(Debug)]
pub enum ClientError {
    Persisted(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Persisted(why) => write!(f, "the persisted configs cannot be read: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl Client {
    /// Starts the client on the current tokio runtime. It loads persisted
    /// configs (if any), then connects in the background and keeps
    /// reconnecting; it returns at once.
    pub fn start(config: ClientConfig) -> Result<Client, ClientError> {
        let persisted = persist::load(&config)?;
        let persist = persist::Writer::new(config.persist_path.clone());
        let (state, _) = watch::channel(ConnectionState::Connecting);
        let shared = Arc::new(Shared {
            config,
            configs: ArcSwap::from_pointee(persisted),
            callbacks: Mutex::new(Vec::new()),
            metrics: MetricsRecorder::new(),
            players: AtomicU32::new(0),
            health: AtomicU8::new(0),
            state,
            stats: ClientStats::default(),
            persist,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(shared.clone(), stopped));
        Ok(Client {
            shared,
            task: Some(task),
            stop,
        })
    }

    /// A config's document, deserialized (`None` until it arrives).
    pub fn get<T: DeserializeOwned>(&self, config: &str) -> Option<T> {
        let applied = self.shared.configs.load().get(config).cloned()?;
        serde_json::from_value(applied.document.clone()).ok()
    }

    /// A config as applied: revision, version, document (wait-free).
    pub fn config(&self, config: &str) -> Option<Arc<AppliedConfig>> {
        self.shared.configs.load().get(config).cloned()
    }

    /// Config name → revision currently applied.
    pub fn revisions(&self) -> BTreeMap<String, i64> {
        self.shared
            .configs
            .load()
            .iter()
            .map(|(k, v)| (k.clone(), v.revision))
            .collect()
    }

    /// Calls `callback` after every change is applied (on the client's task; keep it short).
    pub fn on_change(&self, callback: impl Fn(&ConfigChange) + Send + Sync + 'static) {
        lock(&self.shared.callbacks).push(Box::new(callback));
    }

    pub fn metrics(&self) -> &MetricsRecorder {
        &self.shared.metrics
    }

    pub fn stats(&self) -> &ClientStats {
        &self.shared.stats
    }

    pub fn set_players(&self, players: u32) {
        self.shared.players.store(players, Ordering::Relaxed);
    }

    pub fn set_health(&self, health: Health) {
        self.shared.health.store(health as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> ConnectionState {
        self.shared.state.borrow().clone()
    }

    /// Waits until `config` runs `revision` (or later), up to `timeout`.
    pub async fn wait_for_revision(&self, config: &str, revision: i64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.config(config).is_some_and(|c| c.revision >= revision) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// Waits for the connection state to satisfy `predicate`, up to `timeout`.
    pub async fn wait_for_state(
        &self,
        timeout: Duration,
        predicate: impl Fn(&ConnectionState) -> bool,
    ) -> bool {
        let mut states = self.shared.state.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                if predicate(&states.borrow_and_update()) {
                    return;
                }
                if states.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }

    /// Closes the connection and stops reconnecting.
    /// Stops the client; when it persists configs, it returns once the
    /// last one it applied is on disk.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(write) = self.shared.persist.write(&self.shared.configs.load()) {
            let _ = write.await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn health_of(value: u8) -> Health {
    match value {
        1 => Health::Degraded,
        2 => Health::Unhealthy,
        _ => Health::Healthy,
    }
}

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

async fn run(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
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
