//! Players' kept attributes (`firstSeen`, `lastSeen`, `sessions`,
//! `purchases`, which telemetry keeps in `players`) added to a lookup's
//! attributes when a segment in use reads one of them and the caller gave
//! none: segments such as `new-players` then work from the hub's own
//! record. Read through a short-lived cache, so a lookup waits on the
//! store at most once per player per `KEPT_TTL_MS`.

use super::{Definitions, LiveOps, LiveOpsResult, PlayerRequest};
use crate::store::telemetry as store;
use hotswap_client::sync::lock;
use serde_json::Value;
use std::borrow::Cow;

/// The attributes telemetry keeps, as segment rules name them.
pub const KEPT: [&str; 4] = ["firstSeen", "lastSeen", "sessions", "purchases"];
/// How long a player's kept attributes are reused.
const KEPT_TTL_MS: i64 = 30_000;
/// Players cached, at most; past it the cache starts over.
pub(super) const KEPT_CACHED: usize = 100_000;

/// A player's kept attributes as cached: none when telemetry never saw
/// the player.
pub(super) type Cached = (Option<[i64; 4]>, i64);

/// Whether a segment that running events or experiments name reads a
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

impl LiveOps {
    /// `player` with its kept attributes, when a segment in use reads them
    /// and the caller named none of them (a caller's own values win).
    pub async fn with_kept<'a>(
        &self,
        definitions: &Definitions,
        player: &'a PlayerRequest,
    ) -> LiveOpsResult<Cow<'a, PlayerRequest>> {
        if !definitions.reads_kept || KEPT.iter().any(|k| player.attributes.contains_key(*k)) {
            return Ok(Cow::Borrowed(player));
        }
        let now = crate::store::now_ms();
        let cached = lock(&self.kept)
            .get(&player.player_id)
            .filter(|(_, at)| now - at < KEPT_TTL_MS)
            .map(|(row, _)| *row);
        let row = match cached {
            Some(row) => row,
            None => {
                let mut conn = self.store.conn().await?;
                let row = store::player(&mut conn, &player.player_id)
                    .await?
                    .map(|r| [r.first_seen, r.last_seen, r.sessions, r.purchases]);
                let mut kept = lock(&self.kept);
                if kept.len() >= KEPT_CACHED {
                    kept.clear();
                }
                kept.insert(player.player_id.clone(), (row, now));
                row
            }
        };
        let Some(values) = row else {
            return Ok(Cow::Borrowed(player));
        };
        let mut enriched = player.clone();
        for (key, value) in KEPT.iter().zip(values) {
            enriched
                .attributes
                .insert((*key).to_owned(), Value::from(value));
        }
        Ok(Cow::Owned(enriched))
    }
}
