//! The hub as one node of several (with `redis.url`, on PostgreSQL).
//!
//! - **Leases.** A deployment is driven by the node holding its lease
//!   (`store/cluster.rs`): taken with the deployment's row, renewed every
//!   third of `cluster.lease_ms`, checked in the transaction of every
//!   write the deployment makes (`Hub::fence`: a node paused past its lease
//!   writes nothing once another took it), given up when it finishes. A
//!   lease that lapsed (its node died) is taken by the first node to look
//!   (every `reconcile_ms`), which resumes the deployment from the store.
//! - **Mirrors.** Every other node serves that deployment as stored: its
//!   layers are read back from the store (`refresh_from_store`) when an
//!   announcement arrives, every `reconcile_ms`, and after its Redis
//!   subscription comes back; its own servers are reconciled against it,
//!   their part tracked in a mirror `RunRecord` and sent to the owner
//!   (`Message::Progress`), their metrics gathered into per-slot slices
//!   and sent too (`Message::Slices`).
//! - **Announcements.** After each stored move (`DeploymentRun::serve`)
//!   the owner announces the config; a node that missed it catches up at
//!   its next periodic read.

//!
//! # Layout
//! - `mod.rs`: this node's cluster state, its tasks, what other nodes say.
//! - `leases.rs`: taking, renewing, fencing and giving up leases; taking
//!   over lapsed ones.
//! - `mirror.rs`: the desired state read back from the store and served.
//! - `share.rs`: acks and metric slices sent to owners, and taken in.
//! - `servers.rs`: the cluster's game servers and fleet from any node.
//! - `views.rs`: deployments as their owners show them, on every node.

mod commands;
mod leases;
mod mirror;
mod servers;
mod share;
mod views;

use super::{Hub, deployments::RunRecord};
use crate::{
    cluster::{Cluster, Inbound, Message},
    domain::window::Tally,
};
use hotswap_client::sync::lock;
use share::SliceKey;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// A lease this node holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: i64,
    /// Until when this node may act on it without renewing (its own
    /// monotonic clock, with a margin: a node paused past it re-checks).
    valid_until: Instant,
}

/// A node not heard from for this long is taken for gone: owners stop
/// waiting for it to serve their moves.
const PEER_SILENCE: Duration = Duration::from_secs(3);
/// How often a node writes what changed of its servers to its roster.
const ROSTER_EVERY: Duration = Duration::from_secs(1);

/// This node's cluster state.
pub(super) struct Node {
    cluster: Arc<Cluster>,
    held: Mutex<HashMap<String, Held>>,
    slices: Mutex<HashMap<SliceKey, Tally>>,
    /// Per config, moved by each of this node's own changes: a read from
    /// the store begun before one is not applied over it.
    generations: Mutex<HashMap<String, u64>>,
    /// Wakes the refresher (an announcement, a new subscription, a lease
    /// given up).
    refresh: tokio::sync::Notify,
    /// Per mirrored deployment: what was last sent of it.
    sent: Mutex<HashMap<Arc<str>, share::Sent>>,
    /// The other nodes, when each was last heard from.
    peers: Mutex<HashMap<String, Instant>>,
    /// When this node last said it is alive.
    said_alive: Mutex<Option<Instant>>,
    /// Set when the node stops its deployments: its cluster tasks end.
    stopped: std::sync::atomic::AtomicBool,
    /// Held for a whole read-back of the store and what it serves.
    refreshing: tokio::sync::Mutex<()>,
    /// Actions forwarded to other nodes, waiting for their answer.
    pending: Mutex<HashMap<String, tokio::sync::oneshot::Sender<(String, String)>>>,
    /// What live ops does each time the cluster's state may have moved.
    tick: std::sync::OnceLock<ClusterTick>,
    /// Live ops' side of another node's control of a live event.
    event_commands: std::sync::OnceLock<EventCommands>,
    /// The other nodes' fleets, as each last said it.
    fleets: Mutex<HashMap<String, crate::cluster::FleetShare>>,
    /// This node's roster as last written: server id → fingerprint.
    roster: tokio::sync::Mutex<HashMap<String, u64>>,
    /// Deployments other nodes drive, as their owners last showed them.
    views: Mutex<HashMap<String, (Arc<super::deployments::DeploymentView>, Instant)>>,
    /// When this node last said each of its deployments' views.
    views_sent: Mutex<HashMap<String, Instant>>,
    /// The cluster's servers as last worked out, and when.
    server_list: tokio::sync::Mutex<Option<(Instant, Arc<super::ServerList>)>>,
}

/// Live ops' part of each refresh (set once).
pub type ClusterTick =
    Box<dyn Fn() -> futures_util::future::LocalBoxFuture<'static, ()> + Send + Sync>;
/// Another node's control of a live event (name, control, who): `None`
/// when this node does not drive it, else the outcome (kind, message).
pub type EventCommands = Box<
    dyn Fn(
            String,
            String,
            crate::catalog::Actor,
        )
            -> futures_util::future::LocalBoxFuture<'static, Option<Result<(), (String, String)>>>
        + Send
        + Sync,
>;

impl Node {
    pub(in crate::hub) fn new(cluster: Arc<Cluster>) -> Node {
        Node {
            cluster,
            held: Mutex::new(HashMap::new()),
            slices: Mutex::new(HashMap::new()),
            generations: Mutex::new(HashMap::new()),
            refresh: tokio::sync::Notify::new(),
            sent: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            said_alive: Mutex::new(None),
            stopped: Default::default(),
            refreshing: tokio::sync::Mutex::new(()),
            pending: Mutex::new(HashMap::new()),
            tick: std::sync::OnceLock::new(),
            event_commands: std::sync::OnceLock::new(),
            fleets: Mutex::new(HashMap::new()),
            roster: tokio::sync::Mutex::new(HashMap::new()),
            views: Mutex::new(HashMap::new()),
            views_sent: Mutex::new(HashMap::new()),
            server_list: tokio::sync::Mutex::new(None),
        }
    }

    /// The other nodes heard from lately (each says it is alive every second).
    fn alive(&self) -> Vec<String> {
        let now = Instant::now();
        let mut peers = lock(&self.peers);
        peers.retain(|_, seen| now.duration_since(*seen) < PEER_SILENCE);
        peers.keys().cloned().collect()
    }

    fn ttl_ms(&self) -> i64 {
        self.cluster.settings.lease_ms.max(300) as i64
    }

    /// How long after a renewal began this node trusts its lease.
    fn trusted_for(&self) -> Duration {
        let ttl = self.ttl_ms() as u64;
        Duration::from_millis(ttl - ttl / 6)
    }

    fn hold(&self, id: &str, epoch: i64, since: Instant) {
        lock(&self.held).insert(
            id.to_owned(),
            Held {
                epoch,
                valid_until: since + self.trusted_for(),
            },
        );
    }

    fn bump(&self, config: &str) {
        *lock(&self.generations)
            .entry(config.to_owned())
            .or_default() += 1;
    }

    fn generations(&self) -> HashMap<String, u64> {
        lock(&self.generations).clone()
    }
}

impl Hub {
    /// Starts the node's cluster tasks: what other nodes say, the periodic
    /// read back from the store and the look for lapsed leases, the lease
    /// keeper, and what this node sends owners. Nothing without a cluster.
    pub fn start_cluster(self: &Arc<Self>, inbound: tokio::sync::mpsc::Receiver<Inbound>) {
        let Some(node) = &self.cluster else {
            return;
        };
        let settings = node.cluster.settings.clone();
        let hub = self.clone();
        actix_web::rt::spawn(async move { hub.listen(inbound).await });
        let hub = self.clone();
        actix_web::rt::spawn(async move {
            let every = Duration::from_millis(settings.reconcile_ms.max(100));
            loop {
                let node = hub.cluster.as_ref().expect("a cluster");
                let _ = tokio::time::timeout(every, node.refresh.notified()).await;
                if hub.cluster_stopped() {
                    return;
                }
                if let Err(error) = hub.refresh_from_store().await {
                    tracing::warn!(error = %error, "cannot read the desired state back from the store; retrying");
                }
                if let Err(error) = hub.take_over_lapsed().await {
                    tracing::warn!(error = %error, "cannot look for lapsed leases; retrying");
                }
                if let Some(tick) = hub.cluster.as_ref().and_then(|n| n.tick.get()) {
                    tick().await;
                }
            }
        });
        let hub = self.clone();
        actix_web::rt::spawn(async move {
            let mut every =
                tokio::time::interval(Duration::from_millis((settings.lease_ms / 3).max(100)));
            loop {
                every.tick().await;
                if hub.cluster_stopped() {
                    return;
                }
                hub.renew_leases().await;
            }
        });
        let hub = self.clone();
        actix_web::rt::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(settings.share_ms.max(10)));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if hub.cluster_stopped() {
                    return;
                }
                hub.share();
            }
        });
        let hub = self.clone();
        actix_web::rt::spawn(async move {
            let mut every = tokio::time::interval(ROSTER_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if hub.cluster_stopped() {
                    return;
                }
                hub.write_roster().await;
            }
        });
    }

    /// Whether this node stopped taking part (it is shutting down).
    fn cluster_stopped(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
            || self
                .cluster
                .as_ref()
                .is_some_and(|n| n.stopped.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Live ops' part of each refresh (once; nothing alone).
    pub fn set_cluster_tick(&self, tick: ClusterTick) {
        if let Some(node) = &self.cluster {
            let _ = node.tick.set(tick);
        }
    }

    /// Live ops' side of other nodes' controls of live events (once).
    pub fn set_event_commands(&self, commands: EventCommands) {
        if let Some(node) = &self.cluster {
            let _ = node.event_commands.set(commands);
        }
    }

    /// Tells the other nodes the live-ops definitions changed in the store.
    pub(crate) fn announce_liveops(&self) {
        if let Some(node) = &self.cluster {
            node.cluster.send(Message::Changed {
                config: "liveops".into(),
            });
        }
    }

    /// A live event's `event` frame: to this node's servers of `regions`
    /// (all, when empty), and in a cluster to the other nodes' too.
    pub(crate) fn announce_event(&self, frame: bytes::Bytes, regions: &[String]) -> usize {
        if let Some(node) = &self.cluster {
            use base64::Engine as _;
            node.cluster.send(Message::EventFrame {
                regions: regions.to_vec(),
                frame: base64::engine::general_purpose::STANDARD.encode(&frame),
            });
        }
        self.announce_to_regions(frame, regions)
    }

    fn announce_to_regions(&self, frame: bytes::Bytes, regions: &[String]) -> usize {
        self.announce(frame, |server| {
            regions.is_empty()
                || regions
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&server.region))
        })
    }

    /// Another node's `event` frame, to this node's servers.
    fn on_event_frame(&self, regions: &[String], frame: &str) {
        use base64::Engine as _;
        let frame = match base64::engine::general_purpose::STANDARD.decode(frame) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(%error, "refused an event frame from another node");
                return;
            }
        };
        // Only a live event's phase: nothing else reaches servers this way.
        if !matches!(
            hotswap_client::protocol::decode::<hotswap_client::protocol::HubMessage>(
                &frame,
                hotswap_client::protocol::HUB_MESSAGE_TYPES
            ),
            Ok(hotswap_client::protocol::HubMessage::Event { .. })
        ) {
            tracing::warn!("refused a frame from another node that is not a live event's");
            return;
        }
        self.announce_to_regions(bytes::Bytes::from(frame), regions);
    }

    /// Messages refused from other nodes and dropped for them.
    pub(crate) fn cluster_counts(&self) -> Option<(u64, u64)> {
        let cluster = &self.cluster.as_ref()?.cluster;
        Some((
            cluster.refused.load(std::sync::atomic::Ordering::Relaxed),
            cluster.dropped.load(std::sync::atomic::Ordering::Relaxed),
        ))
    }

    /// This node's name among the others, if it is in a cluster.
    pub fn node_id(&self) -> Option<&str> {
        self.cluster.as_ref().map(|n| &*n.cluster.node)
    }

    async fn listen(self: Arc<Self>, mut inbound: tokio::sync::mpsc::Receiver<Inbound>) {
        while let Some(inbound) = inbound.recv().await {
            let Some(node) = &self.cluster else {
                return;
            };
            let envelope = match inbound {
                Inbound::Subscribed => {
                    node.refresh.notify_one();
                    continue;
                }
                Inbound::Message(envelope) => envelope,
            };
            {
                let mut peers = lock(&node.peers);
                // Bounded: nodes come and go, but not thousands.
                let room = peers.len() < 1_024;
                match peers.get_mut(&envelope.from) {
                    Some(seen) => *seen = Instant::now(),
                    None if room => {
                        peers.insert(envelope.from.clone(), Instant::now());
                    }
                    None => {}
                }
            }
            match envelope.message {
                Message::Alive => {}
                Message::Changed { .. } => node.refresh.notify_one(),
                Message::Progress {
                    deployment,
                    served,
                    servers,
                    seq,
                    full,
                    epoch,
                } => {
                    if self.lease_held(&deployment)
                        && let Some(record) = self.runs.get(&deployment)
                    {
                        let numbered = crate::hub::deployments::Numbered { epoch, seq, full };
                        record.merge_remote(&envelope.from, served, &servers, numbered);
                    }
                }
                Message::Slices { deployment, slices } => self.take_slices(&deployment, slices),
                Message::Command {
                    request,
                    deployment,
                    action,
                    actor,
                } => self.on_command(envelope.from, request, deployment, action, actor),
                Message::EventCommand {
                    request,
                    event,
                    control,
                    actor,
                } => self.on_event_command(envelope.from, request, event, control, actor),
                Message::EventFrame { regions, frame } => self.on_event_frame(&regions, &frame),
                Message::Fleet { fleet } => self.on_fleet(envelope.from, fleet),
                Message::View { deployment, view } => self.on_view(deployment, view),
                Message::ServerTags { server, tags } => self.take_operator_tags(&server, tags),
                Message::ServerGone { server } => self.on_server_gone(server),
                Message::Reply {
                    request,
                    to,
                    outcome,
                    message,
                } => {
                    if *to == *node.cluster.node {
                        self.on_reply(&request, outcome, message);
                    }
                }
            }
        }
    }

    /// This node changed `config`'s state (a commit): a read of the store
    /// begun before is not applied over it.
    pub(in crate::hub) fn bump_generation(&self, config: &str) {
        if let Some(node) = &self.cluster {
            node.bump(config);
        }
    }

    /// Tells the other nodes `config`'s desired state changed in the store.
    pub(in crate::hub) fn announce_change(&self, config: &str) {
        if let Some(node) = &self.cluster {
            node.bump(config);
            node.cluster.send(Message::Changed {
                config: config.to_owned(),
            });
        }
    }

    /// How many other nodes up have not yet said they served deployment
    /// `record`'s current state (none, alone): its owner counts them as
    /// servers still to ack.
    pub(in crate::hub) fn peers_behind(&self, record: &RunRecord) -> i64 {
        let Some(node) = &self.cluster else {
            return 0;
        };
        let alive = node.alive();
        record.peers_behind(alive.iter().map(String::as_str)) as i64
    }

    /// Another node took deployment `id` over: this node serves it as a
    /// mirror from here on (the next read fills in the owner's state).
    pub(in crate::hub) fn demote(&self, config: &str, id: &str) {
        if self.lease_held(id) {
            // This node took it again (it lapsed while the store was
            // away): a new run drives it here.
            return;
        }
        if let Some(live) = self
            .serving_write()
            .get_mut(config)
            .and_then(|s| s.live_mut())
            .filter(|l| *l.deployment_id == *id)
        {
            live.handle = None;
            live.mirror = true;
        }
        self.runs.remove(id);
        if let Some(node) = &self.cluster {
            node.bump(config);
            node.refresh.notify_one();
        }
    }
}
