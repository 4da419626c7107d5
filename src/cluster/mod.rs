//! More than one node: what this node shares with the others through
//! Redis. PostgreSQL is the truth; Redis is the doorbell. Every decision is
//! committed to the store first, then announced on one pub/sub channel
//! ([`Message::Changed`]); every node reads the desired state back and
//! brings its own servers to it, and also does so every
//! `cluster.reconcile_ms` and after its subscription comes back (it may
//! have missed announcements), so pub/sub is never the only path. A
//! deployment's owner gets the acks ([`Message::Progress`]) and metric
//! slices ([`Message::Slices`]) of the servers connected elsewhere.
//!
//! This module is the transport only: messages in and out, bounded. What
//! a node does with them is `hub/cluster.rs`'s. With no `redis.url` nothing
//! here runs and a node is whole on its own.

pub mod rate;
pub mod roster;
pub mod wire;
pub use wire::{Envelope, FleetCounts, FleetShare, Inbound, Message, ProgressEntry, SliceEntry};

use crate::settings::RedisSettings;
use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// This node's link to Redis: one multiplexed connection, made on first
/// use and remade by itself after Redis went away (a node starts, and
/// keeps serving, while Redis is down). A link that stops answering
/// without closing (half-open: a dead NAT entry, a cable pulled) is made
/// anew too: each command that gets no answer in time replaces it (at
/// most once a second).
///
/// Bulk work (the rosters: thousands of entries at once after a fan-out)
/// goes over a second link of its own, so the channel's messages and the
/// rate limits never wait behind it.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    connection: Link,
    bulk: Link,
    timeout: Duration,
}

/// One multiplexed connection, and when it was last made anew.
type Link = std::sync::Arc<std::sync::RwLock<(ConnectionManager, Option<std::time::Instant>)>>;

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// The link `settings` describe, or `None` without a `redis.url`. The
    /// URL is checked now; the connection is made on first use.
    pub fn from_settings(settings: &RedisSettings) -> anyhow::Result<Option<Redis>> {
        let Some(url) = settings.url.as_ref().filter(|u| !u.expose().is_empty()) else {
            return Ok(None);
        };
        let client = redis::Client::open(url.expose()).context("redis.url")?;
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let connection = Self::link(&client, timeout).context("the Redis connection")?;
        let bulk = Self::link(&client, timeout).context("the Redis connection")?;
        Ok(Some(Redis {
            client,
            connection: std::sync::Arc::new(std::sync::RwLock::new((connection, None))),
            bulk: std::sync::Arc::new(std::sync::RwLock::new((bulk, None))),
            timeout,
        }))
    }

    fn link(client: &redis::Client, timeout: Duration) -> redis::RedisResult<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        ConnectionManager::new_lazy_with_config(client.clone(), config)
    }

    /// Runs a command (or pipeline) `run` makes on the link, within `within`
    /// (at least the configured timeout); no answer in time renews the link.
    pub async fn query<T, F, Fut>(&self, within: Duration, run: F) -> Result<T, String>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.query_on(&self.connection, within, run).await
    }

    /// [`Redis::query`] on the link for bulk work (the rosters).
    pub async fn query_bulk<T, F, Fut>(&self, within: Duration, run: F) -> Result<T, String>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.query_on(&self.bulk, within, run).await
    }

    async fn query_on<T, F, Fut>(&self, link: &Link, within: Duration, run: F) -> Result<T, String>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = hotswap_client::sync::read(link).0.clone();
        match tokio::time::timeout(within.max(self.timeout), run(connection)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) if error.is_timeout() => {
                self.renew(link);
                Err(error.to_string())
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => {
                self.renew(link);
                Err(format!(
                    "no answer within {} ms",
                    within.max(self.timeout).as_millis()
                ))
            }
        }
    }

    /// Replaces a link that stopped answering (at most once a second).
    fn renew(&self, link: &Link) {
        let mut link = hotswap_client::sync::write(link);
        if link
            .1
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        if let Ok(fresh) = Self::link(&self.client, self.timeout) {
            tracing::warn!("Redis did not answer in time; the link is made anew");
            *link = (fresh, Some(std::time::Instant::now()));
        }
    }

    /// Whether Redis answers a `PING` within the timeout.
    pub async fn ping(&self) -> Result<(), String> {
        let pong: String = self
            .query(self.timeout, |mut c| async move {
                redis::cmd("PING").query_async(&mut c).await
            })
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("PING answered {pong:?}"))
        }
    }
}

/// Messages waiting to be published; past it a message is dropped (and
/// counted): the periodic reconcile catches up what it would have said.
const OUTBOUND_QUEUE: usize = 4_096;
/// Bytes waiting to be published, at most (a progress message on 10,000
/// servers is about 1 MB): past it a message is dropped too.
const OUTBOUND_BYTES: usize = 64 << 20;
/// A subscription that hears nothing (not even this node's own `alive`,
/// said every second) for this long is made again.
const SILENT_SUBSCRIPTION: Duration = Duration::from_secs(5);

/// This node among the others: its name, its settings, and the link.
pub struct Cluster {
    pub node: std::sync::Arc<str>,
    /// Signs every message this node sends and checks every one it reads.
    key: [u8; 32],
    pub settings: crate::settings::ClusterSettings,
    outbound: tokio::sync::mpsc::Sender<Vec<u8>>,
    /// Bytes in `outbound`.
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Messages dropped: the queue was full.
    pub dropped: std::sync::atomic::AtomicU64,
    /// Messages received that were malformed or out of bounds.
    pub refused: std::sync::atomic::AtomicU64,
    /// The link, for what is kept in Redis rather than said (rosters).
    redis: Redis,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts publishing and listening; what arrives from other nodes
    /// (and each time the subscription is made again) comes out of the
    /// receiver.
    pub fn start(
        redis: &Redis,
        settings: crate::settings::ClusterSettings,
        key: [u8; 32],
    ) -> (
        std::sync::Arc<Cluster>,
        tokio::sync::mpsc::Receiver<Inbound>,
    ) {
        let node: std::sync::Arc<str> = std::sync::Arc::from(
            settings
                .node_id
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(default_node_id)
                .as_str(),
        );
        let (outbound, queue) = tokio::sync::mpsc::channel(OUTBOUND_QUEUE);
        let (inbound, received) = tokio::sync::mpsc::channel(OUTBOUND_QUEUE);
        let cluster = std::sync::Arc::new(Cluster {
            node: node.clone(),
            key,
            settings,
            outbound,
            dropped: Default::default(),
            refused: Default::default(),
            redis: redis.clone(),
            queued: Default::default(),
        });
        let channel = format!("{}:cluster", cluster.settings.name);
        actix_web::rt::spawn(publish(
            redis.clone(),
            channel.clone(),
            queue,
            cluster.queued.clone(),
        ));
        actix_web::rt::spawn(listen(redis.clone(), channel, cluster.clone(), inbound));
        (cluster, received)
    }

    /// Queues `message` for the other nodes, never waiting: a full queue
    /// drops it (the periodic reconcile covers what it said).
    pub fn send(&self, message: Message) {
        let envelope = Envelope {
            from: self.node.to_string(),
            at: crate::store::now_ms(),
            message,
        };
        use std::sync::atomic::Ordering::Relaxed;
        let bytes = wire::seal(&self.key, &envelope);
        let size = bytes.len();
        if self.queued.fetch_add(size, Relaxed) + size > OUTBOUND_BYTES {
            self.queued.fetch_sub(size, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        if self.outbound.try_send(bytes).is_err() {
            self.queued.fetch_sub(size, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// The host name and process id: unique among nodes on one host too.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}", std::process::id())
}

/// Publishes what is queued, in order. While Redis is down each message
/// fails after the timeout and is dropped (logged once per outage).
async fn publish(
    redis: Redis,
    channel: String,
    mut queue: tokio::sync::mpsc::Receiver<Vec<u8>>,
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut down = false;
    while let Some(bytes) = queue.recv().await {
        queued.fetch_sub(bytes.len(), std::sync::atomic::Ordering::Relaxed);
        let sent = redis
            .query(redis.timeout, |mut c| {
                let channel = &channel;
                async move {
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(bytes)
                        .query_async::<i64>(&mut c)
                        .await
                }
            })
            .await;
        match sent {
            Ok(_) if down => {
                down = false;
                tracing::info!("publishing to Redis again");
            }
            Ok(_) => {}
            Err(error) if !down => {
                down = true;
                tracing::warn!(%error, "cannot publish to Redis; nodes catch up from the store");
            }
            Err(_) => {}
        }
    }
}

/// Listens on the channel, subscribing again (with a growing pause, at
/// most 2 s) whenever the subscription is lost; each new subscription is
/// announced as [`Inbound::Subscribed`] (the node catches up: it may have
/// missed announcements meanwhile).
async fn listen(
    redis: Redis,
    channel: String,
    cluster: std::sync::Arc<Cluster>,
    inbound: tokio::sync::mpsc::Sender<Inbound>,
) {
    use futures_util::StreamExt as _;
    let mut pause = Duration::from_millis(100);
    loop {
        let subscribed = async {
            let mut pubsub = tokio::time::timeout(redis.timeout, redis.client.get_async_pubsub())
                .await
                .map_err(|_| "no connection in time".to_owned())?
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(redis.timeout, pubsub.subscribe(&channel))
                .await
                .map_err(|_| "no subscription in time".to_owned())?
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(pubsub)
        }
        .await;
        let pubsub = match subscribed {
            Ok(pubsub) => pubsub,
            Err(error) => {
                tracing::debug!(%error, "cannot subscribe to Redis yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        pause = Duration::from_millis(100);
        tracing::info!(node = %cluster.node, "listening to the other nodes");
        if inbound.send(Inbound::Subscribed).await.is_err() {
            return;
        }
        let mut messages = pubsub.into_on_message();
        loop {
            // Every node, this one too, says it is alive every second, and
            // hears itself: a subscription silent for longer is dead (a
            // half-open connection no error reports) and is made again.
            let Ok(next) = tokio::time::timeout(SILENT_SUBSCRIPTION, messages.next()).await else {
                tracing::warn!(
                    "nothing heard on the Redis subscription for 5 s; subscribing again"
                );
                break;
            };
            let Some(message) = next else {
                break;
            };
            match wire::open(
                &cluster.key,
                message.get_payload_bytes(),
                crate::store::now_ms(),
            ) {
                Ok(envelope) if *envelope.from == *cluster.node => {}
                Ok(envelope) => {
                    if inbound.send(Inbound::Message(envelope)).await.is_err() {
                        return;
                    }
                }
                Err(why) => {
                    cluster
                        .refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(%why, "refused a cluster message");
                }
            }
        }
        tracing::warn!("the Redis subscription ended; subscribing again");
    }
}
