//! A deployment's per-server parts: per server, the revision it was sent
//! and how that went, with their tally kept as they change (a dashboard
//! polling a 10,000-server fan-out reads four counts, not 10,000 entries
//! under the lock every ack takes).

use super::views::{ServerProgressView, ServerState};
use crate::catalog::views::rfc3339;
use std::{collections::HashMap, sync::Arc};

/// One server's part in a deployment: the revision it was sent and how that went.
#[derive(Debug, Clone)]
pub(in crate::hub) struct ServerProgress {
    pub revision: i64,
    pub state: ServerState,
    pub error: Option<String>,
    pub apply_micros: Option<u64>,
    pub updated_at_ms: i64,
}

impl ServerProgress {
    /// A frame carrying `revision` is on its way, as of `at_ms`.
    pub fn pushed(revision: i64, at_ms: i64) -> Self {
        Self {
            revision,
            state: ServerState::Pushed,
            error: None,
            apply_micros: None,
            updated_at_ms: at_ms,
        }
    }

    pub fn view(&self, server_id: &str) -> ServerProgressView {
        ServerProgressView {
            server_id: server_id.to_owned(),
            revision: self.revision,
            state: self.state,
            error: self.error.clone(),
            apply_micros: self.apply_micros,
            updated_at: rfc3339(self.updated_at_ms),
        }
    }
}

/// How a deployment's servers stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Servers the deployment sent a frame.
    pub targets: i64,
    /// Of those, still to ack.
    pub pushed: i64,
    pub acked: i64,
    pub failed: i64,
}

impl Tally {
    fn of_state(&mut self, state: ServerState) -> &mut i64 {
        match state {
            ServerState::Pushed => &mut self.pushed,
            ServerState::Acked => &mut self.acked,
            ServerState::Failed => &mut self.failed,
        }
    }

    /// Counted afresh (what [`ServerMap::tally`] keeps up to date).
    #[cfg(test)]
    pub fn of<'a>(servers: impl Iterator<Item = &'a ServerProgress>) -> Self {
        let mut tally = Tally::default();
        for p in servers {
            tally.targets += 1;
            *tally.of_state(p.state) += 1;
        }
        tally
    }
}

/// Per server id, its part in a deployment, and their [`Tally`]. Keys are
/// the registry's own ids (`Arc<str>`): a pass over 10,000 servers copies
/// none. Hashed, not ordered: a fan-out claims every server, the API's id
/// order is sorted out when asked for. aHash with keys random per
/// process: ids are chosen by clients, and every ack looks one up. A part
/// is never taken out (`RunRecord`'s first ids rely on it).
#[derive(Debug, Default)]
pub(in crate::hub) struct ServerMap {
    parts: HashMap<Arc<str>, ServerProgress, ahash::RandomState>,
    tally: Tally,
}

impl ServerMap {
    pub fn get(&self, server_id: &str) -> Option<&ServerProgress> {
        self.parts.get(server_id)
    }

    pub fn get_key_value(&self, server_id: &str) -> Option<(&Arc<str>, &ServerProgress)> {
        self.parts.get_key_value(server_id)
    }

    pub fn contains_key(&self, server_id: &str) -> bool {
        self.parts.contains_key(server_id)
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &ServerProgress)> {
        self.parts.iter()
    }

    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.parts.keys()
    }

    #[cfg(test)]
    pub fn values(&self) -> impl Iterator<Item = &ServerProgress> {
        self.parts.values()
    }

    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Sets a server's part (its key made only for a server new here).
    pub fn set(&mut self, server_id: &str, key: impl FnOnce() -> Arc<str>, part: ServerProgress) {
        *self.tally.of_state(part.state) += 1;
        match self.parts.get_mut(server_id) {
            Some(old) => {
                *self.tally.of_state(old.state) -= 1;
                *old = part;
            }
            None => {
                self.tally.targets += 1;
                self.parts.insert(key(), part);
            }
        }
    }

    /// Changes a server's part in place, if it has one.
    pub fn update<R>(
        &mut self,
        server_id: &str,
        change: impl FnOnce(&mut ServerProgress) -> R,
    ) -> Option<R> {
        let part = self.parts.get_mut(server_id)?;
        *self.tally.of_state(part.state) -= 1;
        let answer = change(part);
        *self.tally.of_state(part.state) += 1;
        Some(answer)
    }
}

impl std::ops::Index<&str> for ServerMap {
    type Output = ServerProgress;

    fn index(&self, server_id: &str) -> &ServerProgress {
        &self.parts[server_id]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_follows_every_change() {
        let mut servers = ServerMap::default();
        let key = |id: &'static str| move || Arc::from(id);
        let counted = |servers: &ServerMap| {
            assert_eq!(servers.tally(), Tally::of(servers.values()));
            servers.tally()
        };
        servers.set("a", key("a"), ServerProgress::pushed(2, 0));
        servers.set("b", key("b"), ServerProgress::pushed(2, 0));
        assert_eq!(
            counted(&servers),
            Tally {
                targets: 2,
                pushed: 2,
                acked: 0,
                failed: 0
            }
        );
        let acked = ServerProgress {
            state: ServerState::Acked,
            ..ServerProgress::pushed(2, 1)
        };
        servers.set("a", || unreachable!("a is known"), acked);
        assert_eq!(
            servers.update("b", |p| p.state = ServerState::Failed),
            Some(())
        );
        assert_eq!(servers.update("c", |p| p.state = ServerState::Failed), None);
        assert_eq!(
            counted(&servers),
            Tally {
                targets: 2,
                pushed: 0,
                acked: 1,
                failed: 1
            }
        );
        // A change that keeps the state keeps the counts.
        servers.update("a", |p| p.updated_at_ms = 9);
        servers.set(
            "b",
            || unreachable!("b is known"),
            ServerProgress::pushed(1, 5),
        );
        assert_eq!(
            counted(&servers),
            Tally {
                targets: 2,
                pushed: 1,
                acked: 1,
                failed: 0
            }
        );
    }
}
