//! The `hotswap` binary itself: settings from the environment, JSON logs,
//! the first-run admin token, `token`, `migrate`, production refusals, TLS,
//! and a clean exit on SIGTERM.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
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

/// A bare HTTP/1.1 request; `None` while nothing listens.
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

fn get(port: u16, path: &str) -> Option<String> {
    http(port, "GET", path, None, None)
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

/// A hub process on a free port over a SQLite file in `dir`. Its stdout is
/// read as it comes (a full pipe would block the hub mid-log).
struct Hub {
    child: Child,
    port: u16,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Hub {
    /// A failing test leaves no hub behind (after `stop`, this finds it gone).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Hub {
    fn start(dir: &Path, extra_env: &[(&str, &str)]) -> Hub {
        let port = free_port();
        let mut command = Command::new(BINARY);
        command
            .arg("serve")
            .env("HOTSWAP_BIND", format!("127.0.0.1:{port}"))
            .env(
                "HOTSWAP_DATABASE__URL",
                format!("sqlite://{}", dir.join("db").join("hotswap.db").display()),
            )
            .env("HOTSWAP_DATA_DIR", dir)
            .env("HOTSWAP_LOG__FORMAT", "json")
            .env_remove("RUST_LOG")
            .env_remove("HOTSWAP_AUTH__JWT_SECRET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the binary starts");
        let mut pipe = child.stdout.take().expect("piped stdout");
        let stdout = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = pipe.read_to_string(&mut out);
            out
        });
        let mut stdout = Some(stdout);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if get(port, "/health").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                return Hub {
                    child,
                    port,
                    stdout: stdout.take(),
                };
            }
            assert!(Instant::now() < deadline, "the hub never answered /health");
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                panic!("the hub exited early ({status}): {stderr}");
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, a clean exit, and everything it wrote to stdout.
    fn stop(mut self) -> String {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = wait_for_exit(&mut self.child, Duration::from_secs(45))
            .expect("the hub stops after SIGTERM");
        assert!(status.success(), "exit status {status}");
        self.stdout
            .take()
            .expect("read once")
            .join()
            .expect("the reader thread ends with the hub")
    }
}

fn json_lines(output: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The admin token of the first-run banner.
fn banner_token(output: &str) -> Option<String> {
    let mut lines = output.lines().skip_while(|l| !l.starts_with("Admin token"));
    lines
        .nth(2)
        .map(|l| l.trim().to_owned())
        .filter(|t| t.split('.').count() == 3)
}

#[test]
fn the_binary_serves_logs_json_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &[]);
    assert!(get(hub.port, "/ready").unwrap().starts_with("HTTP/1.1 200"));
    assert!(
        dir.path().join("db").join("hotswap.db").exists(),
        "the SQLite file and its folder are created"
    );
    // A caller's W3C trace is joined: the answer names the hub's span in
    // it, and the request's log line carries the trace id.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut stream = TcpStream::connect(("127.0.0.1", hub.port)).unwrap();
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         traceparent: 00-{trace}-00f067aa0ba902b7-01\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let given = answer
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(given.starts_with(&format!("00-{trace}-")), "{given}");
    assert!(
        !given.contains("00f067aa0ba902b7"),
        "the hub's own span: {given}"
    );
    let output = hub.stop();
    let lines = json_lines(&output);
    assert!(
        lines.iter().any(|l| l["message"] == "request served"
            && l["span"]["trace_id"] == trace
            && l["span"]["path"] == "/health"),
        "{output}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "hub listening"),
        "{output}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "hub stopped"),
        "{output}"
    );
}

#[test]
fn the_first_run_prints_an_admin_token_that_works_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = Hub::start(dir.path(), &[]);
    let port = first.port;
    let answer = http(port, "GET", "/api/v1/configs", None, None).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let output = first.stop();
    let token = banner_token(&output).unwrap_or_else(|| panic!("no admin token printed: {output}"));
    assert!(output.contains("/docs/ (sign in"), "{output}");
    assert!(
        !output.contains("?token="),
        "the token is never printed inside a URL: {output}"
    );

    let second = Hub::start(dir.path(), &[]);
    let answer = http(second.port, "GET", "/api/v1/configs", Some(&token), None).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the generated secret is kept: {answer}"
    );
    let output = second.stop();
    assert!(
        banner_token(&output).is_none(),
        "the banner is printed once: {output}"
    );

    // `hotswap token` mints from the same secret.
    let minted = Command::new(BINARY)
        .args([
            "token", "--role", "operator", "--sub", "alice", "--ttl", "8h",
        ])
        .env("HOTSWAP_DATA_DIR", dir.path())
        .env_remove("HOTSWAP_AUTH__JWT_SECRET")
        .output()
        .unwrap();
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    // A player token vouching for attributes carries them in `attrs`.
    let mint = |args: &[&str]| {
        Command::new(BINARY)
            .arg("token")
            .args(args)
            .env("HOTSWAP_DATA_DIR", dir.path())
            .env_remove("HOTSWAP_AUTH__JWT_SECRET")
            .output()
            .unwrap()
    };
    let player = mint(&[
        "--role",
        "player",
        "--sub",
        "p-7",
        "--attr",
        "guild=g-7",
        "--attr",
        "tier=3",
    ]);
    assert!(
        player.status.success(),
        "{}",
        String::from_utf8_lossy(&player.stderr)
    );
    let text = String::from_utf8(player.stdout).unwrap();
    let payload = text.trim().split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["attrs"],
        serde_json::json!({"guild": "g-7", "tier": 3})
    );
    let refused = mint(&["--role", "operator", "--sub", "x", "--attr", "guild=g"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("player tokens"));
    let refused = mint(&["--role", "player", "--sub", "x", "--attr", "bad name=g"]);
    assert!(!refused.status.success());
    let third = Hub::start(dir.path(), &[]);
    let created = http(
        third.port,
        "POST",
        "/api/v1/configs",
        Some(&token),
        Some(r#"{"name":"loot","configType":"Economy","environment":"staging"}"#),
    )
    .unwrap();
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    assert!(created.contains(r#""createdBy":"alice""#), "{created}");
    third.stop();
}

#[test]
fn production_refuses_to_start_without_a_way_to_verify_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .arg("serve")
        .env("HOTSWAP_ENVIRONMENT", "production")
        .env("HOTSWAP_BIND", "127.0.0.1:0")
        .env("HOTSWAP_DATA_DIR", dir.path())
        .env(
            "HOTSWAP_DATABASE__URL",
            format!("sqlite://{}/p.db", dir.path().display()),
        )
        .env_remove("HOTSWAP_AUTH__JWT_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HOTSWAP_AUTH__JWT_SECRET"), "{stderr}");
    assert!(
        !dir.path().join("jwt-secret").exists(),
        "production never generates a secret"
    );
}

#[test]
fn secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "sk-live-do-not-log-me-0451";
    let hub = Hub::start(dir.path(), &[("RUST_LOG", "debug")]);
    let minted = Command::new(BINARY)
        .args(["token", "--role", "admin", "--sub", "ops"])
        .env("HOTSWAP_DATA_DIR", dir.path())
        .env_remove("HOTSWAP_AUTH__JWT_SECRET")
        .output()
        .unwrap();
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let steps = [
        ("/api/v1/schemas", r#"{"id":"pay","version":"1.0.0","schema":{"properties":{"key":{"type":"string","minLength":40,"x-secret":true}}}}"#.to_owned(), "201"),
        ("/api/v1/configs", r#"{"name":"pay","configType":"Custom","environment":"staging","schemaId":"pay"}"#.to_owned(), "201"),
        ("/api/v1/configs/pay/versions", format!(r#"{{"version":"1.0.0","content":{{"key":"{secret}"}}}}"#), "422"),
        ("/api/v1/configs/pay/versions", format!(r#"{{"version":"1.0.0","content":{{"key":"{secret}-{}"}}}}"#, "x".repeat(20)), "201"),
    ];
    for (path, body, status) in steps {
        let answer = http(hub.port, "POST", path, Some(&token), Some(&body)).unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {answer}"
        );
        assert!(!answer.contains(secret), "{answer}");
    }
    let output = hub.stop();
    assert!(json_lines(&output).len() > 5, "debug logs were written");
    assert!(!output.contains(secret), "the secret reached the logs");
}

#[test]
fn the_hub_serves_https_when_given_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl makes a test certificate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = free_port();
    let mut child = Command::new(BINARY)
        .env("HOTSWAP_BIND", format!("127.0.0.1:{port}"))
        .env("HOTSWAP_DATA_DIR", dir.path())
        .env(
            "HOTSWAP_DATABASE__URL",
            format!("sqlite://{}/t.db", dir.path().display()),
        )
        .env("HOTSWAP_TLS__CERT_FILE", &cert)
        .env("HOTSWAP_TLS__KEY_FILE", &key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "5", &url])
            .output()
            .unwrap();
        if out.status.success() && !out.stdout.is_empty() {
            break String::from_utf8(out.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "no HTTPS answer");
        sleep(Duration::from_millis(200));
    };
    assert!(body.contains("ok"), "{body}");
    // The explorer's sign-in sets a Secure cookie under TLS.
    let token = mint(dir.path(), "viewer", "reader");
    let signed_in = Command::new("curl")
        .args([
            "-sk",
            "-i",
            "--http1.1",
            "--max-time",
            "5",
            "--data-urlencode",
        ])
        .arg(format!("token={token}"))
        .arg(format!("https://127.0.0.1:{port}/docs/login"))
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&signed_in.stdout).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 303"), "{answer}");
    let cookie = answer
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {answer}"));
    assert!(cookie.contains("; secure"), "{cookie}");
    assert!(cookie.contains("httponly"), "{cookie}");
    // The CLI speaks TLS: trusting the hub's certificate when told to,
    // and refusing it (exit 5, no hub it trusts) when not.
    let ctl = |extra: &[&std::ffi::OsStr]| {
        Command::new(BINARY)
            .args(["ctl", "--url", &format!("https://localhost:{port}")])
            .args(extra)
            .args(["configs", "list"])
            .env("HOTSWAP_TOKEN", &token)
            .env("SSL_CERT_FILE", "/nonexistent")
            .env("HOME", dir.path())
            .output()
            .unwrap()
    };
    let trusted = ctl(&["--ca-cert".as_ref(), cert.as_os_str()]);
    assert_eq!(
        trusted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(String::from_utf8_lossy(&trusted.stdout).starts_with("NAME"));
    let untrusted = ctl(&[]);
    assert_eq!(untrusted.status.code(), Some(5));
    // A game server over wss: the socket the hub takes off the HTTP server
    // is a TLS stream here, read and written the same way.
    let admin = mint(dir.path(), "admin", "root");
    let created = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "5",
            "-H",
            "content-type: application/json",
        ])
        .args(["-H", &format!("authorization: Bearer {admin}")])
        .args([
            "--data",
            r#"{"name":"tls fleet","environments":["staging"]}"#,
        ])
        .arg(format!("https://127.0.0.1:{port}/api/v1/api-keys"))
        .output()
        .unwrap();
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let server_key = created["key"].as_str().expect("a key").to_owned();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(wss_welcome(port, &cert, &server_key));
    // Plain HTTP on the TLS port gets no answer.
    assert!(get(port, "/health").is_none_or(|r| !r.starts_with("HTTP/1.1 200")));
    let _ = child.kill();
    let _ = child.wait();
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

/// A one-hour token for `role`, minted by the binary from `data_dir`'s secret.
fn mint(data_dir: &Path, role: &str, sub: &str) -> String {
    let minted = Command::new(BINARY)
        .args(["token", "--role", role, "--sub", sub, "--ttl", "1h"])
        .env("HOTSWAP_DATA_DIR", data_dir)
        .output()
        .unwrap();
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    String::from_utf8(minted.stdout).unwrap().trim().to_owned()
}

/// Connects a game server over wss (trusting `cert`), says hello and reads
/// the welcome, then a pong to its ping.
async fn wss_welcome(port: u16, cert: &Path, key: &str) {
    use futures_util::{SinkExt, StreamExt};
    use hotswap_client::protocol::{self, HubMessage, ServerMessage};
    use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("a TLS handshake");
    let mut request = format!("wss://localhost:{port}/ws/v1/servers")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("upgraded over TLS");
    assert_eq!(response.status(), 101);
    let hello = protocol::Hello {
        server_id: "tls-1".into(),
        region: "EU-WEST".into(),
        environment: "staging".into(),
        tags: vec![],
        capacity: 10,
        players: 0,
        subscriptions: vec!["weapon-balance".into()],
        known: Default::default(),
        hostname: None,
        address: None,
        build: None,
        sdk: Some("tls-test".into()),
        liveops: false,
    };
    socket
        .send(Message::Binary(
            protocol::encode(&ServerMessage::Hello(hello)).into(),
        ))
        .await
        .unwrap();
    socket
        .send(Message::Ping(b"over tls".to_vec().into()))
        .await
        .unwrap();
    let (mut welcomed, mut ponged) = (false, false);
    while !(welcomed && ponged) {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("frames in time")
            .expect("open")
            .expect("a frame");
        match message {
            Message::Binary(frame) => {
                let message =
                    protocol::decode::<HubMessage>(&frame, protocol::HUB_MESSAGE_TYPES).unwrap();
                welcomed |= matches!(message, HubMessage::Welcome { .. });
            }
            Message::Pong(payload) => ponged = &payload[..] == b"over tls",
            _ => {}
        }
    }
    socket.close(None).await.unwrap();
}
