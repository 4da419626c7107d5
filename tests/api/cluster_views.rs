//! What any node of a cluster shows of the others (their game servers,
//! the fleet, the deployments they drive), and the links that carry it
//! surviving a half-open connection to Redis.

use crate::cluster::{cluster, cluster_with, fleet_on, setup, start_canary, wait_for};
use crate::helpers::postgres_schema_url;
use hotswap::settings::SecretString;
use serde_json::json;
use std::time::Instant;

/// Servers on A and B: either node lists them all with the node each is
/// connected to, and reads one connected to the other; tags set on A for a
/// server on B reach B's registry (and the store); a server on B
/// deregistered from A is closed 4005 there and forgotten; A's dashboards
/// count B's servers in the fleet, and see a canary B drives move, as B
/// shows it (its cohorts).
#[actix_web::test]
async fn any_node_shows_the_clusters_servers_fleet_and_deployments() {
    let Some(cluster) = cluster(2).await else {
        return;
    };
    let [a, b] = [&cluster.nodes[0], &cluster.nodes[1]];
    let key = setup(a).await;
    let fleet = fleet_on(&[a, b], &key, 4).await;
    wait_for("A lists every server, each with its node", async || {
        let list = a.get("/api/v1/game-servers?connected=true").await.body;
        list["connected"] == 4
            && list["items"].as_array().is_some_and(|items| {
                items.len() == 4
                    && items.iter().all(|s| {
                        let on_a = ["gs-000", "gs-002"].contains(&s["serverId"].as_str().unwrap());
                        s["node"] == if on_a { "node-a" } else { "node-b" }
                    })
            })
    })
    .await;
    let one = a.get("/api/v1/game-servers/gs-001").await;
    assert_eq!(one.status, 200, "{:?}", one.body);
    assert_eq!(one.body["connected"], true, "{:?}", one.body);
    assert_eq!(one.body["node"], "node-b", "{:?}", one.body);

    let tagged = a
        .put_json(
            "/api/v1/game-servers/gs-001",
            &json!({ "operatorTags": ["pool-x"] }),
        )
        .await;
    assert_eq!(tagged.status, 200, "{:?}", tagged.body);
    assert_eq!(tagged.body["operatorTags"], json!(["pool-x"]));
    wait_for("B's registry has the tags", async || {
        b.hub
            .registry()
            .get("gs-001")
            .is_some_and(|r| r.operator_tags == ["pool-x"])
    })
    .await;
    wait_for("A lists gs-001 by its tag", async || {
        let list = a.get("/api/v1/game-servers?tag=pool-x").await.body;
        list["items"].as_array().map(Vec::len) == Some(1)
    })
    .await;

    let mut lone = crate::sockets::raw(b, Some(&key)).await.unwrap();
    crate::attacks::welcomed(&mut lone, crate::attacks::hello_as("lone-1", "staging")).await;
    // A raw server beats by hand (the tests' heartbeat is 300 ms).
    let beat = || {
        hotswap_client::protocol::encode(&hotswap_client::protocol::ServerMessage::Heartbeat {
            players: 0,
            status: hotswap_client::protocol::Health::Healthy,
            load: None,
        })
    };
    wait_for("A sees lone-1 on B", async || {
        crate::sockets::send(&mut lone, beat()).await;
        a.get("/api/v1/game-servers/lone-1").await.body["node"] == "node-b"
    })
    .await;
    assert_eq!(a.delete("/api/v1/game-servers/lone-1").await.status, 204);
    assert_eq!(
        crate::sockets::close_of(&mut lone).await.0,
        Some(hotswap_client::protocol::close_code::DEREGISTERED),
        "closed by B"
    );
    wait_for("forgotten everywhere", async || {
        a.get("/api/v1/game-servers/lone-1").await.status == 404
            && b.get("/api/v1/game-servers/lone-1").await.status == 404
    })
    .await;

    let viewer = a.token(hotswap::Role::Viewer, "watcher");
    let mut feed = crate::stream::feed(a, Some(&viewer)).await.unwrap();
    let snapshot = crate::stream::next_where(&mut feed, |m| m["type"] == "snapshot").await;
    if snapshot["fleet"]["total"]["connected"] != 4 {
        crate::stream::next_where(&mut feed, |m| {
            m["type"] == "fleet" && m["fleet"]["total"]["connected"] == 4
        })
        .await;
    }
    let id = start_canary(b).await;
    let moved = crate::stream::next_where(&mut feed, |m| {
        m["type"] == "deployment"
            && m["deployment"]["id"] == id.as_str()
            && m["deployment"]["live"]["cohorts"].is_array()
    })
    .await;
    assert_eq!(moved["deployment"]["status"], "InProgress", "{moved}");
    let seen = a.get(&format!("/api/v1/deployments/{id}")).await;
    assert!(
        seen.body["live"]["cohorts"].is_array(),
        "A answers with B's view: {:?}",
        seen.body
    );
    fleet.stop().await;
    cluster.stop().await;
}

/// A TCP proxy that can freeze every connection made through it so far:
/// bytes stop flowing, but neither side hears of a close (a half-open
/// link, as a dead NAT entry or a cable pulled leaves it). New connections
/// flow.
struct FreezingProxy {
    port: u16,
    upstream: std::sync::Arc<std::sync::Mutex<String>>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl FreezingProxy {
    fn start() -> FreezingProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (generation, watching) = tokio::sync::watch::channel(0u64);
        let target = upstream.clone();
        actix_web::rt::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = target.lock().unwrap().clone();
                let mut watching = watching.clone();
                let born = *watching.borrow();
                actix_web::rt::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                        _ = watching.wait_for(|g| *g > born) => {}
                    }
                    // Frozen: both sockets stay open, silent.
                    std::future::pending::<()>().await;
                    drop((inbound, outbound));
                });
            }
        });
        FreezingProxy {
            port,
            upstream,
            generation,
        }
    }

    fn freeze(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Node B's links to Redis go half-open (nothing flows, nothing closes):
/// B notices its subscription went silent (it hears its own `alive` every
/// second), makes its links again, and the nodes see each other again.
#[actix_web::test]
async fn a_half_open_link_to_redis_is_noticed_and_made_again() {
    let Some(url) = postgres_schema_url().await else {
        return;
    };
    let proxy = FreezingProxy::start();
    let (port, upstream) = (proxy.port, proxy.upstream.clone());
    let cluster = cluster_with(2, url, move |settings| {
        if settings.cluster.node_id.as_deref() == Some("node-b") {
            let direct = settings.redis.url.as_ref().unwrap().expose().to_owned();
            *upstream.lock().unwrap() = direct
                .trim_start_matches("redis://")
                .trim_end_matches("/0")
                .to_owned();
            settings.redis.url = Some(SecretString::new(format!("redis://127.0.0.1:{port}/0")));
        }
    })
    .await;
    let [a, b] = [&cluster.nodes[0], &cluster.nodes[1]];
    let key = setup(a).await;
    let fleet = fleet_on(&[a, b], &key, 2).await;
    let each_sees_the_other = async || {
        b.get("/api/v1/game-servers/gs-000").await.body["node"] == "node-a"
            && a.get("/api/v1/game-servers/gs-001").await.body["node"] == "node-b"
    };
    wait_for("the nodes see each other", each_sees_the_other).await;
    proxy.freeze();
    wait_for("B no longer hears A", async || {
        b.get("/api/v1/game-servers/gs-000").await.body["node"].is_null()
    })
    .await;
    let frozen = Instant::now();
    wait_for("the nodes see each other again", each_sees_the_other).await;
    eprintln!(
        "a half-open link to Redis made again {} ms after it was noticed",
        frozen.elapsed().as_millis()
    );
    fleet.stop().await;
    cluster.stop().await;
}
