//! Live events and segments over REST on both databases: player-targeted
//! events resolved per player, schedules followed by each event's actor,
//! operators' controls, bad definitions refused with the path, a
//! region-local recurring event across a daylight-saving change (on a
//! moved clock), and a restarted hub catching up with an activation it
//! missed.

use crate::helpers::{TestApp, balance, connected, sdk_config, spawn_app_on};
use crate::on_both_databases;
use chrono::{Duration as Span, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::time::Duration;

fn at(offset: Span) -> String {
    (Utc::now() + offset).to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn setup(app: &TestApp) {
    let created = app
        .create_config("weapon-balance", "GameBalance", "staging")
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    app.deploy("weapon-balance", "1.0.0", balance(45)).await;
}

fn event(name: &str, start: Span, end: Span, damage: u32) -> Value {
    json!({
        "name": name,
        "displayName": "Double damage weekend",
        "eventType": "LimitedTimeOffer",
        "rules": {"rewardMultipliers": {"xp": 2.0}, "mutators": ["double-damage"]},
        "overrides": [{"config": "weapon-balance", "patch": {"weapons": {"rifle": {"damage": damage}}}}],
        "schedule": {"startTime": at(start), "endTime": at(end)},
    })
}

/// Polls an event until `done` holds (at most 10 s); the last view.
async fn wait_for(app: &TestApp, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut view = Value::Null;
    for _ in 0..500 {
        view = app.get(&format!("/api/v1/live-events/{name}")).await.body;
        if done(&view) {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    view
}

/// Polls a player's resolved damage until it is `expected` (at most 10 s);
/// whether it got there. (A schedule's end reaches the base revision once
/// the event's deployment has rolled back.)
async fn sees_damage(app: &TestApp, path: &str, expected: u32) -> bool {
    for _ in 0..500 {
        if damage(&app.get(path).await.body) == expected {
            return true;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn damage(answer: &Value) -> &Value {
    &answer["configs"]["weapon-balance"]["document"]["weapons"]["rifle"]["damage"]
}

async fn a_player_targeted_event_is_seen_only_by_its_segment(app: TestApp) {
    setup(&app).await;
    let testers = app
        .post_json(
            "/api/v1/segments",
            &json!({"name": "testers", "description": "QA accounts", "members": ["p1", "p2"]}),
        )
        .await;
    assert_eq!(testers.status, 201, "{:?}", testers.body);
    assert_eq!(testers.body["members"], 2);
    let veterans = app
        .post_json(
            "/api/v1/segments",
            &json!({"name": "veterans", "rule": {"attribute": "level", "gte": 10}}),
        )
        .await;
    assert_eq!(veterans.status, 201, "{:?}", veterans.body);
    let mut body = event("double-damage", Span::minutes(-1), Span::hours(1), 90);
    body["audience"] = json!({"segments": ["testers", "veterans"]});
    let created = app.post_json("/api/v1/live-events", &body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    // Created a minute after its start: active at once, and marked late.
    let view = wait_for(&app, "double-damage", |v| v["state"] == "Active").await;
    assert_eq!(view["state"], "Active", "{view:?}");
    assert!(view["lateMs"].as_i64().unwrap_or(0) >= 59_000, "{view:?}");
    assert_eq!(view["active"].as_array().unwrap().len(), 1, "{view:?}");

    let config = |player: &str, extra: &str| {
        format!("/api/v1/players/{player}/config?configs=weapon-balance&region=EU-WEST{extra}")
    };
    let listed = app.get(&config("p1", "&explain=true")).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert_eq!(damage(&listed.body), 90, "{:?}", listed.body);
    assert_eq!(listed.body["events"], json!(["double-damage"]));
    let resolved = &listed.body["configs"]["weapon-balance"];
    assert_eq!(
        resolved["checksum"],
        hotswap_client::document_checksum(&resolved["document"]),
        "the checksum servers verify"
    );
    assert_eq!(resolved["layers"], json!(["base", "event:double-damage"]));
    assert_eq!(
        resolved["explain"]["/weapons/rifle/damage"],
        "event:double-damage"
    );
    // By rule: level 12 is in, level 3 is out.
    let veteran = app.get(&config("p9", "&level=12")).await;
    assert_eq!(damage(&veteran.body), 90, "{:?}", veteran.body);
    let novice = app.get(&config("p9", "&level=3")).await;
    assert_eq!(damage(&novice.body), 45, "{:?}", novice.body);
    assert_eq!(novice.body["events"], json!([]));
    assert_eq!(
        novice.body["configs"]["weapon-balance"]["layers"],
        json!(["base"])
    );

    // A roster in one call agrees with the single lookups.
    let roster = app
        .post_json(
            "/api/v1/players/resolve",
            &json!({"players": [{"playerId": "p1"}, {"playerId": "p9", "attributes": {"level": 3}}],
                    "configs": ["weapon-balance"]}),
        )
        .await;
    assert_eq!(roster.status, 200, "{:?}", roster.body);
    assert_eq!(damage(&roster.body["players"][0]), 90);
    assert_eq!(damage(&roster.body["players"][1]), 45);
    assert_eq!(
        roster.body["players"][0]["configs"]["weapon-balance"]["checksum"],
        listed.body["configs"]["weapon-balance"]["checksum"]
    );

    // The studios' shape.
    let active = app
        .get("/api/v1/events/active?playerId=p2&region=EU-WEST")
        .await;
    assert_eq!(active.status, 200, "{:?}", active.body);
    assert!(active.body["serverTime"].is_string());
    assert_eq!(active.body["events"][0]["id"], "double-damage");
    assert_eq!(active.body["events"][0]["type"], "LimitedTimeOffer");
    assert_eq!(
        active.body["events"][0]["rules"]["rewardMultipliers"]["xp"],
        2.0
    );
    let outsider = app.get("/api/v1/events/active?playerId=p3").await;
    assert_eq!(outsider.body["events"], json!([]), "{:?}", outsider.body);
    // For a region, only events open to everyone there: this one is not.
    let region = app.get("/api/v1/events/active?region=EU-WEST").await;
    assert_eq!(region.body["events"], json!([]), "{:?}", region.body);

    // Membership moves are seen at once; a segment in use cannot go.
    let moved = app
        .post_json(
            "/api/v1/segments/testers/members",
            &json!({"add": ["p3"], "remove": ["p1"]}),
        )
        .await;
    assert_eq!(moved.status, 200, "{:?}", moved.body);
    assert_eq!(moved.body["members"], 2);
    assert_eq!(damage(&app.get(&config("p3", "")).await.body), 90);
    assert_eq!(damage(&app.get(&config("p1", "")).await.body), 45);
    let in_use = app.delete("/api/v1/segments/testers").await;
    assert_eq!(in_use.status, 409, "{:?}", in_use.body);
    assert_eq!(in_use.body["code"], "segment_in_use");

    // A preview: a day later the event is over.
    let tomorrow = app
        .get(&config(
            "p3",
            &format!("&at={}", at(Span::days(1)).replace('+', "%2B")),
        ))
        .await;
    assert_eq!(tomorrow.status, 200, "{:?}", tomorrow.body);
    assert_eq!(damage(&tomorrow.body), 45, "{:?}", tomorrow.body);
    // An unknown config is a 404; an unbounded attribute a 422.
    let unknown = app
        .get("/api/v1/players/p1/config?configs=nope&region=EU-WEST")
        .await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    let long = "x".repeat(300);
    let unbounded = app
        .get(&format!(
            "/api/v1/players/p1/config?configs=weapon-balance&note={long}"
        ))
        .await;
    assert_eq!(unbounded.status, 422, "{:?}", unbounded.body);
    assert_eq!(
        unbounded.body["errors"][0]["path"],
        "/query/attributes/note"
    );
}

async fn events_follow_their_schedule_and_operators_controls(app: TestApp) {
    setup(&app).await;
    let soon = app
        .post_json(
            "/api/v1/live-events",
            &event(
                "flash-sale",
                Span::milliseconds(1500),
                Span::milliseconds(3000),
                70,
            ),
        )
        .await;
    assert_eq!(soon.status, 201, "{:?}", soon.body);
    assert_eq!(soon.body["state"], "Scheduled");
    assert!(soon.body["next"]["start"].is_string(), "{:?}", soon.body);
    let active = wait_for(&app, "flash-sale", |v| v["state"] == "Active").await;
    assert_eq!(active["state"], "Active", "{active:?}");
    assert!(active["lateMs"].is_null(), "started on time: {active:?}");
    let player = "/api/v1/players/anyone/config?configs=weapon-balance";
    assert_eq!(damage(&app.get(player).await.body), 70);
    let ended = wait_for(&app, "flash-sale", |v| v["state"] == "Ended").await;
    assert_eq!(ended["state"], "Ended", "{ended:?}");
    assert!(sees_damage(&app, player, 45).await);

    // An event an hour away, driven by hand.
    let later = app
        .post_json(
            "/api/v1/live-events",
            &event("tournament", Span::hours(1), Span::hours(2), 80),
        )
        .await;
    assert_eq!(later.status, 201, "{:?}", later.body);
    let step = |verb: &'static str| {
        let app = &app;
        async move {
            app.post_empty(&format!("/api/v1/live-events/tournament/{verb}"))
                .await
        }
    };
    let activated = step("activate").await;
    assert_eq!(activated.status, 200, "{:?}", activated.body);
    assert_eq!(activated.body["state"], "Active");
    assert_eq!(activated.body["active"][0]["manual"], true);
    assert_eq!(damage(&app.get(player).await.body), 80);
    let again = step("activate").await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert_eq!(again.body["code"], "invalid_transition");
    assert_eq!(step("pause").await.body["state"], "Paused");
    assert_eq!(
        damage(&app.get(player).await.body),
        45,
        "paused: not applied"
    );
    assert_eq!(step("resume").await.body["state"], "Active");
    assert_eq!(damage(&app.get(player).await.body), 80);
    let over = step("end").await;
    assert_eq!(over.body["state"], "Ended", "{:?}", over.body);
    assert_eq!(damage(&app.get(player).await.body), 45);
    assert_eq!(step("cancel").await.status, 409);
    // Every move is in the audit trail, the hub's own ones too.
    let audit = app
        .get("/api/v1/audit?resource=live-events/tournament")
        .await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| row["action"].as_str())
        .collect();
    for action in [
        "live-event.create",
        "live-event.activate",
        "live-event.pause",
        "live-event.resume",
        "live-event.end",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let system = app
        .get("/api/v1/audit?resource=live-events/flash-sale")
        .await;
    assert!(
        system.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["action"] == "live-event.state" && row["actor"] == "system"),
        "{:?}",
        system.body
    );
    // The timeline lists the occurrences in a window.
    let timeline = app
        .get(&format!(
            "/api/v1/live-events/timeline?from={}&to={}",
            at(Span::hours(-1)).replace('+', "%2B"),
            at(Span::hours(3)).replace('+', "%2B")
        ))
        .await;
    assert_eq!(timeline.status, 200, "{:?}", timeline.body);
    let names: Vec<&str> = timeline.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["event"].as_str())
        .collect();
    assert!(names.contains(&"flash-sale"), "{names:?}");
    // An ended event may be deleted; its name stays taken.
    assert_eq!(
        app.delete("/api/v1/live-events/flash-sale").await.status,
        204
    );
    assert_eq!(app.get("/api/v1/live-events/flash-sale").await.status, 404);
    let reused = app
        .post_json(
            "/api/v1/live-events",
            &event("flash-sale", Span::hours(5), Span::hours(6), 70),
        )
        .await;
    assert_eq!(reused.status, 409, "{:?}", reused.body);
    assert_eq!(reused.body["code"], "live_event_exists");
}

async fn bad_definitions_are_refused_naming_the_path(app: TestApp) {
    setup(&app).await;
    let base = event("bad", Span::hours(1), Span::hours(2), 90);
    let with = |pointer: &str, value: Value| {
        let mut body = base.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        body
    };
    let cases = [
        (
            with(
                "/overrides/0/patch",
                json!({"weapons": {"rifle": {"damage": 5000}}}),
            ),
            "/overrides/0/patch/weapons/rifle/damage",
        ),
        (
            with("/overrides/0/config", json!("nope")),
            "/overrides/0/config",
        ),
        (
            with("/schedule/endTime", json!(at(Span::minutes(30)))),
            "/schedule/endTime",
        ),
        (
            with(
                "/schedule",
                json!({"timeZone": "Europe/Narnia", "startTime": "2027-01-01T10:00:00", "endTime": "2027-01-01T12:00:00"}),
            ),
            "/schedule/timeZone",
        ),
        (
            with(
                "/schedule",
                json!({"startTime": "2020-01-01T10:00:00Z", "endTime": "2020-01-01T12:00:00Z"}),
            ),
            "/schedule",
        ),
        (
            with("/rules", json!({"rewardMultipliers": {"xp": 500}})),
            "/rules/rewardMultipliers/xp",
        ),
        (with("/name", json!("Not A Slug")), "/name"),
        (
            {
                let mut body = base.clone();
                body["guardrails"] = json!([{"metric": "crashRate", "critical": 0.02}]);
                body
            },
            "/guardrails",
        ),
        (
            {
                let mut body = base.clone();
                body["rollout"] = json!({"strategy": "BlueGreen"});
                body
            },
            "/rollout/strategy",
        ),
        (
            // A rollout that makes no deployment plan: refused when the
            // event is defined, not retried at each activation.
            {
                let mut body = base.clone();
                body["rollout"] = json!({"strategy": "Canary", "phases": [60, 20, 100]});
                body
            },
            "/rollout",
        ),
    ];
    for (body, path) in cases {
        let refused = app.post_json("/api/v1/live-events", &body).await;
        assert_eq!(refused.status, 422, "{path}: {:?}", refused.body);
        assert_eq!(
            refused.body["errors"][0]["path"], path,
            "{:?}",
            refused.body
        );
    }
    let mut unknown_segment = base.clone();
    unknown_segment["audience"] = json!({"segments": ["whales"]});
    let refused = app.post_json("/api/v1/live-events", &unknown_segment).await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(refused.body["errors"][0]["path"], "/audience/segments/0");
    let mut region_local = base.clone();
    region_local["schedule"] = json!({"regionLocal": true, "rrule": "FREQ=WEEKLY;BYDAY=SA",
        "startTime": "2027-01-02T18:00:00", "duration": "PT2H"});
    region_local["regions"] = json!(["EU-WEST", "MOON-BASE"]);
    let refused = app.post_json("/api/v1/live-events", &region_local).await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(refused.body["errors"][0]["path"], "/regions/1");
    // Nothing was created.
    let listed = app.get("/api/v1/live-events").await;
    assert_eq!(listed.body["items"], json!([]), "{:?}", listed.body);

    // Two player-targeted events changing one path at the same time: 409
    // unless allowed.
    let vip = |mut body: Value| {
        body["audience"] = json!({"segments": ["vip"]});
        body
    };
    let first = app
        .post_json(
            "/api/v1/live-events",
            &vip(event("first", Span::hours(1), Span::hours(3), 60)),
        )
        .await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let second = vip(event("second", Span::hours(2), Span::hours(4), 70));
    let clash = app.post_json("/api/v1/live-events", &second).await;
    assert_eq!(clash.status, 409, "{:?}", clash.body);
    assert_eq!(clash.body["code"], "event_overlap");
    assert_eq!(clash.body["overlap"]["event"], "first");
    assert_eq!(clash.body["overlap"]["path"], "/weapons/rifle/damage");
    let mut allowed = second.clone();
    allowed["allowOverlap"] = json!(true);
    let created = app.post_json("/api/v1/live-events", &allowed).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    // Later events do not clash.
    let apart = app
        .post_json(
            "/api/v1/live-events",
            &vip(event("third", Span::hours(5), Span::hours(6), 60)),
        )
        .await;
    assert_eq!(apart.status, 201, "{:?}", apart.body);
    // The timeline flags the overlap it allowed.
    let timeline = app.get("/api/v1/live-events/timeline").await;
    let second_entry = timeline.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["event"] == "second")
        .cloned()
        .unwrap();
    assert_eq!(
        second_entry["overlaps"][0]["event"], "first",
        "{second_entry:?}"
    );

    // Segments: a cycle, an unknown reference, built-ins that cannot change.
    for (name, rule) in [
        ("alpha", json!({"attribute": "level", "gte": 5})),
        ("beta", json!({"segment": "alpha"})),
    ] {
        let created = app
            .post_json("/api/v1/segments", &json!({"name": name, "rule": rule}))
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
    }
    let cycle = app
        .put_json(
            "/api/v1/segments/alpha",
            &json!({"rule": {"segment": "beta"}}),
        )
        .await;
    assert_eq!(cycle.status, 422, "{:?}", cycle.body);
    assert_eq!(cycle.body["errors"][0]["path"], "/rule");
    let unknown = app
        .post_json(
            "/api/v1/segments",
            &json!({"name": "gamma", "rule": {"segment": "nowhere"}}),
        )
        .await;
    assert_eq!(unknown.status, 422, "{:?}", unknown.body);
    let built_in = app
        .put_json(
            "/api/v1/segments/vip",
            &json!({"rule": {"attribute": "level", "gte": 1}}),
        )
        .await;
    assert_eq!(built_in.status, 422, "{:?}", built_in.body);
    let listed = app.get("/api/v1/segments").await;
    let names: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["vip", "new-players", "inactive-players", "alpha", "beta"]
    );
}

/// Waits until `client` holds `revision` of weapon-balance (at most 10 s).
async fn holds(client: &hotswap_client::Client, revision: i64) -> bool {
    for _ in 0..500 {
        if client.revisions().get("weapon-balance") == Some(&revision) {
            return true;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn a_server_wide_event_reaches_its_regions_servers_and_ends_on_time(app: TestApp) {
    setup(&app).await;
    let (key, _) = app.server_key(&[], &[]).await;
    let eu = connected(sdk_config(&app, &key, "eu-1")).await;
    let na = connected(sdk_config(&app, &key, "na-1").region("NA-EAST")).await;
    assert!(holds(&eu, 1).await && holds(&na, 1).await);
    let mut body = event(
        "eu-double",
        Span::milliseconds(1500),
        Span::milliseconds(6500),
        90,
    );
    body["regions"] = json!(["EU-WEST"]);
    body["previewLead"] = json!("PT1S");
    let created = app.post_json("/api/v1/live-events", &body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let scheduled_start =
        chrono::DateTime::parse_from_rfc3339(created.body["next"]["start"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
    // Its instant: the EU server runs the event's version, the NA one not.
    assert!(holds(&eu, 2).await, "{:?}", eu.revisions());
    let applied_at = Utc::now().timestamp_millis();
    assert!(
        applied_at >= scheduled_start,
        "not before its start ({applied_at} < {scheduled_start})"
    );
    let document = &eu.config("weapon-balance").unwrap().document;
    assert_eq!(document["weapons"]["rifle"]["damage"], 90);
    assert_eq!(
        eu.config("weapon-balance").unwrap().version,
        "1.0.1-event.1"
    );
    assert_eq!(na.revisions().get("weapon-balance"), Some(&1));
    for _ in 0..100 {
        if eu
            .live_events()
            .first()
            .is_some_and(|e| e.phase == "started")
        {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let phases: Vec<String> = eu.live_events().iter().map(|e| e.phase.clone()).collect();
    assert_eq!(phases, ["started"], "the event frame");
    assert!(na.live_events().is_empty(), "NA is not covered");
    // Engagement: the game's counters for the event, and the sessions and
    // purchases of the servers it covers, per occurrence and region.
    for _ in 0..10 {
        eu.metrics().record_session_start();
    }
    eu.metrics().record_purchase();
    eu.metrics().set_custom("event.eu-double.participants", 7.0);
    eu.metrics().set_custom("event.eu-double.conversions", 2.0);
    let mut engagement = Value::Null;
    for _ in 0..100 {
        engagement = app.get("/api/v1/live-events/eu-double/metrics").await.body;
        if engagement["items"][0]["participants"].as_f64() >= Some(7.0) {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let item = &engagement["items"][0];
    assert_eq!(item["region"], "EU-WEST", "{engagement:?}");
    assert_eq!(item["participants"], 7.0, "{engagement:?}");
    assert_eq!(item["conversions"], 2.0, "{engagement:?}");
    assert_eq!(item["sessions"], 10, "{engagement:?}");
    assert_eq!(item["purchases"], 1, "{engagement:?}");
    assert_eq!(item["participationRate"], 0.7, "{engagement:?}");
    assert_eq!(
        app.get("/api/v1/live-events/eu-double/metrics?region=NA-EAST")
            .await
            .body["items"],
        json!([]),
        "the NA server is not covered"
    );
    // The acks are the deployment's.
    let deployments = app.get("/api/v1/deployments").await.body;
    let carrying = &deployments["items"][0];
    assert_eq!(carrying["version"], "1.0.1-event.1", "{deployments:?}");
    assert_eq!(carrying["createdBy"], "system");
    // Its end: the EU server is back on the base revision.
    assert!(holds(&eu, 1).await, "{:?}", eu.revisions());
    assert_eq!(
        eu.config("weapon-balance").unwrap().document["weapons"]["rifle"]["damage"],
        45
    );
    let view = wait_for(&app, "eu-double", |v| v["state"] == "Ended").await;
    assert_eq!(view["state"], "Ended", "{view:?}");
    for _ in 0..100 {
        if eu.live_events().first().is_some_and(|e| e.phase == "ended") {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(eu.live_events()[0].phase, "ended");
    eu.stop().await;
    na.stop().await;
}

/// The shared table: players (attributes) whose view of weapon-balance the
/// hub's endpoint and the SDK's local resolution must agree on, document
/// and checksum, with the layers each expects.
fn cases() -> Vec<(&'static str, Value, Vec<&'static str>)> {
    vec![
        ("p1", json!({}), vec!["testers-boost"]),
        (
            "p2",
            json!({"level": 12}),
            vec!["testers-boost", "veteran-armor"],
        ),
        ("p3", json!({"level": 3}), vec![]),
        (
            "p4",
            json!({"platform": "ios", "contentVersion": "2.1.0"}),
            vec!["mobile-content"],
        ),
        (
            "p5",
            json!({"platform": "ios", "contentVersion": "1.0.0"}),
            vec![],
        ),
        (
            "p6",
            json!({"level": 40, "platform": "android"}),
            vec!["veteran-armor"],
        ),
    ]
}

async fn the_sdk_and_the_hub_resolve_every_player_alike(app: TestApp) {
    setup(&app).await;
    for (name, definition) in [
        ("testers", json!({"members": ["p1", "p2"]})),
        (
            "veterans",
            json!({"rule": {"attribute": "level", "gte": 10}}),
        ),
        (
            "mobile",
            json!({"rule": {"attribute": "platform", "in": ["ios", "android"]}}),
        ),
    ] {
        let mut body = definition;
        body["name"] = json!(name);
        let created = app.post_json("/api/v1/segments", &body).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
    }
    let (key, _) = app.server_key(&[], &[]).await;
    let server = connected(sdk_config(&app, &key, "resolver-1").liveops()).await;
    assert!(holds(&server, 1).await);
    let events = [
        (
            "testers-boost",
            json!({"segments": ["testers"]}),
            0,
            None,
            json!({"weapons": {"rifle": {"damage": 90}}}),
        ),
        (
            "veteran-armor",
            json!({"segments": ["veterans"]}),
            5,
            None,
            json!({"weapons": {"rifle": {"damage": 60}}, "characters": {"tank": {"armor": 80}}}),
        ),
        (
            "half-of-eu",
            json!({"percentage": 50.0}),
            0,
            None,
            json!({"weapons": {"rifle": {"fireRate": 700}}}),
        ),
        (
            "mobile-content",
            json!({"segments": ["mobile"]}),
            0,
            Some(">=2.0.0"),
            json!({"weapons": {"rifle": {"reloadTime": 2.0}}}),
        ),
    ];
    for (name, audience, priority, content, patch) in events {
        let mut body = event(name, Span::minutes(-1), Span::hours(1), 0);
        body["overrides"] = json!([{"config": "weapon-balance", "patch": patch}]);
        body["audience"] = audience;
        body["priority"] = json!(priority);
        body["allowOverlap"] = json!(true);
        if name == "half-of-eu" {
            body["regions"] = json!(["EU-WEST"]);
        }
        if let Some(content) = content {
            body["contentVersion"] = json!(content);
        }
        let created = app.post_json("/api/v1/live-events", &body).await;
        assert_eq!(created.status, 201, "{name}: {:?}", created.body);
        let view = wait_for(&app, name, |v| v["state"] == "Active").await;
        assert_eq!(view["state"], "Active", "{view:?}");
    }
    // Every event is in force at the hub; the SDK hears it in its definitions.
    let mut table = cases();
    for n in 10..40 {
        table.push((
            Box::leak(format!("bucket-{n}").into_boxed_str()),
            json!({}),
            vec![],
        ));
    }
    let mut in_half = 0;
    for (id, attributes, expected) in table {
        let mut player = hotswap_client::liveops::Player::new(id).with("region", "EU-WEST");
        let mut query = format!(
            "/api/v1/players/{id}/config?configs=weapon-balance&region=EU-WEST&explain=true"
        );
        for (k, v) in attributes.as_object().unwrap() {
            player = player.with(k, v.clone());
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            query.push_str(&format!("&{k}={text}"));
        }
        let mut agreed = None;
        for _ in 0..250 {
            let hub = app.get(&query).await.body;
            let hub = &hub["configs"]["weapon-balance"];
            let local = server
                .for_player(&player)
                .resolve_at("weapon-balance", Utc::now().timestamp_millis(), true)
                .unwrap();
            if hub["checksum"] == local.checksum.as_str()
                && hub["document"] == local.document
                && hub["layers"] == json!(local.layers)
                && hub["explain"] == json!(local.explain)
            {
                agreed = Some(local);
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        let resolved = agreed.unwrap_or_else(|| panic!("{id}: the hub and the SDK disagree"));
        let events: Vec<&str> = resolved
            .layers
            .iter()
            .filter_map(|l| l.strip_prefix("event:"))
            .filter(|e| *e != "half-of-eu")
            .collect();
        in_half += usize::from(resolved.layers.iter().any(|l| l == "event:half-of-eu"));
        assert_eq!(events, expected, "{id}: {:?}", resolved.layers);
        if expected.contains(&"veteran-armor") {
            // Priority 5 applies last: its damage wins over the testers' 90.
            assert_eq!(resolved.document["weapons"]["rifle"]["damage"], 60, "{id}");
        }
    }
    assert!(
        (5..=31).contains(&in_half),
        "about half of 36 players: {in_half}"
    );
    // `get::<T>` reads the same document.
    let p1 = hotswap_client::liveops::Player::new("p1").with("region", "EU-WEST");
    let typed: Value = server.for_player(&p1).get("weapon-balance").unwrap();
    assert_eq!(typed["weapons"]["rifle"]["damage"], 90);
    server.stop().await;
}

async fn events_cannot_touch_secrets_nor_skip_production_approvals(app: TestApp) {
    let schema = json!({"properties": {"apiKey": {"type": "string", "x-secret": true}, "endpoint": {"type": "string"}}});
    let registered = app
        .post_json(
            "/api/v1/schemas",
            &json!({"id": "payments", "version": "1.0.0", "schema": schema}),
        )
        .await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let created = app.create_production_config("payments", "payments").await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let uploaded = app
        .post_version(
            "payments",
            "1.0.0",
            json!({"apiKey": "sk-live-never-in-an-event", "endpoint": "https://pay"}),
        )
        .await;
    assert_eq!(uploaded.status, 201, "{:?}", uploaded.body);
    let mut body = event("leaky", Span::hours(1), Span::hours(2), 0);
    body["overrides"] = json!([{"config": "payments", "patch": {"apiKey": "sk-test-swapped"}}]);
    let refused = app.post_json("/api/v1/live-events", &body).await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(
        refused.body["errors"][0]["path"],
        "/overrides/0/patch/apiKey"
    );
    // A production config's deployments need an admin: so does an event
    // that overrides it on servers.
    body["overrides"] = json!([{"config": "payments", "patch": {"endpoint": "https://pay-2"}}]);
    let operator = app.token(hotswap::Role::Operator, "olivia");
    let payload = ("application/json", serde_json::to_vec(&body).unwrap());
    let forbidden = app
        .request(
            "POST",
            "/api/v1/live-events",
            Some(&operator),
            Some(payload),
        )
        .await;
    assert_eq!(forbidden.status, 403, "{:?}", forbidden.body);
    let allowed = app.post_json("/api/v1/live-events", &body).await;
    assert_eq!(allowed.status, 201, "an admin may: {:?}", allowed.body);
    // Two server-wide events on one config at once clash, whatever paths.
    let mut other = event("other-path", Span::minutes(90), Span::hours(3), 0);
    other["overrides"] = json!([{"config": "payments", "patch": {"region": "eu"}}]);
    let clash = app.post_json("/api/v1/live-events", &other).await;
    assert_eq!(clash.status, 409, "{:?}", clash.body);
    assert_eq!(clash.body["overlap"]["event"], "leaky");
    assert_eq!(clash.body["overlap"]["config"], "payments");
}

fn quick_reconnects(_settings: &mut hotswap::settings::Settings) {}

async fn a_restarted_hub_catches_up_with_an_activation_it_missed(app: TestApp) {
    setup(&app).await;
    let created = app
        .post_json(
            "/api/v1/live-events",
            &event("night-owl", Span::milliseconds(1500), Span::hours(1), 75),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["state"], "Scheduled");
    // The hub goes down before the start and comes back after it.
    app.shutdown.shutdown().await;
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    let (db, url, dir) = app.into_parts();
    let again = spawn_app_on(db, url, dir, quick_reconnects).await;
    let view = wait_for(&again, "night-owl", |v| v["state"] == "Active").await;
    assert_eq!(view["state"], "Active", "{view:?}");
    assert!(
        view["lateMs"].as_i64().unwrap_or(0) >= 900,
        "marked late: {view:?}"
    );
    let answer = again
        .get("/api/v1/players/p1/config?configs=weapon-balance")
        .await;
    assert_eq!(damage(&answer.body), 75, "{:?}", answer.body);
}

fn region_zones(settings: &mut hotswap::settings::Settings) {
    settings.liveops.region_zones = [
        ("NA-EAST", "America/New_York"),
        ("EU-WEST", "Europe/London"),
    ]
    .into_iter()
    .map(|(region, zone)| (region.to_owned(), zone.to_owned()))
    .collect();
}

fn ms(instant: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(instant)
        .unwrap_or_else(|e| panic!("{instant:?}: {e}"))
        .timestamp_millis()
}

fn damage_of(client: &hotswap_client::Client) -> Value {
    client.config("weapon-balance").map_or(Value::Null, |c| {
        c.document["weapons"]["rifle"]["damage"].clone()
    })
}

/// Polls an SDK client until its weapon-balance document has the rifle
/// damage `expected` (at most 10 s); whether it got there.
async fn runs_damage(client: &hotswap_client::Client, expected: u32) -> bool {
    for _ in 0..500 {
        if client
            .config("weapon-balance")
            .is_some_and(|c| c.document["weapons"]["rifle"]["damage"] == expected)
        {
            return true;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A daily 09:00 event in each region's local time, watched across the
/// night New York moves to daylight time (2027-03-14) by moving the hub's
/// clock from instant to instant: New York's 09:00 is 14:00Z the day
/// before and 13:00Z that day, London's stays 09:00Z, and each server runs
/// the event's document only during its own region's occurrence.
async fn a_region_local_event_follows_each_region_across_a_dst_change(app: TestApp) {
    setup(&app).await;
    app.clock.set_now_ms(ms("2027-03-13T13:59:58Z"));
    let (key, _) = app.server_key(&[], &[]).await;
    let eu = connected(sdk_config(&app, &key, "eu-1")).await;
    let na = connected(sdk_config(&app, &key, "na-1").region("NA-EAST")).await;
    assert!(runs_damage(&eu, 45).await && runs_damage(&na, 45).await);
    let created = app
        .post_json(
            "/api/v1/live-events",
            &json!({
                "name": "morning-rush",
                "displayName": "Morning rush",
                "eventType": "LimitedTimeOffer",
                "rules": {"rewardMultipliers": {"xp": 2.0}},
                "overrides": [{"config": "weapon-balance", "patch": {"weapons": {"rifle": {"damage": 60}}}}],
                "regions": ["EU-WEST", "NA-EAST"],
                "schedule": {
                    "regionLocal": true,
                    "startTime": "2027-03-12T09:00:00",
                    "rrule": "FREQ=DAILY",
                    "duration": "PT30M",
                },
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    // The timeline: each region at its own 09:00, New York an hour earlier
    // in UTC once its clocks have gone forward.
    let timeline = app
        .get("/api/v1/live-events/timeline?from=2027-03-13T00:00:00Z&to=2027-03-15T00:00:00Z")
        .await;
    assert_eq!(timeline.status, 200, "{:?}", timeline.body);
    let slots: Vec<(i64, &str)> = timeline.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                ms(o["start"].as_str().unwrap()),
                o["region"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        slots,
        [
            (ms("2027-03-13T09:00:00Z"), "EU-WEST"),
            (ms("2027-03-13T14:00:00Z"), "NA-EAST"),
            (ms("2027-03-14T09:00:00Z"), "EU-WEST"),
            (ms("2027-03-14T13:00:00Z"), "NA-EAST"),
        ],
        "{:?}",
        timeline.body
    );

    // Each instant: nothing a second before it (the clock was moved to
    // two seconds before), then the region's server runs the event's
    // document, the other region's not even after a while, and the event
    // is active in that region only, on time.
    async fn crosses(
        app: &TestApp,
        on: (&hotswap_client::Client, &str),
        off: (&hotswap_client::Client, &str),
        start: &str,
    ) {
        actix_web::rt::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(damage_of(on.0), 45, "not early: {start}");
        assert!(
            runs_damage(on.0, 60).await,
            "{start}: {:?}",
            on.0.revisions()
        );
        assert!(app.clock.now_ms() >= ms(start), "not early");
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(damage_of(off.0), 45, "{} at {start}", off.1);
        let view = app.get("/api/v1/live-events/morning-rush").await.body;
        assert_eq!(view["state"], "Active", "{view:?}");
        assert_eq!(view["active"].as_array().map(Vec::len), Some(1), "{view:?}");
        assert_eq!(ms(view["active"][0]["start"].as_str().unwrap()), ms(start));
        assert_eq!(view["active"][0]["region"], on.1, "{view:?}");
        assert!(view["lateMs"].is_null(), "on time: {view:?}");
        for (region, count) in [(on.1, 1), (off.1, 0)] {
            let active = app
                .get(&format!("/api/v1/events/active?region={region}"))
                .await
                .body;
            let events = active["events"].as_array().unwrap();
            assert_eq!(events.len(), count, "{region} at {start}: {active:?}");
            if count == 1 {
                assert_eq!(ms(events[0]["startAt"].as_str().unwrap()), ms(start));
            }
        }
    }
    let (na_side, eu_side) = ((&na, "NA-EAST"), (&eu, "EU-WEST"));
    // Back to two seconds before the first instant (setting up took time).
    app.clock.set_now_ms(ms("2027-03-13T13:59:58Z"));
    // 09:00 EST (14:00Z): New York's occurrence, not London's.
    crosses(&app, na_side, eu_side, "2027-03-13T14:00:00Z").await;
    // 09:30 EST: over.
    app.clock.set_now_ms(ms("2027-03-13T14:29:58Z"));
    assert!(runs_damage(&na, 45).await, "{:?}", na.revisions());
    // 09:00 GMT the next day (09:00Z): London's occurrence only.
    app.clock.set_now_ms(ms("2027-03-14T08:59:58Z"));
    crosses(&app, eu_side, na_side, "2027-03-14T09:00:00Z").await;
    app.clock.set_now_ms(ms("2027-03-14T09:29:58Z"));
    assert!(runs_damage(&eu, 45).await, "{:?}", eu.revisions());
    // 12:59:58Z is 08:59:58 EDT: New York's clocks went forward overnight,
    // so its 09:00 comes an hour earlier in UTC than the day before.
    app.clock.set_now_ms(ms("2027-03-14T12:59:58Z"));
    crosses(&app, na_side, eu_side, "2027-03-14T13:00:00Z").await;
    // The event frame names the occurrence: New York's, at 13:00Z.
    let mut frames = Vec::new();
    for _ in 0..100 {
        frames = na.live_events();
        if frames.iter().any(|e| e.phase == "started") {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let started = frames
        .iter()
        .find(|e| e.phase == "started")
        .unwrap_or_else(|| panic!("{frames:?}"));
    assert_eq!(started.occurrence, ms("2027-03-14T13:00:00Z"));
    assert_eq!(started.region.as_deref(), Some("NA-EAST"));
    assert_eq!(started.ends_at_ms, ms("2027-03-14T13:30:00Z"));
    eu.stop().await;
    na.stop().await;
}

/// What a hub killed between recording an occurrence's deployment and
/// starting it leaves behind: the occurrence started, the event active,
/// the deployment's id recorded, no deployment. The hub that comes back
/// starts it under that id (so the event's end can undo it) and does not
/// call the occurrence late.
async fn an_event_deployment_recorded_before_a_crash_starts_under_its_id(app: TestApp) {
    setup(&app).await;
    let created = app
        .post_json(
            "/api/v1/live-events",
            &event("crash-window", Span::seconds(5), Span::hours(1), 80),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let event_id = created.body["id"].as_str().unwrap().to_owned();
    let start = ms(created.body["next"]["start"].as_str().unwrap());
    let end = ms(created.body["next"]["end"].as_str().unwrap());
    // Down well before the start (the first hub never starts it).
    app.shutdown.shutdown().await;
    let left = start - Utc::now().timestamp_millis();
    assert!(
        left > 1000,
        "the hub took too long to stop ({left} ms left)"
    );
    actix_web::rt::time::sleep(Duration::from_millis(left as u64 + 300)).await;
    let recorded = "019ae100-0000-7000-8000-00000000c0de";
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    sqlx::query(
        "INSERT INTO live_event_occurrences \
         (event_id, start_ms, region, end_ms, started_at_ms, late_ms, deployments) \
         VALUES ($1, $2, '', $3, $2, 0, $4)",
    )
    .bind(&event_id)
    .bind(start)
    .bind(end)
    .bind(format!("[\"{recorded}\"]"))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE live_events SET state = 'Active' WHERE id = $1")
        .bind(&event_id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (db, url, dir) = app.into_parts();
    let again = spawn_app_on(db, url, dir, quick_reconnects).await;
    let deployment = again.wait_deployment_status(recorded, "Completed").await;
    assert_eq!(deployment["version"], "1.0.1-event.1", "{deployment:?}");
    assert_eq!(deployment["createdBy"], "system");
    let view = again.get("/api/v1/live-events/crash-window").await.body;
    assert_eq!(view["state"], "Active", "{view:?}");
    assert!(view["lateMs"].is_null(), "recorded on time: {view:?}");
    assert!(
        sees_damage(
            &again,
            "/api/v1/players/p1/config?configs=weapon-balance",
            80
        )
        .await,
        "the event's document"
    );
    // Its end undoes the deployment the restarted hub started.
    let ended = again
        .post_empty("/api/v1/live-events/crash-window/end")
        .await;
    assert_eq!(ended.status, 200, "{:?}", ended.body);
    again.wait_deployment_status(recorded, "RolledBack").await;
    assert!(
        sees_damage(
            &again,
            "/api/v1/players/p1/config?configs=weapon-balance",
            45
        )
        .await,
        "back on the base"
    );
    let deployments = again.get("/api/v1/deployments").await.body;
    let of_event: Vec<&Value> = deployments["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["createdBy"] == "system")
        .collect();
    assert_eq!(
        of_event.len(),
        1,
        "one deployment, the recorded one: {deployments:?}"
    );
}

/// An operator cancels the deployment carrying a server-wide event's
/// override: the event stays active and says its override is off servers.
async fn a_cancelled_event_deployment_is_reported_on_the_event(app: TestApp) {
    setup(&app).await;
    let mut body = event("held-back", Span::milliseconds(-500), Span::hours(1), 70);
    // A canary that stays in its first phase: the deployment is in flight.
    body["rollout"] = json!({"strategy": "Canary", "phases": [50, 100], "phaseInterval": "PT1H"});
    let created = app.post_json("/api/v1/live-events", &body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let mut carrying = Value::Null;
    for _ in 0..500 {
        carrying = app.get("/api/v1/deployments").await.body["items"][0].clone();
        if carrying["createdBy"] == "system" && carrying["status"] == "InProgress" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(carrying["status"], "InProgress", "{carrying:?}");
    let id = carrying["id"].as_str().unwrap();
    let cancelled = app
        .post_empty(&format!("/api/v1/deployments/{id}/cancel"))
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    let view = wait_for(&app, "held-back", |v| v["effectError"].is_string()).await;
    assert_eq!(view["state"], "Active", "{view:?}");
    let error = view["effectError"].as_str().unwrap_or_default();
    assert!(
        error.contains(id) && error.contains("cancelled"),
        "{view:?}"
    );
}

on_both_databases!(
    a_player_targeted_event_is_seen_only_by_its_segment,
    events_follow_their_schedule_and_operators_controls,
    bad_definitions_are_refused_naming_the_path,
    a_restarted_hub_catches_up_with_an_activation_it_missed,
    a_server_wide_event_reaches_its_regions_servers_and_ends_on_time,
    the_sdk_and_the_hub_resolve_every_player_alike,
    events_cannot_touch_secrets_nor_skip_production_approvals,
    a_region_local_event_follows_each_region_across_a_dst_change with region_zones,
    an_event_deployment_recorded_before_a_crash_starts_under_its_id,
    a_cancelled_event_deployment_is_reported_on_the_event,
);
