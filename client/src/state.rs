//! What the client and its connection task share: the configs the server
//! runs (wait-free reads), the callbacks, the connection state, counters.

use crate::config::ClientConfig;
use crate::{metrics::MetricsRecorder, persist, protocol::Health};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU32, AtomicU64},
    },
};
use tokio::sync::watch;
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

pub(crate) type Callback = Box<dyn Fn(&ConfigChange) + Send + Sync>;

/// A live event as the hub last announced it to this server.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEventPhase {
    pub name: String,
    /// `preview`, `started`, `endingSoon` or `ended`.
    pub phase: String,
    /// The occurrence's scheduled start (Unix ms).
    pub occurrence: i64,
    pub region: Option<String>,
    pub rules: Value,
    pub ends_at_ms: i64,
}

pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    /// Live events by name, as last announced.
    pub(crate) events: ArcSwap<HashMap<String, Arc<LiveEventPhase>>>,
    /// The live-ops definitions, when the server asked for them.
    pub(crate) liveops: arc_swap::ArcSwapOption<crate::liveops::Definitions>,
    // Updated with `send_replace`: `send` drops the value when nobody is
    // subscribed, which would leave `Client::state` stale.
    pub(crate) configs: ArcSwap<HashMap<String, Arc<AppliedConfig>>>,
    pub(crate) callbacks: Mutex<Vec<Callback>>,
    pub(crate) metrics: MetricsRecorder,
    pub(crate) players: AtomicU32,
    pub(crate) health: AtomicU8,
    pub(crate) state: watch::Sender<ConnectionState>,
    pub(crate) stats: ClientStats,
    pub(crate) persist: persist::Writer,
}
pub(crate) fn health_of(value: u8) -> Health {
    match value {
        1 => Health::Degraded,
        2 => Health::Unhealthy,
        _ => Health::Healthy,
    }
}
