//! What the architecture promises about the store: a deployment's state is
//! committed before its effect, and the hot paths never wait on it. The
//! store's write lock is held from a second connection (SQLite `BEGIN
//! IMMEDIATE`; on PostgreSQL an open transaction holding the `audit_head`
//! row, which every audited write updates) while the hub is asked to act.

use crate::helpers::{Db, TestApp, balance, connected, sdk_config};
use crate::on_both_databases;
use crate::sockets::{Socket, WAIT, hello, next_message, raw, send};
use hotswap_client::{
    Client,
    protocol::{self, HubMessage, ServerMessage},
};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// The store's write lock, held by another connection until released.
struct WriteLock {
    pool: sqlx::AnyPool,
    connection: sqlx::pool::PoolConnection<sqlx::Any>,
}

impl WriteLock {
    async fn take(app: &TestApp) -> WriteLock {
        Self::holding(app, &["BEGIN", "SELECT * FROM audit_head FOR UPDATE"]).await
    }

    /// The game servers' table: no flush gets past it (SQLite: the store's
    /// write lock).
    async fn take_servers(app: &TestApp) -> WriteLock {
        Self::holding(app, &["BEGIN", "LOCK TABLE game_servers IN EXCLUSIVE MODE"]).await
    }

    /// Held by `postgres` (SQLite's is always `BEGIN IMMEDIATE`).
    async fn holding(app: &TestApp, postgres: &[&str]) -> WriteLock {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&app.database_url)
            .await
            .unwrap();
        let mut connection = pool.acquire().await.unwrap();
        let statements: &[&str] = match app.db {
            Db::Sqlite => &["BEGIN IMMEDIATE"],
            Db::Postgres => postgres,
        };
        for statement in statements {
            sqlx::query(sqlx::AssertSqlSafe(*statement))
                .execute(&mut *connection)
                .await
                .unwrap();
        }
        WriteLock { pool, connection }
    }

    async fn release(mut self) {
        sqlx::query("ROLLBACK")
            .execute(&mut *self.connection)
            .await
            .unwrap();
        drop(self.connection);
        self.pool.close().await;
    }
}

/// Game servers on the SDK, subscribed to `weapon-balance` (staging).
async fn fleet(app: &TestApp, key: &str, n: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..n {
        clients.push(connected(sdk_config(app, key, &format!("durable-{i}"))).await);
    }
    for client in &clients {
        assert!(client.wait_for_revision("weapon-balance", 1, WAIT).await);
    }
    clients
}

fn on(clients: &[Client], revision: i64) -> Vec<usize> {
    clients
        .iter()
        .enumerate()
        .filter(|(_, c)| c.revisions().get("weapon-balance") == Some(&revision))
        .map(|(i, _)| i)
        .collect()
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(Instant::now() < deadline, "never: {what}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn view(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/deployments/{id}")).await.body
}

/// A canary of 1.1.0 in its first phase (half the servers), acked.
async fn canary(app: &TestApp, clients: &[Client]) -> String {
    let id = app
        .start_canary("weapon-balance", "1.1.0", balance(60))
        .await;
    until("the canary's servers ack", async || {
        let v = view(app, &id).await;
        v["targets"].as_i64() > Some(0) && v["acked"] == v["targets"]
    })
    .await;
    let canary = view(app, &id).await["targets"].as_u64().unwrap() as usize;
    until("the canary's servers run 1.1.0", async || {
        on(clients, 2).len() == canary
    })
    .await;
    id
}

async fn a_decision_waits_for_its_commit_before_any_server_moves(app: TestApp) {
    assert_eq!(
        app.create_config("weapon-balance", "GameBalance", "staging")
            .await
            .status,
        201
    );
    app.deploy("weapon-balance", "1.0.0", balance(45)).await;
    let (key, _) = app.server_key(&[], &[]).await;
    let clients = fleet(&app, &key, 8).await;
    let id = canary(&app, &clients).await;
    let canary_servers = on(&clients, 2);
    assert!(!canary_servers.is_empty() && canary_servers.len() < 8);

    for (action, moved_to) in [("promote", 2), ("rollback", 1)] {
        let before = on(&clients, 2);
        let phase_before = view(&app, &id).await["phase"].clone();
        let lock = WriteLock::take(&app).await;
        let path = format!("/api/v1/deployments/{id}/{action}");
        let request = async {
            let answer = app.post_empty(&path).await;
            (answer, Instant::now())
        };
        let waited = async {
            // While the decision cannot be committed, nothing moves.
            actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
            let during = (on(&clients, 2), view(&app, &id).await);
            let released_at = Instant::now();
            lock.release().await;
            (during, released_at)
        };
        let ((answer, answered_at), ((during, view_during), released_at)) =
            futures_util::join!(request, waited);
        assert!(
            answered_at >= released_at,
            "{action} was answered while the store was locked: the lock held nothing"
        );
        assert_eq!(during, before, "{action}: servers moved before the commit");
        assert_eq!(
            view_during["phase"], phase_before,
            "{action}: the phase moved before the commit"
        );
        assert_eq!(answer.status, 200, "{action}: {:?}", answer.body);
        // Committed: now they move.
        until(&format!("{action} reaches every server"), async || {
            on(&clients, moved_to).len() == 8
        })
        .await;
    }
    until("the rollback completes", async || {
        view(&app, &id).await["status"] == "RolledBack"
    })
    .await;
    for client in clients {
        client.stop().await;
    }
}

/// `weapon-balance` 1.0.0 deployed to staging, and a raw socket that said
/// hello as `server_id` and got its snapshot.
async fn one_server(app: &TestApp, server_id: &str) -> Socket {
    assert_eq!(
        app.create_config("weapon-balance", "GameBalance", "staging")
            .await
            .status,
        201
    );
    app.deploy("weapon-balance", "1.0.0", balance(45)).await;
    let (key, _) = app.server_key(&[], &[]).await;
    let mut socket = raw(app, Some(&key)).await.unwrap();
    send(&mut socket, hello(server_id, "staging", BTreeMap::new())).await;
    loop {
        if let Ok(HubMessage::Snapshot { revision: 1, .. }) = next_message(&mut socket).await {
            return socket;
        }
    }
}

async fn heartbeats_metrics_and_resyncs_never_wait_on_the_store(app: TestApp) {
    let mut socket = one_server(&app, "hot-1").await;
    let lock = WriteLock::take(&app).await;
    let within_a_second = Instant::now() + Duration::from_secs(1);
    // A heartbeat: the registry shows it.
    send(
        &mut socket,
        protocol::encode(&ServerMessage::Heartbeat {
            players: 42,
            status: protocol::Health::Degraded,
            load: None,
        }),
    )
    .await;
    // A metrics report: counted.
    send(
        &mut socket,
        protocol::encode(&ServerMessage::Metrics(Box::new(protocol::MetricsReport {
            seq: 1,
            window_ms: 300,
            players: 42,
            ..Default::default()
        }))),
    )
    .await;
    // A resync: answered with a snapshot.
    send(
        &mut socket,
        protocol::encode(&ServerMessage::Resync {
            config: "weapon-balance".into(),
        }),
    )
    .await;
    let answered = loop {
        match next_message(&mut socket).await {
            Ok(HubMessage::Snapshot { .. }) => break Instant::now(),
            Ok(_) => continue,
            Err(code) => panic!("closed {code:?}"),
        }
    };
    let record = loop {
        let record = app.get("/api/v1/game-servers/hot-1").await.body;
        if record["status"] == "degraded" && record["metricsFrames"] == 1 {
            break record;
        }
        assert!(
            Instant::now() < within_a_second,
            "waited on the store: {record:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(answered < within_a_second, "the resync waited on the store");
    assert_eq!(record["players"], 42);
    lock.release().await;
    // The flusher catches up once the store is free.
    app.hub.flush().await.expect("the flush goes through");
}

/// A flush dropped while it waits on the store (the shutdown's bounded
/// flush, timed out) puts back what it took: the next flush writes it.
async fn a_flush_dropped_while_it_waits_keeps_what_it_took(app: TestApp) {
    let mut socket = one_server(&app, "kept-1").await;
    app.hub.flush().await.expect("the row is written");
    let stored_players = async || -> i64 {
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&app.database_url)
            .await
            .unwrap();
        let players: i64 =
            sqlx::query_scalar("SELECT players FROM game_servers WHERE server_id = 'kept-1'")
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        players
    };
    assert_eq!(stored_players().await, 0);

    let lock = WriteLock::take_servers(&app).await;
    send(
        &mut socket,
        protocol::encode(&ServerMessage::Heartbeat {
            players: 42,
            status: protocol::Health::Healthy,
            load: None,
        }),
    )
    .await;
    // Looked at every millisecond, the flush follows the heartbeat at
    // once: were the 1 s background flusher to take the server in between,
    // this test would pass without the change it guards (never fail).
    let deadline = Instant::now() + WAIT;
    while app.get("/api/v1/game-servers/kept-1").await.body["players"] != 42 {
        assert!(
            Instant::now() < deadline,
            "the heartbeat never reached the registry"
        );
        actix_web::rt::time::sleep(Duration::from_millis(1)).await;
    }
    let dropped = tokio::time::timeout(Duration::from_millis(300), app.hub.flush()).await;
    assert!(
        dropped.is_err(),
        "the flush did not wait on the lock: {dropped:?}"
    );
    lock.release().await;
    app.hub.flush().await.expect("the flush goes through");
    assert_eq!(
        stored_players().await,
        42,
        "the dropped flush lost the heartbeat's progress"
    );
}

on_both_databases!(
    a_decision_waits_for_its_commit_before_any_server_moves,
    heartbeats_metrics_and_resyncs_never_wait_on_the_store,
    a_flush_dropped_while_it_waits_keeps_what_it_took,
);
