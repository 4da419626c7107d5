//! Each node's connected game servers, kept in Redis so that any node can
//! list the whole cluster's (`GET /game-servers`): one hash per node,
//! `{cluster.name}:servers:{node}`, a field per server whose value is the
//! server's entry as JSON sealed with the cluster's key (an entry written
//! by anyone else is refused). The node writes only what changed since its
//! last write, and renews the hash's expiry each time: a node that dies
//! leaves nothing behind for long, and readers skip nodes not heard from.

use super::{Cluster, wire};
use std::time::Duration;

/// How long a node's roster outlives its last write.
pub const ROSTER_TTL: Duration = Duration::from_secs(10);
/// The most entries read of one node's roster.
pub const MAX_ENTRIES: usize = 250_000;
/// The largest entry read.
pub const MAX_ENTRY_BYTES: usize = 64 << 10;
/// Fields per `HSET`.
const PER_COMMAND: usize = 500;

impl Cluster {
    fn roster_key(&self, node: &str) -> String {
        format!("{}:servers:{node}", self.settings.name)
    }

    /// Writes this node's changed entries (server id, JSON) and removes
    /// those of servers gone, then renews the roster's expiry: `Ok(false)`
    /// when the roster was not there to renew (Redis lost it, or this node
    /// has no server): write every entry anew next time.
    pub async fn write_roster(
        &self,
        upserts: &[(String, Vec<u8>)],
        removes: &[String],
    ) -> Result<bool, String> {
        let key = self.roster_key(&self.node);
        let mut pipe = redis::pipe();
        for chunk in upserts.chunks(PER_COMMAND) {
            let command = pipe.cmd("HSET").arg(&key);
            for (server, json) in chunk {
                command.arg(server).arg(wire::seal_bytes(&self.key, json));
            }
            command.ignore();
        }
        for chunk in removes.chunks(PER_COMMAND) {
            pipe.cmd("HDEL").arg(&key).arg(chunk).ignore();
        }
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(ROSTER_TTL.as_millis() as u64);
        let pipe = &pipe;
        let renewed: (i64,) = self
            .redis
            .query(self.redis.timeout * 4, |mut c| async move {
                pipe.query_async(&mut c).await
            })
            .await?;
        Ok(renewed.0 == 1)
    }

    /// Node `node`'s roster: each entry's JSON, checked (its seal, its
    /// size, and the roster's size before it is read).
    pub async fn read_roster(&self, node: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let key = &self.roster_key(node);
        let within = self.redis.timeout * 4;
        let length: usize = self
            .redis
            .query(within, |mut c| async move {
                redis::cmd("HLEN").arg(key).query_async(&mut c).await
            })
            .await?;
        if length > MAX_ENTRIES {
            return Err(format!("node {node}'s roster has {length} entries"));
        }
        let fields: Vec<(String, Vec<u8>)> = self
            .redis
            .query(within, |mut c| async move {
                redis::cmd("HGETALL").arg(key).query_async(&mut c).await
            })
            .await?;
        Ok(fields
            .into_iter()
            .filter_map(|(server, value)| Some((server, self.open_entry(&value)?)))
            .collect())
    }

    /// One entry of node `node`'s roster, if it has the server.
    pub async fn read_roster_entry(
        &self,
        node: &str,
        server: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        let key = &self.roster_key(node);
        let value: Option<Vec<u8>> = self
            .redis
            .query(self.redis.timeout * 4, |mut c| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg(server)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(value.and_then(|v| self.open_entry(&v)))
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), String> {
        self.redis.ping().await
    }

    fn open_entry(&self, value: &[u8]) -> Option<Vec<u8>> {
        if value.len() > MAX_ENTRY_BYTES {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        match wire::open_bytes(&self.key, value) {
            Ok(json) => Some(json.to_vec()),
            Err(why) => {
                self.refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%why, "refused a roster entry");
                None
            }
        }
    }
}
