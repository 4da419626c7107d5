//! Every known game server: identity, health, subscriptions and the
//! revision of each config it has acked, plus the outbox of each connected
//! one. Indexed by subscription, so a deployment finds "the servers
//! subscribed to `weapon-balance`" without scanning the world, then filters
//! that set by region, environment, tags and health.
//!
//! A plain `RwLock` rather than an actor: reads (REST, targeting) vastly
//! outnumber writes and must not queue behind a mailbox; every lock is held
//! for a few map operations only, never across an await or a socket write.

use crate::outbox::{CloseReason, Outbox};
use hotswap_client::protocol::Health;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, RwLock},
};

/// What the hub knows of one game server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerRecord {
    pub server_id: String,
    pub key_id: String,
    pub region: String,
    pub environment: String,
    /// Tags the server reported in `hello`.
    pub tags: Vec<String>,
    /// Tags an operator set through the API; they survive reconnects.
    pub operator_tags: Vec<String>,
    pub capacity: u32,
    pub players: u32,
    pub status: Health,
    pub load: Option<f64>,
    pub hostname: Option<String>,
    pub address: Option<String>,
    pub build: Option<String>,
    pub sdk: Option<String>,
    /// Asked for the live-ops definitions in its `hello`.
    pub liveops: bool,
    pub subscriptions: Vec<String>,
    /// Config name → revision the server acked.
    pub applied: BTreeMap<String, i64>,
    pub connected: bool,
    pub session_id: Option<String>,
    pub connected_since_ms: Option<i64>,
    pub last_seen_ms: i64,
    /// Set when the hub closed the session for silence.
    pub stale: bool,
    /// Why the hub closed the last session (`4003: ...`), if it did.
    pub disconnect_reason: Option<String>,
    pub metrics_frames: u64,
    /// When this session's last metrics report was counted: a report
    /// weighs at most the time since (or since the session began).
    pub last_metrics_ms: Option<i64>,
}

impl ServerRecord {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags
            .iter()
            .chain(&self.operator_tags)
            .any(|t| t == tag)
    }
}

/// Filters of `GET /game-servers`; `None` matches everything.
#[derive(Debug, Default, Clone)]
pub struct ServerFilter {
    pub region: Option<String>,
    pub environment: Option<String>,
    pub tag: Option<String>,
    /// Connected and reporting `healthy`.
    pub healthy: Option<bool>,
    pub config: Option<String>,
    /// With `config`: the acked revision of that config.
    pub revision: Option<i64>,
    pub connected: Option<bool>,
}

impl ServerFilter {
    pub fn matches(&self, record: &ServerRecord) -> bool {
        let healthy = record.connected && record.status == Health::Healthy;
        self.region
            .as_ref()
            .is_none_or(|r| r.eq_ignore_ascii_case(&record.region))
            && self
                .environment
                .as_ref()
                .is_none_or(|e| *e == record.environment)
            && self.tag.as_ref().is_none_or(|t| record.has_tag(t))
            && self.healthy.is_none_or(|h| h == healthy)
            && self.connected.is_none_or(|c| c == record.connected)
            && self
                .config
                .as_ref()
                .is_none_or(|c| record.subscriptions.contains(c))
            && self.revision.is_none_or(|revision| {
                self.config
                    .as_ref()
                    .is_some_and(|c| record.applied.get(c) == Some(&revision))
            })
    }
}

/// A connected server a frame can go to (what fan-out needs, nothing more:
/// the `keep` filter of [`Registry::targets`] sees the whole record).
#[derive(Debug, Clone)]
pub struct ConnectedTarget {
    /// Shared with the registry: a fan-out to 10,000 servers copies no id.
    pub server_id: Arc<str>,
    /// The revision of the config in question the server acked, if any.
    pub applied: Option<i64>,
    pub outbox: Outbox,
}

struct Entry {
    id: Arc<str>,
    record: ServerRecord,
    outbox: Option<Outbox>,
    /// Its running state moved since the last [`Registry::take_progressed`].
    progressed: bool,
}

fn gone(entry: &Entry, before_ms: i64) -> bool {
    !entry.record.connected && entry.record.last_seen_ms < before_ms
}

/// Entries live in slots; the subscription index holds slot numbers, so a
/// fan-out walks a config's servers without hashing (and comparing) an id
/// per server.
#[derive(Default)]
struct Inner {
    /// Server id (the entry's own, shared) → its slot in `slots`.
    index: HashMap<Arc<str>, usize, ahash::RandomState>,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// Config name → slots of the servers subscribed to it (connected or not).
    by_config: HashMap<String, BTreeSet<usize>, ahash::RandomState>,
    /// Slots whose entry was marked `progressed` (a slot may repeat, or
    /// hold another server by now: the flag says).
    progressed: Vec<usize>,
}

impl Inner {
    fn get(&self, server_id: &str) -> Option<&Entry> {
        self.slots[*self.index.get(server_id)?].as_ref()
    }

    fn get_mut(&mut self, server_id: &str) -> Option<&mut Entry> {
        let slot = *self.index.get(server_id)?;
        self.slots[slot].as_mut()
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().flatten()
    }

    /// The servers subscribed to `config`.
    fn subscribed(&self, config: &str) -> impl Iterator<Item = &Entry> {
        self.by_config
            .get(config)
            .into_iter()
            .flatten()
            .filter_map(|slot| self.slots[*slot].as_ref())
    }

    /// Stores a server not in the registry, indexed by its subscriptions;
    /// `listed` is a slot already in `progressed` (a replaced session's):
    /// a noted entry back in it is not listed twice.
    fn insert(
        &mut self,
        record: ServerRecord,
        outbox: Option<Outbox>,
        progressed: bool,
        listed: Option<usize>,
    ) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        for config in &record.subscriptions {
            self.by_config
                .entry(config.clone())
                .or_default()
                .insert(slot);
        }
        let id: Arc<str> = Arc::from(record.server_id.as_str());
        self.index.insert(id.clone(), slot);
        self.slots[slot] = Some(Entry {
            id,
            record,
            outbox,
            progressed,
        });
        if progressed && listed != Some(slot) {
            self.progressed.push(slot);
        }
    }

    /// Takes a server out, with its index entries (and empty index entries).
    fn take(&mut self, server_id: &str) -> Option<Entry> {
        let slot = self.index.remove(server_id)?;
        let entry = self.slots[slot].take()?;
        for config in &entry.record.subscriptions {
            if let Some(set) = self.by_config.get_mut(config) {
                set.remove(&slot);
                if set.is_empty() {
                    self.by_config.remove(config);
                }
            }
        }
        self.free.push(slot);
        Some(entry)
    }
}

#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("servers", &self.read().index.len())
            .finish()
    }
}

impl Registry {
    // A poisoned lock only means a panic elsewhere mid-update of plain maps; keep serving.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        hotswap_client::sync::read(&self.inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        hotswap_client::sync::write(&self.inner)
    }

    /// Loads servers known from a previous run, as disconnected.
    pub fn restore(&self, records: Vec<ServerRecord>) {
        let mut inner = self.write();
        for mut record in records {
            if inner.index.contains_key(record.server_id.as_str()) {
                continue;
            }
            record.connected = false;
            record.session_id = None;
            inner.insert(record, None, false, None);
        }
    }

    /// Registers a connected session; returns the outbox of a session it
    /// replaces (same `serverId`), which the caller closes. Operator tags
    /// and the per-config revisions of a known server are kept.
    pub fn connect(&self, mut record: ServerRecord, outbox: Outbox) -> Option<Outbox> {
        let mut inner = self.write();
        let slot = inner.index.get(record.server_id.as_str()).copied();
        let previous = inner.take(&record.server_id);
        if let Some(previous) = &previous {
            record.operator_tags = previous.record.operator_tags.clone();
        }
        record.connected = true;
        record.stale = false;
        record.disconnect_reason = None;
        let progressed = previous.as_ref().is_some_and(|p| p.progressed);
        inner.insert(
            record,
            Some(outbox),
            progressed,
            slot.filter(|_| progressed),
        );
        previous.and_then(|p| p.outbox)
    }

    /// Marks a session gone, if it is still the server's current session.
    pub fn disconnect(
        &self,
        server_id: &str,
        session_id: &str,
        stale: bool,
        reason: Option<String>,
        now_ms: i64,
    ) -> bool {
        let mut inner = self.write();
        match inner.get_mut(server_id) {
            Some(entry) if entry.record.session_id.as_deref() == Some(session_id) => {
                entry.record.connected = false;
                entry.record.stale = stale;
                entry.record.disconnect_reason = reason;
                entry.record.last_seen_ms = now_ms;
                entry.outbox = None;
                true
            }
            _ => false,
        }
    }

    /// Applies `change` to a server's record (heartbeats, acks, metrics counts).
    pub fn update(&self, server_id: &str, change: impl FnOnce(&mut ServerRecord)) -> bool {
        self.update_then(server_id, change).is_some()
    }

    /// Changes a record and returns what `read` takes from it, under one
    /// lock (the metric path counts a frame and reads what it needs at once).
    pub fn update_then<R>(
        &self,
        server_id: &str,
        change: impl FnOnce(&mut ServerRecord) -> R,
    ) -> Option<R> {
        self.write()
            .get_mut(server_id)
            .map(|entry| change(&mut entry.record))
    }

    /// [`Registry::update_then`] for a server's running state (acks,
    /// heartbeats): when `change` answers `true` beside its result, the
    /// server is noted for [`Registry::take_progressed`] under the same
    /// lock, with no set of the caller's to lock and hash an id into per
    /// frame.
    pub fn progress_then<R>(
        &self,
        server_id: &str,
        change: impl FnOnce(&mut ServerRecord) -> (R, bool),
    ) -> Option<R> {
        let mut guard = self.write();
        let inner = &mut *guard;
        let slot = *inner.index.get(server_id)?;
        let entry = inner.slots[slot].as_mut()?;
        let (answer, moved) = change(&mut entry.record);
        if moved && !entry.progressed {
            entry.progressed = true;
            inner.progressed.push(slot);
        }
        Some(answer)
    }

    /// The servers noted by [`Registry::progress_then`] since the last
    /// call, once each (those forgotten since are not).
    pub fn take_progressed(&self) -> Vec<Arc<str>> {
        let mut inner = self.write();
        // Drained in place: the list keeps its room for the next second's.
        let Inner {
            progressed, slots, ..
        } = &mut *inner;
        let mut ids = Vec::with_capacity(progressed.len());
        for slot in progressed.drain(..) {
            if let Some(entry) = slots[slot].as_mut().filter(|e| e.progressed) {
                entry.progressed = false;
                ids.push(entry.id.clone());
            }
        }
        ids
    }

    /// What `read` takes from a server's record, without copying the rest.
    pub fn read_then<R>(
        &self,
        server_id: &str,
        read: impl FnOnce(&ServerRecord) -> R,
    ) -> Option<R> {
        self.read().get(server_id).map(|e| read(&e.record))
    }

    /// What `read` takes from each of `server_ids`' records (the known
    /// ones, in order), under one read lock.
    pub fn read_each<'a, R>(
        &self,
        server_ids: impl IntoIterator<Item = &'a str>,
        mut read: impl FnMut(&ServerRecord) -> R,
    ) -> Vec<R> {
        let inner = self.read();
        server_ids
            .into_iter()
            .filter_map(|id| inner.get(id).map(|e| read(&e.record)))
            .collect()
    }

    /// Visits every connected server subscribed to `config` under one read
    /// lock, copying nothing (cohort counts over the whole fleet).
    pub fn for_each_connected(&self, config: &str, mut visit: impl FnMut(&ServerRecord)) {
        let inner = self.read();
        for entry in inner.subscribed(config).filter(|e| e.outbox.is_some()) {
            visit(&entry.record);
        }
    }

    pub fn get(&self, server_id: &str) -> Option<ServerRecord> {
        self.read().get(server_id).map(|e| e.record.clone())
    }

    /// Records matching `filter`, by server id.
    pub fn list(&self, filter: &ServerFilter) -> Vec<ServerRecord> {
        let inner = self.read();
        let matching = |e: &&Entry| filter.matches(&e.record);
        let mut out: Vec<ServerRecord> = match &filter.config {
            // Use the subscription index rather than every server.
            Some(config) => inner
                .subscribed(config)
                .filter(matching)
                .map(|e| e.record.clone())
                .collect(),
            None => inner
                .entries()
                .filter(matching)
                .map(|e| e.record.clone())
                .collect(),
        };
        out.sort_by(|a, b| a.server_id.cmp(&b.server_id));
        out
    }

    /// Connected servers subscribed to `config` that pass `keep`.
    pub fn targets(
        &self,
        config: &str,
        keep: impl Fn(&ServerRecord) -> bool,
    ) -> Vec<ConnectedTarget> {
        self.targets_with(config, |record| keep(record).then_some(()))
            .into_iter()
            .map(|(target, ())| target)
            .collect()
    }

    /// Connected servers subscribed to `config` for which `pick` says
    /// something, with what it said (one pass under the read lock).
    pub fn targets_with<T>(
        &self,
        config: &str,
        pick: impl Fn(&ServerRecord) -> Option<T>,
    ) -> Vec<(ConnectedTarget, T)> {
        let inner = self.read();
        inner
            .subscribed(config)
            .filter_map(|e| {
                let outbox = e.outbox.as_ref()?;
                let picked = pick(&e.record)?;
                Some((
                    ConnectedTarget {
                        server_id: e.id.clone(),
                        applied: e.record.applied.get(config).copied(),
                        outbox: outbox.clone(),
                    },
                    picked,
                ))
            })
            .collect()
    }

    /// Visits, under one read lock, the connected servers subscribed to
    /// `config` from slot `from` on, at most `limit` of them, in slot
    /// order: each with its shared id, record and outbox. Returns where
    /// the next pass starts, `None` once every one was visited. A fan-out
    /// walks a fleet a slice at a time, so frames leave (and acks land,
    /// they need the write lock) while it goes on; a server that joins
    /// meanwhile gets its frame from its `hello`. A `limit` of 0 is taken
    /// as 1 (a walk always moves on).
    pub fn visit_connected(
        &self,
        config: &str,
        from: usize,
        limit: usize,
        mut visit: impl FnMut(&Arc<str>, &ServerRecord, &Outbox),
    ) -> Option<usize> {
        let limit = limit.max(1);
        let inner = self.read();
        let slots = inner.by_config.get(config)?;
        let mut visited = 0;
        for &slot in slots.range(from..) {
            if visited == limit {
                return Some(slot);
            }
            let Some(entry) = inner.slots[slot].as_ref() else {
                continue;
            };
            if let Some(outbox) = &entry.outbox {
                visited += 1;
                visit(&entry.id, &entry.record, outbox);
            }
        }
        None
    }

    /// Sets operator tags; false for an unknown server.
    pub fn set_operator_tags(&self, server_id: &str, tags: Vec<String>) -> bool {
        self.update(server_id, |record| record.operator_tags = tags)
    }

    /// Forgets a server, closing its session; its record is returned.
    pub fn remove(&self, server_id: &str, reason: CloseReason) -> Option<ServerRecord> {
        let entry = self.write().take(server_id)?;
        if let Some(outbox) = entry.outbox {
            outbox.close(reason);
        }
        Some(entry.record)
    }

    /// The outboxes of connected servers that pass `keep` (one pass under
    /// the read lock).
    pub fn connected_where(&self, keep: impl Fn(&ServerRecord) -> bool) -> Vec<Outbox> {
        self.read()
            .entries()
            .filter(|e| keep(&e.record))
            .filter_map(|e| e.outbox.clone())
            .collect()
    }

    /// Every connected server's outbox (shutdown).
    pub fn all_outboxes(&self) -> Vec<Outbox> {
        self.read()
            .entries()
            .filter_map(|e| e.outbox.clone())
            .collect()
    }

    /// Ids of disconnected servers not seen since `before_ms`.
    pub fn stale_candidates(&self, before_ms: i64) -> Vec<String> {
        self.read()
            .entries()
            .filter(|e| gone(e, before_ms))
            .map(|e| e.record.server_id.clone())
            .collect()
    }

    /// Removes those of `candidates` still disconnected and not seen since
    /// `before_ms` (a server that reconnected meanwhile stays); returns
    /// their ids.
    pub fn prune_disconnected(&self, before_ms: i64, candidates: &[String]) -> Vec<String> {
        let mut inner = self.write();
        let mut pruned = Vec::new();
        for id in candidates {
            if inner.get(id).is_some_and(|e| gone(e, before_ms)) {
                inner.take(id);
                pruned.push(id.clone());
            }
        }
        pruned
    }

    /// Known servers (connected or not) of `environment` that last acked
    /// `revision` of `config`.
    pub fn holding(&self, config: &str, environment: &str, revision: i64) -> Vec<Arc<str>> {
        self.read()
            .subscribed(config)
            .filter(|e| {
                e.record.environment == environment
                    && e.record.applied.get(config) == Some(&revision)
            })
            .map(|e| e.id.clone())
            .collect()
    }

    /// The distinct regions of known servers.
    pub fn regions(&self) -> std::collections::HashSet<String> {
        self.read()
            .entries()
            .map(|e| e.record.region.clone())
            .collect()
    }

    pub fn connected_count(&self) -> usize {
        self.read().entries().filter(|e| e.outbox.is_some()).count()
    }

    /// Visits every known server under the read lock, without a copy
    /// (keep `visit` short: hellos wait for the lock).
    pub fn visit(&self, mut visit: impl FnMut(&ServerRecord, bool)) {
        for entry in self.read().entries() {
            visit(&entry.record, entry.outbox.is_some());
        }
    }

    /// The fleet in one pass: servers known, connected, connected and
    /// healthy, and the players on connected servers.
    pub fn fleet(&self) -> Fleet {
        let inner = self.read();
        let mut fleet = Fleet::default();
        for entry in inner.entries() {
            fleet.known += 1;
            if entry.outbox.is_some() {
                fleet.connected += 1;
                fleet.players += u64::from(entry.record.players);
                if entry.record.status == Health::Healthy {
                    fleet.healthy += 1;
                }
            }
        }
        fleet
    }
}

/// A summary of the fleet (see [`Registry::fleet`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fleet {
    pub known: u64,
    pub connected: u64,
    pub healthy: u64,
    pub players: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, configs: &[&str]) -> ServerRecord {
        ServerRecord {
            server_id: id.to_owned(),
            key_id: "key".into(),
            region: "EU-WEST".into(),
            environment: "staging".into(),
            tags: Vec::new(),
            operator_tags: Vec::new(),
            capacity: 100,
            players: 0,
            status: Health::Healthy,
            load: None,
            hostname: None,
            address: None,
            build: None,
            sdk: None,
            liveops: false,
            subscriptions: configs.iter().map(|c| (*c).to_owned()).collect(),
            applied: BTreeMap::new(),
            connected: false,
            session_id: Some(format!("{id}-session")),
            connected_since_ms: None,
            last_seen_ms: 0,
            stale: false,
            disconnect_reason: None,
            metrics_frames: 0,
            last_metrics_ms: None,
        }
    }

    fn ids(targets: &[ConnectedTarget]) -> Vec<&str> {
        let mut ids: Vec<&str> = targets.iter().map(|t| &*t.server_id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_walk_in_slices_visits_every_connected_server_once() {
        let registry = Registry::default();
        for i in 0..10 {
            let (outbox, _) = Outbox::channel(4);
            registry.connect(record(&format!("s{i}"), &["loot"]), outbox);
        }
        let (outbox, _) = Outbox::channel(4);
        registry.connect(record("other", &["maps"]), outbox);
        assert!(registry.disconnect("s3", "s3-session", false, None, 1));
        registry.remove("s7", CloseReason::new(1000, "gone"));

        let walk = |limit: usize| {
            let mut slices: Vec<Vec<String>> = Vec::new();
            let mut next = Some(0);
            while let Some(from) = next {
                let mut slice = Vec::new();
                next = registry.visit_connected("loot", from, limit, |id, record, _| {
                    assert_eq!(&**id, record.server_id);
                    slice.push(id.to_string());
                });
                slices.push(slice);
                assert!(slices.len() <= 20, "the walk moves on");
            }
            slices
        };
        // A disconnected or removed server takes no place in a slice.
        assert_eq!(
            walk(3),
            [
                vec!["s0", "s1", "s2"],
                vec!["s4", "s5", "s6"],
                vec!["s8", "s9"]
            ]
        );
        assert_eq!(walk(8).concat(), walk(3).concat());
        assert_eq!(walk(0).len(), 8, "a limit of 0 is taken as 1");
        // A server that joins between slices, in a slot not yet walked (the
        // one s7 freed), is visited by the walk under way.
        let mut next = registry.visit_connected("loot", 0, 3, |_, _, _| {});
        let (outbox, _) = Outbox::channel(4);
        registry.connect(record("late", &["loot"]), outbox);
        let mut rest = Vec::new();
        while let Some(from) = next {
            next = registry.visit_connected("loot", from, 3, |id, _, _| rest.push(id.to_string()));
        }
        assert_eq!(rest, ["s4", "s5", "s6", "late", "s8", "s9"]);
        assert_eq!(registry.visit_connected("none", 0, 3, |_, _, _| {}), None);
    }

    #[test]
    fn targets_follow_subscriptions_through_reconnects_and_removals() {
        let registry = Registry::default();
        for id in ["a", "b", "c"] {
            let (outbox, _) = Outbox::channel(4);
            registry.connect(record(id, &["loot"]), outbox);
        }
        let (outbox, _) = Outbox::channel(4);
        registry.connect(record("d", &["maps"]), outbox);
        assert_eq!(ids(&registry.targets("loot", |_| true)), ["a", "b", "c"]);
        assert_eq!(ids(&registry.targets("maps", |_| true)), ["d"]);

        // A reconnect with other subscriptions moves the server in the index.
        let (outbox, _) = Outbox::channel(4);
        registry.set_operator_tags("b", vec!["pool".into()]);
        let replaced = registry.connect(record("b", &["maps"]), outbox);
        assert!(replaced.is_some(), "the old session's outbox comes back");
        assert_eq!(ids(&registry.targets("loot", |_| true)), ["a", "c"]);
        assert_eq!(ids(&registry.targets("maps", |_| true)), ["b", "d"]);
        assert_eq!(registry.get("b").unwrap().operator_tags, ["pool"], "kept");

        // A removed server's slot is reused without leaking into other configs.
        registry
            .remove("a", CloseReason::new(4000, "gone"))
            .unwrap();
        assert_eq!(ids(&registry.targets("loot", |_| true)), ["c"]);
        let (outbox, _) = Outbox::channel(4);
        registry.connect(record("e", &["maps"]), outbox);
        assert_eq!(ids(&registry.targets("loot", |_| true)), ["c"]);
        assert_eq!(ids(&registry.targets("maps", |_| true)), ["b", "d", "e"]);
        assert!(registry.get("a").is_none());
        assert_eq!(registry.connected_count(), 4);
    }

    #[test]
    fn read_each_reads_the_known_servers_in_the_order_asked() {
        let registry = Registry::default();
        for id in ["a", "b", "c"] {
            let (outbox, _) = Outbox::channel(4);
            registry.connect(record(id, &["loot"]), outbox);
        }
        registry.update("b", |r| r.players = 7);
        let read = registry.read_each(["c", "gone", "b", "a"], |r| {
            (r.server_id.clone(), r.players)
        });
        assert_eq!(
            read,
            [
                ("c".to_owned(), 0),
                ("b".to_owned(), 7),
                ("a".to_owned(), 0)
            ],
            "an unknown id is skipped, the rest keep the asked order"
        );
        assert!(registry.read_each([], |r| r.players).is_empty());
    }

    #[test]
    fn disconnected_servers_are_no_targets_and_are_pruned_once_stale() {
        let registry = Registry::default();
        for id in ["a", "b"] {
            let (outbox, _) = Outbox::channel(4);
            registry.connect(record(id, &["loot"]), outbox);
        }
        assert!(registry.disconnect("a", "a-session", false, None, 1_000));
        assert!(!registry.disconnect("b", "another-session", false, None, 1_000));
        assert_eq!(ids(&registry.targets("loot", |_| true)), ["b"]);
        let listed = registry.list(&ServerFilter {
            config: Some("loot".into()),
            ..ServerFilter::default()
        });
        assert_eq!(listed.len(), 2, "a disconnected server is still known");
        assert!(registry.stale_candidates(500).is_empty(), "seen at 1000");
        let candidates = registry.stale_candidates(2_000);
        assert_eq!(candidates, ["a"]);
        assert_eq!(registry.prune_disconnected(2_000, &candidates), ["a"]);
        assert!(registry.get("a").is_none());
        assert_eq!(
            registry
                .list(&ServerFilter {
                    config: Some("loot".into()),
                    ..ServerFilter::default()
                })
                .len(),
            1
        );
        // Restored records never replace a live one.
        registry.restore(vec![record("b", &["loot"]), record("z", &["loot"])]);
        assert!(registry.get("b").unwrap().connected);
        assert!(!registry.get("z").unwrap().connected);
        assert_eq!(ids(&registry.targets("loot", |_| true)), ["b"]);
    }

    #[test]
    fn progressed_servers_are_taken_once_each_and_forgotten_ones_not() {
        let registry = Registry::default();
        for id in ["a", "b", "c"] {
            let (outbox, _) = Outbox::channel(4);
            registry.connect(record(id, &["loot"]), outbox);
        }
        let taken = |registry: &Registry| {
            let mut ids: Vec<String> = registry
                .take_progressed()
                .iter()
                .map(|id| id.to_string())
                .collect();
            ids.sort();
            ids
        };
        let beat = |id: &str, moved: bool| {
            registry.progress_then(id, |record| {
                record.players += 1;
                (record.players, moved)
            })
        };
        assert_eq!(beat("a", true), Some(1));
        assert_eq!(beat("a", true), Some(2));
        assert_eq!(beat("b", false), Some(1), "changed, but not noted");
        assert_eq!(beat("c", true), Some(1));
        assert_eq!(beat("nobody", true), None);
        assert_eq!(taken(&registry), ["a", "c"]);
        assert!(taken(&registry).is_empty(), "taken once");

        // A reconnect keeps what was noted; a forgotten server is not
        // taken, nor is the server that got its slot unless it moved too.
        beat("a", true);
        beat("b", true);
        for _ in 0..100 {
            let (outbox, _) = Outbox::channel(4);
            registry.connect(record("a", &["loot"]), outbox);
        }
        assert_eq!(
            registry.read().progressed.len(),
            2,
            "a server reconnecting in a loop is listed once"
        );
        registry.remove("b", CloseReason::new(1000, "gone"));
        let (outbox, _) = Outbox::channel(4);
        registry.connect(record("d", &["loot"]), outbox);
        assert_eq!(taken(&registry), ["a"]);
        beat("d", true);
        assert_eq!(taken(&registry), ["d"]);
        assert_eq!(
            registry.get("a").unwrap().players,
            0,
            "a new session's record"
        );
    }
}
