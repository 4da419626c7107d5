//! The real binary killed with SIGKILL right after it answered a rollback,
//! then restarted on the same store: the deployment still rolls back, the
//! servers that come back get the previous revision, and the audit chain
//! holds. On both databases. The servers are raw sockets that ack nothing
//! until the restart, so the rollback cannot have finished before the kill.

use crate::helpers::{Db, balance, postgres_schema_url};
use crate::sockets::{Socket, hello, next_message, send};
use hotswap_client::protocol::{self, HubMessage, ServerMessage};
use serde_json::{Value, json};
use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const BINARY: &str = env!("CARGO_BIN_EXE_hotswap");

/// A hub process, killed when dropped (a failing test leaves none behind).
struct HubChild(Child);

impl HubChild {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for HubChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The hub binary on `port` over `database_url`, its output in `dir`.
fn start_hub(dir: &Path, port: u16, database_url: &str) -> HubChild {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("hub.log"))
        .unwrap();
    Command::new(BINARY)
        .arg("serve")
        .env("HOTSWAP_BIND", format!("127.0.0.1:{port}"))
        .env("HOTSWAP_DATA_DIR", dir)
        .env("HOTSWAP_DATABASE__URL", database_url)
        .env("HOTSWAP_LOG__LEVEL", "warn")
        .env("HOTSWAP_HUB__HEARTBEAT_MS", "30000")
        .env("HOTSWAP_DEPLOYMENTS__EVALUATE_EVERY_MS", "50")
        .env("HOTSWAP_DEPLOYMENTS__ROLLBACK_ACK_TIMEOUT_MS", "600000")
        .env("HOTSWAP_RATE_LIMIT__PRINCIPAL_BURST", "10000")
        .env("HOTSWAP_RATE_LIMIT__ADDRESS_BURST", "10000")
        .env_remove("RUST_LOG")
        .env_remove("HOTSWAP_AUTH__JWT_SECRET")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .map(HubChild)
        .expect("the binary starts")
}

struct Api {
    base: String,
    token: String,
    client: awc::Client,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .insert_header(("authorization", format!("Bearer {}", self.token)));
        let sent = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        };
        let Ok(mut response) = sent else {
            return (0, Value::Null);
        };
        let bytes = response.body().await.unwrap_or_default();
        (
            response.status().as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.call("GET", "/health", None).await.0 != 200 {
            assert!(Instant::now() < deadline, "the hub never came up");
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "never: {what}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A game server on a raw socket: says hello holding `known` and returns
/// with its socket.
async fn server(port: u16, key: &str, id: &str, known: Option<i64>) -> Socket {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
    let mut request = format!("ws://127.0.0.1:{port}/ws/v1/servers")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let known = known
        .map(|revision| [("weapon-balance".to_owned(), revision)].into())
        .unwrap_or_default();
    send(&mut socket, hello(id, "staging", known)).await;
    socket
}

/// Reads until a frame carries a revision of the config; acks it when asked.
async fn next_revision(socket: &mut Socket, ack: bool) -> i64 {
    loop {
        match next_message(socket).await {
            Ok(HubMessage::Snapshot { revision, .. } | HubMessage::Delta { revision, .. }) => {
                if ack {
                    let frame = protocol::encode(&ServerMessage::Ack(protocol::Ack {
                        config: "weapon-balance".into(),
                        revision,
                        ok: true,
                        error: None,
                        apply_micros: 5,
                    }));
                    send(socket, frame).await;
                }
                return revision;
            }
            Ok(_) => continue,
            Err(code) => panic!("closed ({code:?})"),
        }
    }
}

async fn a_rollback_answered_then_killed_still_rolls_back_after_restart(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let database_url = match db {
        Db::Sqlite => format!("sqlite://{}", dir.path().join("hub.db").display()),
        Db::Postgres => match postgres_schema_url().await {
            Some(url) => url,
            None => return,
        },
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut hub = start_hub(dir.path(), port, &database_url);
    let api = {
        let base = format!("http://127.0.0.1:{port}");
        let probe = Api {
            base: base.clone(),
            token: String::new(),
            client: crate::helpers::hub_client(std::time::Duration::from_secs(5)),
        };
        probe.until_up().await;
        let minted = Command::new(BINARY)
            .args([
                "token",
                "--role",
                "admin",
                "--sub",
                "crash-test",
                "--ttl",
                "1h",
            ])
            .env("HOTSWAP_DATA_DIR", dir.path())
            .env_remove("HOTSWAP_AUTH__JWT_SECRET")
            .output()
            .unwrap();
        assert!(minted.status.success());
        Api {
            base,
            token: String::from_utf8(minted.stdout).unwrap().trim().to_owned(),
            client: crate::helpers::hub_client(std::time::Duration::from_secs(5)),
        }
    };
    let config =
        json!({"name": "weapon-balance", "configType": "GameBalance", "environment": "staging"});
    assert_eq!(
        api.call("POST", "/api/v1/configs", Some(config)).await.0,
        201
    );
    for (version, damage) in [("1.0.0", 45), ("1.1.0", 60)] {
        let body = json!({"version": version, "content": balance(damage)});
        let (status, answer) = api
            .call(
                "POST",
                "/api/v1/configs/weapon-balance/versions",
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{answer:?}");
    }
    let direct = json!({"config": "weapon-balance", "version": "1.0.0", "strategy": "Direct"});
    assert_eq!(
        api.call("POST", "/api/v1/deployments", Some(direct))
            .await
            .0,
        201
    );
    let (_, key) = api
        .call("POST", "/api/v1/api-keys", Some(json!({"name": "fleet"})))
        .await;
    let key = key["key"].as_str().unwrap().to_owned();
    // 16 servers: a 50 % canary misses them all once in 65,536 runs (with
    // 6 it was once in 64).
    let ids: Vec<String> = (0..16).map(|i| format!("crash-{i:02}")).collect();
    let mut sockets = Vec::new();
    for id in &ids {
        let mut socket = server(port, &key, id, None).await;
        assert_eq!(next_revision(&mut socket, true).await, 1);
        sockets.push(socket);
    }

    let canary = json!({"config": "weapon-balance", "version": "1.1.0", "strategy": "Canary",
                        "phases": [50, 100], "autoPromote": false});
    let (status, created) = api.call("POST", "/api/v1/deployments", Some(canary)).await;
    assert_eq!(status, 201, "{created:?}");
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/deployments/{id}");
    // The canary's servers get 1.1.0 and ack it.
    until("the canary got its frames", async || {
        let (_, view) = api.call("GET", &path, None).await;
        view["targets"].as_i64() > Some(0)
    })
    .await;
    let (_, view) = api.call("GET", &path, None).await;
    let canary: Vec<String> = view["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["serverId"].as_str().unwrap().to_owned())
        .collect();
    assert!(!canary.is_empty(), "{view:?}");
    for (id, socket) in ids.iter().zip(&mut sockets) {
        if canary.contains(id) {
            assert_eq!(next_revision(socket, true).await, 2);
        }
    }
    until("the canary is acked", async || {
        let (_, view) = api.call("GET", &path, None).await;
        view["acked"] == view["targets"]
    })
    .await;
    // Answered, then killed at once: the decision is in the store; no
    // server has acked the previous revision.
    let (status, answer) = api.call("POST", &format!("{path}/rollback"), None).await;
    assert_eq!(status, 200, "{answer:?}");
    hub.kill();
    drop(sockets);

    let mut hub = start_hub(dir.path(), port, &database_url);
    api.until_up().await;
    let (_, view) = api.call("GET", &path, None).await;
    assert_eq!(
        view["status"], "RollingBack",
        "resumed from the store: {view:?}"
    );
    // The servers come back holding what they ran; each ends on 1.0.0.
    let mut sockets = Vec::new();
    for id in &ids {
        let held = if canary.contains(id) { 2 } else { 1 };
        let mut socket = server(port, &key, id, Some(held)).await;
        if held == 2 {
            assert_eq!(next_revision(&mut socket, true).await, 1, "{id}");
        }
        sockets.push(socket);
    }
    until("the deployment reaches RolledBack", async || {
        api.call("GET", &path, None).await.1["status"] == "RolledBack"
    })
    .await;
    // A server that held 1.0.0 acks nothing new: the deployment may end
    // before its `hello` (committed with its batch of id bindings) is in
    // the registry.
    for id in &ids {
        until(&format!("{id} is known on 1.0.0"), async || {
            let (_, record) = api
                .call("GET", &format!("/api/v1/game-servers/{id}"), None)
                .await;
            record["applied"]["weapon-balance"] == 1
        })
        .await;
    }
    let (_, verified) = api.call("GET", "/api/v1/audit/verify", None).await;
    assert_eq!(verified["valid"], true, "{verified:?}");
    let (_, view) = api.call("GET", &path, None).await;
    assert_eq!(view["rollback"]["trigger"], "manual", "{view:?}");
    assert_eq!(view["rollback"]["toRevision"], 1, "{view:?}");
    drop(sockets);
    hub.kill();
}

#[actix_web::test]
async fn a_rollback_survives_a_kill_after_its_answer_on_sqlite() {
    a_rollback_answered_then_killed_still_rolls_back_after_restart(Db::Sqlite).await;
}

#[actix_web::test]
async fn a_rollback_survives_a_kill_after_its_answer_on_postgres() {
    a_rollback_answered_then_killed_still_rolls_back_after_restart(Db::Postgres).await;
}
