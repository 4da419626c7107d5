//! PostgreSQL going away under a cluster (cut by a TCP proxy between the
//! nodes and the database): game servers stay connected and players'
//! resolutions answer from memory; writes answer 503 with Retry-After;
//! once the database is back everything accepted before is there and
//! deployments reach every node again.

use crate::cluster::{cluster_on, setup};
use crate::helpers::postgres_schema_url;
use crate::progressive::{CONFIG, Fleet};
use serde_json::json;
use std::time::{Duration, Instant};

/// A TCP proxy to PostgreSQL that can cut every connection and refuse new
/// ones while it is cut.
struct StoreProxy {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl StoreProxy {
    fn start(upstream: String) -> StoreProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watching) = tokio::sync::watch::channel(false);
        actix_web::rt::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *watching.borrow() {
                    continue;
                }
                let (upstream, mut watching) = (upstream.clone(), watching.clone());
                actix_web::rt::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watching.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        StoreProxy { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// `url` with its host and port replaced by the proxy's.
fn through(url: &str, port: u16) -> (String, String) {
    let after_scheme = url.find("://").unwrap() + 3;
    let at = url[after_scheme..]
        .find('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    let end = url[at..].find('/').map_or(url.len(), |i| at + i);
    let upstream = url[at..end].to_owned();
    (
        format!("{}127.0.0.1:{port}{}", &url[..at], &url[end..]),
        upstream,
    )
}

#[actix_web::test]
async fn with_postgres_down_reads_go_on_writes_wait_and_nothing_is_lost() {
    let Some(url) = postgres_schema_url().await else {
        return;
    };
    let (_, upstream) = through(&url, 0);
    let proxy = StoreProxy::start(upstream);
    let (proxied, _) = through(&url, proxy.port);
    let cluster = cluster_on(2, proxied).await;
    let [a, b] = [&cluster.nodes[0], &cluster.nodes[1]];
    let key = setup(a).await;
    let fleet = Fleet::start_on(&[a.ws_url(), b.ws_url()], &key, 6, |_| "EU-WEST").await;
    assert!(fleet.all_on(1).await);
    let accepted = a
        .post_json(
            &format!("/api/v1/configs/{CONFIG}/versions"),
            &json!({ "version": "1.1.0", "content": crate::helpers::balance(50) }),
        )
        .await;
    assert_eq!(accepted.status, 201, "{:?}", accepted.body);
    // Players' resolutions, once asked, are kept in memory.
    let player = format!("/api/v1/players/p1/config?configs={CONFIG}&region=EU-WEST");
    for node in [a, b] {
        assert_eq!(node.get(&player).await.status, 200);
    }
    proxy.set_cut(true);
    for node in [a, b] {
        let resolved = node.get(&player).await;
        assert_eq!(resolved.status, 200, "{:?}", resolved.body);
        assert_eq!(
            resolved.body["configs"][CONFIG]["document"]["weapons"]["rifle"]["damage"],
            45
        );
    }
    // A write waits for the store, then answers 503 with Retry-After.
    let started = Instant::now();
    let refused = b
        .post_json(
            "/api/v1/deployments",
            &json!({ "config": CONFIG, "version": "1.1.0", "strategy": "Direct" }),
        )
        .await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert!(
        refused.header("retry-after").is_some(),
        "{:?}",
        refused.body
    );
    eprintln!(
        "cluster without PostgreSQL: a write answered 503 after {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(
        fleet.on(1).len(),
        6,
        "servers stay connected on what they run"
    );
    proxy.set_cut(false);
    // Back: what was accepted before is there, and a deployment reaches
    // every server on both nodes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let deployed = loop {
        let deployed = b
            .post_json(
                "/api/v1/deployments",
                &json!({ "config": CONFIG, "version": "1.1.0", "strategy": "Direct" }),
            )
            .await;
        if deployed.status == 201 || Instant::now() > deadline {
            break deployed;
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(deployed.status, 201, "{:?}", deployed.body);
    assert!(fleet.all_on(2).await, "every server, on both nodes");
    let id = deployed.body["id"].as_str().unwrap();
    b.wait_deployment_status(id, "Completed").await;
    fleet.stop().await;
    cluster.stop().await;
}

/// The lease rules on PostgreSQL's clock, the store alone: one holder at
/// a time; a lapsed lease taken by another node moves its epoch on; the
/// old holder's renewal and its write's fence then fail, and its release
/// leaves the new holder's lease alone.
#[actix_web::test]
async fn a_stale_epoch_is_fenced_out_by_the_store() {
    use hotswap::leases::{extend, fence, release, take};
    let Some(url) = postgres_schema_url().await else {
        return;
    };
    let store = hotswap::Store::connect(&hotswap::settings::DatabaseSettings {
        url: hotswap::settings::SecretString::new(url),
        max_connections: 2,
        acquire_timeout_secs: 5,
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let lease = "deployment:00000000-0000-0000-0000-000000000001";
    let mut conn = store.conn().await.unwrap();
    assert_eq!(
        take(&mut conn, lease, "node-a", 300).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        take(&mut conn, lease, "node-b", 10_000).await.unwrap(),
        None,
        "held by node-a"
    );
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        take(&mut conn, lease, "node-b", 10_000).await.unwrap(),
        Some(2),
        "lapsed: taken with the epoch moved on"
    );
    assert!(!extend(&mut conn, lease, "node-a", 1, 10_000).await.unwrap());
    drop(conn);
    let mut tx = store.begin().await.unwrap();
    assert!(
        !fence(&mut tx, lease, "node-a", 1, 10_000).await.unwrap(),
        "the old holder's write is fenced out"
    );
    drop(tx);
    let mut conn = store.conn().await.unwrap();
    release(&mut conn, lease, "node-a", 1).await.unwrap();
    assert!(
        extend(&mut conn, lease, "node-b", 2, 10_000).await.unwrap(),
        "the new holder's lease stands"
    );
    assert_eq!(
        take(&mut conn, lease, "node-a", 10_000).await.unwrap(),
        None
    );
}
