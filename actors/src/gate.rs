//! [`SessionGate`]: admission of game-server sockets. It counts every open
//! socket from its upgrade (before `hello`), in all and per API key, and
//! refuses new ones past the caps before any upgrade happens. It also knows
//! every open socket of each key, so revoking a key closes all of them,
//! whether they said `hello` yet or not, and it remembers revoked keys, so
//! a socket upgraded just before a revocation cannot say `hello` after it.
//!
//! A plain mutex: it is taken once per upgrade, once per closed socket and
//! once per revocation, never on a frame's path.

use crate::outbox::{CloseReason, Outbox};
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

/// The caps of a [`SessionGate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    /// Open sockets on this node, hello or not.
    pub max_sessions: usize,
    /// Open sockets of one API key.
    pub max_sessions_per_key: usize,
}

/// Why a socket is not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The node holds `max_sessions` sockets.
    Full { limit: usize },
    /// The key holds `max_sessions_per_key` sockets.
    KeyFull { limit: usize },
    /// The key was revoked.
    Revoked,
}

#[derive(Debug, Default)]
struct Inner {
    open: usize,
    next_permit: u64,
    /// Key id → its open sockets (permit number → outbox, once attached).
    keys: HashMap<Arc<str>, HashMap<u64, Option<Outbox>>>,
    revoked: HashSet<String>,
}

#[derive(Debug)]
pub struct SessionGate {
    limits: GateLimits,
    inner: Mutex<Inner>,
}

/// One admitted socket. Dropping it (with the session) frees its place.
#[derive(Debug)]
pub struct SessionPermit {
    gate: Arc<SessionGate>,
    key_id: Arc<str>,
    number: u64,
}

impl SessionGate {
    pub fn new(limits: GateLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-update of plain maps.
        hotswap_client::sync::lock(&self.inner)
    }

    pub fn limits(&self) -> GateLimits {
        self.limits
    }

    /// Takes a place for a socket of `key_id`, or says why there is none.
    pub fn admit(self: &Arc<Self>, key_id: &str) -> Result<SessionPermit, Refused> {
        let mut inner = self.lock();
        if inner.revoked.contains(key_id) {
            return Err(Refused::Revoked);
        }
        if inner.open >= self.limits.max_sessions {
            return Err(Refused::Full {
                limit: self.limits.max_sessions,
            });
        }
        let held = inner.keys.get(key_id).map_or(0, HashMap::len);
        if held >= self.limits.max_sessions_per_key {
            return Err(Refused::KeyFull {
                limit: self.limits.max_sessions_per_key,
            });
        }
        inner.open += 1;
        inner.next_permit += 1;
        let number = inner.next_permit;
        let key = match inner.keys.get_key_value(key_id) {
            Some((key, _)) => key.clone(),
            None => Arc::from(key_id),
        };
        inner
            .keys
            .entry(key.clone())
            .or_default()
            .insert(number, None);
        Ok(SessionPermit {
            gate: self.clone(),
            key_id: key,
            number,
        })
    }

    /// Revokes a key: its open sockets are closed with `reason` (those
    /// admitted but not attached yet are closed as they attach), and it is
    /// admitted no more. Returns how many sockets were closed.
    pub fn revoke(&self, key_id: &str, reason: &CloseReason) -> usize {
        let mut inner = self.lock();
        inner.revoked.insert(key_id.to_owned());
        inner
            .keys
            .get(key_id)
            .into_iter()
            .flat_map(|sockets| sockets.values().flatten())
            .map(|outbox| outbox.close(reason.clone()))
            .count()
    }

    /// Keys revoked before this node started (loaded from the store).
    pub fn restore_revoked(&self, key_ids: impl IntoIterator<Item = String>) {
        self.lock().revoked.extend(key_ids);
    }

    pub fn is_revoked(&self, key_id: &str) -> bool {
        self.lock().revoked.contains(key_id)
    }

    /// Sockets open now, hello or not.
    pub fn open(&self) -> usize {
        self.lock().open
    }

    /// Sockets of one key open now.
    pub fn open_for(&self, key_id: &str) -> usize {
        self.lock().keys.get(key_id).map_or(0, HashMap::len)
    }
}

impl SessionPermit {
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Records the socket's outbox, so a revocation can close it. False
    /// (and the outbox closed with `reason`) when the key was revoked
    /// between the admission and now.
    pub fn attach(&self, outbox: &Outbox, revoked: &CloseReason) -> bool {
        let mut inner = self.gate.lock();
        if inner.revoked.contains(&*self.key_id) {
            drop(inner);
            outbox.close(revoked.clone());
            return false;
        }
        if let Some(slot) = inner
            .keys
            .get_mut(&self.key_id)
            .and_then(|sockets| sockets.get_mut(&self.number))
        {
            *slot = Some(outbox.clone());
        }
        true
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut inner = self.gate.lock();
        inner.open = inner.open.saturating_sub(1);
        if let Some(sockets) = inner.keys.get_mut(&self.key_id) {
            sockets.remove(&self.number);
            if sockets.is_empty() {
                inner.keys.remove(&self.key_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(total: usize, per_key: usize) -> Arc<SessionGate> {
        SessionGate::new(GateLimits {
            max_sessions: total,
            max_sessions_per_key: per_key,
        })
    }

    #[test]
    fn caps_count_in_all_and_per_key_and_free_places_on_drop() {
        let gate = gate(3, 2);
        let a1 = gate.admit("a").unwrap();
        let _a2 = gate.admit("a").unwrap();
        assert_eq!(gate.admit("a").unwrap_err(), Refused::KeyFull { limit: 2 });
        let _b1 = gate.admit("b").unwrap();
        assert_eq!(gate.admit("c").unwrap_err(), Refused::Full { limit: 3 });
        assert_eq!((gate.open(), gate.open_for("a")), (3, 2));
        drop(a1);
        assert_eq!((gate.open(), gate.open_for("a")), (2, 1));
        assert!(gate.admit("a").is_ok(), "its place is free again");
    }

    #[test]
    fn revoking_closes_every_socket_of_the_key_attached_or_not() {
        let gate = gate(10, 10);
        let reason = CloseReason::new(4004, "revoked");
        let attached = gate.admit("k").unwrap();
        let (outbox, _receiver) = Outbox::channel(4);
        assert!(attached.attach(&outbox, &reason));
        let not_yet = gate.admit("k").unwrap();
        let other = gate.admit("other").unwrap();
        let (other_outbox, _other_receiver) = Outbox::channel(4);
        assert!(other.attach(&other_outbox, &reason));

        assert_eq!(gate.revoke("k", &reason), 1);
        assert_eq!(outbox.close_reason(), Some(reason.clone()));
        // Admitted before the revocation, attached after it: closed at once.
        let (late, _late_receiver) = Outbox::channel(4);
        assert!(!not_yet.attach(&late, &reason));
        assert_eq!(late.close_reason(), Some(reason.clone()));
        assert_eq!(gate.admit("k").unwrap_err(), Refused::Revoked);
        assert!(gate.is_revoked("k"));
        assert_eq!(
            other_outbox.close_reason(),
            None,
            "other keys are untouched"
        );
    }
}
