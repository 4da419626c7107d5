//! The dashboards' feed (`GET /api/v1/stream`) on both databases: staff
//! only; a snapshot on connect; then, without asking again, the fleet when
//! a server connects and a deployment as it moves.

use crate::helpers::{TestApp, balance, connected, sdk_config};
use crate::on_both_databases;
use crate::sockets::Socket;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

pub(crate) async fn feed(app: &TestApp, token: Option<&str>) -> Result<Socket, u16> {
    let mut request = format!("{}/api/v1/stream", app.ws_url())
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("{other}"),
    }
}

/// The next JSON message that `wanted` accepts (others skipped), within 10 s.
pub(crate) async fn next_where(socket: &mut Socket, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .expect("a feed message in time")
            .expect("the feed stays open")
            .expect("a frame");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if wanted(&value) {
                return value;
            }
        }
    }
}

async fn the_feed_streams_the_fleet_and_deployments(app: TestApp) {
    assert_eq!(feed(&app, None).await.err(), Some(401));
    let made = app
        .create_config("weapon-balance", "GameBalance", "staging")
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let viewer = app.token(hotswap::Role::Viewer, "watcher");
    let mut socket = feed(&app, Some(&viewer)).await.unwrap();
    let snapshot = next_where(&mut socket, |_| true).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["fleet"]["total"]["servers"], 0, "{snapshot}");
    assert_eq!(snapshot["deployments"], json!([]));
    assert!(snapshot["events"].is_array() && snapshot["experiments"].is_object());

    // A server connects: the fleet changes on the feed.
    let (key, _) = app.server_key(&[], &[]).await;
    let server = connected(sdk_config(&app, &key, "arena-1")).await;
    server.set_players(12);
    let fleet = next_where(&mut socket, |m| {
        m["type"] == "fleet" && m["fleet"]["total"]["players"] == 12
    })
    .await;
    assert_eq!(
        fleet["fleet"]["regions"]["EU-WEST"]["connected"], 1,
        "{fleet}"
    );
    assert_eq!(fleet["fleet"]["environments"]["staging"]["healthy"], 1);

    // A deployment moves on the feed to its end, its servers left out.
    let deployed = app.deploy("weapon-balance", "1.0.0", balance(45)).await;
    let id = deployed.body["id"].as_str().unwrap().to_owned();
    let done = next_where(&mut socket, |m| {
        m["type"] == "deployment"
            && m["deployment"]["id"] == id.as_str()
            && m["deployment"]["status"] == "Completed"
    })
    .await;
    assert_eq!(done["deployment"]["acked"], 1, "{done}");
    assert!(done["deployment"].get("servers").is_none(), "{done}");
    let revisions = next_where(&mut socket, |m| {
        m["type"] == "fleet" && m["fleet"]["revisions"]["weapon-balance"]["1"] == 1
    })
    .await;
    assert_eq!(revisions["type"], "fleet");
    server.stop().await;
}

on_both_databases!(the_feed_streams_the_fleet_and_deployments);
