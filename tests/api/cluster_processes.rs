//! Hub processes of one cluster (the `hotswap` binary, on one PostgreSQL
//! schema and a private Redis) killed with SIGKILL and paused with SIGSTOP
//! in the middle of a canary: another node takes the deployment over, the
//! killed node's servers reconnect elsewhere (through a small TCP balancer,
//! as behind an L4 load balancer), and a paused owner that comes back
//! writes nothing.

use crate::helpers::{PrivateRedis, TEST_ADMIN, TEST_JWT_SECRET, balance, postgres_schema_url};
use crate::progressive::{CONFIG, Fleet, Mode};
use serde_json::{Value, json};
use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

const BINARY: &str = env!("CARGO_BIN_EXE_hotswap");
const LEASE_MS: u64 = 1_500;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One hub process; killed (woken first, if stopped) when dropped.
struct Node {
    child: Child,
    port: u16,
    name: String,
    log: PathBuf,
}

impl Node {
    fn start(name: &str, database: &str, redis: &str, keys: &Path, logs: &Path) -> Node {
        let port = free_port();
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(BINARY);
        command
            .arg("serve")
            .env_remove("RUST_LOG")
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (key, value) in [
            ("HOTSWAP_BIND", format!("127.0.0.1:{port}")),
            ("HOTSWAP_DATABASE__URL", database.to_owned()),
            ("HOTSWAP_DATABASE__MAX_CONNECTIONS", "5".into()),
            ("HOTSWAP_DATA_DIR", keys.display().to_string()),
            ("HOTSWAP_AUTH__JWT_SECRET", TEST_JWT_SECRET.into()),
            ("HOTSWAP_REDIS__URL", redis.to_owned()),
            ("HOTSWAP_REDIS__TIMEOUT_MS", "300".into()),
            ("HOTSWAP_CLUSTER__NODE_ID", name.to_owned()),
            ("HOTSWAP_CLUSTER__LEASE_MS", LEASE_MS.to_string()),
            ("HOTSWAP_CLUSTER__RECONCILE_MS", "500".into()),
            ("HOTSWAP_CLUSTER__SHARE_MS", "50".into()),
            ("HOTSWAP_HUB__HEARTBEAT_MS", "300".into()),
            ("HOTSWAP_HUB__METRICS_MS", "300".into()),
            ("HOTSWAP_HUB__RECONNECT_WINDOW_MS", "2000".into()),
            ("HOTSWAP_DEPLOYMENTS__EVALUATE_EVERY_MS", "50".into()),
            ("HOTSWAP_DEPLOYMENTS__WINDOW_MS", "10000".into()),
            ("HOTSWAP_DEPLOYMENTS__FAST_WINDOW_MS", "2000".into()),
            (
                "HOTSWAP_DEPLOYMENTS__ROLLBACK_ACK_TIMEOUT_MS",
                "5000".into(),
            ),
            ("HOTSWAP_RATE_LIMIT__PRINCIPAL_PER_MINUTE", "100000".into()),
            ("HOTSWAP_RATE_LIMIT__PRINCIPAL_BURST", "10000".into()),
            ("HOTSWAP_RATE_LIMIT__ADDRESS_PER_MINUTE", "100000".into()),
            ("HOTSWAP_RATE_LIMIT__ADDRESS_BURST", "10000".into()),
            ("HOTSWAP_LOG__LEVEL", "info".into()),
        ] {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the binary starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let mut text = String::new();
                std::fs::File::open(&log)
                    .unwrap()
                    .read_to_string(&mut text)
                    .unwrap();
                panic!("{name} exited ({status}): {text}");
            }
            assert!(Instant::now() < deadline, "{name} never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Node {
            child,
            port,
            name: name.to_owned(),
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {}", self.name);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP balancer on a port of its own, forwarding each connection to the
/// node it points at (an L4 load balancer taking a dead node out).
struct Balancer {
    port: u16,
    upstream: Arc<AtomicU16>,
}

impl Balancer {
    fn start(upstream: u16) -> Balancer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = Arc::new(AtomicU16::new(upstream));
        let to = upstream.clone();
        actix_web::rt::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let port = to.load(Ordering::Relaxed);
                actix_web::rt::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Balancer { port, upstream }
    }

    fn point_to(&self, port: u16) {
        self.upstream.store(port, Ordering::Relaxed);
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
}

/// REST calls as the test admin.
struct Api {
    client: awc::Client,
    token: String,
}

impl Api {
    fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::helpers::test_settings("postgres://unused", dir.path());
        let authenticator = hotswap::Authenticator::from_settings(
            &settings.auth,
            settings.environment,
            &settings.data_dir,
        )
        .unwrap()
        .authenticator;
        let token = authenticator
            .mint(TEST_ADMIN, hotswap::Role::Admin, Duration::from_secs(3600))
            .unwrap();
        Api {
            client: crate::helpers::hub_client(Duration::from_secs(10)),
            token,
        }
    }

    async fn call(&self, method: &str, url: String, body: Option<Value>) -> (u16, Value) {
        let request = self
            .client
            .request(method.parse().unwrap(), url)
            .insert_header(("Authorization", format!("Bearer {}", self.token)));
        let mut response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        }
        .expect("the node answers");
        let bytes = response.body().limit(8 << 20).await.unwrap();
        (
            response.status().as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn post(&self, node: &Node, path: &str, body: Value) -> Value {
        let (status, answer) = self.call("POST", node.url(path), Some(body)).await;
        assert!((200..300).contains(&status), "{path}: {status} {answer}");
        answer
    }

    async fn deployment(&self, node: &Node, id: &str) -> Value {
        self.call("GET", node.url(&format!("/api/v1/deployments/{id}")), None)
            .await
            .1
    }
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The deployment's lease as stored: (owner, epoch).
async fn lease(database: &str, id: &str) -> Option<(String, i64)> {
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(database)
        .await
        .unwrap();
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT owner, epoch FROM leases WHERE resource = $1")
            .bind(format!("deployment:{id}"))
            .fetch_optional(&pool)
            .await
            .unwrap();
    pool.close().await;
    row
}

/// The deployment's stored (status, phase, updated_at).
async fn stored(database: &str, id: &str) -> (String, i64, i64) {
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(database)
        .await
        .unwrap();
    let row: (String, i64, i64) =
        sqlx::query_as("SELECT status, phase, updated_at FROM deployments WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    row
}

/// Three nodes on a fresh schema and a private Redis, the config's first
/// version deployed from the first, and a server key.
struct Setup {
    database: String,
    nodes: Vec<Node>,
    api: Api,
    key: String,
    _redis: PrivateRedis,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn setup() -> Option<Setup> {
    let database = postgres_schema_url().await?;
    let redis = PrivateRedis::start(None);
    let (keys, logs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let nodes: Vec<Node> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|name| Node::start(name, &database, &redis.url(), keys.path(), logs.path()))
        .collect();
    let api = Api::new();
    let a = &nodes[0];
    api.post(
        a,
        "/api/v1/configs",
        json!({ "name": CONFIG, "configType": "GameBalance", "environment": "staging" }),
    )
    .await;
    api.post(
        a,
        &format!("/api/v1/configs/{CONFIG}/versions"),
        json!({ "version": "1.0.0", "content": balance(45) }),
    )
    .await;
    let first = api
        .post(
            a,
            "/api/v1/deployments",
            json!({ "config": CONFIG, "version": "1.0.0", "strategy": "Direct" }),
        )
        .await;
    let id = first["id"].as_str().unwrap().to_owned();
    wait_for(
        "the first version completes",
        Duration::from_secs(20),
        async || api.deployment(a, &id).await["status"] == "Completed",
    )
    .await;
    let key = api
        .post(a, "/api/v1/api-keys", json!({ "name": "fleet" }))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    Some(Setup {
        database,
        nodes,
        api,
        key,
        _redis: redis,
        _dirs: (keys, logs),
    })
}

/// A canary from node `owner`; returns its id once its servers run it.
async fn start_canary(setup: &Setup, owner: &Node, fleet: &Fleet, interval: &str) -> String {
    let api = &setup.api;
    api.post(
        owner,
        &format!("/api/v1/configs/{CONFIG}/versions"),
        json!({ "version": "1.1.0", "content": balance(50) }),
    )
    .await;
    let created = api
        .post(
            owner,
            "/api/v1/deployments",
            json!({ "config": CONFIG, "version": "1.1.0", "strategy": "Canary",
                    "phases": [50, 100], "phaseInterval": interval }),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    wait_for(
        "the canary reaches its servers",
        Duration::from_secs(20),
        async || !fleet.on(2).is_empty(),
    )
    .await;
    id
}

/// Node A drives a canary and is killed with SIGKILL; its servers (behind
/// the balancer) reconnect to B; B or C takes the deployment's lease within
/// a few seconds and judges it; a regression is rolled back on every
/// server, wherever it is connected.
#[actix_web::test]
async fn a_node_killed_mid_canary_is_taken_over_and_its_servers_reconnect_elsewhere() {
    let Some(setup) = setup().await else {
        return;
    };
    let [a, b, c] = [&setup.nodes[0], &setup.nodes[1], &setup.nodes[2]];
    let balancer = Balancer::start(a.port);
    let fleet = Fleet::start_on(
        &[balancer.ws_url(), b.ws_url(), c.ws_url()],
        &setup.key,
        30,
        |_| "EU-WEST",
    )
    .await;
    assert!(fleet.all_on(1).await);
    let id = start_canary(&setup, a, &fleet, "PT1H").await;
    assert_eq!(lease(&setup.database, &id).await.unwrap().0, "node-a");
    a.signal("KILL");
    let killed = Instant::now();
    balancer.point_to(b.port);
    // An action sent to B meanwhile is forwarded to A, which never
    // answers: 503 with Retry-After, and nothing is done (the takeover,
    // timed alongside, does not hear an action sent before it).
    let forwarded = setup.api.call(
        "POST",
        b.url(&format!("/api/v1/deployments/{id}/pause")),
        None,
    );
    let takeover = async {
        let mut owner = String::new();
        wait_for(
            "another node takes the lease",
            Duration::from_secs(10),
            async || match lease(&setup.database, &id).await {
                Some((node, epoch)) if node != "node-a" => {
                    assert!(epoch >= 2, "a takeover moves the epoch on");
                    owner = node;
                    true
                }
                _ => false,
            },
        )
        .await;
        (owner, killed.elapsed())
    };
    let ((status, answer), (owner, took_over)) =
        futures_util::future::join(forwarded, takeover).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (503, Some("owner_unreachable")),
        "{answer}"
    );
    eprintln!(
        "cluster kill -9: {owner} took the deployment over {} ms after the kill",
        took_over.as_millis()
    );
    assert!(
        took_over < Duration::from_millis(LEASE_MS * 4),
        "within a few seconds: {took_over:?}"
    );
    let owner = if owner == "node-b" { b } else { c };
    let view = setup.api.deployment(owner, &id).await;
    assert_eq!(view["status"], "InProgress", "{view}");
    // Every server runs a revision the cluster knows: 1 or the canary's 2.
    assert_eq!(fleet.on(1).len() + fleet.on(2).len(), 30);
    fleet.regress(2, Mode::Crashes);
    wait_for(
        "the new owner rolls the canary back",
        Duration::from_secs(30),
        async || setup.api.deployment(owner, &id).await["status"] == "RolledBack",
    )
    .await;
    assert!(
        fleet.all_on(1).await,
        "every server back, the reconnected ones too"
    );
    let view = setup.api.deployment(owner, &id).await;
    assert_eq!(view["rollback"]["trigger"], "automatic", "{view}");
    assert_eq!(view["rollback"]["unacked"], json!([]), "{view}");
    fleet.stop().await;
}

/// Node A drives a canary that would move to its next phase 5 s in, and
/// is paused (SIGSTOP) past its lease. Another node takes the deployment
/// and an operator pauses it there. A, resumed, finds its lease gone: it
/// writes nothing and its servers keep what the new owner says.
#[actix_web::test]
async fn an_owner_paused_past_its_lease_cannot_move_its_deployment_again() {
    let Some(setup) = setup().await else {
        return;
    };
    let [a, b, c] = [&setup.nodes[0], &setup.nodes[1], &setup.nodes[2]];
    let fleet = Fleet::start_on(&[b.ws_url(), c.ws_url()], &setup.key, 20, |_| "EU-WEST").await;
    assert!(fleet.all_on(1).await);
    let id = start_canary(&setup, a, &fleet, "PT5S").await;
    let canary = fleet.on(2);
    a.signal("STOP");
    let mut owner = String::new();
    wait_for(
        "another node takes the lease",
        Duration::from_secs(10),
        async || match lease(&setup.database, &id).await {
            Some((node, _)) if node != "node-a" => {
                owner = node;
                true
            }
            _ => false,
        },
    )
    .await;
    let owner = if owner == "node-b" { b } else { c };
    setup
        .api
        .post(owner, &format!("/api/v1/deployments/{id}/pause"), json!({}))
        .await;
    let before = stored(&setup.database, &id).await;
    assert_eq!((before.0.as_str(), before.1), ("Paused", 0), "{before:?}");
    a.signal("CONT");
    // Unfenced, A would advance the phase it had run for over 5 s now.
    actix_web::rt::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        stored(&setup.database, &id).await,
        before,
        "A wrote nothing"
    );
    assert_eq!(fleet.on(2), canary, "no server moved");
    assert_ne!(lease(&setup.database, &id).await.unwrap().0, "node-a");
    let log = a.log();
    assert!(
        log.contains("another node drives this deployment now"),
        "A stood its actor down: {log}"
    );
    fleet.stop().await;
}
