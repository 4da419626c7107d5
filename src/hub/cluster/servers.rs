//! The cluster's game servers seen from any node: each node's connected
//! servers in its roster in Redis (`cluster/roster.rs`), written every
//! second with only what changed; its fleet counted and said every second
//! (`Message::Fleet`); operators' tags and deregistrations said to every
//! node.

use crate::{
    cluster::{FleetCounts, FleetShare, Message},
    hub::Hub,
};
use hotswap_actors::ServerRecord;
use hotswap_client::{protocol::Health, sync::lock};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{Hash as _, Hasher as _},
};

/// A connected server as its node's roster holds it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RosterEntry {
    node: String,
    server_id: String,
    key_id: String,
    region: String,
    environment: String,
    tags: Vec<String>,
    operator_tags: Vec<String>,
    capacity: u32,
    players: u32,
    status: Health,
    load: Option<f64>,
    hostname: Option<String>,
    address: Option<String>,
    build: Option<String>,
    sdk: Option<String>,
    subscriptions: Vec<String>,
    applied: BTreeMap<String, i64>,
    connected_since_ms: Option<i64>,
    last_seen_ms: i64,
    metrics_frames: u64,
}

/// Entries written to a roster per write, at most (one write a second).
const MAX_UPSERTS: usize = 2_000;

/// How long a worked-out list of the cluster's servers is reused.
const LIST_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// The most tags, subscriptions or applied configs an entry read holds
/// (a `hello` holds far fewer).
const MAX_LIST: usize = 1_024;

impl RosterEntry {
    fn of(node: &str, r: &ServerRecord) -> RosterEntry {
        RosterEntry {
            node: node.to_owned(),
            server_id: r.server_id.clone(),
            key_id: r.key_id.clone(),
            region: r.region.clone(),
            environment: r.environment.clone(),
            tags: r.tags.clone(),
            operator_tags: r.operator_tags.clone(),
            capacity: r.capacity,
            players: r.players,
            status: r.status,
            load: r.load,
            hostname: r.hostname.clone(),
            address: r.address.clone(),
            build: r.build.clone(),
            sdk: r.sdk.clone(),
            subscriptions: r.subscriptions.clone(),
            applied: r.applied.clone(),
            connected_since_ms: r.connected_since_ms,
            last_seen_ms: r.last_seen_ms,
            metrics_frames: r.metrics_frames,
        }
    }

    /// An entry read from node `node`'s roster under field `server`:
    /// `None` unless it is that node's entry of that server, in bounds,
    /// and heard from since `oldest_ms` (a connected server beats every
    /// heartbeat and its entry is written again each time: an older one
    /// was left behind, or replayed).
    fn read(node: &str, server: &str, json: &[u8], oldest_ms: i64) -> Option<ServerRecord> {
        let e: RosterEntry = serde_json::from_slice(json).ok()?;
        let in_bounds = e.node == node
            && e.last_seen_ms >= oldest_ms
            && e.server_id == server
            && crate::domain::server_hello::is_server_id(server)
            && e.tags.len() <= MAX_LIST
            && e.operator_tags.len() <= MAX_LIST
            && e.subscriptions.len() <= MAX_LIST
            && e.applied.len() <= MAX_LIST;
        if !in_bounds {
            return None;
        }
        Some(ServerRecord {
            server_id: e.server_id,
            key_id: e.key_id,
            region: e.region,
            environment: e.environment,
            tags: e.tags,
            operator_tags: e.operator_tags,
            capacity: e.capacity,
            players: e.players,
            status: e.status,
            load: e.load,
            hostname: e.hostname,
            address: e.address,
            build: e.build,
            sdk: e.sdk,
            liveops: false,
            subscriptions: e.subscriptions,
            applied: e.applied,
            connected: true,
            session_id: None,
            connected_since_ms: e.connected_since_ms,
            last_seen_ms: e.last_seen_ms,
            stale: false,
            disconnect_reason: None,
            metrics_frames: e.metrics_frames,
            last_metrics_ms: None,
        })
    }
}

/// What changes of a connected server, hashed: its entry is written again
/// only when this moves.
fn fingerprint(r: &ServerRecord) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &r.region,
        &r.environment,
        &r.tags,
        &r.operator_tags,
        r.capacity,
        r.players,
        r.status as u8,
        r.load.map(f64::to_bits),
    )
        .hash(&mut h);
    (
        &r.subscriptions,
        &r.applied,
        r.connected_since_ms,
        r.last_seen_ms,
        r.metrics_frames,
        &r.hostname,
        &r.address,
        &r.build,
        &r.sdk,
    )
        .hash(&mut h);
    h.finish()
}

impl Hub {
    /// Writes what changed of this node's connected servers to its roster
    /// (every second); everything again when the roster was lost.
    pub(super) async fn write_roster(&self) {
        let Some(node) = &self.cluster else {
            return;
        };
        let mut written = node.roster.lock().await;
        // Every connected server is fingerprinted in place (nothing copied);
        // only the entries that changed are built, one read at a time.
        let mut now = HashMap::with_capacity(written.len());
        let mut changed = Vec::new();
        self.registry.visit(|record, connected| {
            if !connected {
                return;
            }
            let mut print = fingerprint(record);
            let was = written.get(&record.server_id).copied();
            if was != Some(print) {
                if changed.len() < MAX_UPSERTS {
                    changed.push(record.server_id.clone());
                } else {
                    // Spread over the next writes (after a fan-out every
                    // entry moves at once): kept as last written, so it is
                    // again.
                    print = was.unwrap_or(0);
                }
            }
            now.insert(record.server_id.clone(), print);
        });
        let mut upserts: Vec<(String, Vec<u8>)> = Vec::with_capacity(changed.len());
        for id in changed {
            let entry = self.registry.read_then(&id, |r| {
                r.connected.then(|| RosterEntry::of(&node.cluster.node, r))
            });
            match entry.flatten() {
                Some(entry) => {
                    upserts.push((id, serde_json::to_vec(&entry).expect("entries serialize")))
                }
                // Gone since it was fingerprinted: removed in this write,
                // not shown as connected.
                None => {
                    now.remove(&id);
                }
            }
        }
        let gone: Vec<String> = written
            .keys()
            .filter(|id| !now.contains_key(*id))
            .cloned()
            .collect();
        match node.cluster.write_roster(&upserts, &gone).await {
            Ok(was_there) if was_there || written.is_empty() => *written = now,
            Ok(_) => {
                // Redis lost it: what was just written stands, the rest is
                // written next time.
                let upserted: HashSet<&String> = upserts.iter().map(|(id, _)| id).collect();
                for (id, print) in now.iter_mut() {
                    if !upserted.contains(id) {
                        *print = 0;
                    }
                }
                *written = now;
            }
            Err(error) => {
                // What landed is unknown: every entry is written again next
                // time, and the gone ones removed again.
                tracing::debug!(%error, "cannot write this node's roster; written whole next time");
                for print in written.values_mut() {
                    *print = 0;
                }
                for id in now.into_keys() {
                    written.insert(id, 0);
                }
            }
        }
    }

    /// The whole cluster's servers, worked out at most once a second and
    /// shared by the callers meanwhile (a burst of lists costs one).
    pub(in crate::hub) async fn cluster_servers(&self) -> std::sync::Arc<crate::hub::ServerList> {
        let node = self.cluster.as_ref().expect("a cluster");
        let mut cached = node.server_list.lock().await;
        if let Some((at, list)) = cached.as_ref()
            && at.elapsed() < LIST_FOR
        {
            return list.clone();
        }
        let list = std::sync::Arc::new(self.merge_cluster_servers().await);
        *cached = Some((std::time::Instant::now(), list.clone()));
        list
    }

    /// The oldest heartbeat a roster entry read may carry: a server silent
    /// for three heartbeats is closed, and its node writes what changed
    /// every second.
    fn oldest_entry_ms(&self) -> i64 {
        crate::store::now_ms() - 3 * self.settings.heartbeat_ms as i64 - 5_000
    }

    /// Every other node's connected servers (nodes heard from lately), and
    /// whether a roster could not be read.
    pub(in crate::hub) async fn peer_servers(&self) -> (Vec<(String, ServerRecord)>, bool) {
        let Some(node) = &self.cluster else {
            return (Vec::new(), false);
        };
        let mut servers = Vec::new();
        let oldest = self.oldest_entry_ms();
        let peers = node.alive();
        // No other node heard from: alone, or cut off from Redis (then the
        // others' servers are not known here).
        let mut partial = peers.is_empty() && node.cluster.ping().await.is_err();
        for peer in peers {
            match node.cluster.read_roster(&peer).await {
                Ok(entries) => servers.extend(
                    entries
                        .iter()
                        .filter_map(|(id, json)| RosterEntry::read(&peer, id, json, oldest))
                        .map(|record| (peer.clone(), record)),
                ),
                Err(error) => {
                    tracing::warn!(%peer, %error, "cannot read another node's servers");
                    partial = true;
                }
            }
        }
        (servers, partial)
    }

    /// The node `server_id` is connected to, other than this one, and its
    /// entry there (the most recent connection if two rosters hold it).
    pub(in crate::hub) async fn peer_server(
        &self,
        server_id: &str,
    ) -> Option<(String, ServerRecord)> {
        let node = self.cluster.as_ref()?;
        let mut found: Option<(String, ServerRecord)> = None;
        for peer in node.alive() {
            let Ok(Some(json)) = node.cluster.read_roster_entry(&peer, server_id).await else {
                continue;
            };
            if let Some(record) = RosterEntry::read(&peer, server_id, &json, self.oldest_entry_ms())
                && found
                    .as_ref()
                    .is_none_or(|(_, f)| f.connected_since_ms < record.connected_since_ms)
            {
                found = Some((peer, record));
            }
        }
        found
    }

    /// This node's connected servers, counted.
    pub(crate) fn fleet_share(&self) -> FleetShare {
        let mut share = FleetShare::default();
        let mut revisions: BTreeMap<String, BTreeMap<i64, u64>> = BTreeMap::new();
        self.registry.visit(|record, connected| {
            if !connected {
                return;
            }
            let add = |counts: &mut FleetCounts| {
                counts.connected += 1;
                counts.healthy += u64::from(record.status == Health::Healthy);
                counts.players += u64::from(record.players);
            };
            add(share.regions.entry(record.region.clone()).or_default());
            add(share
                .environments
                .entry(record.environment.clone())
                .or_default());
            for (config, revision) in &record.applied {
                *revisions
                    .entry(config.clone())
                    .or_default()
                    .entry(*revision)
                    .or_default() += 1;
            }
        });
        share.revisions = revisions
            .into_iter()
            .map(|(config, counts)| (config, counts.into_iter().collect()))
            .collect();
        share
    }

    /// The other nodes' fleets (those heard from lately).
    pub(crate) fn peer_fleets(&self) -> Vec<FleetShare> {
        let Some(node) = &self.cluster else {
            return Vec::new();
        };
        let alive: HashSet<String> = node.alive().into_iter().collect();
        let mut fleets = lock(&node.fleets);
        fleets.retain(|peer, _| alive.contains(peer));
        fleets.values().cloned().collect()
    }

    pub(super) fn on_fleet(&self, from: String, fleet: FleetShare) {
        if let Some(node) = &self.cluster {
            let mut fleets = lock(&node.fleets);
            // Bounded like the peers it comes from.
            if fleets.len() < 1_024 || fleets.contains_key(&from) {
                fleets.insert(from, fleet);
            }
        }
    }

    /// Tells the other nodes a server's operator tags changed.
    pub(in crate::hub) fn announce_server_tags(&self, server_id: &str, tags: &[String]) {
        if let Some(node) = &self.cluster {
            node.cluster.send(Message::ServerTags {
                server: server_id.to_owned(),
                tags: tags.to_vec(),
            });
        }
    }

    /// Tells the other nodes a server was deregistered: now, and again
    /// after 1 s and 3 s (a message lost on the way would leave the server
    /// connected to its node).
    pub(in crate::hub) fn announce_server_gone(&self, server_id: &str) {
        let Some(node) = &self.cluster else {
            return;
        };
        let (cluster, server) = (node.cluster.clone(), server_id.to_owned());
        cluster.send(Message::ServerGone {
            server: server.clone(),
        });
        actix_web::rt::spawn(async move {
            for pause in [1, 2] {
                tokio::time::sleep(std::time::Duration::from_secs(pause)).await;
                cluster.send(Message::ServerGone {
                    server: server.clone(),
                });
            }
        });
    }

    /// Another node deregistered a server: closed here if it is connected
    /// here (4005) and forgotten; its row, which this node may have
    /// written again meanwhile, deleted again.
    pub(super) fn on_server_gone(&self, server_id: String) {
        if !self.forget_server(&server_id) {
            return;
        }
        let store = self.store.clone();
        actix_web::rt::spawn(async move {
            let deleted = async {
                let mut tx = store.begin().await?;
                crate::store::hub::delete_game_servers(&mut tx, std::slice::from_ref(&server_id))
                    .await?;
                tx.commit().await.map_err(crate::store::StoreError::from)
            }
            .await;
            if let Err(error) = deleted {
                tracing::warn!(%error, "a deregistered server's row not deleted again");
            }
        });
    }
}
