//! Raw game-server sockets for tests that speak the protocol by hand (to
//! send what the SDK never would).

use crate::helpers::TestApp;
use futures_util::{SinkExt, StreamExt};
use hotswap_client::protocol::{self, HubMessage, ServerMessage};
use std::{collections::BTreeMap, time::Duration};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

pub const WAIT: Duration = Duration::from_secs(10);

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The upgrade request, with the key as a bearer token.
fn upgrade_request(
    app: &TestApp,
    key: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = format!("{}/ws/v1/servers", app.ws_url())
        .into_client_request()
        .unwrap();
    if let Some(key) = key {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
    }
    request
}

/// A raw socket with the given key.
pub async fn raw(
    app: &TestApp,
    key: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    tokio_tungstenite::connect_async(upgrade_request(app, key))
        .await
        .map(|(socket, _)| socket)
}

/// A raw socket from another loopback address (`127.0.0.x`), so a test can
/// be a different client address than the hub's other clients.
pub async fn raw_from(
    app: &TestApp,
    source: [u8; 4],
    key: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let hub: std::net::SocketAddr = app
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("the hub's address");
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.bind((std::net::Ipv4Addr::from(source), 0).into())
        .unwrap();
    let stream = tcp.connect(hub).await.expect("the hub accepts");
    tokio_tungstenite::client_async(
        upgrade_request(app, key),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .map(|(socket, _)| socket)
}

/// A `hello` as a plain server of `environment` subscribed to
/// `weapon-balance`.
pub fn hello(server_id: &str, environment: &str, known: BTreeMap<String, i64>) -> Vec<u8> {
    protocol::encode(&ServerMessage::Hello(hello_message(
        server_id,
        environment,
        known,
    )))
}

pub fn hello_message(
    server_id: &str,
    environment: &str,
    known: BTreeMap<String, i64>,
) -> protocol::Hello {
    protocol::Hello {
        server_id: server_id.into(),
        region: "EU-WEST".into(),
        environment: environment.into(),
        tags: vec![],
        capacity: 100,
        players: 0,
        subscriptions: vec!["weapon-balance".into()],
        known,
        hostname: None,
        address: None,
        build: None,
        sdk: Some("raw-test".into()),
        liveops: false,
    }
}

pub async fn send(socket: &mut Socket, frame: Vec<u8>) {
    socket
        .send(Message::Binary(frame.into()))
        .await
        .expect("send");
}

/// Reads until a hub message or a close; `Err((code, reason))` on close.
pub async fn next_message_or_close(
    socket: &mut Socket,
) -> Result<HubMessage, (Option<u16>, String)> {
    loop {
        match tokio::time::timeout(WAIT, socket.next()).await {
            Ok(Some(Ok(Message::Binary(frame)))) => {
                return Ok(protocol::decode(&frame, protocol::HUB_MESSAGE_TYPES)
                    .expect("hub frames decode"));
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Err(frame.map_or((None, String::new()), |f| {
                    (Some(u16::from(f.code)), f.reason.to_string())
                }));
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return Err((None, String::new())),
            Err(_) => panic!("no frame within {WAIT:?}"),
        }
    }
}

/// Reads until a hub message or a close; `Err(code)` on close.
pub async fn next_message(socket: &mut Socket) -> Result<HubMessage, Option<u16>> {
    next_message_or_close(socket)
        .await
        .map_err(|(code, _)| code)
}

/// Reads until the socket is closed; returns the close code and reason.
pub async fn close_of(socket: &mut Socket) -> (Option<u16>, String) {
    loop {
        if let Err(close) = next_message_or_close(socket).await {
            return close;
        }
    }
}

/// Reads until the socket is closed; returns the close code.
pub async fn close_code_of(socket: &mut Socket) -> Option<u16> {
    close_of(socket).await.0
}

/// Reads until an `error` frame; its `(code, message)`. Panics on a close.
pub async fn next_error(socket: &mut Socket) -> (String, String) {
    loop {
        match next_message_or_close(socket).await {
            Ok(HubMessage::Error { code, message }) => return (code, message),
            Ok(_) => continue,
            Err(close) => panic!("closed {close:?} instead of an error frame"),
        }
    }
}
