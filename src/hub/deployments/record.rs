//! The in-memory record of a deployment this hub drives: per server, the
//! revision it was sent and whether it acked; the status its actor last
//! published; the deployments kept in memory.

use super::{
    parts::{ServerMap, ServerProgress, Tally},
    views::{DeploymentView, LiveStatus, ServerProgressView, ServerState, view},
};
use crate::{
    domain::rollout::DeploymentState,
    store::{hub as store_hub, now_ms},
};
use hotswap_client::sync::lock;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// A deployment's per-server progress, locked for one slice of a
/// reconcile (taken under the registry's lock; the slice's frames leave
/// once it is released).
pub(in crate::hub) struct Claims<'a> {
    servers: std::sync::MutexGuard<'a, ServerMap>,
    at_ms: i64,
    /// The record's change count, moved when a pass that changed
    /// something ends.
    changes: &'a std::sync::atomic::AtomicU64,
    changed: bool,
    moved_from: Option<i64>,
}

impl Drop for Claims<'_> {
    fn drop(&mut self) {
        if self.changed {
            self.changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Claims<'_> {
    /// Claims the push of `revision` to `server_id`: false when a frame
    /// carrying it is already on its way or the server has acked it (a
    /// registry read taken before that ack landed must not send it twice);
    /// else registers the push (before the frame leaves, so an early ack
    /// cannot be overwritten by its own registration) and returns true.
    pub fn claim(&mut self, server_id: &Arc<str>, revision: i64) -> bool {
        let claimed = claim(
            &mut self.servers,
            server_id,
            || server_id.clone(),
            revision,
            self.at_ms,
        );
        self.changed |= claimed;
        claimed
    }

    /// Whether the deployment has sent this server anything.
    pub fn tracks(&self, server_id: &str) -> bool {
        self.servers.contains_key(server_id)
    }

    /// The revision whose servers the deployment tracks as it moves them,
    /// sent anything before or not (the kill switch: a new record whose
    /// servers move back from its revision by the config's active
    /// revision or the layers below, not by a layer in flight).
    pub fn moved_from(&self) -> Option<i64> {
        self.moved_from
    }

    /// The server already runs `revision`: it counts as acked.
    pub fn already_on(&mut self, server_id: &Arc<str>, revision: i64) {
        // Found on it again at each pass: a change only the first time.
        self.changed |= !self
            .servers
            .get(server_id)
            .is_some_and(|p| p.revision == revision && p.state == ServerState::Acked);
        ack(
            &mut self.servers,
            server_id,
            || server_id.clone(),
            revision,
            true,
            None,
            0,
        );
    }
}

fn claim(
    servers: &mut ServerMap,
    server_id: &str,
    key: impl FnOnce() -> Arc<str>,
    revision: i64,
    at_ms: i64,
) -> bool {
    if servers.get(server_id).is_some_and(|p| {
        p.revision == revision && matches!(p.state, ServerState::Pushed | ServerState::Acked)
    }) {
        return false;
    }
    set_pushed(servers, server_id, key, revision, at_ms);
    true
}

/// A frame carrying `revision` is on its way to `server_id` (the key is
/// made only for a server not in the map yet).
fn set_pushed(
    servers: &mut ServerMap,
    server_id: &str,
    key: impl FnOnce() -> Arc<str>,
    revision: i64,
    at_ms: i64,
) {
    servers.set(server_id, key, ServerProgress::pushed(revision, at_ms));
}

fn ack(
    servers: &mut ServerMap,
    server_id: &str,
    key: impl FnOnce() -> Arc<str>,
    revision: i64,
    ok: bool,
    error: Option<String>,
    apply_micros: u64,
) -> bool {
    match servers.get(server_id) {
        // Already known: the time of the first ack stays.
        Some(p) if p.revision == revision && p.state == ServerState::Acked && ok => {
            return true;
        }
        Some(p) if p.revision == revision => {}
        Some(_) => return false,
        None if ok => {}
        None => return false,
    }
    let part = ServerProgress {
        revision,
        state: if ok {
            ServerState::Acked
        } else {
            ServerState::Failed
        },
        error: error.filter(|_| !ok).map(|e| e.chars().take(500).collect()),
        apply_micros: Some(apply_micros),
        updated_at_ms: now_ms(),
    };
    servers.set(server_id, key, part);
    true
}

/// What another node said of a deployment this node drives.
#[derive(Debug, Default, Clone, Copy)]
struct PeerProgress {
    /// The stored state it last said it served (raised only while
    /// `complete`).
    served: i64,
    /// Its numbering, and its last message's number.
    epoch: u64,
    seq: u64,
    /// Every message since its last full one came: this record holds
    /// its servers' whole part. A node that is not is waited for.
    complete: bool,
}

/// A progress message's place in its sender's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::hub) struct Numbered {
    pub epoch: u64,
    pub seq: u64,
    /// The sender's whole part (its first chunk).
    pub full: bool,
}

/// What a node serving another's deployment last sent of one server's
/// part: (revision, state, when it moved).
pub(in crate::hub) type SentPart = (i64, ServerState, i64);

/// What an ack did to a deployment's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(in crate::hub) struct Acked {
    /// The first good ack of the frame pushed this long ago (its delivery
    /// latency), in ms.
    pub delivered_ms: Option<i64>,
    /// A good ack from the last of the servers sent a frame still to
    /// answer.
    pub last: bool,
}

/// The shared record of one deployment this hub drives.
#[derive(Debug)]
pub(in crate::hub) struct RunRecord {
    pub row: Mutex<store_hub::DeploymentRow>,
    pub live: Mutex<LiveStatus>,
    /// Only grows: a server's entry is inserted when absent and never
    /// taken out (`first_ids` relies on it).
    servers: Mutex<ServerMap>,
    /// Bumped whenever a server's part may have changed (a node serving
    /// another's deployment sends its part when this moved).
    changes: std::sync::atomic::AtomicU64,
    /// Serving another node's deployment: the stored state (its
    /// `updated_at`) this node's servers were last brought to.
    served: std::sync::atomic::AtomicI64,
    /// Driving it: per other node, what it said of the deployment.
    peers: Mutex<HashMap<String, PeerProgress>>,
    /// The view's first [`VIEW_SERVERS`] server ids, and how many servers
    /// they were picked from: `servers` only grows, so the same count is
    /// the same set (a dashboard or API polling a 10,000-server fan-out
    /// does not sort the ids on every look).
    first_ids: Mutex<(usize, Vec<Arc<str>>)>,
    /// See [`Claims::moved_from`]; [`NOT_MOVED_FROM`] when none.
    moved_from: std::sync::atomic::AtomicI64,
}

/// `RunRecord::moved_from` unset.
const NOT_MOVED_FROM: i64 = i64::MIN;

impl RunRecord {
    pub fn new(row: store_hub::DeploymentRow) -> Arc<Self> {
        Arc::new(Self {
            row: Mutex::new(row),
            live: Mutex::new(LiveStatus::default()),
            servers: Mutex::new(ServerMap::default()),
            changes: Default::default(),
            served: Default::default(),
            peers: Mutex::new(HashMap::new()),
            first_ids: Mutex::new((0, Vec::new())),
            moved_from: std::sync::atomic::AtomicI64::new(NOT_MOVED_FROM),
        })
    }

    /// This node's servers were brought to the stored state `version`.
    pub fn set_served(&self, version: i64) {
        self.served
            .store(version, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn served(&self) -> i64 {
        self.served.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Of `alive` nodes, how many have not said they served the
    /// deployment's current stored state.
    pub fn peers_behind<'a>(&self, alive: impl Iterator<Item = &'a str>) -> usize {
        let current = lock(&self.row).updated_at.unwrap_or(0);
        // A node that has not served a state this long after it was stored
        // is not waited for any more (its store link may be down): the
        // deployment goes on, and that node catches up when it can.
        if now_ms() - current > PEER_WAIT_MS {
            return 0;
        }
        let peers = lock(&self.peers);
        alive
            .filter(|node| {
                peers
                    .get(*node)
                    .is_none_or(|p| !p.complete || p.served < current)
            })
            .count()
    }

    fn changed(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A number that moves whenever a server's part may have changed.
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The servers' parts for the deployment's owner on another node:
    /// every one when `full`, else those that moved since `sent` (what was
    /// last sent, kept up to date here).
    pub fn progress_since(
        &self,
        sent: &mut HashMap<Arc<str>, SentPart>,
        full: bool,
    ) -> Vec<crate::cluster::ProgressEntry> {
        let servers = lock(&self.servers);
        let mut entries = Vec::new();
        for (id, p) in servers.iter() {
            let part = (p.revision, p.state, p.updated_at_ms);
            if !full && sent.get(id) == Some(&part) {
                continue;
            }
            sent.insert(id.clone(), part);
            entries.push(crate::cluster::ProgressEntry {
                server: id.to_string(),
                revision: p.revision,
                state: match p.state {
                    ServerState::Pushed => "pushed",
                    ServerState::Acked => "acked",
                    ServerState::Failed => "failed",
                }
                .into(),
                error: p.error.clone(),
                apply_micros: p.apply_micros,
                at: p.updated_at_ms,
            });
        }
        entries
    }

    /// Merges what another node saw of its servers: each entry replaces
    /// what this record holds of that server unless this record's is newer
    /// (a server that moved between nodes), or it would take back an ack
    /// of the same revision. `served` is credited only while this record
    /// has had every message of `from` since its last full one; a gap
    /// makes the node waited for again until its next full one (within
    /// 2 s). A message already seen, or of another numbering but not
    /// full (a replay, an old epoch), moves nothing but its entries.
    pub fn merge_remote(
        &self,
        from: &str,
        served: i64,
        entries: &[crate::cluster::ProgressEntry],
        numbered: Numbered,
    ) {
        let mut servers = lock(&self.servers);
        for entry in entries {
            let state = match entry.state.as_str() {
                "pushed" => ServerState::Pushed,
                "acked" => ServerState::Acked,
                _ => ServerState::Failed,
            };
            let progress = ServerProgress {
                revision: entry.revision,
                state,
                error: entry.error.clone(),
                apply_micros: entry.apply_micros,
                updated_at_ms: entry.at,
            };
            let keep_mine = servers.get(&entry.server).is_some_and(|mine| {
                mine.updated_at_ms > entry.at
                    || mine.revision == entry.revision
                        && mine.state == ServerState::Acked
                        && state == ServerState::Pushed
            });
            if !keep_mine {
                servers.set(&entry.server, || Arc::from(entry.server.as_str()), progress);
            }
        }
        drop(servers);
        self.changed();
        // After its servers: an owner that reads the node as done reads
        // what it did too.
        let mut peers = lock(&self.peers);
        let peer = peers.entry(from.to_owned()).or_default();
        let Numbered { epoch, seq, full } = numbered;
        if epoch != peer.epoch {
            if !full {
                return;
            }
            // A new numbering (the sender restarted, or its record is new)
            // starts its credit afresh: an old one replayed credits nothing
            // newer than it said then.
            *peer = PeerProgress {
                served,
                epoch,
                seq,
                complete: true,
            };
            return;
        }
        if seq <= peer.seq {
            return;
        }
        peer.complete = full || (peer.complete && seq == peer.seq.wrapping_add(1));
        peer.seq = seq;
        if peer.complete {
            peer.served = peer.served.max(served);
        }
    }

    pub fn row(&self) -> store_hub::DeploymentRow {
        lock(&self.row).clone()
    }

    pub fn set_row(&self, row: store_hub::DeploymentRow) {
        *lock(&self.row) = row;
    }

    pub fn set_live(&self, live: LiveStatus) {
        *lock(&self.live) = live;
    }

    pub fn live(&self) -> LiveStatus {
        lock(&self.live).clone()
    }

    /// A frame carrying `revision` went to `server_id`.
    pub fn pushed(&self, server_id: &str, revision: i64) {
        set_pushed(
            &mut lock(&self.servers),
            server_id,
            || Arc::from(server_id),
            revision,
            now_ms(),
        );
        self.changed();
    }

    /// Whether the deployment has sent this server anything.
    pub fn tracks(&self, server_id: &str) -> bool {
        lock(&self.servers).contains_key(server_id)
    }

    /// Servers sent (or found on) `revision`.
    pub fn on_revision(&self, revision: i64) -> Vec<Arc<str>> {
        lock(&self.servers)
            .iter()
            .filter(|(_, p)| p.revision == revision)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The per-server progress, locked for a pass over many servers (one
    /// lock rather than one per server).
    pub fn claims(&self) -> Claims<'_> {
        Claims {
            servers: lock(&self.servers),
            at_ms: now_ms(),
            changes: &self.changes,
            changed: false,
            moved_from: Some(self.moved_from.load(std::sync::atomic::Ordering::Relaxed))
                .filter(|r| *r != NOT_MOVED_FROM),
        }
    }

    /// From now on every server a reconcile moves off `revision` is this
    /// deployment's to track (`Claims::moved_from`).
    pub fn track_moves_from(&self, revision: i64) {
        self.moved_from
            .store(revision, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records a server's ack of `revision`. Only a target of this
    /// deployment (a server a frame went to) counts: an ack from any other
    /// server changes nothing.
    pub fn ack(
        &self,
        server_id: &str,
        revision: i64,
        ok: bool,
        error: Option<String>,
        apply_micros: u64,
    ) -> Acked {
        let mut servers = lock(&self.servers);
        let Some(was) = servers.get(server_id) else {
            return Acked::default();
        };
        let pushed_at = (ok && was.revision == revision && was.state == ServerState::Pushed)
            .then_some(was.updated_at_ms);
        let waiting = servers.tally().pushed;
        let counted = ack(
            &mut servers,
            server_id,
            || unreachable!("the server is in the map"),
            revision,
            ok,
            error,
            apply_micros,
        );
        // Only a good ack: a failed server is pushed again by the step, so
        // its answer cannot let the phase move (and must not make a failing
        // server's every answer a step).
        let last = ok && waiting > 0 && servers.tally().pushed == 0;
        drop(servers);
        self.changed();
        Acked {
            delivered_ms: pushed_at
                .filter(|_| counted)
                .map(|at| (now_ms() - at).max(0)),
            last,
        }
    }

    /// The hub found a server already on `revision` (it came back holding
    /// it): it counts as acked.
    pub fn already_on(&self, server_id: &str, revision: i64) {
        ack(
            &mut lock(&self.servers),
            server_id,
            || Arc::from(server_id),
            revision,
            true,
            None,
            0,
        );
        self.changed();
    }

    /// A server went away: what it had not acked failed.
    pub fn server_gone(&self, server_id: &str) {
        let failed = lock(&self.servers).update(server_id, |p| {
            let waiting = p.state == ServerState::Pushed;
            if waiting {
                p.state = ServerState::Failed;
                p.error = Some("disconnected before acking".into());
                p.updated_at_ms = now_ms();
            }
            waiting
        });
        if failed == Some(true) {
            self.changed();
        }
    }

    /// Whether the deployment has ended.
    pub fn finished(&self) -> bool {
        let row = lock(&self.row);
        DeploymentState::from_stored(&row.status, row.phase).is_finished()
    }

    /// How its servers stand.
    pub fn tally(&self) -> Tally {
        lock(&self.servers).tally()
    }

    /// Whether the server acked a revision of this deployment after `since_ms`.
    pub fn switched_since(&self, server_id: &str, since_ms: i64) -> bool {
        lock(&self.servers)
            .get(server_id)
            .is_some_and(|p| p.updated_at_ms > since_ms)
    }

    /// Servers still to ack, by id.
    pub fn waiting(&self) -> Vec<String> {
        let servers = lock(&self.servers);
        by_id(
            &servers,
            |p| p.state == ServerState::Pushed,
            None,
            usize::MAX,
        )
        .into_iter()
        .map(|(id, _)| id.to_owned())
        .collect()
    }

    /// The first server (by id) that failed to apply, with its error (a
    /// disconnect before acking is no failure to apply).
    pub fn first_failure(&self) -> Option<(String, Option<String>)> {
        let servers = lock(&self.servers);
        let failed = |p: &ServerProgress| {
            p.state == ServerState::Failed
                && p.error.as_deref() != Some("disconnected before acking")
        };
        by_id(&servers, failed, None, 1)
            .into_iter()
            .next()
            .map(|(id, p)| (id.to_owned(), p.error.clone()))
    }

    /// The deployment with its counts and its first [`VIEW_SERVERS`]
    /// servers (a fleet's worth goes through [`RunRecord::servers_page`]).
    pub fn view(&self) -> DeploymentView {
        let mut view = view(&self.row());
        let servers = lock(&self.servers);
        if !servers.is_empty() {
            let tally = servers.tally();
            (view.targets, view.pushed, view.acked, view.failed) =
                (tally.targets, tally.pushed, tally.acked, tally.failed);
        }
        {
            let mut first = lock(&self.first_ids);
            if first.0 != servers.len() {
                let ids = by_id(&servers, |_| true, None, VIEW_SERVERS)
                    .into_iter()
                    .filter_map(|(id, _)| servers.get_key_value(id).map(|(id, _)| id.clone()))
                    .collect();
                *first = (servers.len(), ids);
            }
            view.servers = first
                .1
                .iter()
                .filter_map(|id| servers.get(id).map(|p| p.view(id)))
                .collect();
        }
        drop(servers);
        view.live = Some(self.live());
        view
    }

    /// Up to `limit` servers after `after` (by id), in `state` if given, and
    /// whether more follow.
    pub fn servers_page(
        &self,
        state: Option<ServerState>,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<ServerProgressView>, bool) {
        let servers = lock(&self.servers);
        let keep = |p: &ServerProgress| state.is_none_or(|s| p.state == s);
        let mut page = by_id(&servers, keep, after, limit.saturating_add(1));
        let more = page.len() > limit;
        page.truncate(limit);
        (page.into_iter().map(|(id, p)| p.view(id)).collect(), more)
    }
}

/// The first `limit` servers by id after `after` that `keep` keeps (a
/// partial sort: linear in the servers, `limit log limit` for the page).
fn by_id<'a>(
    servers: &'a ServerMap,
    keep: impl Fn(&ServerProgress) -> bool,
    after: Option<&str>,
    limit: usize,
) -> Vec<(&'a str, &'a ServerProgress)> {
    let mut matching: Vec<(&str, &ServerProgress)> = servers
        .iter()
        .map(|(id, p)| (&**id, p))
        .filter(|(id, p)| after.is_none_or(|after| *id > after) && keep(p))
        .collect();
    if matching.len() > limit && limit > 0 {
        matching.select_nth_unstable_by(limit - 1, |a, b| a.0.cmp(b.0));
    }
    matching.truncate(limit);
    matching.sort_unstable_by(|a, b| a.0.cmp(b.0));
    matching
}

/// How long after a stored move an owner waits for the other nodes up to
/// serve it.
const PEER_WAIT_MS: i64 = 10_000;

/// Servers a deployment's view carries; the rest page through
/// `GET /deployments/{id}/servers`.
pub const VIEW_SERVERS: usize = 100;

/// Deployments this hub drives (running, and the newest finished ones).
#[derive(Debug, Default)]
pub(in crate::hub) struct Runs {
    map: Mutex<HashMap<String, Arc<RunRecord>>>,
}

/// Finished deployments kept in memory with their per-server detail.
const KEEP_FINISHED: usize = 64;

impl Runs {
    pub fn get(&self, id: &str) -> Option<Arc<RunRecord>> {
        lock(&self.map).get(id).cloned()
    }

    pub fn insert(&self, record: Arc<RunRecord>) {
        let mut map = lock(&self.map);
        let mut finished: Vec<(i64, String)> = map
            .values()
            .map(|r| r.row())
            .filter(|r| DeploymentState::from_stored(&r.status, r.phase).is_finished())
            .map(|r| (r.created_at, r.id))
            .collect();
        if finished.len() >= KEEP_FINISHED {
            finished.sort();
            for (_, id) in &finished[..finished.len() + 1 - KEEP_FINISHED] {
                map.remove(id);
            }
        }
        let id = record.row().id;
        map.insert(id, record);
    }

    pub fn remove(&self, id: &str) {
        lock(&self.map).remove(id);
    }

    /// The records of deployments not finished.
    pub fn unfinished(&self) -> Vec<Arc<RunRecord>> {
        lock(&self.map)
            .values()
            .filter(|r| !r.finished())
            .cloned()
            .collect()
    }

    /// Deployments not finished.
    pub fn running(&self) -> usize {
        lock(&self.map).values().filter(|r| !r.finished()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_is_claimed_once_and_an_ack_settles_it() {
        let mut servers = ServerMap::default();
        let id: Arc<str> = Arc::from("eu-1");
        let key = || id.clone();
        assert!(claim(&mut servers, "eu-1", key, 2, 0), "first claim");
        assert!(
            !claim(&mut servers, "eu-1", key, 2, 0),
            "already on its way"
        );
        assert!(
            Arc::ptr_eq(servers.keys().next().unwrap(), &id),
            "the id is shared, not copied"
        );
        assert!(
            !ack(&mut servers, "eu-1", key, 1, true, None, 5),
            "not waited on for 1"
        );
        assert!(ack(&mut servers, "eu-1", key, 2, true, None, 5));
        assert!(
            !claim(&mut servers, "eu-1", key, 2, 0),
            "acked: nothing to send again"
        );
        assert_eq!(
            Tally::of(servers.values()),
            Tally {
                targets: 1,
                pushed: 0,
                acked: 1,
                failed: 0
            }
        );
        // A rollback sends the previous revision: a new claim.
        assert!(claim(&mut servers, "eu-1", key, 1, 0));
        assert!(ack(
            &mut servers,
            "eu-1",
            key,
            1,
            false,
            Some("bad".into()),
            9
        ));
        assert_eq!(
            Tally::of(servers.values()),
            Tally {
                targets: 1,
                pushed: 0,
                acked: 0,
                failed: 1
            }
        );
        assert_eq!(servers["eu-1"].error.as_deref(), Some("bad"));
        // An ack from a server never pushed to (it came back on the target).
        assert!(ack(
            &mut servers,
            "na-2",
            || Arc::from("na-2"),
            1,
            true,
            None,
            0
        ));
        assert!(!ack(
            &mut servers,
            "ap-3",
            || Arc::from("ap-3"),
            1,
            false,
            None,
            0
        ));
        assert_eq!(
            Tally::of(servers.values()),
            Tally {
                targets: 2,
                pushed: 0,
                acked: 1,
                failed: 1
            }
        );
    }

    #[test]
    fn pages_of_servers_come_in_id_order() {
        let mut servers = ServerMap::default();
        for i in (0..250).rev() {
            let id = format!("s-{i:03}");
            claim(&mut servers, &id, || Arc::from(id.as_str()), 1, 0);
            if i % 3 == 0 {
                ack(&mut servers, &id, || unreachable!(), 1, true, None, 1);
            }
        }
        let ids = |page: Vec<(&str, &ServerProgress)>| -> Vec<String> {
            page.into_iter().map(|(id, _)| id.to_owned()).collect()
        };
        let expected: Vec<String> = (0..250).map(|i| format!("s-{i:03}")).collect();
        assert_eq!(ids(by_id(&servers, |_| true, None, 100)), expected[..100]);
        assert_eq!(
            ids(by_id(&servers, |_| true, Some("s-099"), 100)),
            expected[100..200]
        );
        assert_eq!(
            ids(by_id(&servers, |_| true, Some("s-199"), 100)),
            expected[200..]
        );
        assert!(by_id(&servers, |_| true, Some("s-249"), 100).is_empty());
        let acked: Vec<String> = (0..250).step_by(3).map(|i| format!("s-{i:03}")).collect();
        let only_acked = |p: &ServerProgress| p.state == ServerState::Acked;
        assert_eq!(ids(by_id(&servers, only_acked, None, 1000)), acked);
        assert_eq!(
            ids(by_id(&servers, only_acked, Some("s-100"), 2)),
            ["s-102", "s-105"]
        );
        assert!(by_id(&servers, |_| true, None, 0).is_empty());
    }

    fn record() -> Arc<RunRecord> {
        RunRecord::new(store_hub::DeploymentRow {
            id: "d-1".into(),
            config_id: "c-1".into(),
            config_name: "loot".into(),
            version: "1.0.0".into(),
            revision: 2,
            previous_revision: Some(1),
            strategy: "Direct".into(),
            environment: "staging".into(),
            status: "InProgress".into(),
            created_by: "test".into(),
            created_at: 0,
            completed_at: None,
            target_count: 0,
            acked_count: 0,
            failed_count: 0,
            spec: "{}".into(),
            phase: 0,
            phase_started_at: None,
            cover_bucket: None,
            approved_by: None,
            rollback: None,
            updated_at: Some(now_ms()),
            scoped: 0,
        })
    }

    #[test]
    fn a_views_first_servers_follow_new_servers_and_their_states() {
        let record = record();
        let shown = |record: &RunRecord| -> Vec<(String, ServerState)> {
            record
                .view()
                .servers
                .into_iter()
                .map(|s| (s.server_id, s.state))
                .collect()
        };
        for i in (100..250).rev() {
            record.pushed(&format!("s-{i:03}"), 2);
        }
        let first = shown(&record);
        assert_eq!(first.len(), VIEW_SERVERS);
        assert_eq!(first[0], ("s-100".to_owned(), ServerState::Pushed));
        assert_eq!(first[99].0, "s-199");
        // A state change shows in the next look (the ids are kept, not
        // the servers' parts).
        record.ack("s-100", 2, true, None, 7);
        assert_eq!(shown(&record)[0], ("s-100".to_owned(), ServerState::Acked));
        // A server with a lower id joining moves the list.
        record.pushed("s-050", 2);
        let moved = shown(&record);
        assert_eq!(moved[0].0, "s-050");
        assert_eq!(moved[1].0, "s-100");
        assert_eq!(moved[99].0, "s-198");
    }

    #[test]
    fn the_ack_that_leaves_nobody_waiting_says_so() {
        let record = record();
        for i in 0..3 {
            record.pushed(&format!("s-{i}"), 2);
        }
        let first = record.ack("s-0", 2, true, None, 7);
        assert!(first.delivered_ms.is_some() && !first.last);
        // A failure answers but is never last; an ack of another revision
        // does not answer.
        assert!(!record.ack("s-1", 2, false, Some("bad".into()), 0).last);
        assert_eq!(record.ack("s-2", 1, true, None, 0), Acked::default());
        let last = record.ack("s-2", 2, true, None, 0);
        assert!(last.last && last.delivered_ms.is_some());
        record.pushed("s-3", 2);
        assert!(
            !record.ack("s-3", 2, false, None, 0).last,
            "a failing last server"
        );
        // Nobody was waiting any more: a repeat, or a stranger, is not last.
        assert!(!record.ack("s-2", 2, true, None, 0).last);
        assert_eq!(record.ack("s-9", 2, true, None, 0), Acked::default());
        // A server pushed again waits again.
        record.pushed("s-0", 3);
        assert!(record.ack("s-0", 3, true, None, 0).last);
    }

    #[test]
    fn progress_goes_whole_then_as_what_moved() {
        let mirror = record();
        for i in 0..5 {
            mirror.pushed(&format!("s-{i}"), 2);
        }
        let mut sent = HashMap::new();
        assert_eq!(mirror.progress_since(&mut sent, true).len(), 5);
        assert!(mirror.progress_since(&mut sent, false).is_empty());
        mirror.ack("s-3", 2, true, None, 9);
        let moved = mirror.progress_since(&mut sent, false);
        assert_eq!(moved.len(), 1);
        assert_eq!(
            (moved[0].server.as_str(), moved[0].state.as_str()),
            ("s-3", "acked")
        );
        assert_eq!(
            mirror.progress_since(&mut sent, true).len(),
            5,
            "whole again"
        );
    }

    #[test]
    fn an_owner_credits_a_node_only_while_it_has_all_its_messages() {
        let owner = record();
        let served = owner.row().updated_at.unwrap();
        let entry = |server: &str, state: &str| crate::cluster::ProgressEntry {
            server: server.into(),
            revision: 2,
            state: state.into(),
            error: None,
            apply_micros: None,
            at: now_ms(),
        };
        let n = |seq, full| Numbered {
            epoch: 7,
            seq,
            full,
        };
        let behind = |owner: &RunRecord| owner.peers_behind(["b"].into_iter());
        assert_eq!(behind(&owner), 1, "not heard from");
        // A delta first (this owner missed the full one): not credited.
        owner.merge_remote("b", served, &[entry("s-1", "acked")], n(5, false));
        assert_eq!(behind(&owner), 1);
        // The next full one: credited.
        let both = [entry("s-1", "acked"), entry("s-2", "pushed")];
        owner.merge_remote("b", served, &both, n(6, true));
        assert_eq!(behind(&owner), 0);
        assert_eq!(owner.tally().acked, 1);
        // A later move: the contiguous delta is credited, a gap is not.
        owner.set_row(store_hub::DeploymentRow {
            updated_at: Some(served + 1),
            ..owner.row()
        });
        let moved = served + 1;
        owner.merge_remote("b", moved, &[entry("s-2", "acked")], n(8, false));
        assert_eq!(
            behind(&owner),
            1,
            "message 7 was lost: s-2's part may be old"
        );
        owner.merge_remote("b", moved, &[], n(9, false));
        assert_eq!(behind(&owner), 1, "still not whole");
        let acked = [entry("s-1", "acked"), entry("s-2", "acked")];
        owner.merge_remote("b", moved, &acked, n(10, true));
        assert_eq!(behind(&owner), 0);
        owner.merge_remote("b", moved, &[], n(11, false));
        assert_eq!(behind(&owner), 0, "contiguous");
        assert_eq!(owner.tally().acked, 2);
        // Replays: an old message of this numbering moves nothing.
        owner.merge_remote("b", moved, &[], n(4, false));
        owner.merge_remote("b", moved, &[], n(6, true));
        assert_eq!(behind(&owner), 0);
        // A gap found later takes the credit back until a full one.
        owner.merge_remote("b", moved, &[], n(13, false));
        assert_eq!(behind(&owner), 1, "message 12 was lost");
        owner.merge_remote("b", moved, &acked, n(14, true));
        assert_eq!(behind(&owner), 0);
        // A full one of another numbering replayed credits only what it
        // said then; the sender's own deltas wait for its next full one.
        let old = Numbered {
            epoch: 3,
            seq: 99,
            full: true,
        };
        owner.merge_remote("b", served, &both, old);
        assert_eq!(behind(&owner), 1, "an old numbering's full part, replayed");
        owner.merge_remote("b", moved, &[], n(15, false));
        assert_eq!(behind(&owner), 1);
        owner.merge_remote("b", moved, &acked, n(16, true));
        assert_eq!(behind(&owner), 0);
    }
}
