use super::*;
use serde_json::json;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("a test instant")
        .with_timezone(&Utc)
}

/// `(start, end, dst)` of every occurrence in the window.
fn starts(schedule: &Value, from: &str, to: &str) -> Vec<(String, Option<Dst>)> {
    Schedule::parse(schedule)
        .expect("a valid schedule")
        .occurrences(&[], at(from), at(to))
        .into_iter()
        .map(|o| (o.start.format("%Y-%m-%dT%H:%MZ").to_string(), o.dst))
        .collect()
}

fn owned(list: &[(&str, Option<Dst>)]) -> Vec<(String, Option<Dst>)> {
    list.iter().map(|(s, d)| (s.to_string(), *d)).collect()
}

#[test]
fn a_daily_0230_in_new_york_crosses_both_changes_of_2026() {
    let daily = json!({
        "timeZone": "America/New_York",
        "rrule": "FREQ=DAILY",
        "startTime": "2026-03-06T02:30:00",
        "duration": "PT1H",
    });
    // 8 March: 02:30 does not exist; read with EST it is 07:30Z (03:30 EDT).
    assert_eq!(
        starts(&daily, "2026-03-06T00:00:00Z", "2026-03-11T00:00:00Z"),
        owned(&[
            ("2026-03-06T07:30Z", None),
            ("2026-03-07T07:30Z", None),
            ("2026-03-08T07:30Z", Some(Dst::Gap)),
            ("2026-03-09T06:30Z", None),
            ("2026-03-10T06:30Z", None),
        ])
    );
    // 1 November: clocks go back at 02:00 to 01:00; 02:30 happens once, on EST.
    assert_eq!(
        starts(&daily, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z"),
        owned(&[
            ("2026-10-31T06:30Z", None),
            ("2026-11-01T07:30Z", None),
            ("2026-11-02T07:30Z", None),
        ])
    );
    // 01:30 happens twice on 1 November: the first, still on EDT.
    let early = json!({
        "timeZone": "America/New_York",
        "rrule": "FREQ=DAILY",
        "startTime": "2026-10-30T01:30:00",
        "duration": "PT30M",
    });
    assert_eq!(
        starts(&early, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z"),
        owned(&[
            ("2026-10-31T05:30Z", None),
            ("2026-11-01T05:30Z", Some(Dst::Fold)),
            ("2026-11-02T06:30Z", None),
        ])
    );
}

#[test]
fn a_weekly_1800_in_london_stays_at_1800_local() {
    let weekly = json!({
        "timeZone": "Europe/London",
        "cron": "0 18 * * 6",
        "startTime": "2026-03-01T00:00:00",
        "duration": "PT2H",
    });
    // British Summer Time starts on Sunday 29 March and ends on 25 October.
    assert_eq!(
        starts(&weekly, "2026-03-20T00:00:00Z", "2026-04-12T00:00:00Z"),
        owned(&[
            ("2026-03-21T18:00Z", None),
            ("2026-03-28T18:00Z", None),
            ("2026-04-04T17:00Z", None),
            ("2026-04-11T17:00Z", None),
        ])
    );
    assert_eq!(
        starts(&weekly, "2026-10-20T00:00:00Z", "2026-11-02T00:00:00Z"),
        owned(&[("2026-10-24T17:00Z", None), ("2026-10-31T18:00Z", None)])
    );
    // The same as an RRULE.
    let rrule = json!({
        "timeZone": "Europe/London",
        "rrule": "FREQ=WEEKLY;BYDAY=SA;BYHOUR=18;BYMINUTE=0;BYSECOND=0",
        "startTime": "2026-03-01T00:00:00",
        "duration": "PT2H",
    });
    assert_eq!(
        starts(&rrule, "2026-03-20T00:00:00Z", "2026-04-12T00:00:00Z"),
        starts(&weekly, "2026-03-20T00:00:00Z", "2026-04-12T00:00:00Z")
    );
}

#[test]
fn sydney_falls_back_in_april() {
    // 5 April 2026: 03:00 AEDT becomes 02:00 AEST; 02:30 happens twice.
    let daily = json!({
        "timeZone": "Australia/Sydney",
        "rrule": "FREQ=DAILY",
        "startTime": "2026-04-01T02:30:00",
        "duration": "PT1H",
    });
    assert_eq!(
        starts(&daily, "2026-04-03T00:00:00Z", "2026-04-06T00:00:00Z"),
        owned(&[
            ("2026-04-03T15:30Z", None),
            ("2026-04-04T15:30Z", Some(Dst::Fold)),
            ("2026-04-05T16:30Z", None),
        ])
    );
    // An occurrence lasts its duration of real time across the change.
    let occurrence = Schedule::parse(&daily)
        .unwrap()
        .occurrences(&[], at("2026-04-04T15:00:00Z"), at("2026-04-04T16:00:00Z"))
        .remove(0);
    assert_eq!(occurrence.end - occurrence.start, Duration::hours(1));
}

#[test]
fn region_local_events_start_hours_apart() {
    let daily = json!({
        "regionLocal": true,
        "cron": "0 10 * * *",
        "startTime": "2026-07-01T00:00:00",
        "duration": "PT4H",
    });
    let regions = vec![
        (
            "NA-EAST".to_string(),
            parse_zone("America/New_York").unwrap(),
        ),
        ("EU-WEST".to_string(), parse_zone("Europe/London").unwrap()),
        ("APAC".to_string(), parse_zone("Asia/Tokyo").unwrap()),
    ];
    let found: Vec<(String, String)> = Schedule::parse(&daily)
        .unwrap()
        .occurrences(
            &regions,
            at("2026-07-01T00:00:00Z"),
            at("2026-07-01T23:59:00Z"),
        )
        .into_iter()
        .map(|o| (o.region.unwrap(), o.start.format("%H:%MZ").to_string()))
        .collect();
    assert_eq!(
        found,
        [
            ("APAC".to_string(), "01:00Z".to_string()),
            ("EU-WEST".to_string(), "09:00Z".to_string()),
            ("NA-EAST".to_string(), "14:00Z".to_string()),
        ]
    );
}

#[test]
fn one_off_windows_take_local_times_or_instants() {
    let christmas = json!({
        "timeZone": "Europe/Berlin",
        "startTime": "2026-12-24T18:00:00",
        "endTime": "2026-12-26T23:59:59",
    });
    let found = Schedule::parse(&christmas).unwrap().occurrences(
        &[],
        at("2026-12-01T00:00:00Z"),
        at("2027-01-01T00:00:00Z"),
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].start, at("2026-12-24T17:00:00Z"));
    assert_eq!(found[0].end, at("2026-12-26T22:59:59Z"));
    // Outside the window: nothing.
    let none = Schedule::parse(&christmas).unwrap().occurrences(
        &[],
        at("2027-01-01T00:00:00Z"),
        at("2027-02-01T00:00:00Z"),
    );
    assert!(none.is_empty());
    let instants =
        json!({"startTime": "2026-12-24T17:00:00Z", "endTime": "2026-12-25T00:00:00+01:00"});
    let found = Schedule::parse(&instants).unwrap().occurrences(
        &[],
        at("2026-12-24T00:00:00Z"),
        at("2026-12-26T00:00:00Z"),
    );
    assert_eq!(
        (found[0].start, found[0].end),
        (at("2026-12-24T17:00:00Z"), at("2026-12-24T23:00:00Z"))
    );
}

#[test]
fn count_and_until_end_a_recurrence() {
    let three = json!({
        "timeZone": "UTC",
        "rrule": "FREQ=DAILY;COUNT=3",
        "startTime": "2026-05-01T12:00:00",
        "duration": "PT1H",
    });
    assert_eq!(
        starts(&three, "2026-05-02T00:00:00Z", "2026-06-01T00:00:00Z").len(),
        2,
        "COUNT counts from startTime, not from the window"
    );
    let until = json!({
        "cron": "0 12 * * *",
        "startTime": "2026-05-01T00:00:00",
        "until": "2026-05-03T12:00:00",
        "duration": "PT1H",
    });
    assert_eq!(
        starts(&until, "2026-04-01T00:00:00Z", "2026-06-01T00:00:00Z"),
        owned(&[
            ("2026-05-01T12:00Z", None),
            ("2026-05-02T12:00Z", None),
            ("2026-05-03T12:00Z", None),
        ])
    );
}

#[test]
fn bad_schedules_name_their_field() {
    let refused = |schedule: Value| Schedule::parse(&schedule).expect_err("refused").path;
    // (schedule, the path named)
    let table = [
        (
            json!({"startTime": "2026-05-02T00:00:00", "endTime": "2026-05-01T00:00:00"}),
            "/endTime",
        ),
        (
            json!({"startTime": "2026-05-02T00:00:00", "endTime": "2026-05-02T00:00:00"}),
            "/endTime",
        ),
        (
            json!({"timeZone": "Mars/Olympus", "startTime": "2026-05-01T00:00:00", "endTime": "2026-05-02T00:00:00"}),
            "/timeZone",
        ),
        (
            json!({"timeZone": "UTC", "regionLocal": true, "startTime": "2026-05-01T00:00:00", "endTime": "2026-05-02T00:00:00"}),
            "/timeZone",
        ),
        (
            json!({"regionLocal": true, "startTime": "2026-05-01T00:00:00Z", "endTime": "2026-05-02T00:00:00Z"}),
            "/startTime",
        ),
        (
            json!({"startTime": "next tuesday", "endTime": "2026-05-02T00:00:00"}),
            "/startTime",
        ),
        (json!({"endTime": "2026-05-02T00:00:00"}), "/startTime"),
        (json!({"startTime": "2026-05-01T00:00:00"}), "/endTime"),
        (
            json!({"startTime": "2026-05-01T00:00:00", "endTime": "2026-05-02T00:00:00", "when": 1}),
            "/when",
        ),
        (
            json!({"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "startTime": "2026-01-01T00:00:00", "duration": "PT1H"}),
            "/rrule",
        ),
        (
            json!({"cron": "0 0 30 2 *", "startTime": "2026-01-01T00:00:00", "duration": "PT1H"}),
            "/cron",
        ),
        (
            json!({"cron": "not a cron", "startTime": "2026-01-01T00:00:00", "duration": "PT1H"}),
            "/cron",
        ),
        (
            json!({"rrule": "FREQ=DAILY", "startTime": "2026-01-01T00:00:00", "duration": "PT25H"}),
            "/duration",
        ),
        (
            json!({"cron": "0 */6 * * *", "startTime": "2026-01-01T00:00:00", "duration": "PT7H"}),
            "/duration",
        ),
        (
            json!({"rrule": "FREQ=DAILY", "startTime": "2026-01-01T00:00:00"}),
            "/duration",
        ),
        (
            json!({"rrule": "FREQ=DAILY", "startTime": "2026-01-01T00:00:00", "duration": "PT0S"}),
            "/duration",
        ),
        (
            json!({"rrule": "FREQ=MINUTELY", "startTime": "2026-01-01T00:00:00", "duration": "PT1S"}),
            "/rrule",
        ),
        (
            json!({"rrule": "FREQ=DAILY;UNTIL=20270101T000000Z", "startTime": "2026-01-01T00:00:00", "duration": "PT1H"}),
            "/rrule",
        ),
        (
            json!({"rrule": "DAILY", "startTime": "2026-01-01T00:00:00", "duration": "PT1H"}),
            "/rrule",
        ),
        (
            json!({"rrule": "FREQ=DAILY;BYDAY=XX", "startTime": "2026-01-01T00:00:00", "duration": "PT1H"}),
            "/rrule",
        ),
        (
            json!({"rrule": "FREQ=DAILY", "cron": "0 0 * * *", "startTime": "2026-01-01T00:00:00", "duration": "PT1H"}),
            "/cron",
        ),
        (
            json!({"rrule": "FREQ=DAILY", "startTime": "2026-01-01T00:00:00", "endTime": "2026-01-02T00:00:00", "duration": "PT1H"}),
            "/endTime",
        ),
        (
            json!({"rrule": "FREQ=DAILY", "startTime": "2026-01-01T00:00:00", "until": "2025-01-01T00:00:00", "duration": "PT1H"}),
            "/until",
        ),
        (
            json!({"startTime": "2026-01-01T00:00:00", "endTime": "2026-01-02T00:00:00", "duration": "PT1H"}),
            "/duration",
        ),
        (json!("daily"), ""),
        // Times far outside the years events run in.
        (
            json!({"rrule": "FREQ=DAILY", "startTime": "+262143-01-01T00:00:00", "duration": 60}),
            "/startTime",
        ),
        (
            json!({"cron": "0 0 * * *", "startTime": "1999-12-31T00:00:00", "duration": 60}),
            "/startTime",
        ),
        (
            json!({"timeZone": "America/New_York", "startTime": "+262143-12-31T23:00:00", "endTime": "+262143-12-31T23:30:00"}),
            "/startTime",
        ),
        (
            json!({"timeZone": "Asia/Tokyo", "startTime": "2026-01-01T00:00:00", "endTime": "-262144-01-01T00:00:00"}),
            "/endTime",
        ),
        (
            json!({"startTime": "2026-01-01T00:00:00Z", "endTime": "+10000-01-01T00:00:00Z"}),
            "/endTime",
        ),
        // More often than hourly, however it is spelt.
        (
            json!({"rrule": "FREQ=HOURLY;BYMINUTE=0,30", "startTime": "2026-01-01T00:00:00", "duration": 60}),
            "/rrule",
        ),
        (
            json!({"rrule": "FREQ=DAILY;BYHOUR=1;BYMINUTE=0;BYSECOND=0,1,2", "startTime": "2026-01-01T00:00:00", "duration": 1}),
            "/rrule",
        ),
        (
            json!({"cron": "*/30 * * * *", "startTime": "2026-01-01T00:00:00", "duration": 60}),
            "/cron",
        ),
        (
            json!({"cron": "* * * * * *", "startTime": "2026-01-01T00:00:00", "duration": 1}),
            "/cron",
        ),
    ];
    for (schedule, path) in table {
        assert_eq!(refused(schedule.clone()), path, "{schedule}");
    }
}

#[test]
fn instants_follow_the_documented_rule() {
    let new_york = parse_zone("America/New_York").unwrap();
    let local = |text: &str| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").unwrap();
    // (local, instant, dst)
    let table = [
        ("2026-03-08T01:59", "2026-03-08T06:59:00Z", None),
        ("2026-03-08T02:00", "2026-03-08T07:00:00Z", Some(Dst::Gap)),
        ("2026-03-08T02:59", "2026-03-08T07:59:00Z", Some(Dst::Gap)),
        ("2026-03-08T03:00", "2026-03-08T07:00:00Z", None),
        ("2026-11-01T00:59", "2026-11-01T04:59:00Z", None),
        ("2026-11-01T01:00", "2026-11-01T05:00:00Z", Some(Dst::Fold)),
        ("2026-11-01T01:59", "2026-11-01T05:59:00Z", Some(Dst::Fold)),
        ("2026-11-01T02:00", "2026-11-01T07:00:00Z", None),
    ];
    for (wall, instant, dst) in table {
        assert_eq!(
            instant_of(new_york, local(wall)),
            (at(instant), dst),
            "{wall}"
        );
    }
}

#[test]
fn an_old_start_costs_a_bounded_number_of_steps() {
    // An hourly rule counts from its start: from 2000, 2026 is 228,000
    // steps away, past the budget, so the query ends with what it found.
    let hourly =
        json!({"rrule": "FREQ=HOURLY", "startTime": "2000-01-01T00:00:00", "duration": "PT30M"});
    assert!(starts(&hourly, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z").is_empty());
    // Within the budget (eleven years hourly), every start is there.
    let recent =
        json!({"rrule": "FREQ=HOURLY", "startTime": "2020-01-01T00:00:00", "duration": "PT30M"});
    assert_eq!(
        starts(&recent, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z").len(),
        24
    );
    // A daily rule from 2000 is 9,500 steps: found.
    let daily =
        json!({"rrule": "FREQ=DAILY", "startTime": "2000-01-01T12:00:00", "duration": "PT1H"});
    assert_eq!(
        starts(&daily, "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z"),
        owned(&[("2026-01-01T12:00Z", None), ("2026-01-02T12:00Z", None)])
    );
}

#[test]
fn a_full_window_is_not_cut_short_by_the_margin() {
    let hourly =
        json!({"cron": "0 * * * *", "startTime": "2026-01-01T00:00:00", "duration": "PT30M"});
    let found = Schedule::parse(&hourly).unwrap().occurrences(
        &[],
        at("2026-02-01T00:00:00Z"),
        at("2028-01-01T00:00:00Z"),
    );
    assert_eq!(found.len(), MAX_OCCURRENCES);
    assert_eq!(found[0].start, at("2026-02-01T00:00:00Z"));
}
