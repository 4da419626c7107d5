//! When a live event runs: a one-off window or a recurrence (RFC 5545
//! RRULE or cron) with a duration, in a named IANA time zone or in each
//! region's own local time (`regionLocal`).
//!
//! Recurrences are worked out in local wall-clock time, then each local
//! start becomes an instant by one documented rule:
//!
//! - **A local time a daylight-saving change skips** (02:30 on the morning
//!   clocks go forward) is read with the UTC offset in force before the
//!   change, as RFC 5545 §3.3.5 says: the occurrence starts as much later
//!   on the clock as the change skipped (02:30 EST is 03:30 EDT).
//! - **A local time that happens twice** (01:30 on the morning clocks go
//!   back) is its first instant, the one still on daylight time.
//! - An occurrence lasts its `duration` of real time, whatever the clocks
//!   do meanwhile. A one-off window's end is a wall-clock time of its own,
//!   read by the same rule.
//!
//! Times without an offset are local (`2026-12-24T18:00:00`); a one-off
//! window in a named zone may also give instants (`...Z`, `...+01:00`).

use super::rollout::parse_duration;
use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;
use std::str::FromStr;

/// Occurrences one query answers at most.
pub const MAX_OCCURRENCES: usize = 10_000;
/// How far ahead a recurrence must fire for the first time.
const FIRST_WITHIN_DAYS: i64 = 5 * 366;
/// Occurrences looked at to find the shortest period of a recurrence.
const PERIOD_SAMPLE: usize = 64;
/// The shortest time between two starts of a recurrence.
const MIN_PERIOD_MS: i64 = 3_600_000;
/// Starts an RRULE is stepped through for one query (it counts from its
/// start, so an old start costs every step since): at the hourly minimum,
/// eleven years.
const RRULE_SCAN_BUDGET: usize = 100_000;
/// The years a schedule's times may name.
const YEARS: std::ops::RangeInclusive<i32> = 2000..=9999;

/// Where the schedule's wall-clock times are read.
#[derive(Debug, Clone, PartialEq)]
pub enum Zone {
    Named(Tz),
    /// Each region at its own local time (settings: region → time zone).
    RegionLocal,
}

/// How an event recurs.
#[derive(Debug, Clone)]
pub enum Recurrence {
    /// An RFC 5545 RRULE (`FREQ=WEEKLY;BYDAY=SA`), as given.
    RRule(String),
    /// A cron expression (5 or 6 fields), as given.
    Cron(Box<croner::Cron>),
}

/// When an event runs.
#[derive(Debug, Clone)]
pub enum Timing {
    /// One window, from `start` to `end`.
    Once { start: When, end: When },
    /// From the local `anchor` on (the first possible start), each start the
    /// rule gives, for `duration_ms`, until the local `until` if any.
    Recurring {
        rule: Box<Recurrence>,
        anchor: NaiveDateTime,
        until: Option<NaiveDateTime>,
        duration_ms: i64,
    },
}

/// A one-off bound: a wall-clock time, or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Local(NaiveDateTime),
    Instant(DateTime<Utc>),
}

/// A parsed, checked schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub zone: Zone,
    pub timing: Timing,
}

/// What is wrong with a schedule, and where (a JSON Pointer below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub path: String,
    pub message: String,
}

fn error(path: &str, message: impl Into<String>) -> ScheduleError {
    ScheduleError {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// How a local start met a daylight-saving change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dst {
    /// The local time does not exist that day; moved later by the gap.
    Gap,
    /// The local time happens twice that day; the first is taken.
    Fold,
}

/// One occurrence of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The region whose local time it follows (`regionLocal` only).
    pub region: Option<String>,
    /// The wall-clock start the schedule asked for.
    pub local_start: NaiveDateTime,
    /// Set when a daylight-saving change moved or chose the start.
    pub dst: Option<Dst>,
}

/// The instant of a local time in `zone`, by the module's rule.
pub fn instant_of(zone: Tz, local: NaiveDateTime) -> (DateTime<Utc>, Option<Dst>) {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => (at.with_timezone(&Utc), None),
        LocalResult::Ambiguous(first, _) => (first.with_timezone(&Utc), Some(Dst::Fold)),
        LocalResult::None => {
            // The offset in force before the gap: that of a moment early
            // enough to be before it (no change skips more than a day).
            let floor = local
                .checked_sub_signed(Duration::hours(26))
                .unwrap_or(NaiveDateTime::MIN);
            let mut probe = local
                .checked_sub_signed(Duration::hours(1))
                .unwrap_or(floor);
            let offset = loop {
                match zone.from_local_datetime(&probe) {
                    LocalResult::Single(at) => break *at.offset(),
                    LocalResult::Ambiguous(_, later) => break *later.offset(),
                    LocalResult::None if probe > floor => {
                        probe = probe
                            .checked_sub_signed(Duration::minutes(30))
                            .unwrap_or(floor);
                    }
                    LocalResult::None => {
                        // Unreachable for real zones; fall back to UTC.
                        return (Utc.from_utc_datetime(&local), Some(Dst::Gap));
                    }
                }
            };
            let before = i64::from(chrono::Offset::fix(&offset).local_minus_utc());
            // Out of chrono's range only for years the parser refuses.
            let utc = local
                .checked_sub_signed(Duration::seconds(before))
                .unwrap_or(local);
            (Utc.from_utc_datetime(&utc), Some(Dst::Gap))
        }
    }
}

fn parse_local(path: &str, text: &str) -> Result<NaiveDateTime, ScheduleError> {
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(local) = NaiveDateTime::parse_from_str(text, format) {
            return in_years(path, local);
        }
    }
    Err(error(
        path,
        format!("{text:?} is not a local date-time like 2026-12-24T18:00:00"),
    ))
}

fn in_years(path: &str, local: NaiveDateTime) -> Result<NaiveDateTime, ScheduleError> {
    use chrono::Datelike;
    if YEARS.contains(&local.year()) {
        Ok(local)
    } else {
        Err(error(
            path,
            format!(
                "a time between the years {} and {}",
                YEARS.start(),
                YEARS.end()
            ),
        ))
    }
}

fn parse_when(path: &str, text: &str) -> Result<When, ScheduleError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        let at = at.with_timezone(&Utc);
        in_years(path, at.naive_utc())?;
        return Ok(When::Instant(at));
    }
    parse_local(path, text).map(When::Local)
}

fn text<'a>(schedule: &'a Value, key: &str) -> Result<Option<&'a str>, ScheduleError> {
    match schedule.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.len() <= 512 => Ok(Some(text)),
        Some(Value::String(_)) => Err(error(&format!("/{key}"), "at most 512 characters")),
        Some(_) => Err(error(&format!("/{key}"), "must be a string")),
    }
}

/// The named zone, if it is one.
pub fn parse_zone(name: &str) -> Option<Tz> {
    Tz::from_str(name).ok()
}

impl Schedule {
    /// Reads and checks a schedule. Errors name the field (`/startTime`,
    /// `/rrule`, ...): end before start, an unknown time zone, a rule that
    /// does not parse or never fires, a duration longer than the time
    /// between two starts.
    pub fn parse(schedule: &Value) -> Result<Schedule, ScheduleError> {
        let Some(object) = schedule.as_object() else {
            return Err(error("", "a schedule is an object"));
        };
        const KNOWN: [&str; 8] = [
            "startTime",
            "endTime",
            "timeZone",
            "regionLocal",
            "rrule",
            "cron",
            "duration",
            "until",
        ];
        if let Some(unknown) = object.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(error(
                &format!("/{unknown}"),
                format!("unknown field; a schedule has {}", KNOWN.join(", ")),
            ));
        }
        let region_local = match schedule.get("regionLocal") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            Some(_) => return Err(error("/regionLocal", "must be true or false")),
        };
        let zone = match (text(schedule, "timeZone")?, region_local) {
            (Some(_), true) => {
                return Err(error(
                    "/timeZone",
                    "give a timeZone or regionLocal, not both",
                ));
            }
            (Some(name), false) => Zone::Named(parse_zone(name).ok_or_else(|| {
                error(
                    "/timeZone",
                    format!("{name:?} is not an IANA time zone (like Europe/London)"),
                )
            })?),
            (None, true) => Zone::RegionLocal,
            (None, false) => Zone::Named(Tz::UTC),
        };
        let start = text(schedule, "startTime")?.ok_or_else(|| error("/startTime", "required"))?;
        let rrule = text(schedule, "rrule")?;
        let cron = text(schedule, "cron")?;
        let timing = match (rrule, cron) {
            (None, None) => {
                for key in ["duration", "until"] {
                    if schedule.get(key).is_some_and(|v| !v.is_null()) {
                        return Err(error(
                            &format!("/{key}"),
                            "applies to a recurring schedule (rrule or cron)",
                        ));
                    }
                }
                let end = text(schedule, "endTime")?
                    .ok_or_else(|| error("/endTime", "required for a one-off schedule"))?;
                let (start, end) = (
                    parse_when("/startTime", start)?,
                    parse_when("/endTime", end)?,
                );
                if zone == Zone::RegionLocal
                    && (matches!(start, When::Instant(_)) || matches!(end, When::Instant(_)))
                {
                    return Err(error(
                        "/startTime",
                        "a regionLocal schedule gives local times, without an offset",
                    ));
                }
                let timing = Timing::Once { start, end };
                check_once(&zone, &timing)?;
                timing
            }
            (Some(_), Some(_)) => {
                return Err(error("/cron", "give an rrule or a cron, not both"));
            }
            (rrule, cron) => {
                if schedule.get("endTime").is_some_and(|v| !v.is_null()) {
                    return Err(error(
                        "/endTime",
                        "a recurring schedule ends each occurrence after its duration; \
                         `until` ends the recurrence",
                    ));
                }
                let anchor = parse_local("/startTime", start)?;
                let until = text(schedule, "until")?
                    .map(|u| parse_local("/until", u))
                    .transpose()?;
                if until.is_some_and(|u| u <= anchor) {
                    return Err(error("/until", "must be after startTime"));
                }
                let duration = schedule
                    .get("duration")
                    .filter(|v| !v.is_null())
                    .ok_or_else(|| error("/duration", "required for a recurring schedule"))?;
                let duration_ms = parse_duration(duration).map_err(|e| error("/duration", e))?;
                if duration_ms == 0 {
                    return Err(error("/duration", "must be longer than zero"));
                }
                let rule = match (rrule, cron) {
                    (Some(rule), _) => Recurrence::RRule(check_rrule(rule)?),
                    (_, Some(cron)) => {
                        Recurrence::Cron(Box::new(croner::Cron::from_str(cron).map_err(|e| {
                            error("/cron", format!("{cron:?} is not a cron expression: {e}"))
                        })?))
                    }
                    (None, None) => unreachable!("one of them is given"),
                };
                let timing = Timing::Recurring {
                    rule: Box::new(rule),
                    anchor,
                    until,
                    duration_ms: duration_ms as i64,
                };
                check_recurring(&timing)?;
                timing
            }
        };
        Ok(Schedule { zone, timing })
    }

    /// The occurrences that overlap `[from, to)`, earliest first (by start,
    /// then region), at most [`MAX_OCCURRENCES`]. `regions` are the event's
    /// regions with their time zones; they matter only to `regionLocal`.
    pub fn occurrences(
        &self,
        regions: &[(String, Tz)],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<Occurrence> {
        let mut found = Vec::new();
        let earliest = |found: &mut Vec<Occurrence>| {
            found.sort_by(|a, b| (a.start, &a.region).cmp(&(b.start, &b.region)));
            found.truncate(MAX_OCCURRENCES);
        };
        match &self.zone {
            Zone::Named(zone) => self.occurrences_in(*zone, None, from, to, &mut found),
            Zone::RegionLocal => {
                // Trimmed as each region is added: never more than twice
                // the bound in memory, however many regions.
                for (region, zone) in regions {
                    self.occurrences_in(*zone, Some(region), from, to, &mut found);
                    earliest(&mut found);
                }
            }
        }
        earliest(&mut found);
        found
    }

    fn occurrences_in(
        &self,
        zone: Tz,
        region: Option<&String>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        found: &mut Vec<Occurrence>,
    ) {
        match &self.timing {
            Timing::Once { start, end } => {
                let (start_at, dst) = resolve(zone, *start);
                let (end_at, _) = resolve(zone, *end);
                if start_at < to && end_at > from {
                    found.push(Occurrence {
                        start: start_at,
                        end: end_at,
                        region: region.cloned(),
                        local_start: match start {
                            When::Local(local) => *local,
                            When::Instant(at) => at.with_timezone(&zone).naive_local(),
                        },
                        dst,
                    });
                }
            }
            Timing::Recurring {
                rule,
                anchor,
                until,
                duration_ms,
            } => {
                let duration = Duration::milliseconds(*duration_ms);
                // Local wall times within a day of the window cover every
                // zone's offset; the exact test is on instants below.
                let from_local = from
                    .checked_sub_signed(duration + Duration::days(1))
                    .unwrap_or(DateTime::<Utc>::MIN_UTC)
                    .naive_utc();
                let to_local = to
                    .checked_add_signed(Duration::days(1))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC)
                    .naive_utc();
                let mut budget = MAX_OCCURRENCES;
                // Starts in the margin before `from` are dropped below: at
                // the hourly minimum, at most 32 days of them.
                let limit = MAX_OCCURRENCES + 32 * 24;
                for local in local_starts(rule, *anchor, *until, from_local, to_local, limit) {
                    let (start, dst) = instant_of(zone, local);
                    let end = start + duration;
                    if start < to && end > from {
                        found.push(Occurrence {
                            start,
                            end,
                            region: region.cloned(),
                            local_start: local,
                            dst,
                        });
                        budget -= 1;
                        if budget == 0 {
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn resolve(zone: Tz, when: When) -> (DateTime<Utc>, Option<Dst>) {
    match when {
        When::Instant(at) => (at, None),
        When::Local(local) => instant_of(zone, local),
    }
}

/// A one-off window ends after it starts, in every zone it may be read in
/// (a named zone; for `regionLocal`, wall-clock order).
fn check_once(zone: &Zone, timing: &Timing) -> Result<(), ScheduleError> {
    let Timing::Once { start, end } = timing else {
        return Ok(());
    };
    let ordered = match zone {
        Zone::Named(zone) => resolve(*zone, *start).0 < resolve(*zone, *end).0,
        Zone::RegionLocal => match (start, end) {
            (When::Local(start), When::Local(end)) => start < end,
            _ => false,
        },
    };
    if ordered {
        Ok(())
    } else {
        Err(error("/endTime", "must be after startTime"))
    }
}

/// The RRULE text, without a `RRULE:` prefix; DTSTART and UNTIL come from
/// `startTime` and `until`, and events recur at most hourly.
fn check_rrule(rule: &str) -> Result<String, ScheduleError> {
    let rule = rule.trim();
    let rule = rule.strip_prefix("RRULE:").unwrap_or(rule);
    let upper = rule.to_ascii_uppercase();
    if upper.contains('\n') || upper.contains("DTSTART") {
        return Err(error("/rrule", "one RRULE line (startTime is its DTSTART)"));
    }
    if upper.split(';').any(|part| part.starts_with("UNTIL=")) {
        return Err(error("/rrule", "UNTIL is given as `until`, in local time"));
    }
    let freq = upper
        .split(';')
        .find_map(|part| part.strip_prefix("FREQ="))
        .ok_or_else(|| error("/rrule", "FREQ is required"))?;
    if matches!(freq, "SECONDLY" | "MINUTELY") {
        return Err(error("/rrule", "an event recurs at most hourly"));
    }
    // Parsed once here so a rule that cannot be read is refused now.
    let text = format!("DTSTART:20260101T000000Z\nRRULE:{rule}");
    text.parse::<rrule::RRuleSet>()
        .map_err(|e| error("/rrule", format!("not an RFC 5545 RRULE: {e}")))?;
    Ok(rule.to_owned())
}

/// The local starts of a recurrence between `from` and `to` (local wall
/// times), at most `limit`.
fn local_starts(
    rule: &Recurrence,
    anchor: NaiveDateTime,
    until: Option<NaiveDateTime>,
    from: NaiveDateTime,
    to: NaiveDateTime,
    limit: usize,
) -> Vec<NaiveDateTime> {
    let to = until.map_or(to, |u| u.min(to));
    if to < anchor {
        return Vec::new();
    }
    let from = from.max(anchor);
    // Wall times as if they were UTC: the rule is worked out on the
    // calendar alone; the zone is applied to each start afterwards.
    let floating = |local: NaiveDateTime| Utc.from_utc_datetime(&local);
    match rule {
        Recurrence::RRule(rule) => {
            let text = format!("DTSTART:{}Z\nRRULE:{rule}", anchor.format("%Y%m%dT%H%M%S"));
            let Ok(set) = text.parse::<rrule::RRuleSet>() else {
                return Vec::new();
            };
            // Stepped from its start (COUNT counts from there), within a
            // budget: an old start cannot make a query run for long.
            let mut starts = Vec::new();
            for (scanned, date) in (&set).into_iter().enumerate() {
                let date = date.naive_utc();
                if scanned >= RRULE_SCAN_BUDGET || date > to || starts.len() >= limit {
                    break;
                }
                if date >= from {
                    starts.push(date);
                }
            }
            starts
        }
        Recurrence::Cron(cron) => {
            let mut starts = Vec::new();
            let mut at = floating(from);
            let mut inclusive = true;
            while starts.len() < limit {
                let Ok(next) = cron.find_next_occurrence(&at, inclusive) else {
                    break;
                };
                if next.naive_utc() > to {
                    break;
                }
                starts.push(next.naive_utc());
                at = next;
                inclusive = false;
            }
            starts
        }
    }
}

/// A recurrence fires within five years of its start, and no two starts
/// are closer than its duration.
fn check_recurring(timing: &Timing) -> Result<(), ScheduleError> {
    let Timing::Recurring {
        rule,
        anchor,
        until,
        duration_ms,
    } = timing
    else {
        return Ok(());
    };
    let path = match &**rule {
        Recurrence::RRule(_) => "/rrule",
        Recurrence::Cron(_) => "/cron",
    };
    let horizon = anchor
        .checked_add_signed(Duration::days(FIRST_WITHIN_DAYS))
        .unwrap_or(NaiveDateTime::MAX);
    let first = local_starts(rule, *anchor, *until, *anchor, horizon, 1);
    let Some(first) = first.first().copied() else {
        return Err(error(
            path,
            "never fires (no occurrence within five years of startTime, before until)",
        ));
    };
    let sample = local_starts(
        rule,
        *anchor,
        *until,
        first,
        first
            .checked_add_signed(Duration::days(FIRST_WITHIN_DAYS))
            .unwrap_or(NaiveDateTime::MAX),
        PERIOD_SAMPLE,
    );
    let shortest = sample
        .windows(2)
        .map(|w| (w[0], w[1]))
        .min_by_key(|(a, b)| *b - *a);
    if let Some((a, b)) = shortest
        && (b - a).num_milliseconds() < MIN_PERIOD_MS
    {
        return Err(error(
            path,
            format!("an event recurs at most hourly; the starts at {a} and {b} are closer"),
        ));
    }
    if let Some((a, b)) = shortest
        && (b - a).num_milliseconds() < *duration_ms
    {
        return Err(error(
            "/duration",
            format!(
                "an occurrence lasts longer than the {} minutes between the starts at {a} and {b}",
                (b - a).num_minutes()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
