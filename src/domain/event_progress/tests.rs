use super::*;
use serde_json::{Value, json};

fn ms(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

fn schedule(value: Value) -> Schedule {
    Schedule::parse(&value).unwrap()
}

fn table<'a>(schedule: &'a Schedule, zones: &'a [(String, Tz)]) -> Timetable<'a> {
    Timetable {
        schedule,
        zones,
        preview_lead_ms: 0,
        ending_soon_lead_ms: 0,
    }
}

fn once() -> Schedule {
    schedule(json!({"startTime": "2026-12-20T10:00:00Z", "endTime": "2026-12-20T12:00:00Z"}))
}

#[test]
fn a_one_off_event_is_scheduled_active_then_ended() {
    let once = once();
    let t = table(&once, &[]);
    let p = Progress::new();
    assert_eq!(
        t.state_at(&p, ms("2026-12-20T09:59:59Z")),
        EventState::Scheduled
    );
    assert_eq!(
        t.state_at(&p, ms("2026-12-20T10:00:00Z")),
        EventState::Active
    );
    assert_eq!(
        t.state_at(&p, ms("2026-12-20T11:59:59.999Z")),
        EventState::Active
    );
    assert_eq!(
        t.state_at(&p, ms("2026-12-20T12:00:00Z")),
        EventState::Ended
    );
    assert!(t.in_force(&p, ms("2026-12-20T09:59:59.999Z")).is_empty());
    assert_eq!(
        t.in_force(&p, ms("2026-12-20T10:00:00Z")),
        vec![Slot {
            start_ms: ms("2026-12-20T10:00:00Z"),
            end_ms: ms("2026-12-20T12:00:00Z"),
            region: None,
            manual: false
        }]
    );
    // The actor wakes at the start, then at the end, then never.
    assert_eq!(
        t.next_wake(&p, ms("2026-12-20T09:00:00Z")),
        Some(ms("2026-12-20T10:00:00Z"))
    );
    assert_eq!(
        t.next_wake(&p, ms("2026-12-20T10:00:00Z")),
        Some(ms("2026-12-20T12:00:00Z"))
    );
    assert_eq!(t.next_wake(&p, ms("2026-12-20T12:00:00Z")), None);
    // Far ahead, it wakes at the lookahead and looks again.
    let early = ms("2026-12-01T00:00:00Z");
    assert_eq!(t.next_wake(&p, early), Some(early + LOOKAHEAD_MS));
}

#[test]
fn leads_add_preview_and_ending_soon_phases() {
    let once = once();
    let t = Timetable {
        preview_lead_ms: 3_600_000,
        ending_soon_lead_ms: 600_000,
        ..table(&once, &[])
    };
    let p = Progress::new();
    let slot = t.next_slot(&p, ms("2026-12-20T08:00:00Z")).unwrap();
    let phase = |at: &str| t.phase(&slot, ms(at));
    assert_eq!(phase("2026-12-20T08:59:59Z"), None);
    assert_eq!(phase("2026-12-20T09:00:00Z"), Some(Phase::Preview));
    assert_eq!(phase("2026-12-20T10:00:00Z"), Some(Phase::Started));
    assert_eq!(phase("2026-12-20T11:50:00Z"), Some(Phase::EndingSoon));
    assert_eq!(phase("2026-12-20T12:00:00Z"), Some(Phase::Ended));
    let wakes: Vec<i64> =
        std::iter::successors(t.next_wake(&p, ms("2026-12-20T08:00:00Z")), |at| {
            t.next_wake(&p, *at)
        })
        .collect();
    assert_eq!(
        wakes,
        vec![
            ms("2026-12-20T09:00:00Z"),
            ms("2026-12-20T10:00:00Z"),
            ms("2026-12-20T11:50:00Z"),
            ms("2026-12-20T12:00:00Z"),
        ]
    );
}

#[test]
fn activate_brings_the_next_occurrence_forward_once() {
    let once = once();
    let t = table(&once, &[]);
    let now = ms("2026-12-19T10:00:00Z");
    let p = control(&t, &Progress::new(), Control::Activate, now).unwrap();
    assert_eq!(p.state, EventState::Active);
    assert_eq!(
        p.manual,
        Some(Window {
            start_ms: now,
            end_ms: ms("2026-12-20T12:00:00Z")
        })
    );
    // The scheduled start does not start it again: one slot, the manual one.
    let slots = t.slots(&p, now, ms("2026-12-21T00:00:00Z"));
    assert_eq!(slots.len(), 1);
    assert!(slots[0].manual);
    assert_eq!(
        t.state_at(&p, ms("2026-12-20T12:00:00Z")),
        EventState::Ended
    );
    // Activating an active event is refused, naming its state.
    let again = control(&t, &p, Control::Activate, now + 1).unwrap_err();
    assert_eq!(again.state, EventState::Active);
}

#[test]
fn end_stops_a_recurring_occurrence_and_the_next_one_still_comes() {
    let daily = schedule(json!({
        "timeZone": "Europe/London", "rrule": "FREQ=DAILY",
        "startTime": "2026-12-01T18:00:00", "duration": "PT2H",
    }));
    let t = table(&daily, &[]);
    let now = ms("2026-12-10T18:30:00Z");
    assert_eq!(t.state_at(&Progress::new(), now), EventState::Active);
    let p = control(&t, &Progress::new(), Control::End, now).unwrap();
    assert_eq!(p.state, EventState::Scheduled);
    assert!(t.in_force(&p, now + 1000).is_empty());
    assert_eq!(t.in_force(&p, ms("2026-12-11T18:00:00Z")).len(), 1);
    // Ending an event that is not active is refused.
    assert!(control(&t, &p, Control::End, now + 1000).is_err());
}

#[test]
fn pause_holds_everything_until_resume_and_cancel_is_final() {
    let once = once();
    let t = table(&once, &[]);
    let during = ms("2026-12-20T11:00:00Z");
    let paused = control(&t, &Progress::new(), Control::Pause, during).unwrap();
    assert_eq!(paused.state, EventState::Paused);
    assert!(t.in_force(&paused, during).is_empty());
    assert_eq!(t.state_at(&paused, during + 1000), EventState::Paused);
    // The clock ran on: paused past its end, it is over.
    assert_eq!(
        t.state_at(&paused, ms("2026-12-20T12:00:00Z")),
        EventState::Ended
    );
    let resumed = control(&t, &paused, Control::Resume, during + 1000).unwrap();
    assert_eq!(resumed.state, EventState::Active);
    assert_eq!(t.in_force(&resumed, during + 1000).len(), 1);
    let cancelled = control(&t, &resumed, Control::Cancel, during + 2000).unwrap();
    assert_eq!(cancelled.state, EventState::Cancelled);
    assert!(t.in_force(&cancelled, during + 2000).is_empty());
    assert_eq!(t.next_wake(&cancelled, during + 2000), None);
    for then in [
        Control::Activate,
        Control::Resume,
        Control::Pause,
        Control::Cancel,
    ] {
        let refused = control(&t, &cancelled, then, during + 3000).unwrap_err();
        assert_eq!(refused.state, EventState::Cancelled);
    }
}

#[test]
fn region_local_occurrences_start_hours_apart_and_end_per_region() {
    let evening = schedule(json!({
        "regionLocal": true, "rrule": "FREQ=WEEKLY;BYDAY=SA",
        "startTime": "2026-12-05T18:00:00", "duration": "PT3H",
    }));
    let zones = vec![
        ("EU".to_owned(), "Europe/Paris".parse::<Tz>().unwrap()),
        ("NA".to_owned(), "America/New_York".parse::<Tz>().unwrap()),
    ];
    let t = table(&evening, &zones);
    let p = Progress::new();
    // 18:00 in Paris is 17:00Z; in New York, 23:00Z.
    let paris = t.in_force(&p, ms("2026-12-12T17:30:00Z"));
    assert_eq!(paris.len(), 1);
    assert_eq!(paris[0].region.as_deref(), Some("EU"));
    let both = t.in_force(&p, ms("2026-12-12T23:30:00Z"));
    assert_eq!(both.len(), 1, "Paris ended at 20:00Z");
    assert_eq!(both[0].region.as_deref(), Some("NA"));
    assert_eq!(
        t.next_wake(&p, ms("2026-12-12T17:30:00Z")),
        Some(ms("2026-12-12T20:00:00Z"))
    );
}

#[test]
fn states_round_trip_their_names() {
    for state in EventState::ALL {
        assert_eq!(EventState::parse(state.name()), Some(state));
    }
    assert_eq!(EventState::parse("active"), None);
}
