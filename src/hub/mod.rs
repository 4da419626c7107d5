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
//!   sessions, and the `SessionHost` the sessions call.

mod aggregates;
mod bindings;
mod cluster;
pub mod deployments;
mod documents;
pub mod engine;
pub mod feedback;
mod frames;
mod hdr;
mod ingest;
mod load;
pub mod metrics;
mod regions;
mod servers;
mod sessions;
mod upkeep;

pub use deployments::{DeploymentView, NewDeploymentRequest, ServerProgressView};
pub use engine::Action;
pub(crate) use ingest::Ingest;
pub use servers::{KnownServer, ServerList};

use crate::domain::policy::{EnvironmentPolicy, policy, stored_environment};
use crate::{
    catalog::Catalog,
    settings::{DeploymentSettings, HubSettings},
    store::Store,
};
use deployments::Runs;
use documents::DocumentCache;
use engine::Serving;

/// Configs being served, by name; read on every metrics frame and ack, so
/// keyed with aHash (random keys per process, resistant to HashDoS) rather
/// than the slower SipHash.
type ServingMap = HashMap<String, Serving, ahash::RandomState>;
use hotswap_actors::{Registry, SessionGate, SessionHost};
use hotswap_client::sync::lock;
use sessions::HubHost;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64},
    },
};

/// A consumer of every metrics report (its server's region, the report,
/// when): cheap, synchronous, called on the metric path.
pub type ReportSink = Box<dyn Fn(&str, &crate::domain::window::Report, i64) + Send + Sync>;
/// Where each report's split by experiment variant goes (checked), with
/// the sending server's subscriptions.
pub type VariantSink =
    Box<dyn Fn(&[String], Vec<crate::domain::experiments::metrics::VariantSample>) + Send + Sync>;

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
    serving: RwLock<ServingMap>,
    documents: DocumentCache,
    runs: Runs,
    aggregates: aggregates::Aggregates,
    /// Region names metrics fold under (bounded; the rest is `(other)`).
    regions: regions::RegionNames,
    /// Complaints over REST that may count in cohorts, per server.
    feedback_rate: feedback::FeedbackRate,
    /// Servers whose row changed since the last flush (a hello, a
    /// goodbye), and those a failed flush kept; acks and heartbeats note
    /// theirs in the registry (`Registry::progress_then`).
    dirty: Mutex<HashMap<String, Dirty, ahash::RandomState>>,
    /// Held by a flush while it runs (`Hub::flush`).
    flushing: tokio::sync::Mutex<()>,
    first_seen: Mutex<HashMap<String, i64>>,
    /// Set when shutdown begins: a server saying hello from then on is told
    /// to reconnect, not welcomed (it would hold the stopping hub open).
    stopping: AtomicBool,
    /// Where metric reports also go (live events' engagement), set once.
    report_sink: std::sync::OnceLock<ReportSink>,
    variant_sink: std::sync::OnceLock<VariantSink>,
    /// The hub's Prometheus metrics (the catalog's).
    pub(crate) meters: Arc<crate::observability::meters::Meters>,
    /// The hub's traces (the catalog's), and each running deployment's
    /// `config.deploy` span, ended when the deployment ends.
    pub(crate) tracer: Arc<crate::observability::traces::Tracer>,
    pub(crate) deploy_spans: std::sync::Mutex<HashMap<String, crate::observability::traces::Span>>,
    /// The dashboards' feed, told when a deployment moves.
    pub(crate) feed: Arc<crate::feed::Feed>,
    /// Game servers' sockets taken off the HTTP server and still open.
    pub(crate) sockets: Arc<hotswap_actors::socket::OpenSockets>,
    /// The latest `liveops` frame (live-ops definitions), for servers that
    /// ask in their `hello`.
    liveops_frame: RwLock<Option<(i64, bytes::Bytes)>>,
    /// When the servers were told to reconnect: their window's start.
    sent_away_from: std::sync::OnceLock<std::time::Instant>,
    /// The other nodes (with `redis.url`): leases held, metric slices
    /// gathered for deployments other nodes drive.
    cluster: Option<cluster::Node>,
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

    fn mark_dirty(&self, server_id: &str, what: Dirty) {
        let mut dirty = lock(&self.dirty);
        match dirty.get_mut(server_id) {
            Some(was) => *was = (*was).max(what),
            None => {
                dirty.insert(server_id.to_owned(), what);
            }
        }
    }
}
