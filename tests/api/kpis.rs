//! KPIs on both databases, over a fixture of three players on two days
//! whose answers were worked out by hand (in the comments beside each
//! assertion).
//!
//! Day 0 (two days ago) and day 1 (yesterday):
//! - alice (ios): day 0 a 600 s session, run a1 at tier 1 offered
//!   axe/bow/cape, picked axe, won; day 1 a 300 s session, run a2 at tier
//!   2 in the daily challenge offered axe/dirk, picked dirk, lost.
//! - bob (android): day 0 only: run b1 at tier 1 offered bow/cape, picked
//!   bow, lost; joined the winter-fest event.
//! - carol (ios): day 1 only: a 1200 s session, run c1 at tier 2 in the
//!   daily challenge offered axe/bow, picked axe, won; joined winter-fest.

use crate::helpers::TestApp;
use crate::on_both_databases;
use chrono::{Duration as Span, SecondsFormat, Timelike, Utc};
use serde_json::{Value, json};

struct Days {
    day0: chrono::DateTime<Utc>,
    day1: chrono::DateTime<Utc>,
}

fn days() -> Days {
    let today = Utc::now()
        .with_hour(10)
        .and_then(|t| t.with_minute(0))
        .and_then(|t| t.with_second(0))
        .unwrap();
    Days {
        day0: today - Span::days(2),
        day1: today - Span::days(1),
    }
}

fn date(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn ev(at: chrono::DateTime<Utc>, minute: i64, kind: &str, id: &str, payload: Value) -> Value {
    json!({"eventType": kind, "eventId": id,
           "eventTime": (at + Span::minutes(minute)).to_rfc3339_opts(SecondsFormat::Millis, true),
           "payload": payload})
}

fn run(
    at: chrono::DateTime<Utc>,
    run: &str,
    tier: u32,
    challenge: bool,
    offered: &[&str],
    picked: &str,
    outcome: &str,
) -> Vec<Value> {
    let mut start = json!({"run_id": run, "tier": tier});
    if challenge {
        start["challenge_id"] = json!("daily-1");
    }
    vec![
        ev(at, 1, "run_start", &format!("{run}-s"), start),
        ev(
            at,
            2,
            "draft_offered",
            &format!("{run}-o"),
            json!({"run_id": run, "tier": tier, "options": offered}),
        ),
        ev(
            at,
            3,
            "draft_pick",
            &format!("{run}-p"),
            json!({"run_id": run, "tier": tier, "picked_id": picked}),
        ),
        ev(
            at,
            4,
            "run_end",
            &format!("{run}-e"),
            json!({"run_id": run, "tier": tier, "outcome": outcome}),
        ),
    ]
}

fn session(at: chrono::DateTime<Utc>, id: &str, seconds: u32) -> Vec<Value> {
    vec![
        ev(at, 0, "session_start", &format!("{id}-a"), json!({})),
        ev(
            at,
            30,
            "session_end",
            &format!("{id}-b"),
            json!({"duration_s": seconds}),
        ),
    ]
}

async fn load_fixture(app: &TestApp) -> Days {
    let d = days();
    let (key, _) = app.server_key(&[], &[]).await;
    let join = |at, id: &str| {
        ev(
            at,
            5,
            "event_participation",
            id,
            json!({"event_id": "winter-fest", "action": "join"}),
        )
    };
    let batches = [
        (
            "alice",
            "ios",
            [
                session(d.day0, "al0", 600),
                run(
                    d.day0,
                    "a1",
                    1,
                    false,
                    &["axe", "bow", "cape"],
                    "axe",
                    "win",
                ),
            ]
            .concat(),
        ),
        (
            "alice",
            "ios",
            [
                session(d.day1, "al1", 300),
                run(d.day1, "a2", 2, true, &["axe", "dirk"], "dirk", "loss"),
            ]
            .concat(),
        ),
        (
            "bob",
            "android",
            [
                run(d.day0, "b1", 1, false, &["bow", "cape"], "bow", "loss"),
                vec![join(d.day0, "bj")],
            ]
            .concat(),
        ),
        (
            "carol",
            "ios",
            [
                session(d.day1, "ca1", 1200),
                run(d.day1, "c1", 2, true, &["axe", "bow"], "axe", "win"),
                vec![join(d.day1, "cj")],
            ]
            .concat(),
        ),
    ];
    for (player, platform, events) in batches {
        let sent = app
            .telemetry(
                &key,
                &json!({"playerId": player, "platform": platform, "events": events}),
            )
            .await;
        assert_eq!(sent.status, 200, "{:?}", sent.body);
        assert_eq!(sent.body["rejected"], json!([]), "{:?}", sent.body);
    }
    d
}

async fn kpi(app: &TestApp, name: &str, query: &str) -> Vec<Value> {
    let answer = app.get(&format!("/api/v1/kpis/{name}?{query}")).await;
    assert_eq!(answer.status, 200, "{name}?{query}: {:?}", answer.body);
    answer.body["rows"].as_array().unwrap().clone()
}

async fn kpis_match_a_fixture_worked_out_by_hand(app: TestApp) {
    let d = load_fixture(&app).await;
    let from = format!("from={}", date(d.day0));
    let (day0, day1) = (date(d.day0), date(d.day1));

    // DAU: day 0 alice and bob; day 1 alice and carol.
    assert_eq!(
        kpi(&app, "dau", &from).await,
        vec![
            json!({"day": day0, "dau": 2}),
            json!({"day": day1, "dau": 2})
        ]
    );
    // By platform: day 0 one android (bob), one ios (alice); day 1 two ios.
    assert_eq!(
        kpi(&app, "dau", &format!("{from}&groupBy=platform")).await,
        vec![
            json!({"day": day0, "platform": "android", "dau": 1}),
            json!({"day": day0, "platform": "ios", "dau": 1}),
            json!({"day": day1, "platform": "ios", "dau": 2}),
        ]
    );
    // Over the whole window: three players.
    assert_eq!(
        kpi(&app, "dau", &format!("{from}&groupBy=none")).await,
        vec![json!({"dau": 3})]
    );
    // Only winter-fest's participants: bob on day 0, carol on day 1.
    assert_eq!(
        kpi(&app, "dau", &format!("{from}&event=winter-fest")).await,
        vec![
            json!({"day": day0, "dau": 1}),
            json!({"day": day1, "dau": 1})
        ]
    );

    // D1 retention: day 0's cohort is alice and bob, alice came back; day
    // 1's cohort is carol, not back today.
    assert_eq!(
        kpi(&app, "retention-d1", &from).await,
        vec![
            json!({"cohortDay": day0, "cohort": 2, "retained": 1, "rate": 0.5}),
            json!({"cohortDay": day1, "cohort": 1, "retained": 0, "rate": 0.0}),
        ]
    );
    // D7: nobody yet.
    assert_eq!(
        kpi(&app, "retention-d7", &format!("{from}&groupBy=none")).await,
        vec![json!({"cohort": 3, "retained": 0, "rate": 0.0})]
    );

    // Win rate per tier: tier 1 a1 won, b1 lost; tier 2 a2 lost, c1 won.
    assert_eq!(
        kpi(&app, "win-rate", &from).await,
        vec![
            json!({"tier": "1", "runs": 2, "wins": 1, "losses": 1, "winRate": 0.5, "failRate": 0.5}),
            json!({"tier": "2", "runs": 2, "wins": 1, "losses": 1, "winRate": 0.5, "failRate": 0.5}),
        ]
    );
    // Winter-fest's players: b1 lost, c1 won.
    assert_eq!(
        kpi(
            &app,
            "win-rate",
            &format!("{from}&groupBy=none&event=winter-fest")
        )
        .await,
        vec![json!({"runs": 2, "wins": 1, "losses": 1, "winRate": 0.5, "failRate": 0.5})]
    );

    // Pick rate: offers axe 3 (a1, a2, c1), bow 3 (a1, b1, c1), cape 2
    // (a1, b1), dirk 1 (a2); picks axe 2, bow 1, dirk 1. Runs ended 4, won
    // 2 (0.5): axe's runs both won (+0.5), bow's lost (-0.5), dirk's lost
    // (-0.5), cape was never picked.
    let answer = app
        .get(&format!("/api/v1/kpis/pick-rate?{from}"))
        .await
        .body;
    assert_eq!(answer["overallWinRate"], 0.5, "{answer}");
    assert_eq!(answer["runsEnded"], 4);
    assert_eq!(
        answer["rows"],
        json!([
            {"contentId": "axe", "offers": 3, "picks": 2, "pickRate": 2.0 / 3.0, "runsEnded": 2, "runsWon": 2, "winRate": 1.0, "winContribution": 0.5},
            {"contentId": "bow", "offers": 3, "picks": 1, "pickRate": 1.0 / 3.0, "runsEnded": 1, "runsWon": 0, "winRate": 0.0, "winContribution": -0.5},
            {"contentId": "cape", "offers": 2, "picks": 0, "pickRate": 0.0, "runsEnded": 0, "runsWon": 0, "winRate": null, "winContribution": null},
            {"contentId": "dirk", "offers": 1, "picks": 1, "pickRate": 1.0, "runsEnded": 1, "runsWon": 0, "winRate": 0.0, "winContribution": -0.5},
        ])
    );

    // Daily challenge: nobody on day 0; alice and carol of 2 on day 1.
    assert_eq!(
        kpi(&app, "challenge-participation", &from).await,
        vec![
            json!({"day": day0, "dau": 2, "participants": 0, "rate": 0.0}),
            json!({"day": day1, "dau": 2, "participants": 2, "rate": 1.0}),
        ]
    );
    // Sessions: day 0 alice's 600 s; day 1 300 s and 1200 s, mean 750.
    assert_eq!(
        kpi(&app, "session-length", &from).await,
        vec![
            json!({"day": day0, "sessions": 1, "meanSeconds": 600.0}),
            json!({"day": day1, "sessions": 2, "meanSeconds": 750.0}),
        ]
    );

    // Per experiment variant: each player's variant as the hub assigned it.
    app.create_config("loadout", "Custom", "staging").await;
    let deployed = app.deploy("loadout", "1.0.0", json!({"slots": 3})).await;
    app.wait_deployment_status(deployed.body["id"].as_str().unwrap(), "Completed")
        .await;
    let created = app
        .post_json(
            "/api/v1/experiments",
            &json!({"name": "slots", "config": "loadout",
                "variants": [{"id": "control", "weight": 1, "patch": {}}, {"id": "four", "weight": 1, "patch": {"slots": 4}}],
                "metrics": [{"name": "runs", "kind": "count", "event": "run_end"}]}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    app.post_empty("/api/v1/experiments/slots/start").await;
    let mut variant = std::collections::BTreeMap::new();
    for player in ["alice", "bob", "carol"] {
        let listed = app
            .get(&format!(
                "/api/v1/experiments/assignments?playerId={player}"
            ))
            .await;
        variant.insert(
            player,
            listed.body["assignments"][0]["variantId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // The assignments are written in batches: wait for all three.
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = kpi(
            &app,
            "win-rate",
            &format!("{from}&groupBy=variant&experiment=slots"),
        )
        .await;
        if rows
            .iter()
            .map(|r| r["runs"].as_i64().unwrap())
            .sum::<i64>()
            == 4
        {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Runs per variant: alice 2 (1 win), bob 1 (0), carol 1 (1 win).
    let mut expected: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for (player, runs, wins) in [("alice", 2, 1), ("bob", 1, 0), ("carol", 1, 1)] {
        let entry = expected.entry(variant[player].clone()).or_default();
        entry.0 += runs;
        entry.1 += wins;
    }
    let got: std::collections::BTreeMap<String, (i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["variant"].as_str().unwrap().to_owned(),
                (r["runs"].as_i64().unwrap(), r["wins"].as_i64().unwrap()),
            )
        })
        .collect();
    assert_eq!(got, expected, "{rows:?}");

    // The balance loop's report, from the command line over the same store.
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_hotswap"))
        .args([
            "report",
            "balance",
            "--from",
            &date(d.day0),
            "--top",
            "2",
            "--min-runs",
            "1",
        ])
        .args(["--min-fail", "0.2", "--max-fail", "0.4"])
        .env("HOTSWAP_DATABASE__URL", &app.database_url)
        .env("HOTSWAP_DATA_DIR", std::env::temp_dir())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(text.contains("4 runs ended, win rate 50.0 %"), "{text}");
    let over = text.split("Most over-performing").nth(1).unwrap();
    let (over, under) = over.split_once("Most under-performing").unwrap();
    // Over: axe (+50 pts) first, then bow and dirk (-50 pts) by id.
    assert!(over.contains("axe") && over.contains("+50.0 pts"), "{text}");
    assert!(over.find("axe") < over.find("bow"), "{text}");
    // Under: dirk and bow (-50 pts) first; cape never ran.
    let under = under.split("Tiers").next().unwrap();
    assert!(
        under.contains("dirk") && under.contains("bow") && !under.contains("cape"),
        "{text}"
    );
    assert!(!under.contains("axe"), "top 2 of 3: {text}");
    // Both tiers fail half their runs: above the 40 % band's top.
    let hard = text.split("Tiers failed too often").nth(1).unwrap();
    let (hard, easy) = hard.split_once("Tiers failed too rarely").unwrap();
    assert!(hard.contains("tier 1") && hard.contains("tier 2"), "{text}");
    assert!(easy.contains("(none)"), "{text}");

    // Bad queries name the parameter.
    for (query, path) in [
        ("dau?groupBy=tier", "/query/groupBy"),
        ("dau?groupBy=variant", "/query/experiment"),
        ("dau?groupBy=variant&experiment=nope", "/query/experiment"),
        ("mau", "/query/name"),
        ("dau?from=2020-01-01&to=2026-01-01", "/query/from"),
        ("dau?from=tomorrow", "/query/from"),
        ("dau?surprise=1", "/query/query"),
    ] {
        let refused = app.get(&format!("/api/v1/kpis/{query}")).await;
        assert_eq!(refused.status, 422, "{query}: {:?}", refused.body);
        assert_eq!(refused.error_paths()[0].0, path, "{query}");
    }
}

on_both_databases!(kpis_match_a_fixture_worked_out_by_hand);
