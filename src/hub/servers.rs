//! Operators' hands on known servers: closing a revoked key's sockets,
//! releasing a server id, operator tags; and the servers as the API lists
//! them — this hub's alone, the whole cluster's on a cluster (each node's
//! connected servers from its roster, those known but connected nowhere
//! from the store).

use super::{Hub, sessions::key_revoked};
use crate::store::{StoreResult, hub as store_hub, server_bindings};
use hotswap_actors::{CloseReason, ServerFilter, ServerRecord};
use hotswap_client::{
    protocol::{Health, close_code},
    sync::lock,
};
use std::collections::HashMap;

/// A stored server as the registry holds one it is not connected to.
pub(super) fn record_of_row(row: store_hub::GameServerRow) -> ServerRecord {
    ServerRecord {
        server_id: row.server_id,
        key_id: row.key_id,
        region: row.region,
        environment: row.environment,
        tags: serde_json::from_str(&row.tags).unwrap_or_default(),
        operator_tags: serde_json::from_str(&row.operator_tags).unwrap_or_default(),
        capacity: row.capacity as u32,
        players: row.players as u32,
        status: Health::Healthy,
        load: None,
        hostname: row.hostname,
        address: row.address,
        build: row.build,
        sdk: row.sdk,
        liveops: false,
        subscriptions: serde_json::from_str(&row.subscriptions).unwrap_or_default(),
        applied: serde_json::from_str(&row.applied).unwrap_or_default(),
        connected: false,
        session_id: None,
        connected_since_ms: None,
        last_seen_ms: row.last_seen,
        stale: false,
        disconnect_reason: None,
        metrics_frames: 0,
        last_metrics_ms: None,
    }
}

/// A game server and the node it is connected to (`None`: alone, or
/// connected nowhere).
#[derive(Debug, Clone)]
pub struct KnownServer {
    pub record: ServerRecord,
    pub node: Option<String>,
}

/// Servers as `GET /game-servers` lists them.
#[derive(Debug, Default)]
pub struct ServerList {
    pub items: Vec<KnownServer>,
    /// Connected servers (all of them, not only those listed).
    pub connected: usize,
    /// A node's servers could not be read (Redis did not answer): the list
    /// holds what this node and the store know.
    pub partial: bool,
}

impl Hub {
    /// Closes every socket of a revoked API key, whether it said hello or
    /// not, and refuses the key's sockets from now on.
    pub fn close_sessions_of_key(&self, key_id: &str) -> usize {
        self.gate.revoke(key_id, &key_revoked())
    }

    /// Deregisters a server and releases its id (any API key may register
    /// it next), audited: the store changes first, then its session is
    /// closed (4005) — on a cluster by the node it is connected to. False
    /// when the hub (the cluster) knows neither the server nor a binding
    /// of its id.
    pub async fn deregister(
        &self,
        actor: &crate::catalog::Actor,
        server_id: &str,
    ) -> anyhow::Result<bool> {
        let elsewhere = if self.in_cluster() {
            self.game_server(server_id)
                .await?
                .filter(|s| s.node.is_some())
        } else {
            None
        };
        let known = self.registry.read_then(server_id, |_| ()).is_some() || elsewhere.is_some();
        let mut tx = self.store.begin().await?;
        let released = server_bindings::release(&mut tx, server_id).await?;
        let stored = store_hub::delete_game_servers(&mut tx, &[server_id.to_owned()]).await?;
        if !known && !released && !stored {
            return Ok(false);
        }
        let connected = self.registry.read_then(server_id, |r| r.connected) == Some(true)
            || elsewhere.is_some();
        crate::store::audit::record(
            &mut tx,
            actor.audit_entry(
                "game-server.deregister",
                format!("game-servers/{server_id}"),
                serde_json::json!({ "connected": connected, "idReleased": released }),
            ),
        )
        .await?;
        tx.commit().await?;
        self.forget_server(server_id);
        self.announce_server_gone(server_id);
        Ok(true)
    }

    /// Closes a deregistered server's session here, if it has one (4005),
    /// and forgets it.
    pub(super) fn forget_server(&self, server_id: &str) -> bool {
        let known = self.registry.remove(
            server_id,
            CloseReason::new(
                close_code::DEREGISTERED,
                "an admin deregistered this server and released its id",
            ),
        );
        lock(&self.first_seen).remove(server_id);
        lock(&self.dirty).remove(server_id);
        known.is_some()
    }

    /// Replaces a server's operator tags: `None` when the hub (the
    /// cluster) does not know it. On a cluster the stored row changes too
    /// and every node takes them, so they follow the server wherever it
    /// connects.
    pub async fn set_operator_tags(
        &self,
        server_id: &str,
        tags: Vec<String>,
    ) -> StoreResult<Option<KnownServer>> {
        let Some(mut known) = self.game_server(server_id).await? else {
            return Ok(None);
        };
        {
            // Stored first (a server not stored yet gets them with its row).
            let mut conn = self.store.conn().await?;
            store_hub::set_operator_tags(
                &mut conn,
                server_id,
                &serde_json::to_string(&tags).expect("tags serialize"),
            )
            .await?;
        }
        self.take_operator_tags(server_id, tags.clone());
        self.announce_server_tags(server_id, &tags);
        known.record.operator_tags = tags;
        Ok(Some(known))
    }

    /// Operator tags set (here or on another node): the registry's record
    /// takes them.
    pub(super) fn take_operator_tags(&self, server_id: &str, tags: Vec<String>) {
        self.registry.set_operator_tags(server_id, tags);
    }

    /// Servers matching `filter`, by id: this hub's alone; on a cluster,
    /// every node's connected servers and every stored one besides.
    pub async fn list_servers(&self, filter: &ServerFilter) -> StoreResult<ServerList> {
        if !self.in_cluster() {
            return Ok(ServerList {
                items: self
                    .registry
                    .list(filter)
                    .into_iter()
                    .map(|record| KnownServer { record, node: None })
                    .collect(),
                connected: self.registry.connected_count(),
                partial: false,
            });
        }
        let whole = self.cluster_servers().await;
        let items: Vec<KnownServer> = whole
            .items
            .iter()
            .filter(|s| filter.matches(&s.record))
            .cloned()
            .collect();
        Ok(ServerList {
            items,
            connected: whole.connected,
            partial: whole.partial,
        })
    }

    /// The whole cluster's servers by id, worked out anew: the stored ones
    /// (none if the store cannot be read: the list is then partial),
    /// overlaid with this node's registry (a disconnected record only if
    /// it is not older than the stored row) and every other node's roster.
    pub(super) async fn merge_cluster_servers(&self) -> ServerList {
        let stored = async {
            let mut conn = self.store.conn().await?;
            store_hub::game_servers(&mut conn).await
        }
        .await;
        let (stored, store_read) = match stored {
            Ok(rows) => (rows, true),
            Err(error) => {
                tracing::warn!(%error, "stored servers not read; the list is partial");
                (Vec::new(), false)
            }
        };
        let (peers, partial) = self.peer_servers().await;
        let node = self.node_id().map(str::to_owned);
        let mut all: HashMap<String, KnownServer> = HashMap::with_capacity(stored.len());
        for row in stored {
            let record = record_of_row(row);
            all.insert(record.server_id.clone(), KnownServer { record, node: None });
        }
        self.registry.visit(|record, connected| {
            let newer = connected
                || all
                    .get(&record.server_id)
                    .is_none_or(|s| s.record.last_seen_ms <= record.last_seen_ms);
            if newer {
                all.insert(
                    record.server_id.clone(),
                    KnownServer {
                        record: record.clone(),
                        node: connected.then(|| node.clone()).flatten(),
                    },
                );
            }
        });
        for (peer, record) in peers {
            let take = match all.get(&record.server_id) {
                None => true,
                // Connected here too (it just moved): this node's is newer
                // than a roster up to a second old.
                Some(known) if known.record.connected && known.node == node => false,
                Some(known) if known.record.connected => {
                    known.record.connected_since_ms < record.connected_since_ms
                }
                Some(_) => true,
            };
            if take {
                all.insert(
                    record.server_id.clone(),
                    KnownServer {
                        record,
                        node: Some(peer),
                    },
                );
            }
        }
        let connected = all.values().filter(|s| s.record.connected).count();
        let mut items: Vec<KnownServer> = all.into_values().collect();
        items.sort_by(|a, b| a.record.server_id.cmp(&b.record.server_id));
        ServerList {
            items,
            connected,
            partial: partial || !store_read,
        }
    }

    /// On a cluster, the stored operator tags of a server connecting here
    /// from elsewhere (they may have been set while it was connected to
    /// another node, and a message saying so may have been lost); `None`
    /// alone, for a server still connected here, for one not stored, or
    /// when the store cannot say (the record keeps what this node knew).
    pub(super) async fn stored_operator_tags(&self, server_id: &str) -> Option<Vec<String>> {
        // A session replacing one still open here keeps this node's
        // record; a server coming from elsewhere (or new here) is read.
        if !self.in_cluster() || self.registry.read_then(server_id, |r| r.connected) == Some(true) {
            return None;
        }
        let row = async {
            let mut conn = self.store.conn().await?;
            store_hub::game_server(&mut conn, server_id).await
        }
        .await;
        match row {
            Ok(row) => row.and_then(|r| serde_json::from_str(&r.operator_tags).ok()),
            Err(error) => {
                tracing::warn!(%error, "a server's stored operator tags not read");
                None
            }
        }
    }

    /// Stored servers counted by (region, environment).
    pub async fn stored_server_counts(&self) -> StoreResult<Vec<(String, String, i64)>> {
        let mut conn = self.store.conn().await?;
        store_hub::server_counts(&mut conn).await
    }

    /// One server: connected here, else to another node, else as this
    /// node or the store knows it.
    pub async fn game_server(&self, server_id: &str) -> StoreResult<Option<KnownServer>> {
        let node = self.node_id().map(str::to_owned);
        let local = self.registry.get(server_id);
        if let Some(record) = local.as_ref().filter(|r| r.connected) {
            return Ok(Some(KnownServer {
                record: record.clone(),
                node,
            }));
        }
        if !self.in_cluster() {
            return Ok(local.map(|record| KnownServer { record, node: None }));
        }
        if let Some((peer, record)) = self.peer_server(server_id).await {
            return Ok(Some(KnownServer {
                record,
                node: Some(peer),
            }));
        }
        if let Some(record) = local {
            return Ok(Some(KnownServer { record, node: None }));
        }
        let mut conn = self.store.conn().await?;
        Ok(store_hub::game_server(&mut conn, server_id)
            .await?
            .map(|row| KnownServer {
                record: record_of_row(row),
                node: None,
            }))
    }
}
