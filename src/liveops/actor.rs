//! One live event's actor: the hub's [`LiveEventDriver`]. At each instant
//! its schedule names (and after each command) it works out what is in
//! force (`domain::event_progress`), commits the occurrences it starts or
//! ends and the event's new state with its audit row, and only then
//! publishes the change.

use super::{
    EventEntry, LiveOps, LiveOpsError, LiveOpsResult,
    effects::{Standing, is_server_wide},
    events::progress_row,
};
use crate::{
    catalog::Actor,
    domain::event_progress::{Control, EventState, LATE_AFTER_MS, Phase, Progress, Slot, control},
    store::{StoreError, audit, cluster::event_resource, live_ops as store},
};
use futures_util::future::LocalBoxFuture;
use hotswap_actors::{Flow, LiveEventDriver, LiveEventHandle};
use serde_json::json;
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};
use tokio::sync::oneshot;

/// Commands an event's actor takes.
pub enum Command {
    /// The definition changed (or is new): catch up now.
    Refresh {
        reply: oneshot::Sender<LiveOpsResult<()>>,
    },
    Control {
        control: Control,
        actor: Actor,
        reply: oneshot::Sender<LiveOpsResult<()>>,
    },
    Stop,
}

/// After a failed step (the store unreachable), the actor tries again this soon.
const RETRY_MS: i64 = 1_000;

pub(super) fn spawn(liveops: Arc<LiveOps>, name: String) -> LiveEventHandle<Command> {
    let clock = liveops.clock.clone();
    let resource = liveops
        .definitions()
        .events
        .get(&name)
        .map(|e| event_resource(&e.id))
        .unwrap_or_default();
    let epoch = liveops.hub.held_epoch(&resource);
    hotswap_actors::live_event::spawn(
        16,
        clock,
        EventDriver {
            liveops,
            name,
            // At once: a restarted hub catches up with the schedule.
            next: Some(i64::MIN),
            recorded: None,
            effects: None,
            made_for: HashMap::new(),
            announced: HashMap::new(),
            started: HashSet::new(),
            resource,
            epoch,
        },
    )
}

struct EventDriver {
    liveops: Arc<LiveOps>,
    name: String,
    /// The event's lease (`event:<id>`) and the epoch this actor was
    /// started under: in a cluster its writes are fenced by it, and it
    /// stops once this node no longer holds it so.
    resource: String,
    epoch: Option<i64>,
    next: Option<i64>,
    /// Occurrences started and not ended in the store: (start, region or '').
    recorded: Option<HashSet<(i64, String)>>,
    /// The deployments carrying each occurrence's server-wide overrides,
    /// until they are undone (loaded from the store first).
    effects: Option<HashMap<(i64, String), Vec<String>>>,
    /// The event revision each occurrence's deployments were made from: a
    /// revised active event's overrides are redeployed at once.
    made_for: HashMap<(i64, String), i64>,
    /// The phase each occurrence was last announced in.
    announced: HashMap<(i64, String), (Slot, Phase)>,
    /// Occurrences whose recorded deployments have all started.
    started: HashSet<(i64, String)>,
}

/// An occurrence's recorded deployments as stored: their ids, and the
/// event revision whose overrides they carry (absent in rows written
/// before it was recorded, which held the ids alone).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Recorded {
    #[serde(default)]
    revision: Option<i64>,
    ids: Vec<String>,
}

impl Recorded {
    fn parse(text: &str) -> Recorded {
        serde_json::from_str::<Recorded>(text)
            .or_else(|_| {
                serde_json::from_str::<Vec<String>>(text).map(|ids| Recorded {
                    revision: None,
                    ids,
                })
            })
            .unwrap_or_default()
    }

    fn text(revision: Option<i64>, ids: &[String]) -> String {
        serde_json::to_string(&Recorded {
            revision,
            ids: ids.to_vec(),
        })
        .expect("ids serialize")
    }
}

fn key(slot: &Slot) -> (i64, String) {
    (slot.start_ms, slot.region.clone().unwrap_or_default())
}

fn verb(control: Control) -> &'static str {
    match control {
        Control::Activate => "live-event.activate",
        Control::Pause => "live-event.pause",
        Control::Resume => "live-event.resume",
        Control::End => "live-event.end",
        Control::Cancel => "live-event.cancel",
        Control::RollBack => "live-event.rollback",
    }
}

impl EventDriver {
    /// Brings the event up to now; stops the actor once nothing is left.
    async fn step(&mut self) -> LiveOpsResult<Flow> {
        let Some(entry) = self.liveops.definitions().events.get(&self.name).cloned() else {
            self.next = None;
            self.liveops.hub.give_up_lease(&self.resource);
            return Ok(Flow::Stop);
        };
        let now = self.liveops.now_ms();
        // Alone the epoch is 0; in a cluster an actor without one could
        // never write.
        if self.epoch.is_none() || self.liveops.hub.held_epoch(&self.resource) != self.epoch {
            return Ok(self.stand_down());
        }
        if !self.liveops.hub.lease_is_current(&self.resource) {
            // Not renewed lately (this node was paused, or the store is
            // slow): nothing moves until the keeper renews it or finds it gone.
            self.next = Some(now + RETRY_MS);
            return Ok(Flow::Continue);
        }
        let recorded = match self.recorded.take() {
            Some(recorded) => recorded,
            None => {
                let mut conn = self.liveops.store.conn().await?;
                store::open_occurrences(&mut conn, &entry.id)
                    .await?
                    .into_iter()
                    .map(|row| (row.start_ms, row.region))
                    .collect()
            }
        };
        let timetable = entry.timetable();
        let in_force = timetable.in_force(&entry.progress, now);
        let state = timetable.state_at(&entry.progress, now);
        // Under way, paused or not: a pause does not end an occurrence.
        let under_way: HashSet<(i64, String)> = if state.is_terminal() {
            HashSet::new()
        } else {
            timetable
                .slots(&entry.progress, now, now.saturating_add(1))
                .iter()
                .filter(|s| s.start_ms <= now && now < s.end_ms)
                .map(key)
                .collect()
        };
        let started: Vec<&Slot> = in_force
            .iter()
            .filter(|s| !recorded.contains(&key(s)))
            .collect();
        let ended: Vec<(i64, String)> = recorded
            .iter()
            .filter(|k| !under_way.contains(*k))
            .cloned()
            .collect();
        let changed = !started.is_empty()
            || !ended.is_empty()
            || state != entry.progress.state
            || in_force != entry.applied;
        if !changed {
            self.recorded = Some(recorded);
            self.next = timetable.next_wake(&entry.progress, now);
            return self.after(now).await;
        }
        let progress = Progress {
            state,
            ..entry.progress.clone()
        };
        let late_ms = started
            .iter()
            .map(|s| now - s.start_ms)
            .filter(|late| *late > LATE_AFTER_MS)
            .max()
            .unwrap_or(0);
        let system = Actor::system();
        let mut tx = self.liveops.store.begin().await?;
        if !self.fenced(&mut tx).await? {
            return Ok(self.stand_down());
        }
        for slot in &started {
            let late = now - slot.start_ms;
            store::start_occurrence(
                &mut tx,
                &store::OccurrenceRow {
                    event_id: entry.id.clone(),
                    start_ms: slot.start_ms,
                    region: slot.region.clone().unwrap_or_default(),
                    end_ms: slot.end_ms,
                    started_at_ms: now,
                    late_ms: if late > LATE_AFTER_MS { late } else { 0 },
                    ended_at_ms: None,
                    end_reason: None,
                    deployments: "[]".into(),
                },
            )
            .await?;
        }
        let reason = match state {
            EventState::Cancelled => "cancelled",
            EventState::RolledBack => "rolledBack",
            _ => "ended",
        };
        for (start, region) in &ended {
            store::end_occurrence(&mut tx, &entry.id, *start, region, now, reason).await?;
        }
        store::save_progress(&mut tx, &entry.id, &progress_row(&progress), now).await?;
        if state != entry.progress.state || !started.is_empty() {
            audit::record(
                &mut tx,
                system.audit_entry(
                    "live-event.state",
                    format!("live-events/{}", self.name),
                    json!({
                        "from": entry.progress.state.name(),
                        "to": state.name(),
                        "started": started.iter().map(|s| json!({"startMs": s.start_ms, "region": s.region})).collect::<Vec<_>>(),
                        "ended": ended.len(),
                        "lateMs": (late_ms > 0).then_some(late_ms),
                    }),
                ),
            )
            .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.liveops.hub.announce_liveops();
        if late_ms > 0 {
            tracing::warn!(event = %self.name, late_ms, "a live event started late (the hub was down at its start, or it was created after it)");
        }
        let mut recorded = recorded;
        for k in &ended {
            recorded.remove(k);
        }
        recorded.extend(started.iter().map(|s| key(s)));
        self.recorded = Some(recorded);
        let late_ms = if in_force.is_empty() {
            0
        } else if late_ms > 0 {
            late_ms
        } else {
            entry.late_ms
        };
        self.next = timetable.next_wake(&progress, now);
        self.liveops.modify_event(&self.name, |e| {
            e.late_ms = late_ms;
            e.applied = in_force;
            e.progress = progress;
        });
        self.after(now).await
    }

    /// The effects of what was committed: each server-wide occurrence in
    /// force carried by its deployments (and those of occurrences no longer
    /// in force undone), a guardrail breach ending the event, `event`
    /// frames for phase changes. Then whether the actor goes on.
    async fn after(&mut self, now: i64) -> LiveOpsResult<Flow> {
        let Some(mut entry) = self.liveops.definitions().events.get(&self.name).cloned() else {
            return Ok(Flow::Stop);
        };
        let mut effects = match self.effects.take() {
            Some(effects) => effects,
            None => {
                let mut conn = self.liveops.store.conn().await?;
                let mut loaded = HashMap::new();
                for row in store::occurrences_with_deployments(&mut conn, &entry.id).await? {
                    let recorded = Recorded::parse(&row.deployments);
                    let k = (row.start_ms, row.region);
                    if let Some(revision) = recorded.revision {
                        self.made_for.insert(k.clone(), revision);
                    }
                    loaded.insert(k, recorded.ids);
                }
                loaded
            }
        };
        let server_wide = is_server_wide(&entry);
        // A guardrail rolled a deployment back: the event ends RolledBack
        // (committed first), then every covered server is restored.
        let mut breach = false;
        let mut withdrawn: Option<String> = None;
        for slot in entry.applied.iter().filter(|_| server_wide) {
            // Deployments of an older revision are being rolled back by the
            // actor itself: not a breach.
            let k = key(slot);
            if self.made_for.get(&k).is_some_and(|r| *r != entry.revision) {
                continue;
            }
            if let Some(ids) = effects.get(&k) {
                match self.liveops.effect_standing(ids).await {
                    Standing::Fine => {}
                    Standing::Breach => breach = true,
                    Standing::Withdrawn(id) => withdrawn = Some(id),
                }
            }
        }
        if breach && !entry.progress.state.is_terminal() {
            let progress = Progress {
                state: EventState::RolledBack,
                manual: None,
                ..entry.progress.clone()
            };
            let mut tx = self.liveops.store.begin().await?;
            if !self.fenced(&mut tx).await? {
                return Ok(self.stand_down());
            }
            store::save_progress(&mut tx, &entry.id, &progress_row(&progress), now).await?;
            audit::record(
                &mut tx,
                Actor::system().audit_entry(
                    "live-event.rollback",
                    format!("live-events/{}", self.name),
                    json!({ "from": entry.progress.state.name(), "reason": "a guardrail of its deployment breached" }),
                ),
            )
            .await?;
            tx.commit().await.map_err(StoreError::from)?;
            self.liveops.hub.announce_liveops();
            tracing::warn!(event = %self.name, "a live event's guardrail breached: the event is rolled back");
            self.liveops.modify_event(&self.name, |e| {
                e.progress = progress;
                e.applied = Vec::new();
            });
            entry = self
                .liveops
                .definitions()
                .events
                .get(&self.name)
                .cloned()
                .ok_or_else(|| LiveOpsError::EventNotFound(self.name.clone()))?;
            self.next = None;
        }
        // Servers hear the phase change first; the overrides' deployments follow.
        self.announce(&entry, now);
        let wanted: Vec<Slot> = if server_wide && !entry.progress.state.is_terminal() {
            entry.applied.clone()
        } else {
            Vec::new()
        };
        let wanted_keys: HashSet<(i64, String)> = wanted.iter().map(key).collect();
        let mut again = false;
        // An operator cancelled (or replaced) one of its deployments: the
        // event stays as it is and says its override is off servers.
        let mut failure: Option<String> = withdrawn.map(|id| {
            format!("deployment {id} of its overrides was cancelled by an operator; the override is not on servers")
        });
        let stale: Vec<((i64, String), Vec<String>)> = effects
            .iter()
            .filter(|(k, _)| {
                !wanted_keys.contains(*k)
                    || self.made_for.get(*k).is_some_and(|r| *r != entry.revision)
            })
            .map(|(k, ids)| (k.clone(), ids.clone()))
            .collect();
        let undoing: HashSet<(i64, String)> = stale.iter().map(|(k, _)| k.clone()).collect();
        for ((start, region), ids) in stale {
            // Each deployment undone is forgotten at once; the rest retry.
            let mut left = Vec::new();
            for id in ids {
                if let Err(error) = self.liveops.undo(&id).await {
                    tracing::error!(event = %self.name, deployment = %id, %error, "could not roll a live event's deployment back; retrying");
                    left.push(id);
                }
            }
            let mut conn = self.liveops.store.conn().await?;
            let revision = self.made_for.get(&(start, region.clone())).copied();
            store::set_occurrence_deployments(
                &mut conn,
                &entry.id,
                start,
                &region,
                &Recorded::text(revision, &left),
            )
            .await?;
            if left.is_empty() {
                self.made_for.remove(&(start, region.clone()));
                self.started.remove(&(start, region.clone()));
                effects.remove(&(start, region));
            } else {
                effects.insert((start, region), left);
                again = true;
            }
        }
        for slot in &wanted {
            let k = key(slot);
            if self.started.contains(&k) && effects.contains_key(&k) {
                continue;
            }
            if undoing.contains(&k) && effects.contains_key(&k) {
                // Another revision's deployments are still being undone.
                again = true;
                continue;
            }
            let ids = match effects.get(&k) {
                // Recorded, not all known to have started: a retry, or
                // recorded before the hub stopped.
                Some(ids) => ids.clone(),
                None => {
                    // The ids are recorded before the deployments start: a
                    // hub stopped in between starts them under these ids
                    // when it comes back, and none is left unrecorded.
                    let ids: Vec<String> = entry
                        .spec
                        .overrides
                        .iter()
                        .map(|_| uuid::Uuid::now_v7().to_string())
                        .collect();
                    let mut conn = self.liveops.store.conn().await?;
                    store::set_occurrence_deployments(
                        &mut conn,
                        &entry.id,
                        k.0,
                        &k.1,
                        &Recorded::text(Some(entry.revision), &ids),
                    )
                    .await?;
                    self.made_for.insert(k.clone(), entry.revision);
                    effects.insert(k.clone(), ids.clone());
                    ids
                }
            };
            match self.liveops.carry_out(&entry, slot, &ids).await {
                Ok(true) => {
                    self.started.insert(k);
                }
                Ok(false) => {
                    // Recorded for another revision's overrides: undone
                    // at the next step, then made afresh.
                    self.made_for.insert(k, i64::MIN);
                    again = true;
                }
                Err(error) => {
                    tracing::error!(event = %self.name, %error, "a live event's overrides could not reach servers; retrying");
                    failure = Some(error.to_string());
                    again = true;
                }
            }
        }
        // Watching its deployments (a guardrail), or retrying: every second.
        if again || !effects.is_empty() {
            let soon = now + RETRY_MS;
            self.next = Some(self.next.map_or(soon, |n| n.min(soon)));
        }
        let pending = !effects.is_empty();
        self.effects = Some(effects);
        if entry.effect_error != failure || entry.pending_effects != pending {
            self.liveops.modify_event(&self.name, |e| {
                e.effect_error = failure;
                e.pending_effects = pending;
            });
        }
        let finished = entry.progress.state.is_finished() && !pending && !again;
        Ok(
            if finished && entry.timetable().next_wake(&entry.progress, now).is_none() {
                // Nothing left to drive: another node need not take it.
                self.liveops.hub.give_up_lease(&self.resource);
                Flow::Stop
            } else {
                Flow::Continue
            },
        )
    }

    /// Whether this actor may write in `tx`: in a cluster, this node still
    /// holds the event's lease under the actor's epoch (renewed by the write).
    async fn fenced(&self, tx: &mut crate::store::Tx) -> LiveOpsResult<bool> {
        Ok(self
            .liveops
            .hub
            .fence_lease(tx, &self.resource, self.epoch)
            .await?)
    }

    /// Another node drives the event now: this actor stops, writing nothing.
    fn stand_down(&mut self) -> Flow {
        tracing::warn!(event = %self.name, "another node drives this live event now; stopping its actor here");
        self.next = None;
        Flow::Stop
    }

    /// Announces each occurrence whose phase changed since it was last
    /// announced (`ended` for those no longer in force).
    fn announce(&mut self, entry: &EventEntry, now: i64) {
        let timetable = entry.timetable();
        let mut current: HashMap<(i64, String), (Slot, Phase)> = HashMap::new();
        for slot in &entry.applied {
            if let Some(phase) = timetable.phase(slot, now) {
                current.insert(key(slot), (slot.clone(), phase));
            }
        }
        if entry.spec.preview_lead_ms > 0
            && entry.progress.paused_at_ms.is_none()
            && let Some(next) = timetable.next_slot(&entry.progress, now)
            && timetable.phase(&next, now) == Some(Phase::Preview)
        {
            current.insert(key(&next), (next, Phase::Preview));
        }
        for (k, (slot, phase)) in &current {
            if self.announced.get(k).map(|(_, p)| *p) != Some(*phase) {
                self.liveops.announce(entry, slot, *phase);
            }
        }
        for (k, (slot, _)) in &self.announced {
            if !current.contains_key(k) {
                self.liveops.announce(entry, slot, Phase::Ended);
            }
        }
        self.announced = current;
    }

    /// Steps, and on a failure tries again soon rather than stopping.
    async fn step_or_retry(&mut self) -> (Flow, LiveOpsResult<()>) {
        match self.step().await {
            Ok(flow) => (flow, Ok(())),
            Err(error) => {
                tracing::error!(event = %self.name, %error, "a live event's step failed; retrying");
                self.recorded = None;
                self.effects = None;
                self.next = Some(self.liveops.now_ms() + RETRY_MS);
                (Flow::Continue, Err(error))
            }
        }
    }

    async fn control(&mut self, what: Control, actor: &Actor) -> LiveOpsResult<()> {
        let Some(entry) = self.liveops.definitions().events.get(&self.name).cloned() else {
            return Err(LiveOpsError::EventNotFound(self.name.clone()));
        };
        let now = self.liveops.now_ms();
        let progress =
            control(&entry.timetable(), &entry.progress, what, now).map_err(|refused| {
                LiveOpsError::InvalidTransition {
                    state: refused.state.name(),
                    reason: refused.reason.into(),
                }
            })?;
        let mut tx = self.liveops.store.begin().await?;
        if !self.fenced(&mut tx).await? {
            return Err(LiveOpsError::Elsewhere(format!(
                "live event {} is driven by another node now; retry",
                self.name
            )));
        }
        store::save_progress(&mut tx, &entry.id, &progress_row(&progress), now).await?;
        audit::record(
            &mut tx,
            actor.audit_entry(
                verb(what),
                format!("live-events/{}", self.name),
                json!({ "from": entry.progress.state.name(), "to": progress.state.name() }),
            ),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.liveops.hub.announce_liveops();
        self.liveops
            .modify_event(&self.name, |e| e.progress = progress);
        Ok(())
    }
}

impl LiveEventDriver for EventDriver {
    type Command = Command;

    fn next_wake_ms(&self) -> Option<i64> {
        self.next
    }

    fn wake(&mut self) -> LocalBoxFuture<'_, Flow> {
        Box::pin(async move { self.step_or_retry().await.0 })
    }

    fn command(&mut self, command: Command) -> LocalBoxFuture<'_, Flow> {
        Box::pin(async move {
            match command {
                Command::Refresh { reply } => {
                    let (flow, result) = self.step_or_retry().await;
                    let _ = reply.send(result);
                    flow
                }
                Command::Control {
                    control,
                    actor,
                    reply,
                } => {
                    let result = self.control(control, &actor).await;
                    let (flow, stepped) = if result.is_ok() {
                        self.step_or_retry().await
                    } else {
                        (Flow::Continue, Ok(()))
                    };
                    let _ = reply.send(result.and(stepped));
                    flow
                }
                Command::Stop => Flow::Stop,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Recorded;

    #[test]
    fn recorded_deployments_read_both_spellings() {
        let text = Recorded::text(Some(3), &["a".into(), "b".into()]);
        let read = Recorded::parse(&text);
        assert_eq!(
            (read.revision, read.ids),
            (Some(3), vec!["a".into(), "b".into()])
        );
        // Rows written before the revision was recorded: the ids alone.
        let old = Recorded::parse(r#"["a"]"#);
        assert_eq!((old.revision, old.ids), (None, vec!["a".to_owned()]));
        assert!(Recorded::parse("not json").ids.is_empty());
    }
}
