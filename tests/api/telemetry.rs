//! Telemetry over REST on both databases: a batch answered per event,
//! retries stored once, players' kept attributes, who may send, the
//! event-type taxonomy, and a full queue answering 503 with Retry-After.

use crate::helpers::{Db, TestApp, spawn_app_with};
use crate::on_both_databases;
use chrono::{Duration as Span, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::time::Duration;

fn at(offset: Span) -> String {
    (Utc::now() + offset).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn good_batch(player: &str) -> Value {
    json!({
        "playerId": player,
        "sessionId": "s-1",
        "clientVersion": "1.4.2",
        "platform": "ios",
        "events": [
            {"eventType": "session_start", "eventTime": at(Span::minutes(-5)), "eventId": format!("{player}-1"), "payload": {}},
            {"eventType": "teleport", "eventTime": at(Span::minutes(-4)), "eventId": format!("{player}-2"), "payload": {}},
            {"eventType": "run_end", "eventTime": at(Span::minutes(-3)), "eventId": format!("{player}-3"),
             "payload": {"run_id": "r1", "outcome": "draw"}},
            {"eventType": "run_end", "eventTime": at(Span::days(1)), "eventId": format!("{player}-4"),
             "payload": {"run_id": "r1", "outcome": "win"}},
            {"eventType": "run_end", "eventTime": at(Span::minutes(-2)), "eventId": format!("{player}-5"),
             "payload": {"run_id": "r1", "outcome": "win", "tier": 3}},
            {"eventType": "purchase", "eventTime": at(Span::minutes(-1)), "eventId": format!("{player}-6"),
             "payload": {"sku": "starter-pack", "amount": 4.99, "currency": "USD"}},
            {"eventType": "purchase", "eventTime": at(Span::days(-400)), "eventId": format!("{player}-7"),
             "payload": {"sku": "old"}}
        ]
    })
}

fn rejected(body: &Value) -> Vec<(u64, String)> {
    body["rejected"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn a_batch_is_answered_per_event_and_a_retry_is_stored_once(app: TestApp) {
    let (key, _) = app.server_key(&[], &[]).await;
    let sent = app.telemetry(&key, &good_batch("p1")).await;
    assert_eq!(sent.status, 200, "{:?}", sent.body);
    assert_eq!(sent.body["accepted"], 3, "{:?}", sent.body);
    let refused = rejected(&sent.body);
    assert_eq!(
        refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![1, 2, 3, 6],
        "{refused:?}"
    );
    assert!(refused[0].1.contains("unknown event type"), "{refused:?}");
    assert!(refused[1].1.contains("outcome"), "{refused:?}");
    assert!(refused[2].1.contains("ahead"), "{refused:?}");
    assert!(refused[3].1.contains("retention"), "{refused:?}");
    let stored = "SELECT COUNT(*) FROM telemetry_events WHERE player_id = 'p1'";
    assert_eq!(app.count_rows(stored).await, 3);
    // The same batch again (a retry after a lost answer): accepted, and
    // stored once; the player's kept attributes count once too.
    let again = app.telemetry(&key, &good_batch("p1")).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["accepted"], 3);
    assert_eq!(app.count_rows(stored).await, 3);
    assert_eq!(
        app.count_rows("SELECT sessions FROM players WHERE player_id = 'p1'")
            .await,
        1
    );
    assert_eq!(
        app.count_rows("SELECT purchases FROM players WHERE player_id = 'p1'")
            .await,
        1
    );
    let envelope = app
        .count_rows(
            "SELECT COUNT(*) FROM telemetry_events WHERE player_id = 'p1' \
             AND platform = 'ios' AND client_version = '1.4.2' AND session_id = 's-1'",
        )
        .await;
    assert_eq!(envelope, 3, "the envelope is kept with each event");
    // An eventId identifies an event within the UTC day of its eventTime:
    // a resend restamped later that day is the same event, stored once;
    // the same id on another day is another event.
    let yesterday = (Utc::now() - Span::days(1)).date_naive();
    let at_hour = |day: chrono::NaiveDate, hour: u32| {
        day.and_hms_opt(hour, 0, 0)
            .unwrap()
            .and_utc()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    };
    let once = |time: String| {
        json!({"playerId": "p-resend", "events": [{"eventType": "session_start",
               "eventTime": time, "eventId": "resend-1", "payload": {}}]})
    };
    let stored_once = "SELECT COUNT(*) FROM telemetry_events WHERE player_id = 'p-resend'";
    for time in [at_hour(yesterday, 10), at_hour(yesterday, 11)] {
        let sent = app.telemetry(&key, &once(time)).await;
        assert_eq!(
            (sent.status, sent.body["accepted"].as_u64()),
            (200, Some(1))
        );
    }
    assert_eq!(app.count_rows(stored_once).await, 1);
    let other_day = at_hour(yesterday - Span::days(1), 10);
    let sent = app.telemetry(&key, &once(other_day)).await;
    assert_eq!(sent.status, 200, "{:?}", sent.body);
    assert_eq!(app.count_rows(stored_once).await, 2);

    // The envelope itself is checked whole.
    let mut no_player = good_batch("p2");
    no_player.as_object_mut().unwrap().remove("playerId");
    let answer = app.telemetry(&key, &no_player).await;
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(answer.error_paths()[0].0, "/playerId");
    let answer = app
        .telemetry(
            &key,
            &json!({"playerId": "p2", "events": vec![json!({}); 501]}),
        )
        .await;
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(answer.error_paths()[0].0, "/events");
    let answer = app
        .telemetry(&key, &json!({"playerId": "p2", "events": [], "extra": 1}))
        .await;
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    let answer = app
        .telemetry(&key, &json!({"playerId": "x".repeat(300), "events": [{}]}))
        .await;
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(answer.error_paths()[0].0, "/playerId");
    let garbage = app
        .request(
            "POST",
            "/api/v1/telemetry/batch",
            Some(&key),
            Some(("application/json", b"{\"events\": [".to_vec())),
        )
        .await;
    assert_eq!(garbage.status, 400, "{:?}", garbage.body);
    assert_eq!(app.count_rows(stored).await, 3, "nothing else stored");
}

async fn players_send_their_own_telemetry_and_staff_none(app: TestApp) {
    let token = app.token(hotswap::Role::Player, "p7");
    let mut batch = good_batch("p7");
    batch.as_object_mut().unwrap().remove("playerId");
    let own = app
        .request(
            "POST",
            "/api/v1/telemetry/batch",
            Some(&token),
            Some(("application/json", serde_json::to_vec(&batch).unwrap())),
        )
        .await;
    assert_eq!(own.status, 200, "{:?}", own.body);
    // Its purchase is refused: purchases are the game servers' word.
    let refused = rejected(&own.body);
    let purchase = refused.iter().find(|(index, _)| *index == 5);
    assert!(
        purchase.is_some_and(|(_, reason)| reason.contains("purchase events come from")),
        "{refused:?}"
    );
    assert_eq!(
        app.count_rows("SELECT COUNT(*) FROM telemetry_events WHERE player_id = 'p7'")
            .await,
        2,
        "the token's player is attached"
    );
    let other = app
        .request(
            "POST",
            "/api/v1/telemetry/batch",
            Some(&token),
            Some((
                "application/json",
                serde_json::to_vec(&good_batch("p8")).unwrap(),
            )),
        )
        .await;
    assert_eq!(other.status, 403, "{:?}", other.body);
    let admin = app.telemetry(&app.admin_token, &good_batch("p8")).await;
    assert_eq!(admin.status, 403, "{:?}", admin.body);
    let anonymous = app
        .request(
            "POST",
            "/api/v1/telemetry/batch",
            None,
            Some((
                "application/json",
                serde_json::to_vec(&good_batch("p8")).unwrap(),
            )),
        )
        .await;
    assert_eq!(anonymous.status, 401, "{:?}", anonymous.body);
    let forged = app.telemetry("hs_live_not-a-key", &good_batch("p8")).await;
    assert_eq!(forged.status, 401, "{:?}", forged.body);
    assert_eq!(
        app.count_rows("SELECT COUNT(*) FROM telemetry_events WHERE player_id = 'p8'")
            .await,
        0
    );
}

async fn the_taxonomy_is_seeded_and_registered_through_the_api(app: TestApp) {
    let listed = app.get("/api/v1/telemetry/event-types").await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let names: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for seeded in [
        "session_start",
        "session_end",
        "run_start",
        "run_end",
        "draft_offered",
        "draft_pick",
        "relic_pick",
        "wave_fail",
        "wave_clear",
        "profile_level_up",
        "unlock_obtained",
        "purchase",
        "event_participation",
    ] {
        assert!(names.contains(&seeded), "{seeded} in {names:?}");
    }
    let schema =
        json!({"type": "object", "properties": {"boss": {"type": "string"}}, "required": ["boss"]});
    let created = app
        .post_json(
            "/api/v1/telemetry/event-types",
            &json!({"name": "boss_kill", "description": "A boss died", "schema": schema}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["revision"], 1);
    let (key, _) = app.server_key(&[], &[]).await;
    let batch = |payload: Value| json!({"playerId": "p1", "events": [{"eventType": "boss_kill", "eventTime": at(Span::seconds(-1)), "payload": payload}]});
    let sent = app.telemetry(&key, &batch(json!({"boss": "hydra"}))).await;
    assert_eq!(sent.body["accepted"], 1, "{:?}", sent.body);
    // Replaced: the boss becomes a number; events already stored stay.
    let replaced = app
        .post_json(
            "/api/v1/telemetry/event-types",
            &json!({"name": "boss_kill", "schema": {"type": "object", "properties": {"boss": {"type": "integer"}}}}),
        )
        .await;
    assert_eq!(replaced.status, 200, "{:?}", replaced.body);
    assert_eq!(replaced.body["revision"], 2);
    let sent = app.telemetry(&key, &batch(json!({"boss": "hydra"}))).await;
    assert_eq!(rejected(&sent.body).len(), 1, "{:?}", sent.body);
    let one = app.get("/api/v1/telemetry/event-types/boss_kill").await;
    assert_eq!(one.body["schema"]["properties"]["boss"]["type"], "integer");
    assert_eq!(
        app.get("/api/v1/telemetry/event-types/nope").await.status,
        404
    );
    for (body, path) in [
        (json!({"name": "Bad Name", "schema": {}}), "/name"),
        (
            json!({"name": "x", "schema": {"type": "nonsense"}}),
            "/schema",
        ),
        (
            json!({"name": "x", "schema": {"type": "string"}}),
            "/schema",
        ),
    ] {
        let refused = app.post_json("/api/v1/telemetry/event-types", &body).await;
        assert_eq!(refused.status, 422, "{body}: {:?}", refused.body);
        assert!(
            refused.error_paths()[0].0.starts_with(path),
            "{body}: {:?}",
            refused.body
        );
    }
    let viewer = app.token(hotswap::Role::Viewer, "watcher");
    let denied = app
        .request(
            "POST",
            "/api/v1/telemetry/event-types",
            Some(&viewer),
            Some((
                "application/json",
                serde_json::to_vec(&json!({"name": "y", "schema": {"type": "object"}})).unwrap(),
            )),
        )
        .await;
    assert_eq!(denied.status, 403, "{:?}", denied.body);
    let audit = app.get("/api/v1/audit?limit=200").await;
    assert!(
        audit
            .body
            .to_string()
            .contains("telemetry.event-type.update"),
        "{:?}",
        audit.body
    );
}

on_both_databases!(
    a_batch_is_answered_per_event_and_a_retry_is_stored_once,
    players_send_their_own_telemetry_and_staff_none,
    the_taxonomy_is_seeded_and_registered_through_the_api,
);

/// The store stalls (a table lock held by another session): the first
/// batch waits in the queue, accepted but not yet stored; the next one
/// finds the queue full and is told to come back. Once the lock goes the
/// first is stored and answered. PostgreSQL only: it is the store whose
/// locks a second session can hold without failing the writer.
#[actix_web::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let Some(app) = spawn_app_with(Db::Postgres, |settings| {
        settings.telemetry.queue_events = 10;
        settings.telemetry.max_batch_events = 10;
    })
    .await
    else {
        return;
    };
    let (key, _) = app.server_key(&[], &[]).await;
    let events = |from: usize, n: usize| -> Value {
        json!({"playerId": "p1", "events": (from..from + n).map(|i| json!({
            "eventType": "session_start", "eventTime": at(Span::seconds(-1)), "eventId": format!("e{i}"), "payload": {}
        })).collect::<Vec<_>>()})
    };
    // Warm up: today's partition exists before the lock.
    assert_eq!(app.telemetry(&key, &events(0, 1)).await.status, 200);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&app.database_url)
        .await
        .unwrap();
    let mut locker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE telemetry_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let first = {
        let (address, key) = (app.url("/api/v1/telemetry/batch"), key.clone());
        let body = events(1, 8);
        actix_web::rt::spawn(async move {
            let mut response = awc::Client::default()
                .post(address)
                .insert_header(("authorization", format!("Bearer {key}")))
                .timeout(Duration::from_secs(30))
                .send_json(&body)
                .await
                .unwrap();
            let body: Value = response.json().await.unwrap();
            (response.status().as_u16(), body)
        })
    };
    // The first batch reaches the queue (and waits on the lock) first.
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let mut full = None;
    for _ in 0..100 {
        let answer = app.telemetry(&key, &events(100, 5)).await;
        if answer.status == 503 {
            full = Some(answer);
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let full = full.expect("the queue filled");
    assert_eq!(full.body["code"], "telemetry_busy", "{:?}", full.body);
    assert_eq!(full.header("retry-after"), Some("1"));
    locker.rollback().await.unwrap();
    let (status, body) = first.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 8);
    // The warm-up and the waiting batch; not the refused one.
    assert_eq!(
        app.count_rows("SELECT COUNT(*) FROM telemetry_events")
            .await,
        9
    );
    pool.close().await;
}

/// A player's resolved loadout document.
async fn sees(app: &TestApp, player: &str, extra: &str) -> Value {
    let path = format!("/api/v1/players/{player}/config?configs=loadout{extra}");
    let answer = app.get(&path).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["configs"]["loadout"]["document"].clone()
}

/// Telemetry keeps each player's `firstSeen`, `lastSeen`, sessions and
/// purchases; a segment reading them places players from that record
/// when the caller gives none of them (a server's or staff's own values
/// win; a player's token never does).
async fn kept_attributes_place_players_in_segments(app: TestApp) {
    assert_eq!(
        app.create_config("loadout", "Custom", "staging")
            .await
            .status,
        201
    );
    let deployed = app
        .deploy("loadout", "1.0.0", json!({"slots": 3, "banner": "none"}))
        .await;
    app.wait_deployment_status(deployed.body["id"].as_str().unwrap(), "Completed")
        .await;
    let regulars = app
        .post_json(
            "/api/v1/segments",
            &json!({"name": "regulars", "rule": {"attribute": "sessions", "gte": 2}}),
        )
        .await;
    assert_eq!(regulars.status, 201, "{:?}", regulars.body);
    for (name, segment, patch) in [
        ("regulars-bonus", "regulars", json!({"slots": 5})),
        ("welcome", "new-players", json!({"banner": "welcome"})),
    ] {
        let created = app
            .post_json(
                "/api/v1/live-events",
                &json!({"name": name, "displayName": name, "eventType": "Retention",
                    "rules": {"rewardMultipliers": {"xp": 1.5}},
                    "audience": {"segments": [segment]},
                    "overrides": [{"config": "loadout", "patch": patch}],
                    "schedule": {"startTime": at(Span::minutes(-1)), "endTime": at(Span::hours(1))}}),
            )
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
    }
    let (key, _) = app.server_key(&[], &[]).await;
    for (player, sessions) in [("p-regular", 2), ("p-once", 1)] {
        let events: Vec<Value> = (0..sessions)
            .map(|n| {
                json!({"eventType": "session_start", "eventTime": at(Span::minutes(-10 + n)),
                            "eventId": format!("{player}-{n}"), "payload": {}})
            })
            .collect();
        let sent = app
            .telemetry(&key, &json!({"playerId": player, "events": events}))
            .await;
        assert_eq!(sent.body["accepted"], sessions, "{:?}", sent.body);
    }
    // Both events are in force once their actors started them.
    let mut regular = Value::Null;
    for _ in 0..250 {
        regular = sees(&app, "p-regular", "").await;
        if regular["slots"] == 5 && regular["banner"] == "welcome" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    // Two sessions and first seen minutes ago: a regular, and new.
    assert_eq!(regular, json!({"slots": 5, "banner": "welcome"}));
    // One session: new, not a regular.
    assert_eq!(
        sees(&app, "p-once", "").await,
        json!({"slots": 3, "banner": "welcome"})
    );
    // Never seen: neither.
    assert_eq!(
        sees(&app, "p-never", "").await,
        json!({"slots": 3, "banner": "none"})
    );
    // A caller's own values win over the record.
    assert_eq!(
        sees(&app, "p-once", "&sessions=7").await,
        json!({"slots": 5, "banner": "none"}),
        "given sessions, firstSeen is not read: not new"
    );
    // A player's own token cannot claim sessions: its record is read.
    let own = app.token(hotswap::Role::Player, "p-once");
    let claimed = app
        .request(
            "GET",
            "/api/v1/players/p-once/config?configs=loadout&sessions=7",
            Some(&own),
            None,
        )
        .await;
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    assert_eq!(
        claimed.body["configs"]["loadout"]["document"],
        json!({"slots": 3, "banner": "welcome"})
    );
    // The player's events as clients ask for them agree.
    let active = app.get("/api/v1/events/active?playerId=p-regular").await;
    let mut names: Vec<&str> = active.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["regulars-bonus", "welcome"], "{:?}", active.body);

    // The event's engagement as players' telemetry tells it: p-regular
    // joined, played a run in it and completed it; p-once joined; a
    // participation in another event does not count.
    for (player, events) in [
        (
            "p-regular",
            vec![("join", "welcome"), ("complete", "welcome")],
        ),
        (
            "p-once",
            vec![("join", "welcome"), ("join", "regulars-bonus")],
        ),
    ] {
        let mut batch: Vec<Value> = events
            .iter()
            .enumerate()
            .map(|(n, (action, event))| {
                json!({"eventType": "event_participation",
                "eventTime": at(Span::seconds(-5)), "eventId": format!("{player}-ep{n}"),
                "payload": {"event_id": event, "action": action}})
            })
            .collect();
        if player == "p-regular" {
            batch.push(
                json!({"eventType": "run_start", "eventTime": at(Span::seconds(-4)),
                "eventId": "p-regular-run", "payload": {"run_id": "w1", "event_id": "welcome"}}),
            );
        }
        let sent = app
            .telemetry(&key, &json!({"playerId": player, "events": batch}))
            .await;
        assert_eq!(sent.body["rejected"], json!([]), "{:?}", sent.body);
    }
    let metrics = app.get("/api/v1/live-events/welcome/metrics").await;
    assert_eq!(metrics.status, 200, "{:?}", metrics.body);
    let telemetry = &metrics.body["telemetry"];
    assert_eq!(telemetry["participants"], 2, "{telemetry}");
    assert_eq!(telemetry["joins"], 2, "{telemetry}");
    assert_eq!(telemetry["completions"], 1, "{telemetry}");
    assert_eq!(telemetry["progress"], 0, "{telemetry}");
    assert_eq!(telemetry["runs"], 1, "{telemetry}");
}

on_both_databases!(kept_attributes_place_players_in_segments);
