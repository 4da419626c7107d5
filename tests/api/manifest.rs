//! The content manifest on both databases: a `ContentManifest` config read
//! per platform and region, an old client told to update (prereleases
//! included), a new manifest rolled out to one region and flipped back by
//! rolling that deployment back, pushed to the servers subscribed to it.

use crate::helpers::{TestApp, balance};
use crate::on_both_databases;
use serde_json::{Value, json};
use std::time::Duration;

fn manifest(active: &str, hash: char, minimum: &str) -> Value {
    json!({
        "activeVersion": active,
        "contentHash": format!("sha256:{}", hash.to_string().repeat(64)),
        "minSupportedClientVersion": minimum,
        "platforms": {"ios": {"activeVersion": "2.2.0"}}
    })
}

async fn read(app: &TestApp, query: &str) -> Value {
    let answer = app.get(&format!("/api/v1/manifest?{query}")).await;
    assert_eq!(answer.status, 200, "{query}: {:?}", answer.body);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    answer.body
}

async fn a_manifest_rolls_out_by_region_and_flips_back(app: TestApp) {
    let created = app
        .create_config("content-manifest", "ContentManifest", "staging")
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    // The built-in schema refuses what a client could not read.
    let mut broken = manifest("2.3", 'a', "1.4.0");
    broken["contentHash"] = json!("md5:abc");
    let refused = app.post_version("content-manifest", "0.9.0", broken).await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    let paths: Vec<String> = refused.error_paths().into_iter().map(|(p, _)| p).collect();
    assert!(
        paths.iter().any(|p| p.ends_with("/activeVersion"))
            && paths.iter().any(|p| p.ends_with("/contentHash")),
        "{paths:?}"
    );
    app.deploy("content-manifest", "1.0.0", manifest("2.3.0", 'a', "1.4.0"))
        .await;
    let (key, _) = app.server_key(&[], &[]).await;
    let launcher = crate::helpers::connected(
        hotswap_client::ClientConfig::new(app.ws_url(), &key, "launcher-eu")
            .region("EU-WEST")
            .environment("staging")
            .subscribe("content-manifest")
            .backoff(Duration::from_millis(50), Duration::from_millis(500)),
    )
    .await;

    let pc = read(&app, "platform=pc&clientVersion=1.5.0&region=EU-WEST").await;
    assert_eq!(pc["activeVersion"], "2.3.0");
    assert_eq!(pc["contentHash"], format!("sha256:{}", "a".repeat(64)));
    assert_eq!(pc["minSupportedClientVersion"], "1.4.0");
    assert_eq!(pc["updateRequired"], false);
    assert_eq!(pc["revision"], 1);
    assert!(pc["serverTime"].as_str().unwrap().ends_with('Z'));
    let ios = read(&app, "platform=ios&clientVersion=1.5.0").await;
    assert_eq!(ios["activeVersion"], "2.2.0", "the platform's own entry");
    // An old client, and a prerelease of the minimum, must update; build
    // metadata does not count.
    for (client, required) in [
        ("1.3.9", true),
        ("1.4.0-rc.1", true),
        ("1.4.0", false),
        ("1.4.0%2Bbuild.7", false),
        ("1.10.0", false),
    ] {
        let answer = read(&app, &format!("platform=pc&clientVersion={client}")).await;
        assert_eq!(answer["updateRequired"], required, "{client}");
    }

    // 2.4.0 goes to EU-WEST only, and needs client 1.5.0.
    let uploaded = app
        .post_version("content-manifest", "1.1.0", manifest("2.4.0", 'b', "1.5.0"))
        .await;
    assert_eq!(uploaded.status, 201, "{:?}", uploaded.body);
    let deployed = app
        .post_json(
            "/api/v1/deployments",
            &json!({"config": "content-manifest", "version": "1.1.0", "strategy": "Direct",
                    "regions": ["EU-WEST"]}),
        )
        .await;
    assert_eq!(deployed.status, 201, "{:?}", deployed.body);
    let id = deployed.body["id"].as_str().unwrap().to_owned();
    app.wait_deployment_status(&id, "Completed").await;
    let eu = read(&app, "platform=pc&clientVersion=1.4.2&region=EU-WEST").await;
    assert_eq!(eu["activeVersion"], "2.4.0", "{eu}");
    assert_eq!(eu["updateRequired"], true, "{eu}");
    let na = read(&app, "platform=pc&clientVersion=1.4.2&region=NA-EAST").await;
    assert_eq!(na["activeVersion"], "2.3.0", "{na}");
    assert_eq!(na["updateRequired"], false, "{na}");
    // The launcher subscribed to the manifest got it pushed.
    assert!(
        launcher
            .wait_for_revision("content-manifest", 2, Duration::from_secs(10))
            .await,
        "pushed"
    );
    assert_eq!(
        launcher.config("content-manifest").unwrap().document["activeVersion"],
        "2.4.0"
    );

    // Flip back: the region's deployment rolled back.
    let rolled = app
        .post_json(
            &format!("/api/v1/deployments/{id}/rollback"),
            &json!({"reason": "crash on launch"}),
        )
        .await;
    assert_eq!(rolled.status, 200, "{:?}", rolled.body);
    app.wait_deployment_status(&id, "RolledBack").await;
    let eu = read(&app, "platform=pc&clientVersion=1.4.2&region=EU-WEST").await;
    assert_eq!(eu["activeVersion"], "2.3.0", "{eu}");
    assert_eq!(eu["updateRequired"], false);
    let mut back = false;
    for _ in 0..500 {
        if launcher.config("content-manifest").unwrap().document["activeVersion"] == "2.3.0" {
            back = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "the launcher is pushed 2.3.0 again");
    launcher.stop().await;
}

async fn bad_manifest_requests_are_refused(app: TestApp) {
    app.create_config("content-manifest", "ContentManifest", "staging")
        .await;
    app.deploy("content-manifest", "1.0.0", manifest("2.3.0", 'a', "1.4.0"))
        .await;
    app.create_config("weapon-balance", "GameBalance", "staging")
        .await;
    app.deploy("weapon-balance", "1.0.0", balance(45)).await;
    for (query, status) in [
        ("platform=pc", 422),
        ("clientVersion=1.4", 422),
        ("clientVersion=v1.4.0", 422),
        ("clientVersion=1.4.0&platform=Play%20Station", 422),
        ("clientVersion=1.4.0&config=nope", 404),
        ("clientVersion=1.4.0&config=weapon-balance", 422),
        ("clientVersion=1.4.0&surprise=1", 400),
        ("clientVersion=1.4.0&clientVersion=1.5.0", 400),
    ] {
        let answer = app.get(&format!("/api/v1/manifest?{query}")).await;
        assert_eq!(answer.status, status, "{query}: {:?}", answer.body);
    }
    // Clients read it with their own token; nobody anonymously.
    let token = app.token(hotswap::Role::Player, "p1");
    let player = app
        .request(
            "GET",
            "/api/v1/manifest?clientVersion=1.4.0",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(player.status, 200, "{:?}", player.body);
    let named = app
        .request(
            "GET",
            "/api/v1/manifest?clientVersion=1.4.0&config=weapon-balance",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(named.status, 403, "players read the default manifest only");
    let anonymous = app
        .request("GET", "/api/v1/manifest?clientVersion=1.4.0", None, None)
        .await;
    assert_eq!(anonymous.status, 401, "{:?}", anonymous.body);
}

on_both_databases!(
    a_manifest_rolls_out_by_region_and_flips_back,
    bad_manifest_requests_are_refused,
);
