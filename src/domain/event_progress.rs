//! A live event's progress through time: which occurrences are in force at
//! an instant, the state the event is in, the phase each occurrence is in,
//! and when its actor must next wake. Pure: the actor commits what this
//! decides, then carries out its effect.
//!
//! An event's progress is its schedule plus what operators did to it:
//! - `done_before`: occurrences that start before this instant are over
//!   (`end` sets it to now; an `activate` to the end of the window it
//!   brought forward, so the scheduled one does not start again);
//! - `manual`: the window an `activate` started ahead of the schedule;
//! - `paused_at`: nothing is in force while paused (the schedule's clock
//!   runs on: an occurrence whose end passes meanwhile is over);
//! - a terminal state (`Cancelled`, `RolledBack`): nothing is in force again.

use super::schedule::{Occurrence, Schedule};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// How far ahead the actor looks for its next boundary; with none in
/// sight it wakes after this anyway and looks again.
pub const LOOKAHEAD_MS: i64 = 2 * 86_400_000;
/// How far ahead "is anything left?" looks (a yearly event is Scheduled).
const FUTURE_MS: i64 = 5 * 366 * 86_400_000;
/// Started this long after its start, an occurrence is marked late.
pub const LATE_AFTER_MS: i64 = 1_000;

/// Where a live event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventState {
    Scheduled,
    Active,
    Paused,
    Ended,
    Cancelled,
    RolledBack,
}

impl EventState {
    pub const ALL: [EventState; 6] = [
        EventState::Scheduled,
        EventState::Active,
        EventState::Paused,
        EventState::Ended,
        EventState::Cancelled,
        EventState::RolledBack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventState::Scheduled => "Scheduled",
            EventState::Active => "Active",
            EventState::Paused => "Paused",
            EventState::Ended => "Ended",
            EventState::Cancelled => "Cancelled",
            EventState::RolledBack => "RolledBack",
        }
    }

    pub fn parse(name: &str) -> Option<EventState> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Nothing happens to the event again.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventState::Cancelled | EventState::RolledBack)
    }

    /// Its actor has nothing left to do (an ended event may be revised
    /// into a new schedule, which starts a new actor).
    pub fn is_finished(self) -> bool {
        self.is_terminal() || self == EventState::Ended
    }
}

/// A window of time, Unix milliseconds, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// What operators did to an event, as stored beside its definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub state: EventState,
    pub done_before_ms: i64,
    pub manual: Option<Window>,
    pub paused_at_ms: Option<i64>,
}

impl Progress {
    /// A new event: every occurrence of its schedule is still to come (one
    /// already under way when it is created starts at once, late).
    pub fn new() -> Progress {
        Progress {
            state: EventState::Scheduled,
            done_before_ms: i64::MIN,
            manual: None,
            paused_at_ms: None,
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// One occurrence of an event, scheduled or brought forward.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    pub start_ms: i64,
    pub end_ms: i64,
    /// The region whose local time it follows (`regionLocal`), else none:
    /// every region of the event.
    pub region: Option<String>,
    /// Started by an operator's `activate`.
    pub manual: bool,
}

/// What phase an occurrence is in at an instant (the `event` frame's `phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Preview,
    Started,
    EndingSoon,
    Ended,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Preview => "preview",
            Phase::Started => "started",
            Phase::EndingSoon => "endingSoon",
            Phase::Ended => "ended",
        }
    }
}

/// An event's schedule and leads, with the time zones of its regions.
#[derive(Debug, Clone, Copy)]
pub struct Timetable<'a> {
    pub schedule: &'a Schedule,
    /// The event's regions with their zones (used by `regionLocal`).
    pub zones: &'a [(String, Tz)],
    pub preview_lead_ms: i64,
    pub ending_soon_lead_ms: i64,
}

fn instant(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms.clamp(-8_334_632_851_200_000, 8_210_298_412_799_999))
        .single()
        .unwrap_or_default()
}

fn slot_of(occurrence: Occurrence) -> Slot {
    Slot {
        start_ms: occurrence.start.timestamp_millis(),
        end_ms: occurrence.end.timestamp_millis(),
        region: occurrence.region,
        manual: false,
    }
}

impl Timetable<'_> {
    /// The event's occurrences overlapping `[from, to)` as its progress
    /// leaves them (scheduled ones not over, and the manual window),
    /// earliest first. Pausing does not remove them; see [`in_force`].
    pub fn slots(&self, progress: &Progress, from_ms: i64, to_ms: i64) -> Vec<Slot> {
        if progress.state.is_terminal() || from_ms >= to_ms {
            return Vec::new();
        }
        let mut slots: Vec<Slot> = self
            .schedule
            .occurrences(self.zones, instant(from_ms), instant(to_ms))
            .into_iter()
            .map(slot_of)
            .filter(|slot| slot.start_ms >= progress.done_before_ms)
            .collect();
        if let Some(manual) = progress.manual
            && manual.start_ms < to_ms
            && from_ms < manual.end_ms
        {
            slots.push(Slot {
                start_ms: manual.start_ms,
                end_ms: manual.end_ms,
                region: None,
                manual: true,
            });
        }
        slots.sort();
        slots
    }

    /// The occurrences in force at `at` (none while paused or after the end).
    pub fn in_force(&self, progress: &Progress, at_ms: i64) -> Vec<Slot> {
        if progress.paused_at_ms.is_some() {
            return Vec::new();
        }
        self.slots(progress, at_ms, at_ms.saturating_add(1))
            .into_iter()
            .filter(|slot| slot.start_ms <= at_ms && at_ms < slot.end_ms)
            .collect()
    }

    /// The first occurrence (in force or to come) ending after `at`.
    pub fn next_slot(&self, progress: &Progress, at_ms: i64) -> Option<Slot> {
        let mut from = at_ms;
        // Looked for in growing windows: most events are days away, not years.
        for span in [LOOKAHEAD_MS, 60 * 86_400_000, FUTURE_MS] {
            let to = at_ms.saturating_add(span);
            if let Some(slot) = self
                .slots(progress, from, to)
                .into_iter()
                .find(|slot| slot.end_ms > at_ms)
            {
                return Some(slot);
            }
            from = to;
        }
        None
    }

    /// The state at `at`: terminal and paused states hold; otherwise
    /// `Active` while an occurrence is in force, `Scheduled` while one is
    /// to come, else `Ended`.
    pub fn state_at(&self, progress: &Progress, at_ms: i64) -> EventState {
        if progress.state.is_terminal() {
            return progress.state;
        }
        let next = self.next_slot(progress, at_ms);
        if progress.paused_at_ms.is_some() {
            return if next.is_some() {
                EventState::Paused
            } else {
                EventState::Ended
            };
        }
        match next {
            Some(slot) if slot.start_ms <= at_ms => EventState::Active,
            Some(_) => EventState::Scheduled,
            None => EventState::Ended,
        }
    }

    /// The phase of `slot` at `at`: `Preview` within the preview lead
    /// before its start, `EndingSoon` within the ending-soon lead before
    /// its end, `Ended` from its end; `None` before the preview.
    pub fn phase(&self, slot: &Slot, at_ms: i64) -> Option<Phase> {
        if at_ms >= slot.end_ms {
            Some(Phase::Ended)
        } else if at_ms >= slot.start_ms {
            if self.ending_soon_lead_ms > 0
                && at_ms >= slot.end_ms.saturating_sub(self.ending_soon_lead_ms)
            {
                Some(Phase::EndingSoon)
            } else {
                Some(Phase::Started)
            }
        } else if self.preview_lead_ms > 0
            && at_ms >= slot.start_ms.saturating_sub(self.preview_lead_ms)
        {
            Some(Phase::Preview)
        } else {
            None
        }
    }

    /// The next instant after `now` at which something changes (a start,
    /// an end, a preview or ending-soon lead), or `now + LOOKAHEAD` when
    /// nothing does before then; `None` when nothing ever will.
    pub fn next_wake(&self, progress: &Progress, now_ms: i64) -> Option<i64> {
        if progress.state.is_terminal() {
            return None;
        }
        let horizon = now_ms.saturating_add(LOOKAHEAD_MS);
        let ahead = self.slots(
            progress,
            now_ms.saturating_sub(self.ending_soon_lead_ms.max(0)),
            horizon.saturating_add(self.preview_lead_ms.max(0)),
        );
        let mut next: Option<i64> = None;
        for slot in &ahead {
            for boundary in [
                slot.start_ms.saturating_sub(self.preview_lead_ms),
                slot.start_ms,
                slot.end_ms.saturating_sub(self.ending_soon_lead_ms),
                slot.end_ms,
            ] {
                if boundary > now_ms {
                    next = Some(next.map_or(boundary, |n| n.min(boundary)));
                }
            }
        }
        match next {
            Some(at) => Some(at.min(horizon)),
            None if self.next_slot(progress, now_ms).is_some() => Some(horizon),
            None => None,
        }
    }
}

/// What an operator asks of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Start now: the occurrence in force, or the next one, brought forward
    /// to now and ending at its scheduled end.
    Activate,
    Pause,
    Resume,
    /// End what is in force now; a recurring event goes on with its next
    /// occurrence.
    End,
    Cancel,
    /// A guardrail breached: ended for good, servers restored.
    RollBack,
}

/// Why a control cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub state: EventState,
    pub reason: &'static str,
}

/// The progress after `control` at `now`, or why not.
pub fn control(
    timetable: &Timetable,
    progress: &Progress,
    control: Control,
    now_ms: i64,
) -> Result<Progress, Refused> {
    let state = timetable.state_at(progress, now_ms);
    let refuse = |reason| Err(Refused { state, reason });
    if state.is_terminal() {
        return refuse("the event is over for good");
    }
    let mut next = progress.clone();
    match control {
        Control::Activate => {
            if state == EventState::Paused {
                return refuse("the event is paused: resume it");
            }
            if state == EventState::Active {
                return refuse("the event is already active");
            }
            let Some(slot) = timetable.next_slot(progress, now_ms) else {
                return refuse("the event has no occurrence left to start");
            };
            next.manual = Some(Window {
                start_ms: now_ms,
                end_ms: slot.end_ms,
            });
            // The occurrences the window stands for do not start again.
            next.done_before_ms = next.done_before_ms.max(slot.end_ms);
        }
        Control::Pause => {
            if !matches!(state, EventState::Active | EventState::Scheduled) {
                return refuse("only a scheduled or active event can be paused");
            }
            next.paused_at_ms = Some(now_ms);
        }
        Control::Resume => {
            if state != EventState::Paused {
                return refuse("the event is not paused");
            }
            next.paused_at_ms = None;
        }
        Control::End => {
            if state != EventState::Active {
                return refuse("the event is not active");
            }
            next.done_before_ms = next.done_before_ms.max(now_ms.saturating_add(1));
            next.manual = None;
        }
        Control::Cancel => {
            if state == EventState::Ended {
                return refuse("the event has ended");
            }
            next.state = EventState::Cancelled;
            next.manual = None;
        }
        Control::RollBack => {
            next.state = EventState::RolledBack;
            next.manual = None;
        }
    }
    if !next.state.is_terminal() {
        next.state = timetable.state_at(&next, now_ms);
    }
    Ok(next)
}

#[cfg(test)]
mod tests;
