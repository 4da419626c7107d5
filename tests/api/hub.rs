//! The hub end to end: real SDK clients and raw sockets against a real hub.

use crate::attacks::welcomed;
use crate::helpers::{
    Db, TestApp, balance, connected as start, sdk_config as client_config, spawn_app_on,
};
use crate::on_both_databases;
use crate::sockets::{WAIT, close_code_of, hello, next_message, raw, send};
use futures_util::SinkExt;
use hotswap_client::{
    Client, ClientConfig, ConnectionState,
    protocol::{self, HubMessage, ServerMessage, close_code},
};
use serde_json::{Value, json};
use std::{collections::BTreeMap, time::Duration};
use tokio_tungstenite::tungstenite::Message;

async fn setup(app: &TestApp) -> (String, String) {
    assert_eq!(
        app.create_config("weapon-balance", "GameBalance", "staging")
            .await
            .status,
        201
    );
    app.deploy("weapon-balance", "1.0.0", balance(45)).await;
    app.server_key(&[], &[]).await
}

async fn a_server_gets_a_snapshot_then_a_delta_and_acks_both(app: TestApp) {
    let (key, _) = setup(&app).await;
    let client =
        start(client_config(&app, &key, "eu-1").verify_with(app.signing_key().await)).await;
    assert!(client.wait_for_revision("weapon-balance", 1, WAIT).await);
    let typed: Value = client.get("weapon-balance").unwrap();
    assert_eq!(typed["weapons"]["rifle"]["damage"], 45);
    let changes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = changes.clone();
    client.on_change(move |change| {
        seen.lock()
            .unwrap()
            .push((change.config.clone(), change.current.revision))
    });

    let deployed = app.deploy("weapon-balance", "1.1.0", balance(50)).await;
    assert!(client.wait_for_revision("weapon-balance", 2, WAIT).await);
    assert_eq!(
        client.config("weapon-balance").unwrap().document["weapons"]["rifle"]["damage"],
        50
    );
    assert_eq!(
        client
            .stats()
            .snapshots
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        client
            .stats()
            .deltas
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        *changes.lock().unwrap(),
        vec![("weapon-balance".to_owned(), 2)]
    );

    let id = deployed.body["id"].as_str().unwrap();
    let mut deployment = app.get(&format!("/api/v1/deployments/{id}")).await;
    for _ in 0..100 {
        if deployment.body["status"] == "Completed" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        deployment = app.get(&format!("/api/v1/deployments/{id}")).await;
    }
    assert_eq!(
        deployment.body["status"], "Completed",
        "{:?}",
        deployment.body
    );
    assert_eq!(
        (
            deployment.body["targets"].as_i64(),
            deployment.body["acked"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(deployment.body["servers"][0]["state"], "acked");
    let server = app.get("/api/v1/game-servers/eu-1").await;
    assert_eq!(
        server.body["applied"]["weapon-balance"], 2,
        "{:?}",
        server.body
    );
    assert_eq!(server.body["status"], "healthy");
    client.stop().await;
}

async fn reconnecting_with_known_revisions_gets_nothing_or_a_delta(app: TestApp) {
    let (key, _) = setup(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let persisted = dir.path().join("configs.json");
    let config = client_config(&app, &key, "eu-2").persist_to(&persisted);
    let first = start(config.clone()).await;
    assert!(first.wait_for_revision("weapon-balance", 1, WAIT).await);
    // `stop` returns once the last config applied is on disk.
    first.stop().await;
    assert!(persisted.exists(), "the last good config is kept on disk");

    // Offline while 1.1.0 ships: on return it gets a delta, not a snapshot.
    app.deploy("weapon-balance", "1.1.0", balance(60)).await;
    let second = Client::start(config.clone()).unwrap();
    assert_eq!(
        second.config("weapon-balance").unwrap().revision,
        1,
        "serves the persisted config before connecting"
    );
    assert!(second.wait_for_revision("weapon-balance", 2, WAIT).await);
    assert_eq!(
        second
            .stats()
            .deltas
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        second
            .stats()
            .snapshots
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    second.stop().await;

    // Up to date: nothing is sent at hello. The next version's delta comes
    // after anything the hello sent (one ordered stream), so counting the
    // frames once it arrived shows what the hello sent: nothing.
    let third = start(config).await;
    assert_eq!(third.config("weapon-balance").unwrap().revision, 2);
    app.deploy("weapon-balance", "1.2.0", balance(61)).await;
    assert!(third.wait_for_revision("weapon-balance", 3, WAIT).await);
    let stats = third.stats();
    assert_eq!(
        (
            stats.deltas.load(std::sync::atomic::Ordering::Relaxed),
            stats.snapshots.load(std::sync::atomic::Ordering::Relaxed)
        ),
        (1, 0),
        "only the new version's delta"
    );
    third.stop().await;
}

async fn a_checksum_mismatch_leads_to_a_resync_and_a_snapshot(app: TestApp) {
    let (key, _) = setup(&app).await;
    // A server holding a corrupted revision 1 (consistent with its own checksum).
    let dir = tempfile::tempdir().unwrap();
    let persisted = dir.path().join("configs.json");
    let mut wrong = balance(45);
    wrong["cheat"] = json!(true);
    std::fs::write(
        &persisted,
        serde_json::to_vec(&json!([{"config": "weapon-balance", "revision": 1, "version": "1.0.0", "document": wrong, "checksum": hotswap_client::document_checksum(&wrong)}])).unwrap(),
    )
    .unwrap();
    app.deploy("weapon-balance", "1.1.0", balance(50)).await;
    let client = start(client_config(&app, &key, "eu-3").persist_to(&persisted)).await;
    assert!(client.wait_for_revision("weapon-balance", 2, WAIT).await);
    let stats = client.stats();
    assert_eq!(stats.resyncs.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        stats.snapshots.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        client.config("weapon-balance").unwrap().document,
        balance(50)
    );
    client.stop().await;
}

/// A short session queue: the answers to a burst of resyncs (16 at once,
/// the rest paced) overflow it while the server reads nothing.
fn short_queue(settings: &mut hotswap::settings::Settings) {
    settings.hub.session_queue = 4;
}

async fn a_slow_consumer_is_cut_off_while_others_keep_receiving(app: TestApp) {
    let (key, _) = setup(&app).await;
    // A big document, so unread frames pile up quickly.
    let mut big = balance(45);
    for i in 0..600 {
        big["weapons"][format!("w{i:04}")] =
            json!({"damage": 10, "fireRate": 600, "note": "x".repeat(40)});
    }
    app.deploy("weapon-balance", "1.1.0", big).await;
    let fast = start(client_config(&app, &key, "fast")).await;
    assert!(fast.wait_for_revision("weapon-balance", 2, WAIT).await);

    let mut slow = raw(&app, Some(&key)).await.unwrap();
    send(
        &mut slow,
        hello(
            "slow",
            "staging",
            BTreeMap::from([("weapon-balance".into(), 2)]),
        ),
    )
    .await;
    assert!(matches!(
        next_message(&mut slow).await,
        Ok(HubMessage::Welcome { .. })
    ));
    // Ask for far more snapshots than can be queued, and never read them.
    for _ in 0..400 {
        if slow
            .send(Message::Binary(
                protocol::encode(&ServerMessage::Resync {
                    config: "weapon-balance".into(),
                })
                .into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut cut = false;
    for _ in 0..200 {
        let record = app.get("/api/v1/game-servers/slow").await;
        if record.body["connected"] == false {
            cut = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(cut, "the slow server was not disconnected");
    let record = app.get("/api/v1/game-servers/slow").await;
    assert!(
        record.body["disconnectReason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("4003"),
        "{:?}",
        record.body
    );
    // The others are unaffected.
    app.deploy("weapon-balance", "1.2.0", balance(70)).await;
    assert!(fast.wait_for_revision("weapon-balance", 3, WAIT).await);
    assert!(
        app.hub
            .stats
            .slow_consumers
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    drop(slow);
    fast.stop().await;
}

async fn a_second_connection_with_the_same_server_id_replaces_the_first(app: TestApp) {
    let (key, _) = setup(&app).await;
    let mut first = raw(&app, Some(&key)).await.unwrap();
    send(&mut first, hello("twin", "staging", BTreeMap::new())).await;
    assert!(matches!(
        next_message(&mut first).await,
        Ok(HubMessage::Welcome { .. })
    ));
    let mut second = raw(&app, Some(&key)).await.unwrap();
    send(&mut second, hello("twin", "staging", BTreeMap::new())).await;
    assert!(matches!(
        next_message(&mut second).await,
        Ok(HubMessage::Welcome { .. })
    ));
    assert_eq!(close_code_of(&mut first).await, Some(close_code::REPLACED));
    let record = app.get("/api/v1/game-servers/twin").await;
    assert_eq!(record.body["connected"], true, "the second session stays");
}

/// Every broken input closes the socket with its code; the hub is unaffected.
async fn malformed_socket_input_is_closed_with_a_code_and_reason(app: TestApp) {
    let (key, _) = setup(&app).await;
    let (limited_key, _) = app.server_key(&["production"], &[]).await;
    let unknown_type = rmp_serde::to_vec_named(&json!({"type": "teleport"})).unwrap();
    let cases: Vec<(&str, Vec<Message>, u16)> = vec![
        (
            "a text frame",
            vec![Message::Text("hello".into())],
            close_code::UNSUPPORTED_DATA,
        ),
        (
            "garbage",
            vec![Message::Binary(vec![0xc1, 0xc1, 0xc1].into())],
            close_code::PROTOCOL_ERROR,
        ),
        (
            "an unknown type",
            vec![Message::Binary(unknown_type.into())],
            close_code::PROTOCOL_ERROR,
        ),
        (
            "a heartbeat first",
            vec![Message::Binary(
                protocol::encode(&ServerMessage::Resync { config: "x".into() }).into(),
            )],
            close_code::POLICY_VIOLATION,
        ),
        (
            "hello twice",
            vec![
                Message::Binary(hello("h2", "staging", BTreeMap::new()).into()),
                Message::Binary(hello("h2", "staging", BTreeMap::new()).into()),
            ],
            close_code::POLICY_VIOLATION,
        ),
        (
            "an oversize frame",
            vec![Message::Binary(vec![0x90; 300 * 1024].into())],
            close_code::TOO_BIG,
        ),
        (
            "a bad environment",
            vec![Message::Binary(hello("h3", "moon", BTreeMap::new()).into())],
            close_code::POLICY_VIOLATION,
        ),
        ("nothing at all", vec![], close_code::HELLO_TIMEOUT),
    ];
    for (what, frames, expected) in cases {
        let mut socket = raw(&app, Some(&key)).await.unwrap();
        for frame in frames {
            let _ = socket.send(frame).await;
        }
        assert_eq!(close_code_of(&mut socket).await, Some(expected), "{what}");
    }
    // The key's limits hold.
    let mut limited = raw(&app, Some(&limited_key)).await.unwrap();
    send(&mut limited, hello("h4", "staging", BTreeMap::new())).await;
    assert_eq!(
        close_code_of(&mut limited).await,
        Some(close_code::POLICY_VIOLATION)
    );
    // No key, a forged key: 401 before any upgrade.
    for bad in [
        None,
        Some("hsk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        match raw(&app, bad).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401)
            }
            other => panic!("expected a 401, got {:?}", other.map(|_| "a socket")),
        }
    }
    // Still serving.
    let client = start(client_config(&app, &key, "after")).await;
    assert!(client.wait_for_revision("weapon-balance", 1, WAIT).await);
    client.stop().await;
}

async fn revoking_a_key_closes_its_live_sessions(app: TestApp) {
    let (key, id) = setup(&app).await;
    let mut socket = raw(&app, Some(&key)).await.unwrap();
    send(&mut socket, hello("revoked", "staging", BTreeMap::new())).await;
    assert!(matches!(
        next_message(&mut socket).await,
        Ok(HubMessage::Welcome { .. })
    ));
    assert_eq!(
        app.delete(&format!("/api/v1/api-keys/{id}")).await.status,
        200
    );
    assert_eq!(
        close_code_of(&mut socket).await,
        Some(close_code::KEY_REVOKED)
    );
    assert!(
        raw(&app, Some(&key)).await.is_err(),
        "the key no longer opens a socket"
    );
}

async fn a_direct_deployment_reaches_every_client_and_records_every_ack(app: TestApp) {
    let (key, _) = setup(&app).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(start(client_config(&app, &key, &format!("fleet-{i:02}"))).await);
    }
    for client in &clients {
        assert!(client.wait_for_revision("weapon-balance", 1, WAIT).await);
    }
    let deployed = app.deploy("weapon-balance", "1.1.0", balance(77)).await;
    for client in &clients {
        assert!(client.wait_for_revision("weapon-balance", 2, WAIT).await);
    }
    let id = deployed.body["id"].as_str().unwrap();
    let mut view = app.get(&format!("/api/v1/deployments/{id}")).await;
    for _ in 0..200 {
        if view.body["acked"] == 20 && view.body["status"] == "Completed" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        view = app.get(&format!("/api/v1/deployments/{id}")).await;
    }
    assert_eq!(
        (
            view.body["targets"].as_i64(),
            view.body["acked"].as_i64(),
            view.body["failed"].as_i64()
        ),
        (Some(20), Some(20), Some(0))
    );
    assert_eq!(view.body["status"], "Completed");
    let on_two = app
        .get("/api/v1/game-servers?config=weapon-balance&revision=2")
        .await;
    assert_eq!(on_two.body["items"].as_array().unwrap().len(), 20);
    let listed = app.get("/api/v1/deployments").await;
    assert_eq!(listed.body["items"][0]["id"], id);

    // Every server, a page at a time, in id order.
    let mut paged = Vec::new();
    let mut path = format!("/api/v1/deployments/{id}/servers?limit=7");
    loop {
        let page = app.get(&path).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 7);
        for item in items {
            assert_eq!(item["state"], "acked");
            assert_eq!(item["revision"], 2);
            paged.push(item["serverId"].as_str().unwrap().to_owned());
        }
        match page.body["nextCursor"].as_str() {
            Some(cursor) => {
                path = format!("/api/v1/deployments/{id}/servers?limit=7&cursor={cursor}")
            }
            None => break,
        }
    }
    let expected: Vec<String> = (0..20).map(|i| format!("fleet-{i:02}")).collect();
    assert_eq!(paged, expected);
    let acked = app
        .get(&format!(
            "/api/v1/deployments/{id}/servers?state=acked&limit=1000"
        ))
        .await;
    assert_eq!(acked.body["items"].as_array().unwrap().len(), 20);
    assert!(acked.body["nextCursor"].is_null());
    let failed = app
        .get(&format!("/api/v1/deployments/{id}/servers?state=failed"))
        .await;
    assert_eq!(failed.body["items"], json!([]));
    for bad in ["state=lost", "limit=0", "limit=1001", "cursor=%%%"] {
        let refused = app
            .get(&format!("/api/v1/deployments/{id}/servers?{bad}"))
            .await;
        assert_eq!(refused.status, 400, "{bad}: {:?}", refused.body);
        assert!(
            refused.body["code"].is_string(),
            "{bad}: {:?}",
            refused.body
        );
    }
    let unknown = app
        .get("/api/v1/deployments/0190d9b4-0000-7000-8000-000000000000/servers")
        .await;
    assert_eq!(unknown.status, 404);
    for client in clients {
        client.stop().await;
    }
}

/// Acks are persisted as the server's running state only: what else its
/// row holds (operator tags) survives, on both stores.
async fn acked_revisions_reach_the_store_and_leave_the_rest_of_the_row(app: TestApp) {
    let (key, _) = setup(&app).await;
    let client = start(client_config(&app, &key, "keeper")).await;
    assert!(client.wait_for_revision("weapon-balance", 1, WAIT).await);
    let tagged = app
        .put_json(
            "/api/v1/game-servers/keeper",
            &json!({"operatorTags": ["canary-pool"]}),
        )
        .await;
    assert_eq!(tagged.status, 200, "{:?}", tagged.body);
    app.hub.flush().await.unwrap();
    app.deploy("weapon-balance", "1.1.0", balance(61)).await;
    assert!(client.wait_for_revision("weapon-balance", 2, WAIT).await);
    for _ in 0..100 {
        let record = app.get("/api/v1/game-servers/keeper").await;
        if record.body["applied"]["weapon-balance"] == 2 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    app.hub.flush().await.unwrap();
    let (db, url, dir) = app.into_parts();
    let again = spawn_app_on(db, url, dir, |_| {}).await;
    let record = again.get("/api/v1/game-servers/keeper").await;
    assert_eq!(record.status, 200, "{:?}", record.body);
    assert_eq!(
        record.body["applied"]["weapon-balance"], 2,
        "{:?}",
        record.body
    );
    assert_eq!(
        record.body["operatorTags"],
        json!(["canary-pool"]),
        "{:?}",
        record.body
    );
    assert_eq!(record.body["status"], "disconnected");
    client.stop().await;
}

async fn deployments_check_roles_approval_and_overlap(app: TestApp) {
    assert_eq!(
        app.create_config("prod-balance", "GameBalance", "production")
            .await
            .status,
        201
    );
    app.post_version("prod-balance", "1.0.0", balance(45)).await;
    let mut breaking = balance(45);
    breaking["weapons"]["rifle"]
        .as_object_mut()
        .unwrap()
        .remove("reloadTime");
    app.post_version("prod-balance", "2.0.0", breaking).await;
    let developer = app.token(hotswap::Role::Developer, "dev");
    let body = |v: &str| {
        Some((
            "application/json",
            serde_json::to_vec(
                &json!({"config": "prod-balance", "version": v, "strategy": "Direct"}),
            )
            .unwrap(),
        ))
    };
    assert_eq!(
        app.request(
            "POST",
            "/api/v1/deployments",
            Some(&developer),
            body("1.0.0")
        )
        .await
        .status,
        403
    );
    let unapproved = app
        .post_json(
            "/api/v1/deployments",
            &json!({"config": "prod-balance", "version": "2.0.0", "strategy": "Direct"}),
        )
        .await;
    assert_eq!(unapproved.status, 409);
    assert_eq!(unapproved.body["code"], "approval_required");
    app.post_empty("/api/v1/configs/prod-balance/versions/2.0.0/approve")
        .await;
    let approved = app
        .post_json(
            "/api/v1/deployments",
            &json!({"config": "prod-balance", "version": "2.0.0", "strategy": "Direct"}),
        )
        .await;
    assert_eq!(approved.status, 201, "{:?}", approved.body);
    assert_eq!(
        approved.body["status"], "AwaitingApproval",
        "production deployments wait for a second admin"
    );
    let id = approved.body["id"].as_str().unwrap();
    // A production server connected meanwhile gets nothing until approval.
    let (key, _) = app.server_key(&[], &[]).await;
    let server = start(
        ClientConfig::new(app.ws_url(), &key, "prod-1")
            .region("EU-WEST")
            .environment("production")
            .subscribe("prod-balance"),
    )
    .await;
    // Frames on a socket are ordered: the answer to a resync of a config
    // the server did not subscribe to comes after anything pushed before.
    let mut watcher = raw(&app, Some(&key)).await.unwrap();
    let mut watcher_hello = crate::sockets::hello_message("prod-2", "production", BTreeMap::new());
    watcher_hello.subscriptions = vec!["prod-balance".into()];
    send(
        &mut watcher,
        protocol::encode(&ServerMessage::Hello(watcher_hello)),
    )
    .await;
    assert!(matches!(
        next_message(&mut watcher).await,
        Ok(HubMessage::Welcome { .. })
    ));
    send(
        &mut watcher,
        protocol::encode(&ServerMessage::Resync {
            config: "not-mine".into(),
        }),
    )
    .await;
    match next_message(&mut watcher).await {
        Ok(HubMessage::Error { code, .. }) => assert_eq!(code, "not_subscribed"),
        other => panic!("something was pushed while the deployment awaits approval: {other:?}"),
    }
    assert!(
        server.config("prod-balance").is_none(),
        "nothing is pushed while the deployment awaits approval"
    );
    let approve = format!("/api/v1/deployments/{id}/approve");
    let own = app.post_empty(&approve).await;
    assert_eq!(
        own.status, 403,
        "the creator cannot approve: {:?}",
        own.body
    );
    let operator = app.token(hotswap::Role::Operator, "olga");
    assert_eq!(
        app.request("POST", &approve, Some(&operator), None)
            .await
            .status,
        403,
        "approving takes an admin"
    );
    let other_admin = app.token(hotswap::Role::Admin, "second-admin");
    let done = app
        .request("POST", &approve, Some(&other_admin), None)
        .await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.body["approvedBy"], "second-admin");
    assert!(server.wait_for_revision("prod-balance", 2, WAIT).await);
    let deadline = std::time::Instant::now() + WAIT;
    while app.get(&format!("/api/v1/deployments/{id}")).await.body["status"] != "Completed" {
        assert!(std::time::Instant::now() < deadline, "never completed");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
    assert_eq!(
        app.request("POST", &approve, Some(&other_admin), None)
            .await
            .body["code"],
        "invalid_transition"
    );
    for (body, needle) in [
        (
            json!({"config": "prod-balance", "version": "2.0.0", "strategy": "Canary", "phases": [50, 20, 100]}),
            "phases",
        ),
        (
            json!({"config": "prod-balance", "version": "2.0.0", "strategy": "Canary", "phaseInterval": "5 minutes"}),
            "phaseInterval",
        ),
        (
            json!({"config": "prod-balance", "version": "2.0.0", "strategy": "Rolling", "batchSize": 0}),
            "batchSize",
        ),
        (
            json!({"config": "prod-balance", "strategy": "ABTest", "variants": [{"version": "2.0.0", "weight": 1}]}),
            "variants",
        ),
        (
            json!({"config": "prod-balance", "version": "2.0.0", "strategy": "Canary", "thresholds": [{"metric": "crashRate", "critical": -1}]}),
            "thresholds",
        ),
        (
            json!({"config": "prod-balance", "version": "2.0.0", "strategy": "Direct", "environment": "staging"}),
            "staging",
        ),
    ] {
        let refused = app.post_json("/api/v1/deployments", &body).await;
        assert_eq!(refused.status, 422, "{body}: {:?}", refused.body);
        assert!(
            refused.body["detail"].as_str().unwrap().contains(needle),
            "{body}: {:?}",
            refused.body
        );
    }
    let typo = app
        .post_json(
            "/api/v1/deployments",
            &json!({"config": "prod-balance", "version": "2.0.0", "strategy": "Canary", "phaseIntervall": 5}),
        )
        .await;
    assert_eq!(typo.status, 422, "{:?}", typo.body);
    assert_eq!(typo.body["code"], "invalid_body");
    assert_eq!(
        app.post_json(
            "/api/v1/deployments",
            &json!({"config": "nope", "version": "1.0.0", "strategy": "Direct"})
        )
        .await
        .status,
        404
    );
    assert_eq!(app.get("/api/v1/deployments/not-an-id").await.status, 404);
    let trail = app
        .get(&format!(
            "/api/v1/audit?resource=deployments/{}",
            approved.body["id"].as_str().unwrap()
        ))
        .await;
    let actions: Vec<&str> = trail.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "deployment.complete",
            "deployment.approve",
            "deployment.create"
        ],
        "newest first"
    );
    assert_eq!(trail.body["items"][2]["summary"]["revision"], 2);
    assert_eq!(trail.body["items"][1]["actor"], "second-admin");
}

async fn a_second_deployment_of_a_config_waits_for_the_first(app: TestApp) {
    let (key, _) = setup(&app).await;
    // A server that takes the new version but never acks keeps the deployment in flight.
    let mut silent = raw(&app, Some(&key)).await.unwrap();
    send(
        &mut silent,
        hello(
            "no-acks",
            "staging",
            BTreeMap::from([("weapon-balance".into(), 1)]),
        ),
    )
    .await;
    assert!(matches!(
        next_message(&mut silent).await,
        Ok(HubMessage::Welcome { .. })
    ));
    let first = app.deploy("weapon-balance", "1.1.0", balance(50)).await;
    assert_eq!(first.body["status"], "InProgress");
    assert_eq!(first.body["pushed"], 1);
    app.post_version("weapon-balance", "1.2.0", balance(55))
        .await;
    let second = app
        .post_json(
            "/api/v1/deployments",
            &json!({"config": "weapon-balance", "version": "1.2.0", "strategy": "Direct"}),
        )
        .await;
    assert_eq!(second.status, 409);
    assert_eq!(second.body["code"], "deployment_in_progress");
    // When the server goes away unacked, the deployment completes with a failure.
    drop(silent);
    let id = first.body["id"].as_str().unwrap();
    let mut view = app.get(&format!("/api/v1/deployments/{id}")).await;
    for _ in 0..200 {
        if view.body["status"] == "Completed" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        view = app.get(&format!("/api/v1/deployments/{id}")).await;
    }
    assert_eq!(
        (view.body["status"].as_str(), view.body["failed"].as_i64()),
        (Some("Completed"), Some(1)),
        "{:?}",
        view.body
    );
    assert_eq!(
        view.body["servers"][0]["error"],
        "disconnected before acking"
    );
    let now_allowed = app
        .post_json(
            "/api/v1/deployments",
            &json!({"config": "weapon-balance", "version": "1.2.0", "strategy": "Direct"}),
        )
        .await;
    assert_eq!(now_allowed.status, 201);
}

async fn the_registry_answers_filters_and_operator_changes(app: TestApp) {
    let (key, _) = setup(&app).await;
    let a = start(
        client_config(&app, &key, "na-1")
            .region("NA-WEST")
            .tag("ranked"),
    )
    .await;
    let b = start(client_config(&app, &key, "eu-9")).await;
    for client in [&a, &b] {
        assert!(client.wait_for_revision("weapon-balance", 1, WAIT).await);
    }
    let ids = |response: &crate::helpers::Response| -> Vec<String> {
        response.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["serverId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&app.get("/api/v1/game-servers?region=NA-WEST").await),
        ["na-1"]
    );
    assert_eq!(
        ids(&app.get("/api/v1/game-servers?tag=ranked").await),
        ["na-1"]
    );
    assert_eq!(
        ids(&app
            .get("/api/v1/game-servers?environment=staging&healthy=true")
            .await),
        ["eu-9", "na-1"]
    );
    // A client applies before it acks: the hub knows a revision once the
    // ack has arrived.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let on_1 = ids(&app
            .get("/api/v1/game-servers?config=weapon-balance&revision=1")
            .await);
        if on_1 == ["eu-9", "na-1"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hub has {on_1:?} on revision 1"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        ids(&app
            .get("/api/v1/game-servers?config=weapon-balance&revision=7")
            .await),
        Vec::<String>::new()
    );
    assert_eq!(app.get("/api/v1/game-servers?revision=1").await.status, 400);
    let detail = app.get("/api/v1/game-servers/na-1").await;
    assert_eq!(detail.body["region"], "NA-WEST");
    assert!(detail.body["connectedSince"].is_string());
    let tagged = app
        .put_json(
            "/api/v1/game-servers/eu-9",
            &json!({"operatorTags": ["canary-pool"]}),
        )
        .await;
    assert_eq!(tagged.status, 200, "{:?}", tagged.body);
    assert_eq!(
        ids(&app.get("/api/v1/game-servers?tag=canary-pool").await),
        ["eu-9"]
    );
    assert_eq!(
        app.put_json(
            "/api/v1/game-servers/eu-9",
            &json!({"operatorTags": ["bad tag"]})
        )
        .await
        .status,
        422
    );
    assert_eq!(app.get("/api/v1/game-servers/nobody").await.status, 404);
    assert_eq!(app.delete("/api/v1/game-servers/na-1").await.status, 204);
    // A deregistered server's session is closed with 4005.
    let mut socket = raw(&app, Some(&key)).await.unwrap();
    send(&mut socket, hello("doomed-1", "staging", BTreeMap::new())).await;
    assert!(matches!(
        next_message(&mut socket).await,
        Ok(HubMessage::Welcome { .. })
    ));
    assert_eq!(
        app.delete("/api/v1/game-servers/doomed-1").await.status,
        204
    );
    assert_eq!(
        close_code_of(&mut socket).await,
        Some(close_code::DEREGISTERED)
    );
    a.stop().await;
    b.stop().await;
}

async fn a_silent_server_is_closed_and_marked_stale(app: TestApp) {
    let (key, _) = setup(&app).await;
    let mut socket = raw(&app, Some(&key)).await.unwrap();
    send(&mut socket, hello("silent", "staging", BTreeMap::new())).await;
    // Never read again (so no pongs), never heartbeat: 3 intervals of 300 ms.
    let mut stale = false;
    for _ in 0..100 {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        if app.get("/api/v1/game-servers/silent").await.body["status"] == "stale" {
            stale = true;
            break;
        }
    }
    assert!(
        stale,
        "{:?}",
        app.get("/api/v1/game-servers/silent").await.body
    );
    assert_eq!(
        close_code_of(&mut socket).await,
        Some(close_code::HEARTBEAT_TIMEOUT)
    );
}

async fn metrics_frames_are_validated_and_counted(app: TestApp) {
    let (key, _) = setup(&app).await;
    let client = start(client_config(&app, &key, "metrics-1")).await;
    client.set_players(64);
    for i in 0..100 {
        client.metrics().record_latency_ms(20 + i % 30);
    }
    client.metrics().record_crash();
    let mut counted = false;
    for _ in 0..100 {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        let record = app.get("/api/v1/game-servers/metrics-1").await;
        if record.body["metricsFrames"].as_u64().unwrap_or(0) >= 2 {
            assert_eq!(record.body["players"], 64);
            counted = true;
            break;
        }
    }
    assert!(counted);
    client.stop().await;

    let mut socket = raw(&app, Some(&key)).await.unwrap();
    send(&mut socket, hello("metrics-2", "staging", BTreeMap::new())).await;
    let bad = protocol::encode(&ServerMessage::Metrics(Box::new(protocol::MetricsReport {
        seq: 1,
        window_ms: 0,
        players: 1,
        ..Default::default()
    })));
    send(&mut socket, bad).await;
    loop {
        match next_message(&mut socket).await {
            Ok(HubMessage::Error { code, .. }) => {
                assert_eq!(code, "invalid_metrics");
                break;
            }
            Ok(_) => continue,
            Err(code) => panic!("closed ({code:?}) instead of an error frame"),
        }
    }
    send(
        &mut socket,
        protocol::encode(&ServerMessage::Heartbeat {
            players: 1,
            status: protocol::Health::Degraded,
            load: Some(0.5),
        }),
    )
    .await;
    let deadline = std::time::Instant::now() + WAIT;
    while app.get("/api/v1/game-servers/metrics-2").await.body["status"] != "degraded" {
        assert!(
            std::time::Instant::now() < deadline,
            "the session survived and took the heartbeat"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn secret_fields_reach_game_servers_in_clear_and_nowhere_else(app: TestApp) {
    let schema = json!({"properties": {"apiKey": {"type": "string", "x-secret": true}, "endpoint": {"type": "string"}}});
    assert_eq!(
        app.post_json(
            "/api/v1/schemas",
            &json!({"id": "payments", "version": "1.0.0", "schema": schema})
        )
        .await
        .status,
        201
    );
    app.post_json("/api/v1/configs", &json!({"name": "weapon-balance", "configType": "Custom", "environment": "staging", "schemaId": "payments"})).await;
    let document = json!({"apiKey": "sk-live-in-frames-only", "endpoint": "https://pay"});
    let deployed = app
        .deploy("weapon-balance", "1.0.0", document.clone())
        .await;
    assert!(!deployed.body.to_string().contains("sk-live"));
    let (key, _) = app.server_key(&[], &[]).await;
    let client =
        start(client_config(&app, &key, "pay-1").verify_with(app.signing_key().await)).await;
    assert!(client.wait_for_revision("weapon-balance", 1, WAIT).await);
    assert_eq!(
        client.config("weapon-balance").unwrap().document,
        document,
        "checksum and signature verified on the clear document"
    );
    client.stop().await;
}

async fn shutdown_tells_every_server_when_to_come_back(app: TestApp) {
    let (key, _) = setup(&app).await;
    let mut sockets = Vec::new();
    for i in 0..5 {
        let mut socket = raw(&app, Some(&key)).await.unwrap();
        send(
            &mut socket,
            hello(&format!("bye-{i}"), "staging", BTreeMap::new()),
        )
        .await;
        assert!(matches!(
            next_message(&mut socket).await,
            Ok(HubMessage::Welcome { .. })
        ));
        sockets.push(socket);
    }
    let shutdown = app.shutdown.clone();
    actix_web::rt::spawn(async move { shutdown.shutdown().await });
    let mut delays = Vec::new();
    for socket in &mut sockets {
        let retry = loop {
            match next_message(socket).await {
                Ok(HubMessage::Reconnect { retry_after_ms }) => break retry_after_ms,
                Ok(_) => continue,
                Err(code) => panic!("closed ({code:?}) before reconnect"),
            }
        };
        assert!(retry < 2000, "within the reconnect window: {retry}");
        delays.push(retry);
        assert_eq!(close_code_of(socket).await, Some(close_code::GOING_AWAY));
    }
    delays.sort();
    delays.dedup();
    assert!(delays.len() > 1, "jittered, not all the same: {delays:?}");
}

/// Starts the hub's shutdown; the receiver fires once it stopped.
fn start_shutdown(app: &TestApp) -> tokio::sync::oneshot::Receiver<()> {
    let shutdown = app.shutdown.clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    actix_web::rt::spawn(async move {
        shutdown.shutdown().await;
        let _ = done_tx.send(());
    });
    done_rx
}

/// Reads until the hub's `reconnect`.
async fn until_reconnect(socket: &mut crate::sockets::Socket) {
    loop {
        match next_message(socket).await {
            Ok(HubMessage::Reconnect { .. }) => break,
            Ok(_) => continue,
            Err(code) => panic!("closed ({code:?}) before reconnect"),
        }
    }
}

/// A hello that arrives once shutdown has begun (the listener still
/// accepts until the sockets are closed) is answered like the others, with
/// `reconnect` and a close, not welcomed: a welcomed server would hold the
/// stopping hub open until its grace runs out.
async fn a_hello_during_shutdown_is_sent_away_not_welcomed(app: TestApp) {
    let (key, _) = setup(&app).await;
    let mut first = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut first, hello("early", "staging", BTreeMap::new())).await;
    // Upgraded before the shutdown, hello after its broadcast.
    let mut late = raw(&app, Some(&key)).await.unwrap();
    let done_rx = start_shutdown(&app);
    until_reconnect(&mut first).await;
    send(&mut late, hello("late", "staging", BTreeMap::new())).await;
    match next_message(&mut late).await {
        Ok(HubMessage::Reconnect { retry_after_ms }) => assert!(retry_after_ms < 2000),
        other => panic!("a stopping hub answered a hello with {other:?}"),
    }
    assert_eq!(close_code_of(&mut late).await, Some(close_code::GOING_AWAY));
    assert_eq!(
        close_code_of(&mut first).await,
        Some(close_code::GOING_AWAY)
    );
    drop((first, late));
    // Nothing is left holding the hub: it stops well inside its 30 s grace.
    tokio::time::timeout(Duration::from_secs(20), done_rx)
        .await
        .expect("the hub stopped once every socket was closed")
        .unwrap();
}

/// Servers sent away come back while a stopping hub still accepts (at
/// once, past the reconnect window). The hub waits on the sockets open
/// when it began to stop, not on those: servers that keep coming back and
/// hold their sockets without a word do not keep it up (each such socket
/// held it for its 2 s close grace, so a fleet coming back in a loop held
/// it for the whole 30 s grace).
async fn servers_back_at_a_stopping_hub_do_not_hold_it_open(app: TestApp) {
    let (key, _) = setup(&app).await;
    let mut first = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut first, hello("early", "staging", BTreeMap::new())).await;
    let mut done_rx = start_shutdown(&app);
    until_reconnect(&mut first).await;
    // Back at once, upgraded and silent, again and again.
    let mut held = vec![
        raw(&app, Some(&key))
            .await
            .expect("a stopping hub still accepts"),
    ];
    let went = std::time::Instant::now();
    drop(first);
    loop {
        if tokio::time::timeout(Duration::from_millis(100), &mut done_rx)
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            went.elapsed() < Duration::from_secs(10),
            "the hub still runs {:?} after its last server went, {} sockets held",
            went.elapsed(),
            held.len()
        );
        if let Ok(socket) = raw(&app, Some(&key)).await {
            held.push(socket);
        }
    }
    drop(held);
}

/// The ack was lost with the connection, and the server comes back already
/// on the target revision: it counts as acked and the deployment completes.
async fn a_server_returning_on_the_target_revision_completes_the_deployment(app: TestApp) {
    let (key, _) = setup(&app).await;
    let mut first = raw(&app, Some(&key)).await.unwrap();
    send(
        &mut first,
        hello(
            "returner",
            "staging",
            BTreeMap::from([("weapon-balance".into(), 1)]),
        ),
    )
    .await;
    assert!(matches!(
        next_message(&mut first).await,
        Ok(HubMessage::Welcome { .. })
    ));
    let deployed = app.deploy("weapon-balance", "1.1.0", balance(50)).await;
    assert_eq!(deployed.body["status"], "InProgress");
    assert!(matches!(
        next_message(&mut first).await,
        Ok(HubMessage::Delta { revision: 2, .. })
    ));
    // No ack; a new connection replaces this one, already holding revision 2.
    let mut second = raw(&app, Some(&key)).await.unwrap();
    send(
        &mut second,
        hello(
            "returner",
            "staging",
            BTreeMap::from([("weapon-balance".into(), 2)]),
        ),
    )
    .await;
    assert!(matches!(
        next_message(&mut second).await,
        Ok(HubMessage::Welcome { .. })
    ));
    let id = deployed.body["id"].as_str().unwrap();
    let mut view = app.get(&format!("/api/v1/deployments/{id}")).await;
    for _ in 0..100 {
        if view.body["status"] == "Completed" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        view = app.get(&format!("/api/v1/deployments/{id}")).await;
    }
    assert_eq!(
        (view.body["status"].as_str(), view.body["acked"].as_i64()),
        (Some("Completed"), Some(1)),
        "{:?}",
        view.body
    );
}

/// After a restart, many servers behind on one revision say hello at once:
/// the hub reads the target and the base documents from the store once
/// each, not once per server, and every server gets its delta.
async fn a_reconnect_storm_reads_each_document_once(app: TestApp) {
    let (key, _) = setup(&app).await;
    let deployed = app.deploy("weapon-balance", "1.1.0", balance(60)).await;
    let id = deployed.body["id"].as_str().unwrap().to_owned();
    let mut status = Value::Null;
    for _ in 0..200 {
        status = app.get(&format!("/api/v1/deployments/{id}")).await.body["status"].clone();
        if status == "Completed" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "Completed");
    // A fresh hub: nothing opened in memory yet.
    app.shutdown.shutdown().await;
    let (db, url, dir) = app.into_parts();
    let app = spawn_app_on(db, url, dir, |_| {}).await;
    let before = app.hub.document_loads();

    const SERVERS: usize = 40;
    let mut sockets = Vec::new();
    for _ in 0..SERVERS {
        sockets.push(raw(&app, Some(&key)).await.expect("upgrade"));
    }
    let storm = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut socket)| async move {
            let known = BTreeMap::from([("weapon-balance".to_owned(), 1)]);
            send(&mut socket, hello(&format!("storm-{i}"), "staging", known)).await;
            let mut got = Vec::new();
            while got.len() < 2 {
                got.push(
                    next_message(&mut socket)
                        .await
                        .expect("welcome, then the delta"),
                );
            }
            got
        });
    for got in futures_util::future::join_all(storm).await {
        assert!(matches!(got[0], HubMessage::Welcome { .. }), "{got:?}");
        assert!(
            matches!(
                got[1],
                HubMessage::Delta {
                    base_revision: 1,
                    revision: 2,
                    ..
                }
            ),
            "{got:?}"
        );
    }
    assert_eq!(
        app.hub.document_loads() - before,
        2,
        "revision 2 (the target) and 1 (the base), each read once for {SERVERS} servers"
    );
    let scraped = crate::observability::scrape(&app).await;
    assert!(
        scraped
            .lines()
            .any(|l| l.starts_with("hotswap_document_loads_total ")),
        "{scraped}"
    );
}

on_both_databases!(
    a_reconnect_storm_reads_each_document_once,
    a_server_returning_on_the_target_revision_completes_the_deployment,
    a_server_gets_a_snapshot_then_a_delta_and_acks_both,
    reconnecting_with_known_revisions_gets_nothing_or_a_delta,
    a_checksum_mismatch_leads_to_a_resync_and_a_snapshot,
    a_slow_consumer_is_cut_off_while_others_keep_receiving with short_queue,
    a_second_connection_with_the_same_server_id_replaces_the_first,
    malformed_socket_input_is_closed_with_a_code_and_reason,
    revoking_a_key_closes_its_live_sessions,
    a_direct_deployment_reaches_every_client_and_records_every_ack,
    deployments_check_roles_approval_and_overlap,
    a_second_deployment_of_a_config_waits_for_the_first,
    the_registry_answers_filters_and_operator_changes,
    a_silent_server_is_closed_and_marked_stale,
    metrics_frames_are_validated_and_counted,
    secret_fields_reach_game_servers_in_clear_and_nowhere_else,
    shutdown_tells_every_server_when_to_come_back,
    a_hello_during_shutdown_is_sent_away_not_welcomed,
    servers_back_at_a_stopping_hub_do_not_hold_it_open,
    acked_revisions_reach_the_store_and_leave_the_rest_of_the_row,
);

/// Past the reconnect window, a server sent away is told a moment within
/// the next second, never 0 ms: told 0, servers that came straight back
/// looped on the stopping hub as fast as it answered them.
#[actix_web::test]
async fn past_the_reconnect_window_a_server_is_told_a_moment_not_at_once() {
    let app = crate::helpers::spawn_app_with(Db::Sqlite, |s| s.hub.reconnect_window_ms = 50)
        .await
        .unwrap();
    let (key, _) = setup(&app).await;
    let mut first = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut first, hello("early", "staging", BTreeMap::new())).await;
    let done_rx = start_shutdown(&app);
    until_reconnect(&mut first).await;
    // `first` does not answer the close: the hub waits on it (for its
    // close grace) and still accepts, long past its 50 ms window.
    actix_web::rt::time::sleep(Duration::from_millis(150)).await;
    // A few: the hub waits on `first` for its 2 s close grace, no longer.
    for n in 0..5 {
        let mut late = raw(&app, Some(&key))
            .await
            .expect("a stopping hub still accepts");
        send(
            &mut late,
            hello(&format!("late-{n}"), "staging", BTreeMap::new()),
        )
        .await;
        match next_message(&mut late).await {
            Ok(HubMessage::Reconnect { retry_after_ms }) => assert!(
                (1..1000).contains(&retry_after_ms),
                "told to come back after {retry_after_ms} ms"
            ),
            other => panic!("a stopping hub answered a hello with {other:?}"),
        }
    }
    drop(first);
    tokio::time::timeout(Duration::from_secs(20), done_rx)
        .await
        .expect("the hub stops")
        .unwrap();
}

/// A heartbeat setting under the 50 ms a hub keeps: the `welcome` tells
/// servers the interval the hub keeps, so a server's own liveness check
/// (nothing heard for 3 of its intervals) is not shorter than the pings.
#[actix_web::test]
async fn the_welcome_tells_the_heartbeat_the_hub_keeps() {
    let app = crate::helpers::spawn_app_with(Db::Sqlite, |s| s.hub.heartbeat_ms = 10)
        .await
        .unwrap();
    let (key, _) = setup(&app).await;
    let mut socket = raw(&app, Some(&key)).await.unwrap();
    send(&mut socket, hello("quick", "staging", BTreeMap::new())).await;
    match next_message(&mut socket).await {
        Ok(HubMessage::Welcome { heartbeat_ms, .. }) => assert_eq!(heartbeat_ms, 50),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

#[actix_web::test]
async fn known_servers_survive_a_restart_as_disconnected() {
    let app = crate::helpers::spawn_app(Db::Sqlite).await.unwrap();
    let (key, _) = setup(&app).await;
    let client = start(client_config(&app, &key, "survivor")).await;
    assert!(client.wait_for_revision("weapon-balance", 1, WAIT).await);
    // The hub has the ack (the client applied before it acked).
    let deadline = std::time::Instant::now() + WAIT;
    while app.get("/api/v1/game-servers/survivor").await.body["applied"]["weapon-balance"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the ack never arrived"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    client.stop().await;
    app.hub.flush().await.unwrap();
    let (db, url, dir) = app.into_parts();
    let again = spawn_app_on(db, url, dir, |_| {}).await;
    let record = again.get("/api/v1/game-servers/survivor").await;
    assert_eq!(record.status, 200, "{:?}", record.body);
    assert_eq!(record.body["status"], "disconnected");
    assert_eq!(record.body["applied"]["weapon-balance"], 1);
}

#[actix_web::test]
async fn the_sdk_rides_out_a_hub_restart_and_keeps_serving_meanwhile() {
    let app = crate::helpers::spawn_app(Db::Sqlite).await.unwrap();
    let (key, _) = setup(&app).await;
    let client = start(client_config(&app, &key, "rider")).await;
    assert!(client.wait_for_revision("weapon-balance", 1, WAIT).await);
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
    app.shutdown.shutdown().await;
    assert!(
        client
            .wait_for_state(WAIT, |s| matches!(
                s,
                ConnectionState::Disconnected { .. } | ConnectionState::Connecting
            ))
            .await,
        "the client noticed the hub leaving"
    );
    // At least once: a client told a moment early in the window comes back
    // while the hub is still stopping, and is sent away again.
    let told = client
        .stats()
        .reconnect_requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(told >= 1, "the client was never told to reconnect");
    let during: Value = client
        .get("weapon-balance")
        .expect("the last good config is still served");
    assert_eq!(during["weapons"]["rifle"]["damage"], 45);

    // Same store, same port: the client comes back by itself.
    let (db, url, dir) = app.into_parts();
    let again = spawn_app_on(db, url, dir, move |s| s.bind = format!("127.0.0.1:{port}")).await;
    let mut back = false;
    for _ in 0..200 {
        if matches!(client.state(), ConnectionState::Connected { .. }) {
            back = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        back,
        "the client did not reconnect: {:?}, connects {}, health {}, servers {:?}",
        client.state(),
        client
            .stats()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed),
        again.get("/health").await.status,
        again.get("/api/v1/game-servers").await.body
    );
    again.deploy("weapon-balance", "1.1.0", balance(88)).await;
    assert!(client.wait_for_revision("weapon-balance", 2, WAIT).await);
    client.stop().await;
}

#[actix_web::test]
async fn disconnected_servers_are_dropped_after_the_stale_time() {
    let app = crate::helpers::spawn_app_with(Db::Sqlite, |s| s.hub.stale_after_secs = 0)
        .await
        .unwrap();
    let (key, _) = setup(&app).await;
    let client = start(client_config(&app, &key, "fleeting")).await;
    client.stop().await;
    let mut disconnected = false;
    for _ in 0..100 {
        if app.get("/api/v1/game-servers/fleeting").await.body["connected"] == false {
            disconnected = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(disconnected);
    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(app.hub.prune().await.unwrap(), 1);
    assert_eq!(app.get("/api/v1/game-servers/fleeting").await.status, 404);
}
