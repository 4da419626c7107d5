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
/// The most bytes read of one node's roster (10,000 entries are about
/// 8 MB).
pub const MAX_ROSTER_BYTES: usize = 64 << 20;
/// The largest entry read (one is under 2 KiB).
pub const MAX_ENTRY_BYTES: usize = 16 << 10;
/// Entries per `HSCAN` step.
const SCAN_COUNT: usize = 1_000;
/// Fields per `HSET`.
const PER_COMMAND: usize = 500;

impl Cluster {
    fn roster_key(&self, node: &str) -> String {
        format!("{}:servers:{node}", self.settings.name)
    }

    /// The key roster entries are sealed with (not the messages' own).
    fn roster_seal(&self) -> [u8; 32] {
        wire::derive(&self.key, "hotswap roster entry")
    }

    /// Writes this node's changed entries (server id, JSON) and removes
    /// those of servers gone, then renews the roster's expiry: `Ok(false)`
    /// when the roster was not there before this write (Redis lost it, or
    /// this node had no server): write every entry anew next time.
    pub async fn write_roster(
        &self,
        upserts: &[(String, Vec<u8>)],
        removes: &[String],
    ) -> Result<bool, String> {
        let key = self.roster_key(&self.node);
        let seal = self.roster_seal();
        let mut pipe = redis::pipe();
        // Whether the roster was there, before this write recreates it.
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(ROSTER_TTL.as_millis() as u64);
        for chunk in upserts.chunks(PER_COMMAND) {
            let command = pipe.cmd("HSET").arg(&key);
            for (server, json) in chunk {
                command.arg(server).arg(wire::seal_bytes(&seal, json));
            }
            command.ignore();
        }
        for chunk in removes.chunks(PER_COMMAND) {
            pipe.cmd("HDEL").arg(&key).arg(chunk).ignore();
        }
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(ROSTER_TTL.as_millis() as u64)
            .ignore();
        let pipe = &pipe;
        let renewed: (i64,) = self
            .redis
            .query_bulk(self.redis.timeout * 4, |mut c| async move {
                pipe.query_async(&mut c).await
            })
            .await?;
        Ok(renewed.0 == 1)
    }

    /// Node `node`'s roster: each entry's JSON, checked (its seal and
    /// size), read in steps within a budget of bytes.
    pub async fn read_roster(&self, node: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let key = &self.roster_key(node);
        let within = self.redis.timeout * 4;
        let mut cursor: u64 = 0;
        let mut bytes = 0;
        let mut entries = Vec::new();
        loop {
            let (next, fields): (u64, Vec<(String, Vec<u8>)>) = self
                .redis
                .query_bulk(within, |mut c| async move {
                    redis::cmd("HSCAN")
                        .arg(key)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            for (server, value) in fields {
                bytes += server.len() + value.len();
                if bytes > MAX_ROSTER_BYTES {
                    return Err(format!(
                        "node {node}'s roster is past {MAX_ROSTER_BYTES} bytes"
                    ));
                }
                if let Some(json) = self.open_entry(&value) {
                    entries.push((server, json));
                }
            }
            if next == 0 {
                return Ok(entries);
            }
            cursor = next;
        }
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
            .query_bulk(self.redis.timeout * 4, |mut c| async move {
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
        match wire::open_bytes(&self.roster_seal(), value) {
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
