//! The live feed dashboards stream (`GET /api/v1/stream`, a WebSocket of
//! JSON): a `snapshot` on connect, then changes as they happen. One feed
//! task owns it: deployment runs tell it when a deployment moved
//! ([`Feed::deployment_changed`], from each publish); live ops' and the
//! fleet's state it reads every [`TICK`] and sends when it changed (a
//! deployment only when its view changed). Every change is serialized
//! once and broadcast; each socket reads the broadcast at its own pace:
//! one that falls [`BACKLOG`] messages behind is closed (4008), one that
//! stops reading is dropped after [`socket::SEND_TIMEOUT`], and every
//! socket is closed (1001) when the hub stops: a dashboard never holds the
//! hub up.
//!
//! Messages: `{"type": "snapshot", "fleet", "deployments", "events",
//! "timeline", "experiments"}`; `{"type": "deployment", "deployment"}`
//! (a deployment's view, without its per-server list); `{"type":
//! "fleet", "fleet"}`; `{"type": "events", "events", "timeline"}`;
//! `{"type": "experiments", "experiments"}`.

pub mod socket;

use crate::{hub::Hub, liveops::LiveOps};
use bytestring::ByteString;
use hotswap_client::sync::lock;
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};
use tokio::sync::{Notify, broadcast};

/// How often live ops and the fleet are looked at.
pub const TICK: Duration = Duration::from_secs(1);
/// Messages a socket may fall behind before it is closed.
pub const BACKLOG: usize = 256;
/// Deployments a snapshot carries (the newest).
const SNAPSHOT_DEPLOYMENTS: i64 = 20;

/// The feed of one hub.
#[derive(Debug)]
pub struct Feed {
    sender: broadcast::Sender<ByteString>,
    wake: Notify,
    /// Deployments that moved since the feed last sent them.
    moved: Mutex<BTreeSet<String>>,
    /// What was last sent of each part (to send only changes).
    last: Mutex<BTreeMap<&'static str, Value>>,
    /// What was last sent of each running deployment.
    deployments: Mutex<std::collections::HashMap<String, Value>>,
    /// Set when the hub stops: sockets close, the task ends.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Default for Feed {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        Feed {
            sender,
            wake: Notify::new(),
            moved: Mutex::new(BTreeSet::new()),
            last: Mutex::new(BTreeMap::new()),
            deployments: Mutex::new(Default::default()),
            closing: tokio::sync::watch::channel(false).0,
        }
    }
}

/// A deployment's view for the feed: its per-server list left out.
pub fn deployment_json(view: &crate::hub::DeploymentView) -> Value {
    let mut value = serde_json::to_value(view).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.remove("servers");
    }
    value
}

/// The fleet by region, environment and revision: servers known,
/// connected, healthy, stale (known, not connected) and players.
pub fn fleet_json(hub: &Hub) -> Value {
    #[derive(Default)]
    struct Tally {
        servers: u64,
        connected: u64,
        healthy: u64,
        players: u64,
    }
    let mut regions: BTreeMap<String, Tally> = BTreeMap::new();
    let mut environments: BTreeMap<String, Tally> = BTreeMap::new();
    let mut revisions: BTreeMap<String, BTreeMap<i64, u64>> = BTreeMap::new();
    let mut total = Tally::default();
    hub.registry().visit(|record, connected| {
        let healthy = connected && record.status == hotswap_client::protocol::Health::Healthy;
        let players = if connected {
            u64::from(record.players)
        } else {
            0
        };
        for tally in [
            regions.entry(record.region.clone()).or_default(),
            environments.entry(record.environment.clone()).or_default(),
            &mut total,
        ] {
            tally.servers += 1;
            tally.connected += u64::from(connected);
            tally.healthy += u64::from(healthy);
            tally.players += players;
        }
        for (config, revision) in &record.applied {
            *revisions
                .entry(config.clone())
                .or_default()
                .entry(*revision)
                .or_default() += 1;
        }
    });
    let tally = |t: &Tally| {
        json!({"servers": t.servers, "connected": t.connected, "healthy": t.healthy,
               "stale": t.servers - t.connected, "players": t.players})
    };
    json!({
        "total": tally(&total),
        "regions": regions.iter().map(|(k, t)| (k.clone(), tally(t))).collect::<serde_json::Map<_, _>>(),
        "environments": environments.iter().map(|(k, t)| (k.clone(), tally(t))).collect::<serde_json::Map<_, _>>(),
        "revisions": revisions,
    })
}

/// Live events, and the occurrences from 7 days back to 30 ahead (with
/// overlaps).
fn events_json(liveops: &LiveOps) -> (Value, Value) {
    let now = liveops.now_ms();
    let events = serde_json::to_value(liveops.events(None, None, None)).unwrap_or(Value::Null);
    let timeline = liveops
        .timeline(now - 7 * 86_400_000, now + 30 * 86_400_000, None)
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or(Value::Null);
    (events, timeline)
}

fn experiments_json(liveops: &LiveOps) -> Value {
    serde_json::to_value(liveops.experiments()).unwrap_or(Value::Null)
}

impl Feed {
    pub fn new() -> Arc<Feed> {
        Arc::new(Feed::default())
    }

    /// A deployment moved (its run published a new state).
    pub fn deployment_changed(&self, id: &str) {
        let fresh = lock(&self.moved).insert(id.to_owned());
        if fresh {
            self.wake.notify_one();
        }
    }

    /// Sockets listening now.
    pub fn listeners(&self) -> usize {
        self.sender.receiver_count()
    }

    /// A socket's view: the changes from now on, and the snapshot (read
    /// after subscribing, so nothing falls between them).
    pub async fn join(
        &self,
        hub: &Hub,
        liveops: &LiveOps,
    ) -> (broadcast::Receiver<ByteString>, String) {
        let changes = self.sender.subscribe();
        let deployments: Vec<Value> = hub
            .deployments(None, SNAPSHOT_DEPLOYMENTS)
            .await
            .unwrap_or_default()
            .iter()
            .map(deployment_json)
            .collect();
        let (events, timeline) = events_json(liveops);
        let snapshot = json!({
            "type": "snapshot",
            "fleet": fleet_json(hub),
            "deployments": deployments,
            "events": events,
            "timeline": timeline,
            "experiments": experiments_json(liveops),
        });
        (changes, snapshot.to_string())
    }

    fn send(&self, message: Value) {
        // No listener: nothing to do (an error only says so).
        let _ = self.sender.send(ByteString::from(message.to_string()));
    }

    /// Sends `part` when it differs from what was last sent of it.
    fn send_changed(&self, part: &'static str, value: Value, message: impl FnOnce(Value) -> Value) {
        let mut last = lock(&self.last);
        if last.get(part) == Some(&value) {
            return;
        }
        last.insert(part, value.clone());
        drop(last);
        self.send(message(value));
    }

    /// Closes every socket (the hub is stopping) and ends the task.
    pub fn close(&self) {
        let _ = self.closing.send(true);
        self.wake.notify_one();
    }

    /// Tells a socket when the hub stops.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Sends a moved deployment's view unless it is what was sent last.
    fn send_deployment(&self, id: &str, view: &crate::hub::DeploymentView) {
        let value = deployment_json(view);
        let finished = matches!(
            view.status.as_str(),
            "Completed" | "RolledBack" | "Cancelled" | "Failed"
        );
        let mut sent = lock(&self.deployments);
        if sent.get(id) == Some(&value) {
            return;
        }
        if finished {
            sent.remove(id);
        } else {
            sent.insert(id.to_owned(), value.clone());
        }
        drop(sent);
        self.send(json!({"type": "deployment", "deployment": value}));
    }

    /// Starts the feed task (it ends when the hub stops or goes).
    pub fn start(self: &Arc<Self>, hub: Weak<Hub>, liveops: Weak<LiveOps>) {
        let feed = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut next_tick = tokio::time::Instant::now() + TICK;
            loop {
                let Some(current) = feed.upgrade() else {
                    return;
                };
                // Woken by a deployment, or at the tick's fixed deadline
                // (deployments waking it often never push the tick back).
                let _ = tokio::time::timeout_at(next_tick, current.wake.notified()).await;
                if *current.closing.borrow() {
                    return;
                }
                let (Some(hub), Some(liveops)) = (hub.upgrade(), liveops.upgrade()) else {
                    return;
                };
                let moved = std::mem::take(&mut *lock(&current.moved));
                let listening = current.listeners() > 0;
                if listening {
                    for id in moved {
                        if let Ok(view) = hub.deployment(&id).await {
                            current.send_deployment(&id, &view);
                        }
                    }
                }
                let tick_due = tokio::time::Instant::now() >= next_tick;
                if tick_due {
                    next_tick = tokio::time::Instant::now() + TICK;
                }
                if listening && tick_due {
                    current.send_changed(
                        "fleet",
                        fleet_json(&hub),
                        |fleet| json!({"type": "fleet", "fleet": fleet}),
                    );
                    // Compared without the timeline's window, which moves
                    // with the clock.
                    let (events, timeline) = events_json(&liveops);
                    let key = json!([events, timeline["items"], timeline["truncated"]]);
                    current.send_changed(
                        "events",
                        key,
                        |_| json!({"type": "events", "events": events, "timeline": timeline}),
                    );
                    current.send_changed(
                        "experiments",
                        experiments_json(&liveops),
                        |list| json!({"type": "experiments", "experiments": list}),
                    );
                }
                if !listening {
                    // Nobody to tell: the next listener starts from a snapshot.
                    lock(&current.last).clear();
                    lock(&current.deployments).clear();
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_that_falls_behind_learns_it_and_the_rest_keep_up() {
        let feed = Feed::new();
        let mut slow = feed.sender.subscribe();
        let mut quick = feed.sender.subscribe();
        for n in 0..BACKLOG + 10 {
            feed.send(json!({"n": n}));
            assert!(quick.try_recv().is_ok());
        }
        assert!(matches!(
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
    }

    #[test]
    fn a_part_is_sent_only_when_it_changed() {
        let feed = Feed::new();
        let mut listener = feed.sender.subscribe();
        for fleet in [json!({"a": 1}), json!({"a": 1}), json!({"a": 2})] {
            feed.send_changed("fleet", fleet, |f| json!({"type": "fleet", "fleet": f}));
        }
        let got: Vec<String> = std::iter::from_fn(|| listener.try_recv().ok())
            .map(|t| t.to_string())
            .collect();
        assert_eq!(
            got,
            [
                r#"{"fleet":{"a":1},"type":"fleet"}"#,
                r#"{"fleet":{"a":2},"type":"fleet"}"#
            ]
        );
        feed.deployment_changed("d-1");
        feed.deployment_changed("d-1");
        assert_eq!(lock(&feed.moved).len(), 1);
    }
}
