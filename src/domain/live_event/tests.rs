use super::*;
use chrono::{DateTime, Utc};
use serde_json::json;

fn body() -> Value {
    json!({
        "name": "winter-festival",
        "displayName": "Winter Festival",
        "eventType": "SeasonalPromotion",
        "rules": {"rewardMultiplier": 2},
        "overrides": [{"config": "weapon-balance", "patch": {"weapons": {"snowball": {"damage": 5}}}}],
        "schedule": {"timeZone": "Europe/Berlin", "startTime": "2026-12-20T00:00:00", "endTime": "2027-01-03T00:00:00"},
        "regions": ["eu-west", "EU-WEST", "na-east"],
        "audience": {"segments": ["vip"], "percentage": 25},
        "priority": 10,
        "contentVersion": ">=2.4.0",
    })
}

#[test]
fn a_full_event_parses_into_bounded_types() {
    let spec = LiveEventSpec::parse(&body()).expect("a valid event");
    assert_eq!(spec.name.as_str(), "winter-festival");
    assert_eq!(spec.event_type, EventType::SeasonalPromotion);
    assert_eq!(
        spec.regions,
        ["EU-WEST", "NA-EAST"],
        "upper case, once each"
    );
    assert_eq!(spec.audience.segments, ["vip"]);
    assert_eq!(spec.audience.percentage, Some(25.0));
    assert_eq!(spec.priority, 10);
    assert!(matches!(spec.content_version, ContentVersion::Required(_)));
    assert!(!spec.allow_overlap);
    let minimal = LiveEventSpec::parse(&json!({
        "name": "x", "eventType": "Season",
        "schedule": {"startTime": "2026-12-20T00:00:00Z", "endTime": "2027-01-03T00:00:00Z"},
    }))
    .expect("the rest has defaults");
    assert_eq!(minimal.display_name, "x");
    assert_eq!(minimal.content_version, ContentVersion::Any);
    assert!(minimal.overrides.is_empty() && minimal.regions.is_empty());
}

#[test]
fn bad_events_name_the_field() {
    let with = |pointer: &str, value: Value| {
        let mut body = body();
        *body.pointer_mut(pointer).expect("a field of the sample") = value;
        body
    };
    let without = |key: &str| {
        let mut body = body();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let big = "x".repeat(MAX_PATCH_BYTES);
    let deep = (0..40).fold(json!(1), |v, _| json!({"a": v}));
    // (body, path named)
    let table = [
        (json!([]), ""),
        (without("name"), "/name"),
        (with("/name", json!("Winter Festival")), "/name"),
        (with("/displayName", json!("a\u{0}b")), "/displayName"),
        (without("eventType"), "/eventType"),
        (with("/eventType", json!("Party")), "/eventType"),
        (with("/rules", json!([1])), "/rules"),
        (with("/overrides", json!({"config": "x"})), "/overrides"),
        (
            with("/overrides/0/config", json!("Weapon Balance")),
            "/overrides/0/config",
        ),
        (with("/overrides/0/patch", json!({})), "/overrides/0/patch"),
        (with("/overrides/0/patch", json!([1])), "/overrides/0/patch"),
        (
            with("/overrides/0/patch", json!({"big": big})),
            "/overrides/0/patch",
        ),
        (with("/overrides/0/patch", deep), "/overrides/0/patch"),
        (
            with(
                "/overrides",
                json!([{"config": "a", "patch": {"x": 1}}, {"config": "a", "patch": {"y": 1}}]),
            ),
            "/overrides/1/config",
        ),
        (
            with(
                "/overrides/0",
                json!({"config": "a", "patch": {"x": 1}, "why": 1}),
            ),
            "/overrides/0/why",
        ),
        (without("schedule"), "/schedule"),
        (
            with("/schedule/endTime", json!("2026-12-19T00:00:00")),
            "/schedule/endTime",
        ),
        (
            with("/schedule/timeZone", json!("Europe/Narnia")),
            "/schedule/timeZone",
        ),
        (with("/regions/0", json!("eu west")), "/regions/0"),
        (
            with("/audience/percentage", json!(101)),
            "/audience/percentage",
        ),
        (
            with("/audience/segments", json!(["VIP!"])),
            "/audience/segments/0",
        ),
        (
            with("/audience", json!({"segment": "vip"})),
            "/audience/segment",
        ),
        (with("/priority", json!(1.5)), "/priority"),
        (with("/priority", json!(5000)), "/priority"),
        (with("/contentVersion", json!("two")), "/contentVersion"),
        (with("/name", json!(7)), "/name"),
    ];
    for (body, path) in table {
        let error = LiveEventSpec::parse(&body).expect_err("refused");
        assert_eq!(error.path, path, "{body}: {}", error.message);
    }
    // A regionLocal schedule needs the regions whose time it follows.
    let mut local = with(
        "/schedule",
        json!({"regionLocal": true, "cron": "0 10 * * *", "startTime": "2026-12-01T00:00:00", "duration": "PT1H"}),
    );
    assert!(LiveEventSpec::parse(&local).is_ok());
    local.as_object_mut().unwrap().remove("regions");
    assert_eq!(LiveEventSpec::parse(&local).unwrap_err().path, "/regions");
    let mut unknown = body();
    unknown["colour"] = json!("red");
    assert_eq!(LiveEventSpec::parse(&unknown).unwrap_err().path, "/colour");
}

#[test]
fn events_clash_on_a_shared_path_at_the_same_time_and_place() {
    let o = |config: &str, patch: Value| Override {
        config: Slug::parse(config).unwrap(),
        patch,
    };
    let winter = [o(
        "balance",
        json!({"weapons": {"sword": {"damage": 5}}, "xp": 2}),
    )];
    // (other event's overrides, the shared path)
    let table = [
        (
            vec![o("balance", json!({"weapons": {"sword": {"damage": 9}}}))],
            Some("/weapons/sword/damage"),
        ),
        (
            vec![o("balance", json!({"weapons": {"sword": null}}))],
            Some("/weapons/sword"),
        ),
        (
            vec![o("balance", json!({"weapons": {"bow": {"damage": 9}}}))],
            None,
        ),
        (vec![o("economy", json!({"xp": 3}))], None),
        (vec![o("balance", json!({"xp": 3}))], Some("/xp")),
    ];
    for (other, shared) in table {
        assert_eq!(
            shared_path(&winter, &other).map(|(_, p)| p),
            shared.map(str::to_owned),
            "{other:?}"
        );
    }
    assert_eq!(
        patch_paths(&json!({"a/b": {"c~d": 1}, "e": null})),
        ["/a~1b/c~0d", "/e"]
    );

    let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
    let occurrence = |start: &str, end: &str, region: Option<&str>| Occurrence {
        start: at(start),
        end: at(end),
        region: region.map(str::to_owned),
        local_start: at(start).naive_utc(),
        dst: None,
    };
    let a = occurrence("2026-12-20T00:00:00Z", "2026-12-21T00:00:00Z", None);
    let later = occurrence("2026-12-21T00:00:00Z", "2026-12-22T00:00:00Z", None);
    let during = occurrence("2026-12-20T12:00:00Z", "2026-12-20T13:00:00Z", Some("APAC"));
    let eu = ["EU-WEST".to_string()];
    assert!(
        !occurrences_clash(&a, &[], &later, &[]),
        "back to back is no clash"
    );
    assert!(
        occurrences_clash(&a, &[], &during, &[]),
        "everywhere meets APAC"
    );
    assert!(
        !occurrences_clash(&a, &eu, &during, &[]),
        "EU-WEST is not APAC"
    );
    assert!(occurrences_clash(&a, &eu, &a, &eu));
}
