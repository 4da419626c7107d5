//! The game-server client: keeps one socket to the hub, applies snapshots
//! and deltas (checksum and signature verified before the swap), acks what
//! it applied, heartbeats, reports metrics, and reconnects by itself.
//!
//! Reads are wait-free: the configs live in an `ArcSwap`, so a game thread
//! calling [`Client::get`] never blocks on the network side.

pub use crate::config::ClientConfig;
pub use crate::state::{AppliedConfig, ClientStats, ConfigChange, ConnectionState, LiveEventPhase};
use crate::sync::lock;
use crate::{connection::run, state::Shared};
use crate::{metrics::MetricsRecorder, persist, protocol::Health};
use arc_swap::ArcSwap;
use serde::de::DeserializeOwned;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{sync::watch, task::JoinHandle};

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
            events: ArcSwap::from_pointee(HashMap::new()),
            liveops: arc_swap::ArcSwapOption::empty(),
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

    /// What `player` sees of this server's configs: its base is the
    /// config as this server runs it, then the live events in force for
    /// the player (from the hub's `liveops` definitions: ask for them with
    /// [`ClientConfig::liveops`]). Wait-free; the same function as the
    /// hub's `GET /api/v1/players/{id}/config`.
    pub fn for_player<'a>(&'a self, player: &'a crate::liveops::Player) -> PlayerView<'a> {
        PlayerView {
            client: self,
            player,
        }
    }

    /// The revision of the live-ops definitions held, if any.
    pub fn liveops_revision(&self) -> Option<i64> {
        self.shared.liveops.load().as_ref().map(|d| d.revision)
    }

    /// The live events covering this server, as the hub last announced
    /// each (an ended one stays, with phase `ended`), wait-free.
    pub fn live_events(&self) -> Vec<Arc<crate::state::LiveEventPhase>> {
        let mut events: Vec<_> = self.shared.events.load().values().cloned().collect();
        events.sort_by(|a, b| a.name.cmp(&b.name));
        events
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

/// One player's view of a client's configs ([`Client::for_player`]).
#[derive(Debug)]
pub struct PlayerView<'a> {
    client: &'a Client,
    player: &'a crate::liveops::Player,
}

impl PlayerView<'_> {
    /// The config resolved for the player now, with its checksum and the
    /// layers applied; `None` when the server does not hold the config.
    pub fn resolve(&self, config: &str) -> Option<crate::liveops::resolution::Resolution> {
        self.resolve_at(config, now_ms(), false)
    }

    /// As [`PlayerView::resolve`], at `now_ms`, saying which layer set
    /// each path when `explain`.
    pub fn resolve_at(
        &self,
        config: &str,
        now_ms: i64,
        explain: bool,
    ) -> Option<crate::liveops::resolution::Resolution> {
        let applied = self.client.config(config)?;
        let definitions = self.client.shared.liveops.load_full().unwrap_or_default();
        Some(definitions.resolve(self.player, config, &applied.document, now_ms, explain))
    }

    /// The config resolved for the player, deserialized.
    pub fn get<T: DeserializeOwned>(&self, config: &str) -> Option<T> {
        serde_json::from_value(self.resolve(config)?.document).ok()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
