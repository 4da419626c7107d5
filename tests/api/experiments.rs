//! Player experiments over REST on both databases: one run end to end
//! (assignment agreed by the hub, `/experiments/assignments` and the SDK;
//! telemetry; results; promotion to a version and its canary), sticky
//! assignments across a weight change and a restart with the split
//! flagged as a sample-ratio mismatch, a guardrail pausing a harmful
//! variant, and bad definitions refused with the path.

use crate::helpers::{TestApp, balance, connected, sdk_config, spawn_app_on};
use crate::on_both_databases;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use std::time::Duration;

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn setup(app: &TestApp) {
    let created = app
        .create_config("weapon-balance", "GameBalance", "staging")
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let deployed = app.deploy("weapon-balance", "1.0.0", balance(45)).await;
    assert_eq!(deployed.status, 201, "{:?}", deployed.body);
    // A studio's own event type: a match's result.
    let registered = app
        .post_json(
            "/api/v1/telemetry/event-types",
            &json!({"name": "match_result", "description": "A match ended", "schema": {
                "type": "object",
                "properties": {"won": {"type": "boolean"}, "kills": {"type": "integer", "minimum": 0}},
                "required": ["won"]
            }}),
        )
        .await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
}

fn experiment(name: &str, weights: [u32; 2]) -> Value {
    json!({
        "name": name,
        "description": "Does a hotter rifle win more?",
        "config": "weapon-balance",
        "variants": [
            {"id": "control", "weight": weights[0], "patch": {}},
            {"id": "hot", "weight": weights[1], "patch": {"weapons": {"rifle": {"damage": 60}}}}
        ],
        "metrics": [
            {"name": "win", "kind": "binomial", "event": "match_result", "field": "won"},
            {"name": "kills", "kind": "sum", "event": "match_result", "field": "kills"},
            {"name": "matches", "kind": "count", "event": "match_result"},
            {"name": "runs-won", "kind": "binomial", "event": "run_end", "field": "outcome", "equals": "win"}
        ]
    })
}

fn player_config(id: &str) -> String {
    format!("/api/v1/players/{id}/config?configs=weapon-balance&region=EU-WEST")
}

/// The variant the hub's resolution gives a player (`None`: no variant).
async fn variant_of(app: &TestApp, id: &str) -> Option<String> {
    let answer = app.get(&player_config(id)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["configs"]["weapon-balance"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find_map(|l| l.split_once('/').map(|(_, v)| v.to_owned()))
}

/// Polls results until `done` holds (at most 10 s); the last answer.
async fn results_when(app: &TestApp, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut body = Value::Null;
    for _ in 0..200 {
        let answer = app
            .get(&format!("/api/v1/experiments/{name}/results"))
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        body = answer.body;
        if done(&body) {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    body
}

fn metric<'a>(results: &'a Value, name: &str, variant: &str) -> &'a Value {
    results["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| {
            m["variants"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["variant"] == variant)
        })
        .unwrap_or_else(|| panic!("{name}/{variant} in {results}"))
}

async fn an_experiment_runs_from_assignment_to_promotion(app: TestApp) {
    setup(&app).await;
    let created = app
        .post_json("/api/v1/experiments", &experiment("hot-rifle", [50, 50]))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["status"], "Draft");
    assert_eq!(created.body["control"], "control");
    // A draft changes nobody's config.
    assert_eq!(variant_of(&app, "p0").await, None);
    let started = app.post_empty("/api/v1/experiments/hot-rifle/start").await;
    assert_eq!(started.status, 200, "{:?}", started.body);
    assert_eq!(started.body["status"], "Running");
    // A second experiment on the same config cannot run beside it.
    let rival = app
        .post_json("/api/v1/experiments", &experiment("rival", [50, 50]))
        .await;
    assert_eq!(rival.status, 201, "{:?}", rival.body);
    let clash = app.post_empty("/api/v1/experiments/rival/start").await;
    assert_eq!(clash.status, 409, "{:?}", clash.body);
    assert_eq!(
        clash.body["code"], "experiment_conflict",
        "{:?}",
        clash.body
    );

    let (key, _) = app.server_key(&[], &[]).await;
    let server = connected(sdk_config(&app, &key, "lobby-1").liveops()).await;
    let players: Vec<String> = (0..40).map(|n| format!("player-{n}")).collect();
    let mut hot = Vec::new();
    for id in &players {
        let hub = variant_of(&app, id).await.expect("every player is in it");
        // The studios' shape says the same, with the variant's parameters.
        let listed = app
            .get(&format!("/api/v1/experiments/assignments?playerId={id}"))
            .await;
        assert_eq!(listed.status, 200, "{:?}", listed.body);
        let assignment = &listed.body["assignments"][0];
        assert_eq!(assignment["experimentId"], "hot-rifle");
        assert_eq!(assignment["variantId"], hub.as_str());
        if hub == "hot" {
            assert_eq!(assignment["parameters"]["weapons"]["rifle"]["damage"], 60);
        }
        // And the SDK's local resolution, from the definitions pushed to it.
        let player = hotswap_client::liveops::Player::new(id.as_str()).with("region", "EU-WEST");
        let mut agreed = false;
        for _ in 0..250 {
            // `connected` returns at the welcome; the config follows it.
            let Some(local) = server.for_player(&player).resolve_at(
                "weapon-balance",
                Utc::now().timestamp_millis(),
                false,
            ) else {
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let answer = app.get(&player_config(id)).await.body;
            if answer["configs"]["weapon-balance"]["checksum"] == local.checksum.as_str()
                && local
                    .layers
                    .iter()
                    .any(|l| *l == format!("experiment:hot-rifle/{hub}"))
            {
                agreed = true;
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(agreed, "{id}: the SDK and the hub disagree");
        if hub == "hot" {
            hot.push(id.clone());
        }
    }
    assert!(
        (8..=32).contains(&hot.len()),
        "about half of 40: {}",
        hot.len()
    );
    server.stop().await;

    // Each player plays four matches: the hot rifle wins three; control
    // one, or none for every fourth player.
    for (n, id) in players.iter().enumerate() {
        let wins = match (hot.contains(id), n % 4) {
            (true, _) => 3,
            (false, 0) => 0,
            (false, _) => 1,
        };
        let mut events: Vec<Value> = (0..4)
            .map(|m| {
                json!({"eventType": "match_result", "eventTime": now(), "eventId": format!("{id}-m{m}"),
                       "payload": {"won": m < wins, "kills": 2 * wins + n % 2}})
            })
            .collect();
        // And a run of the studios' shape: its outcome a text.
        let outcome = if hot.contains(id) { "win" } else { "loss" };
        events.push(
            json!({"eventType": "run_end", "eventTime": now(), "eventId": format!("{id}-r"),
                           "payload": {"run_id": format!("{id}-r"), "outcome": outcome}}),
        );
        let sent = app
            .telemetry(
                &key,
                &json!({"playerId": id, "sessionId": "s1", "platform": "pc", "events": events}),
            )
            .await;
        assert_eq!(sent.status, 200, "{:?}", sent.body);
        assert_eq!(sent.body["accepted"], 5, "{:?}", sent.body);
    }
    let results = results_when(&app, "hot-rifle", |r| {
        metric(r, "matches", "hot")["value"].as_f64() == Some(4.0)
            && metric(r, "matches", "control")["value"].as_f64() == Some(4.0)
    })
    .await;
    let control_units = players.len() - hot.len();
    assert_eq!(results["units"]["hot"], hot.len(), "{results}");
    assert_eq!(results["units"]["control"], control_units, "{results}");
    assert_eq!(results["sampleRatio"]["mismatch"], false, "{results}");
    // Win: a rate per unit (a unit that won at least once).
    let win = metric(&results, "win", "hot");
    assert_eq!(win["value"], 1.0, "{results}");
    let control_win = metric(&results, "win", "control")["value"]
        .as_f64()
        .unwrap();
    assert!((0.5..1.0).contains(&control_win), "{results}");
    // Kills: a sum per unit over four matches, about 26 against about 8.
    let kills = metric(&results, "kills", "hot");
    let hot_kills = kills["value"].as_f64().unwrap();
    assert!((24.0..=28.0).contains(&hot_kills), "{results}");
    let control_kills = metric(&results, "kills", "control")["value"]
        .as_f64()
        .unwrap();
    assert!((0.0..=12.0).contains(&control_kills), "{results}");
    let versus = &kills["vsControl"];
    assert!((versus["difference"].as_f64().unwrap() - (hot_kills - control_kills)).abs() < 1e-9);
    assert!(versus["pValue"].as_f64().unwrap() < 0.001, "{results}");
    // Read early, the always-valid p-value is the more careful one.
    assert!(versus["sequentialPValue"].as_f64().unwrap() >= versus["pValue"].as_f64().unwrap());
    let low = versus["interval"]["low"].as_f64().unwrap();
    assert!(
        low > 0.0 && low < versus["difference"].as_f64().unwrap(),
        "{results}"
    );
    assert!(metric(&results, "matches", "control")["vsControl"].is_null());
    // A binomial over a text field: every hot run won, no control one.
    assert_eq!(
        metric(&results, "runs-won", "hot")["value"],
        1.0,
        "{results}"
    );
    assert_eq!(
        metric(&results, "runs-won", "control")["value"],
        0.0,
        "{results}"
    );
    assert_eq!(results["metrics"][0]["primary"], true);

    // Promote the winner: a new version with its patch, and its canary.
    let promoted = app
        .post_json(
            "/api/v1/experiments/hot-rifle/promote",
            &json!({"variant": "hot", "deploy": {"phases": [50, 100], "autoPromote": false}}),
        )
        .await;
    assert_eq!(promoted.status, 200, "{:?}", promoted.body);
    assert_eq!(promoted.body["version"], "1.0.1", "{:?}", promoted.body);
    let version = app
        .get("/api/v1/configs/weapon-balance/versions/1.0.1")
        .await;
    assert_eq!(version.status, 200, "{:?}", version.body);
    assert_eq!(version.body["content"]["weapons"]["rifle"]["damage"], 60);
    assert_eq!(version.body["content"]["weapons"]["rifle"]["fireRate"], 600);
    let deployment = promoted.body["deployment"].as_str().expect("a deployment");
    let canary = app.get(&format!("/api/v1/deployments/{deployment}")).await;
    assert_eq!(canary.body["strategy"], "Canary", "{:?}", canary.body);
    let view = app.get("/api/v1/experiments/hot-rifle").await;
    assert_eq!(view.body["status"], "Finished", "{:?}", view.body);
    assert_eq!(view.body["winner"], "hot");
    // Finished: players see the config without a variant again, and the
    // promotion was audited.
    assert_eq!(variant_of(&app, "player-0").await, None);
    let again = app
        .post_json(
            "/api/v1/experiments/hot-rifle/promote",
            &json!({"variant": "hot"}),
        )
        .await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    let audit = app.get("/api/v1/audit?limit=200").await;
    assert!(
        audit.body.to_string().contains("experiment.promote"),
        "{:?}",
        audit.body
    );
}

fn quick_flush(settings: &mut hotswap::settings::Settings) {
    settings.liveops.assignment_flush_ms = 20;
}

async fn assignments_stick_across_weight_changes_and_restarts(app: TestApp) {
    setup(&app).await;
    let created = app
        .post_json("/api/v1/experiments", &experiment("sticky", [50, 50]))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        app.post_empty("/api/v1/experiments/sticky/start")
            .await
            .status,
        200
    );
    let mut first = Vec::new();
    for n in 0..200 {
        first.push(variant_of(&app, &format!("early-{n}")).await.unwrap());
    }
    let split = results_when(&app, "sticky", |r| {
        r["units"]["control"].as_u64().unwrap_or(0) + r["units"]["hot"].as_u64().unwrap_or(0) == 200
    })
    .await;
    assert_eq!(split["sampleRatio"]["mismatch"], false, "{split}");
    // Weights move to 95/5: those already assigned keep their variant...
    let mut body = experiment("sticky", [95, 5]);
    body["description"] = json!("mostly control now");
    let changed = app.put_json("/api/v1/experiments/sticky", &body).await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    assert!(
        changed.body["pinnedUnits"].as_u64().unwrap() > 0,
        "{:?}",
        changed.body
    );
    for (n, variant) in first.iter().enumerate() {
        assert_eq!(
            &variant_of(&app, &format!("early-{n}")).await.unwrap(),
            variant
        );
    }
    // ...and after a restart.
    app.shutdown.shutdown().await;
    let (db, url, dir) = app.into_parts();
    let app = spawn_app_on(db, url, dir, quick_flush).await;
    for (n, variant) in first.iter().enumerate() {
        assert_eq!(
            &variant_of(&app, &format!("early-{n}")).await.unwrap(),
            variant,
            "early-{n} after the restart"
        );
    }
    // Newcomers follow the new weights, and the split no longer matches
    // them: the results say so.
    let mut newcomers_hot = 0;
    for n in 0..200 {
        newcomers_hot +=
            usize::from(variant_of(&app, &format!("late-{n}")).await.unwrap() == "hot");
    }
    assert!(newcomers_hot < 30, "5 % of 200: {newcomers_hot}");
    let flagged = results_when(&app, "sticky", |r| {
        r["units"]["control"].as_u64().unwrap_or(0) + r["units"]["hot"].as_u64().unwrap_or(0) == 400
    })
    .await;
    assert_eq!(flagged["sampleRatio"]["mismatch"], true, "{flagged}");
    assert!(flagged["sampleRatio"]["pValue"].as_f64().unwrap() < 0.001);
    app.hub.stop_runs().await;
}

fn quick_guardrails(settings: &mut hotswap::settings::Settings) {
    settings.liveops.guardrail_interval_ms = 200;
    settings.liveops.assignment_flush_ms = 20;
}

async fn a_guardrail_pauses_a_variant_that_harms_players(app: TestApp) {
    setup(&app).await;
    let mut body = experiment("risky-rifle", [50, 50]);
    body["guardrails"] = json!([{"metric": "win", "maxDecrease": 0.05, "minUnits": 100}]);
    let created = app.post_json("/api/v1/experiments", &body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        app.post_empty("/api/v1/experiments/risky-rifle/start")
            .await
            .status,
        200
    );
    let (key, _) = app.server_key(&[], &[]).await;
    let server = connected(sdk_config(&app, &key, "lobby-2").liveops()).await;
    let variant_in_sdk = |id: &str| {
        let player = hotswap_client::liveops::Player::new(id).with("region", "EU-WEST");
        server
            .for_player(&player)
            .resolve_at("weapon-balance", Utc::now().timestamp_millis(), false)
            .and_then(|r| {
                r.layers
                    .iter()
                    .find_map(|l| l.split_once('/').map(|(_, v)| v.to_owned()))
            })
    };
    for _ in 0..250 {
        if variant_in_sdk("gamer-0").is_some() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    // Players are only seen through their telemetry (their server
    // resolves them locally, which records nothing): a batch is an
    // exposure. The hot rifle makes most of its players lose; once both
    // arms hold 100 players the guardrail may pause it, and players get
    // no variant.
    let mut hot = 0;
    for n in 0..400 {
        let id = format!("gamer-{n}");
        let Some(variant) = variant_in_sdk(&id) else {
            break;
        };
        hot += usize::from(variant == "hot");
        let won = if variant == "hot" {
            n % 5 == 0
        } else {
            n % 10 != 0
        };
        let events = json!([{"eventType": "match_result", "eventTime": now(),
                              "payload": {"won": won}}]);
        let sent = app
            .telemetry(&key, &json!({"playerId": id, "events": events}))
            .await;
        assert_eq!(sent.status, 200, "{:?}", sent.body);
    }
    server.stop().await;
    assert!(hot >= 100, "{hot}");
    let mut view = Value::Null;
    for _ in 0..200 {
        view = app.get("/api/v1/experiments/risky-rifle").await.body;
        if view["status"] == "Paused" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(view["status"], "Paused", "{view:?}");
    let reason = view["statusReason"].as_str().unwrap_or_default();
    assert!(reason.contains("win") && reason.contains("hot"), "{reason}");
    // Paused: nobody gets the variant; the assignments are kept.
    assert_eq!(variant_of(&app, "gamer-1").await, None);
    let audit = app.get("/api/v1/audit?limit=200").await;
    assert!(
        audit.body.to_string().contains("experiment.pause"),
        "{:?}",
        audit.body
    );
}

async fn bad_experiments_are_refused_naming_the_path(app: TestApp) {
    setup(&app).await;
    let cases = [
        ("/config", json!({"config": "nope"})),
        (
            "/variants",
            json!({"variants": [{"id": "control", "weight": 1, "patch": {}}]}),
        ),
        (
            "/variants/1/patch",
            json!({"variants": [{"id": "control", "weight": 1, "patch": {}},
                                 {"id": "b", "weight": 1, "patch": {"weapons": {"rifle": {"damage": "lots"}}}}]}),
        ),
        (
            "/metrics/0/event",
            json!({"metrics": [{"name": "x", "kind": "count", "event": "never_registered"}]}),
        ),
        (
            "/audience/segments/0",
            json!({"audience": {"segments": ["ghosts"]}}),
        ),
        ("/unit", json!({"unit": "guild id"})),
        ("/surprise", json!({"surprise": true})),
    ];
    for (path, change) in cases {
        let mut body = experiment("bad", [50, 50]);
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let refused = app.post_json("/api/v1/experiments", &body).await;
        assert_eq!(refused.status, 422, "{path}: {:?}", refused.body);
        let at = refused.error_paths();
        assert!(
            at.first().is_some_and(|(p, _)| p.starts_with(path)),
            "{path}: {:?}",
            refused.body
        );
    }
    assert_eq!(app.get("/api/v1/experiments/bad").await.status, 404);
    let created = app
        .post_json("/api/v1/experiments", &experiment("good", [50, 50]))
        .await;
    assert_eq!(created.status, 201);
    let twice = app
        .post_json("/api/v1/experiments", &experiment("good", [50, 50]))
        .await;
    assert_eq!(twice.status, 409, "{:?}", twice.body);
    // Lifecycle: a draft cannot pause; a finished one cannot start.
    assert_eq!(
        app.post_empty("/api/v1/experiments/good/pause")
            .await
            .status,
        409
    );
    assert_eq!(
        app.post_empty("/api/v1/experiments/good/finish")
            .await
            .status,
        200
    );
    assert_eq!(
        app.post_empty("/api/v1/experiments/good/start")
            .await
            .status,
        409
    );
    let unknown = app
        .post_json(
            "/api/v1/experiments/good/promote",
            &json!({"variant": "nope"}),
        )
        .await;
    assert!(matches!(unknown.status, 409 | 422), "{:?}", unknown.body);
    // A player's token reads only its own assignments.
    let token = app.token(hotswap::Role::Player, "p1");
    let own = app
        .request("GET", "/api/v1/experiments/assignments", Some(&token), None)
        .await;
    assert_eq!(own.status, 200, "{:?}", own.body);
    assert_eq!(own.body["playerId"], "p1");
    let other = app
        .request(
            "GET",
            "/api/v1/experiments/assignments?playerId=p2",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(other.status, 403, "{:?}", other.body);
    // Nor a staff view of its config: a preview or the layers' sources.
    for query in ["&explain=true", "&at=2030-01-01T00:00:00Z"] {
        let preview = app
            .request(
                "GET",
                &format!("/api/v1/players/p1/config?configs=weapon-balance{query}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(preview.status, 403, "{query}: {:?}", preview.body);
    }
    let now = app
        .request(
            "GET",
            "/api/v1/players/p1/config?configs=weapon-balance",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(now.status, 200, "{:?}", now.body);
    // A token whose subject is no player id opens nothing.
    let odd = app.token(hotswap::Role::Player, "p1\u{7}");
    let refused = app
        .request("GET", "/api/v1/experiments/assignments", Some(&odd), None)
        .await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    // And nothing an operator does.
    let list = app
        .request("GET", "/api/v1/experiments", Some(&token), None)
        .await;
    assert_eq!(list.status, 403, "{:?}", list.body);
}

/// Servers split their metrics by variant; the experiment compares the
/// variants on them (a crash share, a latency mean, a custom total per
/// player), and a guardrail on the crash share pauses the variant that
/// crashes more, as one over telemetry does.
async fn server_metrics_split_by_variant_are_compared_and_guarded(app: TestApp) {
    setup(&app).await;
    let body = json!({
        "name": "crashy-rifle",
        "config": "weapon-balance",
        "variants": [
            {"id": "control", "weight": 50, "patch": {}},
            {"id": "hot", "weight": 50, "patch": {"weapons": {"rifle": {"damage": 60}}}}
        ],
        "metrics": [
            {"name": "crash", "kind": "binomial", "serverMetric": "crashes"},
            {"name": "latency", "kind": "duration", "serverMetric": "latencyMs"},
            {"name": "gold", "kind": "sum", "serverMetric": "gold"}
        ],
        "guardrails": [{"metric": "crash", "maxIncrease": 0.5, "minUnits": 20}]
    });
    let created = app.post_json("/api/v1/experiments", &body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let started = app
        .post_empty("/api/v1/experiments/crashy-rifle/start")
        .await;
    assert_eq!(started.status, 200, "{:?}", started.body);
    let (key, _) = app.server_key(&[], &[]).await;
    let mut servers = Vec::new();
    for n in 0..3 {
        servers.push(connected(sdk_config(&app, &key, &format!("arena-{n}"))).await);
    }
    let recorders: Vec<_> = servers
        .iter()
        .map(|server| {
            server.set_players(100);
            let split = |variant| {
                let recorder = server
                    .metrics()
                    .for_variant("crashy-rifle", variant)
                    .expect("room for the variant");
                recorder.set_players(50);
                recorder
            };
            (split("control"), split("hot"))
        })
        .collect();
    // Every 50 ms each server's hot players crash about four times as
    // often as control's, lag twice as much and earn half as much again.
    let mut view = Value::Null;
    for tick in 0..400_u32 {
        for (control, hot) in &recorders {
            if tick % 9 == 0 {
                control.record_crash();
            }
            if tick % 2 == 0 {
                hot.record_crash();
            }
            control.record_latency_ms(20);
            hot.record_latency_ms(40);
            control.set_custom("gold", 100.0);
            hot.set_custom("gold", 150.0);
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        if tick % 10 == 9 {
            view = app.get("/api/v1/experiments/crashy-rifle").await.body;
            if view["status"] == "Paused" {
                break;
            }
        }
    }
    assert_eq!(view["status"], "Paused", "{view:?}");
    let reason = view["statusReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("crash") && reason.contains("hot"),
        "{reason}"
    );
    let results = app
        .get("/api/v1/experiments/crashy-rifle/results")
        .await
        .body;
    let crash_control = metric(&results, "crash", "control");
    let crash_hot = metric(&results, "crash", "hot");
    assert!(crash_control["units"].as_u64().unwrap() >= 20, "{results}");
    assert!(
        crash_hot["value"].as_f64().unwrap() > 2.0 * crash_control["value"].as_f64().unwrap(),
        "{results}"
    );
    assert!(
        crash_hot["vsControl"]["sequentialPValue"].as_f64().unwrap() < 0.05,
        "{results}"
    );
    let server_metric = results["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["source"] == "server");
    assert!(server_metric, "{results}");
    // A histogram's mean per report, and a custom total per player.
    let near = |value: &Value, expected: f64| (value.as_f64().unwrap() - expected).abs() < 0.5;
    assert!(
        near(&metric(&results, "latency", "control")["value"], 20.0),
        "{results}"
    );
    assert!(
        near(&metric(&results, "latency", "hot")["value"], 40.0),
        "{results}"
    );
    assert!(
        near(&metric(&results, "gold", "control")["value"], 2.0),
        "{results}"
    );
    assert!(
        near(&metric(&results, "gold", "hot")["value"], 3.0),
        "{results}"
    );
    // Paused: later reports no longer count.
    let reports = crash_hot["units"].as_u64().unwrap();
    actix_web::rt::time::sleep(Duration::from_millis(1000)).await;
    let later = app
        .get("/api/v1/experiments/crashy-rifle/results")
        .await
        .body;
    assert_eq!(metric(&later, "crash", "hot")["units"], reports, "{later}");
    for server in servers {
        server.stop().await;
    }
    // What was stored survives a restart.
    app.shutdown.shutdown().await;
    let (db, url, dir) = app.into_parts();
    let app = spawn_app_on(db, url, dir, quick_guardrails).await;
    let again = app
        .get("/api/v1/experiments/crashy-rifle/results")
        .await
        .body;
    assert_eq!(metric(&again, "crash", "hot")["units"], reports, "{again}");
}

/// A player's token vouching for its unit (`attrs` claim) is placed by
/// it, whatever the request says; without the claim the request's word is
/// taken.
async fn a_player_token_vouches_for_the_unit_it_is_placed_by(app: TestApp) {
    setup(&app).await;
    let mut body = experiment("guild-rifle", [50, 50]);
    body["unit"] = json!("guild");
    let created = app.post_json("/api/v1/experiments", &body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let started = app
        .post_empty("/api/v1/experiments/guild-rifle/start")
        .await;
    assert_eq!(started.status, 200, "{:?}", started.body);
    let (key, _) = app.server_key(&[], &[]).await;
    let variant = |answer: &Value| {
        answer["assignments"][0]["variantId"]
            .as_str()
            .map(str::to_owned)
    };
    // Guilds as a game server sees them: one in each variant.
    let mut by_variant = std::collections::BTreeMap::new();
    for n in 0..64 {
        let guild = format!("guild-{n}");
        let answer = app
            .request(
                "GET",
                &format!("/api/v1/experiments/assignments?playerId=probe-{n}&guild={guild}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        by_variant
            .entry(variant(&answer.body).unwrap())
            .or_insert(guild);
        if by_variant.len() == 2 {
            break;
        }
    }
    let (control, hot) = (&by_variant["control"], &by_variant["hot"]);
    let vouched = app
        .authenticator
        .mint_with(
            "p-member",
            hotswap::Role::Player,
            Duration::from_secs(600),
            json!({"guild": control}).as_object().cloned(),
        )
        .unwrap();
    let answer = app
        .request(
            "GET",
            &format!("/api/v1/experiments/assignments?guild={hot}"),
            Some(&vouched),
            None,
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(
        variant(&answer.body).as_deref(),
        Some("control"),
        "{:?}",
        answer.body
    );
    let config = app
        .request(
            "GET",
            &format!("/api/v1/players/p-member/config?configs=weapon-balance&guild={hot}"),
            Some(&vouched),
            None,
        )
        .await;
    assert_eq!(config.status, 200, "{:?}", config.body);
    assert_eq!(
        config.body["configs"]["weapon-balance"]["document"]["weapons"]["rifle"]["damage"], 45,
        "{:?}",
        config.body
    );
    let unvouched = app.token(hotswap::Role::Player, "p-loner");
    let answer = app
        .request(
            "GET",
            &format!("/api/v1/experiments/assignments?guild={hot}"),
            Some(&unvouched),
            None,
        )
        .await;
    assert_eq!(
        variant(&answer.body).as_deref(),
        Some("hot"),
        "{:?}",
        answer.body
    );
}

on_both_databases!(
    an_experiment_runs_from_assignment_to_promotion,
    assignments_stick_across_weight_changes_and_restarts with quick_flush,
    a_guardrail_pauses_a_variant_that_harms_players with quick_guardrails,
    server_metrics_split_by_variant_are_compared_and_guarded with quick_guardrails,
    a_player_token_vouches_for_the_unit_it_is_placed_by,
    bad_experiments_are_refused_naming_the_path,
);
