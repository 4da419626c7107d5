//! One live event's actor: the hub's [`LiveEventDriver`]. At each instant
//! its schedule names (and after each command) it works out what is in
//! force (`domain::event_progress`), commits the occurrences it starts or
//! ends and the event's new state with its audit row, and only then
//! publishes the change.

use super::{LiveOps, LiveOpsError, LiveOpsResult, events::progress_row};
use crate::{
    catalog::Actor,
    domain::event_progress::{Control, EventState, LATE_AFTER_MS, Progress, Slot, control},
    store::{StoreError, audit, live_ops as store, now_ms},
};
use futures_util::future::LocalBoxFuture;
use hotswap_actors::{Flow, LiveEventDriver, LiveEventHandle};
use serde_json::json;
use std::{collections::HashSet, sync::Arc};
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
    hotswap_actors::live_event::spawn(
        16,
        EventDriver {
            liveops,
            name,
            // At once: a restarted hub catches up with the schedule.
            next: Some(i64::MIN),
            recorded: None,
        },
    )
}

struct EventDriver {
    liveops: Arc<LiveOps>,
    name: String,
    next: Option<i64>,
    /// Occurrences started and not ended in the store: (start, region or '').
    recorded: Option<HashSet<(i64, String)>>,
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
            return Ok(Flow::Stop);
        };
        let now = now_ms();
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
            return Ok(self.flow(state));
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
        if late_ms > 0 {
            tracing::warn!(event = %self.name, late_ms, "a live event started late (the hub was down at its start, or it was created after it)");
        }
        let mut recorded = recorded;
        for k in &ended {
            recorded.remove(k);
        }
        recorded.extend(started.iter().map(|s| key(s)));
        self.recorded = Some(recorded);
        let mut next = (*entry).clone();
        next.late_ms = if in_force.is_empty() {
            0
        } else if late_ms > 0 {
            late_ms
        } else {
            entry.late_ms
        };
        next.applied = in_force;
        next.progress = progress;
        self.next = next.timetable().next_wake(&next.progress, now);
        self.liveops.publish_event(next);
        Ok(self.flow(state))
    }

    fn flow(&self, state: EventState) -> Flow {
        if state.is_finished() && self.next.is_none() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    /// Steps, and on a failure tries again soon rather than stopping.
    async fn step_or_retry(&mut self) -> (Flow, LiveOpsResult<()>) {
        match self.step().await {
            Ok(flow) => (flow, Ok(())),
            Err(error) => {
                tracing::error!(event = %self.name, %error, "a live event's step failed; retrying");
                self.recorded = None;
                self.next = Some(now_ms() + RETRY_MS);
                (Flow::Continue, Err(error))
            }
        }
    }

    async fn control(&mut self, what: Control, actor: &Actor) -> LiveOpsResult<()> {
        let Some(entry) = self.liveops.definitions().events.get(&self.name).cloned() else {
            return Err(LiveOpsError::EventNotFound(self.name.clone()));
        };
        let now = now_ms();
        let progress =
            control(&entry.timetable(), &entry.progress, what, now).map_err(|refused| {
                LiveOpsError::InvalidTransition {
                    state: refused.state.name(),
                    reason: refused.reason.into(),
                }
            })?;
        let mut tx = self.liveops.store.begin().await?;
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
        let mut next = (*entry).clone();
        next.progress = progress;
        self.liveops.publish_event(next);
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
