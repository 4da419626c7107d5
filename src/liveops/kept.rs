//! Players' kept attributes (`firstSeen`, `lastSeen`, `sessions`,
//! `purchases`, which telemetry keeps in `players`) added to a lookup's
//! attributes when a segment in use reads one of them and the caller gave
//! none: segments such as `new-players` then work from the hub's own
//! record. Held in memory — loaded at start-up (the players seen last) and
//! updated by every telemetry write — so a lookup never waits on the store.

use super::{Definitions, LiveOps, PlayerRequest};
use crate::store::telemetry::PlayerRow;
use hotswap_client::sync::{read, write};
use serde_json::Value;
use std::{borrow::Cow, collections::HashMap};

/// The attributes telemetry keeps, as segment rules name them.
pub const KEPT: [&str; 4] = ["firstSeen", "lastSeen", "sessions", "purchases"];
/// Players held, at most (the hub is sized for 1,000,000): past it only
/// players already held are updated.
pub(super) const KEPT_PLAYERS: usize = 1_000_000;

/// Players' kept attributes by id: first seen, last seen (Unix ms),
/// sessions, purchases.
pub(super) type KeptMap = HashMap<String, [i64; 4]>;

/// Whether a segment that events or running experiments name reads a
/// kept attribute (worked out when the definitions change).
pub(super) fn reads_kept(definitions: &Definitions) -> bool {
    let book = &definitions.book;
    let events = definitions
        .events
        .values()
        .flat_map(|e| e.spec.audience.segments.iter());
    let experiments = definitions
        .experiments
        .values()
        .filter(|e| e.status == crate::domain::experiments::spec::Status::Running)
        .flat_map(|e| e.spec.audience.segments.iter());
    events
        .chain(experiments)
        .any(|segment| book.reads_any(segment, &KEPT))
}

/// Folds rows into the map; order does not matter (first seen is the
/// least, the rest only grow), so two writers may report in any order.
pub(super) fn fold(map: &mut KeptMap, rows: &[PlayerRow]) {
    for row in rows {
        let values = [row.first_seen, row.last_seen, row.sessions, row.purchases];
        let room = map.len() < KEPT_PLAYERS;
        match map.get_mut(&row.player_id) {
            Some(kept) => {
                kept[0] = kept[0].min(values[0]);
                for (kept, value) in kept.iter_mut().zip(values).skip(1) {
                    *kept = (*kept).max(value);
                }
            }
            None if room => {
                map.insert(row.player_id.clone(), values);
            }
            None => {}
        }
    }
}

impl LiveOps {
    /// Telemetry stored these players' kept attributes.
    pub fn note_kept(&self, rows: &[PlayerRow]) {
        if !rows.is_empty() {
            fold(&mut write(&self.kept), rows);
        }
    }

    /// `player` with its kept attributes, when a segment in use reads them
    /// and the caller named none of them (a caller's own values win).
    pub fn with_kept<'a>(
        &self,
        definitions: &Definitions,
        player: &'a PlayerRequest,
    ) -> Cow<'a, PlayerRequest> {
        if !definitions.reads_kept || KEPT.iter().any(|k| player.attributes.contains_key(*k)) {
            return Cow::Borrowed(player);
        }
        let Some(values) = read(&self.kept).get(&player.player_id).copied() else {
            return Cow::Borrowed(player);
        };
        let mut enriched = player.clone();
        for (key, value) in KEPT.iter().zip(values) {
            enriched
                .attributes
                .insert((*key).to_owned(), Value::from(value));
        }
        Cow::Owned(enriched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, first: i64, last: i64, sessions: i64) -> PlayerRow {
        PlayerRow {
            player_id: id.into(),
            first_seen: first,
            last_seen: last,
            sessions,
            purchases: 0,
        }
    }

    #[test]
    fn folding_in_any_order_keeps_the_newest_standing() {
        let (older, newer) = (row("p", 10, 20, 1), row("p", 10, 40, 3));
        let mut one = KeptMap::new();
        fold(&mut one, &[older.clone(), newer.clone()]);
        let mut other = KeptMap::new();
        fold(&mut other, &[newer, older]);
        assert_eq!(one, other);
        assert_eq!(one["p"], [10, 40, 3, 0]);
    }
}
