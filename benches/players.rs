//! Criterion benchmark of what a player sees, in process (issue 16's
//! target: 1,000,000 lookups a second): `LiveOps::resolve_players` for one
//! player and one ~1 KB config on a real hub (SQLite in a temp dir) with a
//! rule segment and two live events active, one for the segment and one
//! for half the players, as `scripts/bench-players.sh` sets up for `wrk`.
//! The first lookup of each layer combination resolves and serializes it;
//! every later one is the audience checks and the kept JSON.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hotswap::{
    Authenticator, PlayerRequest, Role,
    settings::{SecretString, Settings},
    startup::Application,
};
use serde_json::{Map, Value, json};
use std::{hint::black_box, sync::Arc, time::Duration};

struct Bench {
    liveops: Arc<hotswap::LiveOps>,
    _dir: tempfile::TempDir,
}

async fn post(client: &awc::Client, url: String, token: &str, body: Value) {
    let response = client
        .post(url.as_str())
        .bearer_auth(token)
        .send_json(&body)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
}

async fn hub() -> Bench {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::load(None).expect("default settings");
    settings.bind = "127.0.0.1:0".into();
    settings.data_dir = dir.path().to_owned();
    settings.auth.jwt_secret = Some(SecretString::new(
        "bench-secret-bench-secret-bench-secret-0123456789",
    ));
    settings.database.url = SecretString::new(format!(
        "sqlite://{}",
        dir.path().join("hotswap.db").display()
    ));
    let token =
        Authenticator::from_settings(&settings.auth, settings.environment, &settings.data_dir)
            .expect("authenticator")
            .authenticator
            .mint("bench", Role::Admin, Duration::from_secs(3600))
            .expect("a token");
    let application = Application::build(settings).await.expect("the hub builds");
    let liveops = application.liveops().clone();
    let base = format!("http://127.0.0.1:{}/api/v1", application.port());
    actix_web::rt::spawn(application.run_until_stopped());
    let client = awc::Client::default();
    let weapons: Map<String, Value> = [
        ("rifle", 45, 600, 2.5),
        ("smg", 22, 900, 1.8),
        ("shotgun", 90, 70, 3.1),
        ("sniper", 150, 40, 3.5),
        ("pistol", 30, 300, 1.2),
        ("lmg", 35, 750, 4.5),
    ]
    .into_iter()
    .map(|(name, damage, rate, reload)| {
        (
            name.to_owned(),
            json!({"damage": damage, "fireRate": rate, "reloadTime": reload}),
        )
    })
    .collect();
    let content = json!({"weapons": weapons, "characters": {
        "tank": {"health": 300, "armor": 80, "abilities": {"shield": {"cooldown": 12.0}}},
        "scout": {"health": 150, "armor": 20, "abilities": {"dash": {"cooldown": 4.0}}},
        "medic": {"health": 180, "armor": 30, "abilities": {"heal": {"cooldown": 8.0}}}}});
    let now = chrono::Utc::now();
    let (start, end) = (
        (now - chrono::Duration::minutes(1)).to_rfc3339(),
        (now + chrono::Duration::hours(2)).to_rfc3339(),
    );
    for (path, body) in [
        (
            "/configs",
            json!({"name": "weapon-balance", "configType": "GameBalance", "environment": "staging"}),
        ),
        (
            "/configs/weapon-balance/versions",
            json!({"version": "1.0.0", "content": content}),
        ),
        (
            "/deployments",
            json!({"config": "weapon-balance", "version": "1.0.0", "strategy": "Direct"}),
        ),
        (
            "/segments",
            json!({"name": "veterans", "rule": {"all": [
                {"attribute": "level", "gte": 10},
                {"attribute": "platform", "in": ["pc", "ps5"]}]}}),
        ),
        (
            "/live-events",
            json!({"name": "veteran-boost", "eventType": "Retention",
                "audience": {"segments": ["veterans"]},
                "overrides": [{"config": "weapon-balance", "patch": {"weapons": {"rifle": {"damage": 60}}}}],
                "schedule": {"startTime": start, "endTime": end}}),
        ),
        (
            "/live-events",
            json!({"name": "half-fire-rate", "eventType": "LimitedTimeOffer",
                "audience": {"percentage": 50},
                "overrides": [{"config": "weapon-balance", "patch": {"weapons": {"smg": {"fireRate": 950}}}}],
                "schedule": {"startTime": start, "endTime": end}}),
        ),
    ] {
        post(&client, format!("{base}{path}"), &token, body).await;
    }
    // The events' actors apply them.
    for _ in 0..200 {
        if liveops
            .definitions()
            .events
            .values()
            .all(|e| !e.applied.is_empty())
        {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    Bench { liveops, _dir: dir }
}

fn player(id: &str) -> PlayerRequest {
    let attributes = json!({"region": "EU-WEST", "level": 12, "platform": "pc"});
    PlayerRequest {
        player_id: id.to_owned(),
        attributes: attributes.as_object().cloned().unwrap_or_default(),
    }
}

fn players(c: &mut Criterion) {
    let system = actix_web::rt::System::new();
    let bench = system.block_on(hub());
    let configs = vec!["weapon-balance".to_owned()];
    let one = [player("p42")];
    let answer = system
        .block_on(bench.liveops.resolve_players(&one, &configs, None, false))
        .expect("a resolution");
    assert_eq!(answer[0].events.len(), 2, "both events apply: {answer:?}");
    let many: Vec<PlayerRequest> = (0..1000).map(|i| player(&format!("p{i}"))).collect();
    let mut group = c.benchmark_group("players");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one player, one config (kept resolution)", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let started = std::time::Instant::now();
                for _ in 0..iters {
                    black_box(
                        bench
                            .liveops
                            .resolve_players(black_box(&one), &configs, None, false)
                            .await
                            .expect("a resolution"),
                    );
                }
                started.elapsed()
            })
        })
    });
    group.bench_function("1,000 players in turn, one config", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let started = std::time::Instant::now();
                for i in 0..iters {
                    let who = std::slice::from_ref(&many[i as usize % many.len()]);
                    black_box(
                        bench
                            .liveops
                            .resolve_players(who, &configs, None, false)
                            .await
                            .expect("a resolution"),
                    );
                }
                started.elapsed()
            })
        })
    });
    group.bench_function("answer written as JSON", |b| {
        let mut out = String::with_capacity(4096);
        b.iter(|| {
            out.clear();
            answer[0].write_json(&mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, players);
criterion_main!(benches);
