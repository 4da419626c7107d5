//! `hotswap ctl` against a real hub on both databases: configs listed,
//! read, pushed from YAML and refused with the problem's detail; a deploy
//! watched to completion (exit 0); `status --watch` through a rollback
//! (exit 2) and past its timeout (exit 4); servers, resolution, events
//! and JSON output; no hub at the address (exit 5).

use crate::helpers::{TestApp, balance, connected, sdk_config};
use crate::on_both_databases;
use serde_json::Value;
use std::time::Duration;

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `hotswap ctl ARGS` against `url` off the hub's thread (the hub
/// serves it meanwhile).
async fn ctl_at(url: &str, token: &str, args: &[&str]) -> Ran {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hotswap"));
    command
        .arg("ctl")
        .args(args)
        .env("HOTSWAP_URL", url)
        .env("HOTSWAP_TOKEN", token)
        .env("HOME", std::env::temp_dir())
        .env_remove("RUST_LOG");
    let output = actix_web::rt::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn ctl(app: &TestApp, args: &[&str]) -> Ran {
    ctl_at(&app.address, &app.admin_token, args).await
}

async fn the_cli_drives_a_hub_and_ci_can_gate_on_it(app: TestApp) {
    let made = app
        .create_config("weapon-balance", "GameBalance", "staging")
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);

    // Configs: a table, JSON, a push from YAML, a refusal explained.
    let listed = ctl(&app, &["configs", "list"]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(listed.stdout.starts_with("NAME"), "{}", listed.stdout);
    assert!(
        listed.stdout.contains("weapon-balance"),
        "{}",
        listed.stdout
    );
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("balance.yaml");
    std::fs::write(
        &good,
        "weapons:\n  rifle: {damage: 45, fireRate: 600, reloadTime: 2.5}\n\
         characters:\n  tank: {health: 200, armor: 50, abilities: {shield: {cooldown: 10.0}}}\n",
    )
    .unwrap();
    let pushed = ctl(
        &app,
        &[
            "configs",
            "push",
            "weapon-balance",
            good.to_str().unwrap(),
            "--version",
            "1.0.0",
        ],
    )
    .await;
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    assert!(pushed.stdout.contains("1.0.0"), "{}", pushed.stdout);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"weapons": "none"}"#).unwrap();
    let refused = ctl(
        &app,
        &[
            "configs",
            "push",
            "weapon-balance",
            bad.to_str().unwrap(),
            "--version",
            "1.0.1",
        ],
    )
    .await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("422"), "{}", refused.stderr);
    let one = ctl(
        &app,
        &["--output", "json", "configs", "get", "weapon-balance"],
    )
    .await;
    assert_eq!(one.code, 0, "{}", one.stderr);
    let one: Value = serde_json::from_str(&one.stdout).unwrap();
    assert_eq!(one["latestVersion"], "1.0.0");

    // A direct deploy watched to its end: exit 0.
    let deployed = ctl(
        &app,
        &[
            "deploy",
            "weapon-balance",
            "1.0.0",
            "--strategy",
            "direct",
            "--watch",
            "--timeout",
            "60",
        ],
    )
    .await;
    assert_eq!(deployed.code, 0, "{}\n{}", deployed.stdout, deployed.stderr);
    assert!(deployed.stdout.contains("Completed"), "{}", deployed.stdout);

    // A canary on a connected server, watched while an operator rolls it
    // back: exit 2, the reason printed.
    let (key, _) = app.server_key(&[], &[]).await;
    let server = connected(sdk_config(&app, &key, "arena-1")).await;
    assert!(
        server
            .wait_for_revision("weapon-balance", 1, Duration::from_secs(10))
            .await
    );
    let id = app
        .start_canary("weapon-balance", "1.1.0", balance(60))
        .await;
    // Past its timeout first: exit 4.
    let waited = ctl(&app, &["status", &id, "--watch", "--timeout", "1"]).await;
    assert_eq!(waited.code, 4, "{}\n{}", waited.stdout, waited.stderr);
    let watching = {
        let (address, token, id) = (app.address.clone(), app.admin_token.clone(), id.clone());
        actix_web::rt::spawn(async move {
            ctl_at(
                &address,
                &token,
                &["status", &id, "--watch", "--timeout", "60"],
            )
            .await
        })
    };
    actix_web::rt::time::sleep(Duration::from_millis(800)).await;
    let rolled = ctl(&app, &["deployments", "rollback", &id]).await;
    assert_eq!(rolled.code, 0, "{}", rolled.stderr);
    let watched = watching.await.unwrap();
    assert_eq!(watched.code, 2, "{}\n{}", watched.stdout, watched.stderr);
    assert!(watched.stdout.contains("RolledBack"), "{}", watched.stdout);
    // Rolling back what is rolled back: refused, exit 1, the problem said.
    let again = ctl(&app, &["deployments", "rollback", &id]).await;
    assert_eq!(again.code, 1, "{}", again.stdout);
    assert!(again.stderr.contains("409"), "{}", again.stderr);

    // The fleet, a player, the deployments, events and experiments.
    let servers = ctl(&app, &["servers", "list"]).await;
    assert_eq!(servers.code, 0, "{}", servers.stderr);
    assert!(servers.stdout.contains("arena-1"), "{}", servers.stdout);
    let resolved = ctl(
        &app,
        &[
            "--output",
            "json",
            "resolve",
            "p-1",
            "--configs",
            "weapon-balance",
            "--attr",
            "region=EU-WEST",
        ],
    )
    .await;
    assert_eq!(resolved.code, 0, "{}", resolved.stderr);
    let resolved: Value = serde_json::from_str(&resolved.stdout).unwrap();
    assert_eq!(
        resolved["configs"]["weapon-balance"]["document"]["weapons"]["rifle"]["damage"],
        45
    );
    let deployments = ctl(&app, &["deployments", "list"]).await;
    assert_eq!(deployments.code, 0, "{}", deployments.stderr);
    assert!(
        deployments.stdout.contains("RolledBack"),
        "{}",
        deployments.stdout
    );
    for args in [
        &["events", "list"][..],
        &["events", "timeline"],
        &["experiments", "list"],
    ] {
        let ran = ctl(&app, args).await;
        assert_eq!(ran.code, 0, "{args:?}: {}", ran.stderr);
    }
    server.stop().await;

    // No hub there: exit 5.
    let nowhere = ctl_at("http://127.0.0.1:9", "x", &["configs", "list"]).await;
    assert_eq!(nowhere.code, 5, "{}", nowhere.stderr);
}

on_both_databases!(the_cli_drives_a_hub_and_ci_can_gate_on_it);
