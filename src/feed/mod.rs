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
//! Messages: `{"type": "snapshot", "fleet", "deployments", "history",
//! "events", "timeline", "experiments"}`; `{"type": "deployment",
//! "deployment", "point"}` (a deployment's view, without its per-server
//! list, and its charts' newest point); `{"type":
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
/// Chart points kept per deployment: ten minutes at one a second.
const HISTORY_POINTS: usize = 600;
/// Deployments whose chart points are kept (the most recently moved).
const HISTORY_DEPLOYMENTS: usize = 20;
/// Points within one such span of the clock replace each other.
const POINT_EVERY_MS: i64 = 1_000;

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
    /// Each recent deployment's chart points, oldest first.
    history: Mutex<History>,
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
            history: Mutex::new(History::default()),
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

/// One point of a deployment's charts: per cohort, its fast window's
/// latency p50 and p99 (ms) and crash rate, at `at_ms`; `None` while the
/// hub does not judge it (no cohorts).
pub fn chart_point(view: &crate::hub::DeploymentView, at_ms: i64) -> Option<Value> {
    let live = view.live.as_ref()?;
    if live.cohorts.is_empty() {
        return None;
    }
    let cohorts: serde_json::Map<String, Value> = live
        .cohorts
        .iter()
        .map(|c| {
            let latency = c.fast_window.latency_ms.as_ref();
            (
                c.cohort.clone(),
                json!({
                    "servers": c.servers,
                    "p50": latency.map(|p| p.p50),
                    "p99": latency.map(|p| p.p99),
                    "crashRate": c.fast_window.crash_rate,
                }),
            )
        })
        .collect();
    Some(json!({"at": at_ms, "cohorts": cohorts}))
}

/// Recent deployments' chart points, bounded in deployments and points.
#[derive(Debug, Default)]
struct History {
    points: std::collections::HashMap<String, std::collections::VecDeque<Value>>,
    /// Deployment ids, least recently moved first.
    order: std::collections::VecDeque<String>,
}

impl History {
    /// Adds `point` (replacing the last one when both fall in the same
    /// [`POINT_EVERY_MS`]).
    fn add(&mut self, id: &str, point: Value) {
        if let Some(at) = self.order.iter().position(|known| known == id) {
            self.order.remove(at);
        }
        self.order.push_back(id.to_owned());
        while self.order.len() > HISTORY_DEPLOYMENTS {
            if let Some(gone) = self.order.pop_front() {
                self.points.remove(&gone);
            }
        }
        let points = self.points.entry(id.to_owned()).or_default();
        let at = |p: &Value| p["at"].as_i64().unwrap_or_default();
        // One point per second of the clock: a later one in the same
        // second replaces it.
        if points
            .back()
            .is_some_and(|last| at(&point) / POINT_EVERY_MS == at(last) / POINT_EVERY_MS)
        {
            points.pop_back();
        }
        points.push_back(point);
        while points.len() > HISTORY_POINTS {
            points.pop_front();
        }
    }

    fn to_json(&self) -> Value {
        Value::Object(
            self.points
                .iter()
                .map(|(id, points)| (id.clone(), Value::Array(points.iter().cloned().collect())))
                .collect(),
        )
    }
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

/// The fleet as dashboards see it: this hub's alone ([`fleet_json`]); on
/// a cluster, every node's connected servers (each node says its own
/// every second) beside the servers the store knows, per region and
/// environment, and the revisions connected servers acked.
pub async fn fleet_now(hub: &Hub) -> Value {
    if !hub.in_cluster() {
        return fleet_json(hub);
    }
    let mut shares = hub.peer_fleets();
    shares.push(hub.fleet_share());
    // Bounded: a slow store never holds the feed's other parts up.
    let known = match tokio::time::timeout(Duration::from_millis(300), hub.stored_server_counts())
        .await
    {
        Ok(Ok(known)) => known,
        Ok(Err(error)) => {
            tracing::debug!(%error, "known servers not counted; the fleet shows connected ones");
            Vec::new()
        }
        Err(_) => Vec::new(),
    };
    cluster_fleet_json(&shares, &known)
}

/// [`fleet_now`]'s JSON from each node's share and the stored servers
/// counted by (region, environment).
fn cluster_fleet_json(
    shares: &[crate::cluster::FleetShare],
    known: &[(String, String, i64)],
) -> Value {
    use crate::cluster::FleetCounts;
    let mut regions: BTreeMap<String, (u64, FleetCounts)> = BTreeMap::new();
    let mut environments: BTreeMap<String, (u64, FleetCounts)> = BTreeMap::new();
    let mut total: (u64, FleetCounts) = Default::default();
    let mut revisions: BTreeMap<String, BTreeMap<i64, u64>> = BTreeMap::new();
    let add = |into: &mut FleetCounts, counts: &FleetCounts| {
        into.connected += counts.connected;
        into.healthy += counts.healthy;
        into.players += counts.players;
    };
    for share in shares {
        for (region, counts) in &share.regions {
            add(&mut regions.entry(region.clone()).or_default().1, counts);
            add(&mut total.1, counts);
        }
        for (environment, counts) in &share.environments {
            add(
                &mut environments.entry(environment.clone()).or_default().1,
                counts,
            );
        }
        for (config, by_revision) in &share.revisions {
            let into = revisions.entry(config.clone()).or_default();
            for (revision, count) in by_revision {
                *into.entry(*revision).or_default() += count;
            }
        }
    }
    for (region, environment, count) in known {
        let count = (*count).max(0) as u64;
        regions.entry(region.clone()).or_default().0 += count;
        environments.entry(environment.clone()).or_default().0 += count;
        total.0 += count;
    }
    let tally = |(known, counts): &(u64, FleetCounts)| {
        // A server connected before its row is first stored is known too.
        let servers = (*known).max(counts.connected);
        json!({"servers": servers, "connected": counts.connected, "healthy": counts.healthy,
               "stale": servers - counts.connected, "players": counts.players})
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
            "fleet": fleet_now(hub).await,
            "deployments": deployments,
            "history": lock(&self.history).to_json(),
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

    /// Keeps a moved deployment's chart point, and sends its view (with
    /// the point) to listeners unless it is what was sent last.
    fn send_deployment(&self, id: &str, view: &crate::hub::DeploymentView, listening: bool) {
        let point = chart_point(view, chrono::Utc::now().timestamp_millis());
        if let Some(point) = &point {
            lock(&self.history).add(id, point.clone());
        }
        if !listening {
            return;
        }
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
        self.send(json!({"type": "deployment", "deployment": value, "point": point}));
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
                // Chart points are kept with nobody listening: a dashboard
                // opened later draws the last minutes.
                for id in moved {
                    if let Ok(view) = hub.deployment(&id).await {
                        // The other nodes' dashboards see it move too.
                        hub.share_view(&view);
                        current.send_deployment(&id, &view, listening);
                    }
                }
                let tick_due = tokio::time::Instant::now() >= next_tick;
                if tick_due {
                    next_tick = tokio::time::Instant::now() + TICK;
                }
                if listening && tick_due {
                    current.send_changed(
                        "fleet",
                        fleet_now(&hub).await,
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

    #[test]
    fn chart_history_is_bounded_in_points_and_deployments() {
        let mut history = History::default();
        let point = |at: i64| json!({"at": at, "cohorts": {}});
        history.add("d-0", point(0));
        history.add("d-0", point(500));
        assert_eq!(history.points["d-0"].len(), 1, "the same second: replaced");
        assert_eq!(history.points["d-0"][0]["at"], 500);
        // Points every 300 ms still give one a second.
        let mut frequent = History::default();
        for n in 0..10 {
            frequent.add("d", point(n * 300));
        }
        let kept: Vec<i64> = frequent.points["d"]
            .iter()
            .map(|p| p["at"].as_i64().unwrap())
            .collect();
        assert_eq!(kept, [900, 1800, 2700]);
        for n in 1..=(HISTORY_POINTS as i64 + 5) {
            history.add("d-0", point(n * 1_000));
        }
        assert_eq!(history.points["d-0"].len(), HISTORY_POINTS);
        assert_eq!(
            history.points["d-0"][0]["at"], 6_000,
            "the oldest went first"
        );
        for d in 1..=HISTORY_DEPLOYMENTS {
            history.add(&format!("d-{d}"), point(0));
        }
        assert_eq!(history.points.len(), HISTORY_DEPLOYMENTS);
        assert!(
            !history.points.contains_key("d-0"),
            "least recently moved went"
        );
        assert!(history.to_json()["d-1"].is_array());
    }
}
