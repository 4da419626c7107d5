//! Who gets which variant. A player's variant is its unit's: deterministic
//! from the unit's bucket and the weights (`domain::experiments::assign`),
//! unless the unit is pinned to the variant it first got before the
//! weights changed. The first assignment of each player is stored (the
//! sticky record results count units from), queued on the request path
//! and written in batches by one task; a full queue skips the write and a
//! later lookup queues it again.

use super::{ExperimentEntry, LiveOps, LiveOpsError, LiveOpsResult, views::AssignmentView};
use crate::{
    domain::{
        experiments::{
            assign,
            spec::{ExperimentSpec, Status},
        },
        resolution::PlayerRef,
    },
    liveops::PlayerRequest,
    store::{Store, experiments as store},
};
use hotswap_client::sync::lock;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::{mpsc, oneshot};

/// Assignments queued for the writer, at most.
const QUEUE: usize = 65_536;
/// Rows one write takes, at most.
const WRITE_ROWS: usize = 2_000;
/// Rows kept for a retry after a failed write, at most.
const RETRY_ROWS: usize = 100_000;

enum Job {
    Row(store::AssignmentRow),
    /// Answered with whether everything queued before it is written.
    Flush(oneshot::Sender<bool>),
}

/// The players whose first assignment is stored or queued, per experiment
/// id (hashes of their ids), and the queue to the writer.
pub struct Assignments {
    recorded: Arc<Mutex<HashMap<String, HashSet<u64>>>>,
    queue: mpsc::Sender<Job>,
}

fn player_hash(player_id: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    player_id.hash(&mut hasher);
    hasher.finish()
}

impl std::fmt::Debug for Assignments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assignments").finish_non_exhaustive()
    }
}

impl Assignments {
    /// Starts the writer (on the current runtime).
    pub fn start(store: Store, flush_every: Duration) -> Assignments {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let recorded = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(write_loop(store, jobs, recorded.clone(), flush_every));
        Assignments { recorded, queue }
    }

    /// Marks the players already stored for an experiment (start-up).
    pub fn load(&self, experiment_id: &str, players: &[String]) {
        let mut recorded = lock(&self.recorded);
        let set = recorded.entry(experiment_id.to_owned()).or_default();
        set.extend(players.iter().map(|p| player_hash(p)));
    }

    /// Forgets a finished experiment's players (its rows stay stored).
    pub fn forget(&self, experiment_id: &str) {
        lock(&self.recorded).remove(experiment_id);
    }

    /// Queues a player's first assignment unless it is stored or queued.
    pub fn note(
        &self,
        experiment_id: &str,
        player_id: &str,
        unit: &str,
        variant: &str,
        at_ms: i64,
    ) {
        let hash = player_hash(player_id);
        {
            let mut recorded = lock(&self.recorded);
            let set = recorded.entry(experiment_id.to_owned()).or_default();
            if !set.insert(hash) {
                return;
            }
        }
        let row = store::AssignmentRow {
            experiment_id: experiment_id.to_owned(),
            player_id: player_id.to_owned(),
            unit: unit.to_owned(),
            variant: variant.to_owned(),
            assigned_at: at_ms,
        };
        if self.queue.try_send(Job::Row(row)).is_err() {
            // Full (or stopped): not recorded; the next lookup queues it.
            if let Some(set) = lock(&self.recorded).get_mut(experiment_id) {
                set.remove(&hash);
            }
        }
    }

    /// Waits until everything queued before the call is written; false
    /// when a write failed (its rows wait for a retry) or the writer is
    /// gone.
    pub async fn flush(&self) -> bool {
        let (done, written) = oneshot::channel();
        if self.queue.send(Job::Flush(done)).await.is_err() {
            return false;
        }
        written.await.unwrap_or(false)
    }
}

async fn write_loop(
    store: Store,
    mut jobs: mpsc::Receiver<Job>,
    recorded: Arc<Mutex<HashMap<String, HashSet<u64>>>>,
    flush_every: Duration,
) {
    let mut pending: Vec<store::AssignmentRow> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<bool>> = Vec::new();
    let mut tick = tokio::time::interval(flush_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let write_now = tokio::select! {
            job = jobs.recv() => match job {
                Some(Job::Row(row)) => {
                    pending.push(row);
                    pending.len() >= WRITE_ROWS
                }
                Some(Job::Flush(done)) => {
                    waiting.push(done);
                    true
                }
                None => {
                    write(&store, &mut pending, &recorded).await;
                    return;
                }
            },
            _ = tick.tick() => !pending.is_empty(),
        };
        if write_now {
            while !pending.is_empty() {
                let before = pending.len();
                write(&store, &mut pending, &recorded).await;
                if pending.len() >= before {
                    break;
                }
            }
            let written = pending.is_empty();
            for done in waiting.drain(..) {
                let _ = done.send(written);
            }
        }
    }
}

/// Writes up to [`WRITE_ROWS`] of `pending`; on failure keeps them for the
/// next tick (at most [`RETRY_ROWS`]: past it the oldest are forgotten, and
/// queued again by a later lookup).
async fn write(
    store: &Store,
    pending: &mut Vec<store::AssignmentRow>,
    recorded: &Mutex<HashMap<String, HashSet<u64>>>,
) {
    if pending.is_empty() {
        return;
    }
    let take = pending.len().min(WRITE_ROWS);
    let batch: Vec<store::AssignmentRow> = pending.drain(..take).collect();
    let result = async {
        let mut tx = store.begin().await?;
        store::insert_assignments(&mut tx, &batch).await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        Ok::<(), crate::store::StoreError>(())
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, rows = batch.len(), "experiment assignments not written; retried");
        let mut kept = batch;
        kept.append(pending);
        if kept.len() > RETRY_ROWS {
            let forgotten: Vec<store::AssignmentRow> =
                kept.drain(..kept.len() - RETRY_ROWS).collect();
            let mut recorded = lock(recorded);
            for row in forgotten {
                if let Some(set) = recorded.get_mut(&row.experiment_id) {
                    set.remove(&player_hash(&row.player_id));
                }
            }
        }
        *pending = kept;
    }
}

impl LiveOps {
    /// The experiment running on `config` and the variant `player` gets
    /// at `at_ms` (its index), recording the player's first assignment
    /// as made at `record` (an instant of the hub's real clock, which
    /// telemetry's event times are compared with) when given.
    pub(crate) fn variant_for(
        &self,
        definitions: &super::super::Definitions,
        player: &PlayerRequest,
        config: &str,
        at_ms: i64,
        record: Option<i64>,
    ) -> Option<(Arc<ExperimentEntry>, usize)> {
        let entry = definitions
            .experiments
            .values()
            .find(|e| e.status == Status::Running && e.spec.config.as_str() == config)?;
        let who = PlayerRef {
            id: &player.player_id,
            attributes: &player.attributes,
        };
        let (index, unit) = entry
            .definition
            .variant_for(who, at_ms, &definitions.book)?;
        if let Some(assigned_at) = record {
            self.assignments.note(
                &entry.id,
                &player.player_id,
                &unit,
                &entry.spec.variants[index].id,
                assigned_at,
            );
        }
        Some((entry.clone(), index))
    }

    /// The studios' `experiments/assignments`: every running experiment
    /// the player is in, its variant and the variant's parameters (its
    /// patch). Each is recorded as the player's first assignment.
    pub fn assignments_for(&self, player: &PlayerRequest) -> Vec<AssignmentView> {
        let definitions = self.definitions();
        let player = self.with_kept(&definitions, player);
        let player = player.as_ref();
        let now = self.now_ms();
        let mut configs: Vec<&str> = definitions
            .experiments
            .values()
            .filter(|e| e.status == Status::Running)
            .map(|e| e.spec.config.as_str())
            .collect();
        configs.sort_unstable();
        configs.dedup();
        configs
            .into_iter()
            .filter_map(|config| {
                let (entry, index) = self.variant_for(
                    &definitions,
                    player,
                    config,
                    now,
                    Some(crate::store::now_ms()),
                )?;
                let variant = &entry.spec.variants[index];
                Some(AssignmentView {
                    experiment_id: entry.name().to_owned(),
                    variant_id: variant.id.clone(),
                    config: config.to_owned(),
                    parameters: variant.patch.clone(),
                })
            })
            .collect()
    }

    /// A player sent telemetry: in each running experiment whose unit is
    /// the player and whose audience the batch's attributes (platform,
    /// versions) place it in, that is an exposure, recorded as its first
    /// assignment (a player resolved only by its game server is counted
    /// this way), dated from the batch's earliest event (not before the
    /// experiment started, not after now) so that the batch's own events
    /// count toward its metrics.
    pub fn note_exposure(
        &self,
        player_id: &str,
        envelope: &crate::domain::telemetry::Envelope,
        vouched: Option<&serde_json::Map<String, serde_json::Value>>,
        earliest_event_ms: i64,
    ) {
        let definitions = self.definitions();
        if !definitions
            .experiments
            .values()
            .any(|e| e.status == Status::Running && e.spec.unit == "player")
        {
            return;
        }
        let mut attributes = serde_json::Map::new();
        for (key, value) in [
            ("platform", &envelope.platform),
            ("clientVersion", &envelope.client_version),
            ("contentVersion", &envelope.content_version),
        ] {
            if let Some(value) = value {
                attributes.insert(key.into(), serde_json::Value::String(value.clone()));
            }
        }
        // What a player's token vouches for outranks its envelope.
        for (key, value) in vouched.into_iter().flatten() {
            attributes.insert(key.clone(), value.clone());
        }
        let player = PlayerRequest {
            player_id: player_id.to_owned(),
            attributes,
        };
        let now = self.now_ms();
        let real_now = crate::store::now_ms();
        for entry in definitions
            .experiments
            .values()
            .filter(|e| e.status == Status::Running && e.spec.unit == "player")
        {
            let since = earliest_event_ms
                .min(real_now)
                .max(entry.started_at.unwrap_or(i64::MIN));
            let _ = self.variant_for(
                &definitions,
                &player,
                entry.spec.config.as_str(),
                now,
                Some(since),
            );
        }
    }

    /// Units whose first variant is not where `next`'s weights place them
    /// (written assignments first, so none queued is missed); refused past
    /// `max_pins`.
    pub(super) async fn pins_for(
        &self,
        current: &ExperimentEntry,
        next: &ExperimentSpec,
    ) -> LiveOpsResult<BTreeMap<String, String>> {
        // Pins are worked out from every stored assignment: one still
        // waiting for its write would be missed, and its player moved.
        if !self.assignments.flush().await {
            return Err(crate::store::StoreError::Unavailable(sqlx::Error::PoolTimedOut).into());
        }
        let mut conn = self.store.conn().await?;
        let units = store::unit_variants(&mut conn, &current.id).await?;
        drop(conn);
        let pins = pins_of(next, units);
        if pins.len() > self.settings.max_pins {
            return Err(LiveOpsError::InvalidTransition {
                state: current.status.name(),
                reason: format!(
                    "these weights would move {} units already assigned; at most {} may be pinned \
                     to their first variant (liveops.max_pins): finish this experiment and start another",
                    pins.len(),
                    self.settings.max_pins
                ),
            });
        }
        Ok(pins)
    }
}

/// The pins of `spec` given each unit's first variant.
pub(in crate::liveops) fn pins_of(
    spec: &ExperimentSpec,
    units: Vec<(String, String)>,
) -> BTreeMap<String, String> {
    let weights = spec.weights();
    units
        .into_iter()
        .filter(|(unit, variant)| {
            assign(spec.name.as_str(), unit, &weights)
                .is_none_or(|index| spec.variants[index].id != *variant)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_units_the_new_weights_would_move_are_pinned() {
        let spec = |weights: [u32; 2]| {
            ExperimentSpec::parse(&json!({
                "name": "x", "config": "c",
                "variants": [
                    {"id": "a", "weight": weights[0], "patch": {}},
                    {"id": "b", "weight": weights[1], "patch": {"k": 1}}
                ]
            }))
            .unwrap()
        };
        let before = spec([50, 50]);
        let units: Vec<(String, String)> = (0..2_000)
            .map(|u| {
                let unit = format!("p{u}");
                let index = assign("x", &unit, &before.weights()).unwrap();
                (unit, before.variants[index].id.clone())
            })
            .collect();
        assert!(
            pins_of(&before, units.clone()).is_empty(),
            "same weights, no pins"
        );
        let after = spec([90, 10]);
        let pins = pins_of(&after, units.clone());
        // About 40 % of units move from b to a: those are pinned to b.
        assert!((600..1000).contains(&pins.len()), "{}", pins.len());
        assert!(pins.values().all(|v| v == "b"));
    }
}
