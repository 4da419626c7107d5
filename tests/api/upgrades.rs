//! The upgrade lane (`src/ws/upgrade.rs`): every WebSocket upgrade goes
//! through the App, and a game server's socket is taken off the HTTP
//! server once its 101 is written. Spoken by hand over TCP, to send what
//! a WebSocket library would not.

use crate::attacks::{hello_as, key, welcomed};
use crate::helpers::TestApp;
use crate::on_both_databases;
use crate::sockets::{WAIT, raw};
use hotswap_client::protocol::{self, HubMessage, close_code};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn upgrade(path: &str, key: Option<&str>) -> String {
    let auth = key.map_or(String::new(), |key| {
        format!("authorization: Bearer {key}\r\n")
    });
    format!(
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\n\
         connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         sec-websocket-version: 13\r\n{auth}\r\n"
    )
}

/// A client's frame: masked binary.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [9, 8, 7, 6];
    let mut out = vec![first];
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

async fn connect(app: &TestApp) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    TcpStream::connect(address).await.expect("the hub accepts")
}

/// Sends `request` on a new connection; the whole answer, once the hub
/// has closed the connection.
async fn answered_and_closed(app: &TestApp, request: &str) -> String {
    let mut stream = connect(app).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the hub closes the connection after answering")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A game server's socket, upgraded by hand with `key`.
async fn upgraded(app: &TestApp, key: &str) -> TcpStream {
    let mut stream = connect(app).await;
    stream
        .write_all(upgrade("/ws/v1/servers", Some(key)).as_bytes())
        .await
        .unwrap();
    assert!(head(&mut stream).await.starts_with("HTTP/1.1 101"));
    stream
}

/// Reads up to the end of the response head.
async fn head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        let read = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("a response in time")
            .expect("read");
        assert_eq!(
            read,
            1,
            "closed mid-head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("an ASCII head")
}

/// Reads one unmasked frame from the hub: (opcode, payload).
async fn frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut start = [0; 2];
    tokio::time::timeout(WAIT, stream.read_exact(&mut start))
        .await
        .expect("a frame in time")
        .expect("read");
    assert_eq!(start[1] & 0x80, 0, "a hub never masks");
    let length = match start[1] & 0x7F {
        126 => u64::from(stream.read_u16().await.unwrap()),
        127 => stream.read_u64().await.unwrap(),
        short => u64::from(short),
    };
    let mut payload = vec![0; length as usize];
    stream.read_exact(&mut payload).await.unwrap();
    (start[0] & 0x0F, payload)
}

async fn a_hello_in_the_same_packet_as_the_upgrade_is_answered(app: TestApp) {
    let (key, _) = key(&app, &["staging"]).await;
    let mut stream = connect(&app).await;
    // The request and the first frames in one write: the bytes past the
    // request reach the session, not a buffer the takeover drops.
    let mut bytes = upgrade("/ws/v1/servers", Some(&key)).into_bytes();
    bytes.extend(masked(0x82, &hello_as("same-packet", "staging")));
    bytes.extend(masked(0x89, b"are you there"));
    stream.write_all(&bytes).await.unwrap();
    let head = head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let (opcode, payload) = frame(&mut stream).await;
    assert_eq!(opcode, 0x2);
    let welcome = protocol::decode::<HubMessage>(&payload, protocol::HUB_MESSAGE_TYPES).unwrap();
    assert!(matches!(welcome, HubMessage::Welcome { .. }), "{welcome:?}");
    // The ping is answered with its payload.
    loop {
        let (opcode, payload) = frame(&mut stream).await;
        if opcode == 0xA {
            assert_eq!(payload, b"are you there");
            break;
        }
    }
    let record = app.get("/api/v1/game-servers/same-packet").await;
    assert_eq!(record.body["connected"], true, "{}", record.body);
}

async fn refused_and_unknown_upgrades_get_a_problem_and_a_closed_connection(app: TestApp) {
    for (path, key, status) in [
        ("/ws/v1/servers", None, "401"),
        ("/ws/v1/nowhere", None, "404"),
        ("/api/v1/configs", None, "401"),
    ] {
        let answer = answered_and_closed(&app, &upgrade(path, key)).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {answer}"
        );
        assert!(
            answer.contains("application/problem+json"),
            "{path}: {answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let problem: serde_json::Value = serde_json::from_str(body).expect("a whole JSON body");
        assert_eq!(problem["status"].as_u64().unwrap().to_string(), status);
    }
}

async fn an_upgrade_that_is_not_a_get_is_refused_at_once(app: TestApp) {
    let request = upgrade("/api/v1/configs", None).replacen("GET ", "POST ", 1);
    // A body the App would otherwise wait on for ever.
    let request = request.replacen("\r\n\r\n", "\r\ncontent-length: 2\r\n\r\n{}", 1);
    let answer = answered_and_closed(&app, &request).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("bad_upgrade"), "{answer}");
}

async fn the_server_socket_without_an_upgrade_is_a_bad_request(app: TestApp) {
    let (key, _) = key(&app, &["staging"]).await;
    let mut answer = app
        .client
        .get(format!("{}/ws/v1/servers", app.address))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let problem: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(problem["code"], "bad_upgrade", "{problem}");
}

async fn a_fragmented_hello_and_a_bad_frame_after_it(app: TestApp) {
    let (key, _) = key(&app, &["staging"]).await;
    let mut stream = upgraded(&app, &key).await;
    // The hello in three fragments, a ping between two of them.
    let hello = hello_as("fragments", "staging");
    let (first, rest) = hello.split_at(10);
    let (second, third) = rest.split_at(5);
    let mut bytes = masked(0x02, first);
    bytes.extend(masked(0x00, second));
    bytes.extend(masked(0x89, b""));
    bytes.extend(masked(0x80, third));
    stream.write_all(&bytes).await.unwrap();
    let mut welcomed = false;
    for _ in 0..3 {
        let (opcode, payload) = frame(&mut stream).await;
        if opcode == 0x2 {
            let message =
                protocol::decode::<HubMessage>(&payload, protocol::HUB_MESSAGE_TYPES).unwrap();
            welcomed = matches!(message, HubMessage::Welcome { .. });
            break;
        }
    }
    assert!(welcomed);
    // An unmasked frame: a protocol error, said in a close frame.
    stream.write_all(&[0x82, 0x01, 0x00]).await.unwrap();
    loop {
        let (opcode, payload) = frame(&mut stream).await;
        if opcode == 0x8 {
            assert_eq!(
                u16::from_be_bytes([payload[0], payload[1]]),
                close_code::PROTOCOL_ERROR
            );
            assert!(String::from_utf8_lossy(&payload[2..]).contains("masked"));
            break;
        }
    }
    // Then the hub closes its side.
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap();
}

async fn a_length_prefix_past_the_limit_closes_before_the_bytes(app: TestApp) {
    let (key, _) = key(&app, &["staging"]).await;
    let mut socket = raw(&app, Some(&key)).await.unwrap();
    welcomed(&mut socket, hello_as("neighbour", "staging")).await;
    let mut stream = upgraded(&app, &key).await;
    // A frame header claiming 2^62 bytes, and nothing after it: refused
    // from the header alone.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    stream.write_all(&header).await.unwrap();
    let (opcode, payload) = frame(&mut stream).await;
    assert_eq!(opcode, 0x8);
    assert_eq!(
        u16::from_be_bytes([payload[0], payload[1]]),
        close_code::TOO_BIG
    );
    // The other server's session is untouched.
    let record = app.get("/api/v1/game-servers/neighbour").await;
    assert_eq!(record.body["connected"], true, "{}", record.body);
    drop(socket);
}

on_both_databases!(
    a_hello_in_the_same_packet_as_the_upgrade_is_answered,
    refused_and_unknown_upgrades_get_a_problem_and_a_closed_connection,
    the_server_socket_without_an_upgrade_is_a_bad_request,
    an_upgrade_that_is_not_a_get_is_refused_at_once,
    a_fragmented_hello_and_a_bad_frame_after_it,
    a_length_prefix_past_the_limit_closes_before_the_bytes,
);
