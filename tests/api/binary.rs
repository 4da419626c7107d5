//! The `hotswap` binary itself: settings from the environment, JSON logs,
//! `migrate`, and a clean exit on SIGTERM.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

const BINARY: &str = env!("CARGO_BIN_EXE_hotswap");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bare HTTP GET; `None` while nothing listens.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Waits (bounded) for the child to exit.
fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn the_binary_serves_logs_json_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let database = dir.path().join("nested").join("hotswap.db");
    let mut child = Command::new(BINARY)
        .arg("serve")
        .env("HOTSWAP_BIND", format!("127.0.0.1:{port}"))
        .env(
            "HOTSWAP_DATABASE__URL",
            format!("sqlite://{}", database.display()),
        )
        .env("HOTSWAP_LOG__FORMAT", "json")
        .env("HOTSWAP_DATA_DIR", dir.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");

    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        if let Some(response) = http_get(port, "/health") {
            break response;
        }
        assert!(Instant::now() < deadline, "the hub never answered /health");
        assert!(child.try_wait().unwrap().is_none(), "the hub exited early");
        sleep(Duration::from_millis(100));
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        http_get(port, "/ready")
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        database.exists(),
        "the SQLite file and its folder are created"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status =
        wait_for_exit(&mut child, Duration::from_secs(45)).expect("the hub stops after SIGTERM");
    assert!(status.success(), "exit status {status}");

    let mut logs = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "JSON log lines expected, got: {logs}");
    assert!(
        lines.iter().any(|l| l["message"] == "hub listening"),
        "{logs}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "hub stopped"),
        "{logs}"
    );
}

#[test]
fn migrate_applies_migrations_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("hotswap.db");
    let output = Command::new(BINARY)
        .arg("migrate")
        .env("HOTSWAP_DATA_DIR", dir.path())
        .env(
            "HOTSWAP_DATABASE__URL",
            format!("sqlite://{}", database.display()),
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(database.exists());
    let bad = Command::new(BINARY)
        .arg("migrate")
        .env("HOTSWAP_DATA_DIR", dir.path())
        .env("HOTSWAP_DATABASE__URL", "mysql://nope")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sqlite:// or postgres://"));
}
