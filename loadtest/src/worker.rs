//! One worker process: `count` simulated game servers, each a real
//! WebSocket speaking `docs/PROTOCOL.md` (hello, heartbeats, acks, resyncs,
//! metrics from its players), plus plain sockets for the floor measurement.
//!
//! The coordinator drives it over stdin/stdout, one JSON object per line
//! each way ([`Command`] in, a reply per command out). Servers keep only
//! the revision they hold, not the document: the harness measures the hub,
//! so the simulated side stays as cheap as it can.

use crate::{
    now_us,
    players::{PlayerModel, Rng},
    stamped::StampedStream,
};
use futures_util::{SinkExt, StreamExt};
use hotswap_client::protocol::{self, Ack, Health, Hello, ServerMessage};
use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpSocket,
    sync::watch,
};
use tokio_tungstenite::tungstenite::{
    Message,
    client::IntoClientRequest,
    http::HeaderValue,
    protocol::{Role, WebSocketConfig},
};

/// Regions servers are spread over (round robin by index).
pub const REGIONS: [&str; 5] = ["NA-WEST", "NA-EAST", "EU-WEST", "EU-EAST", "APAC"];

/// What a worker runs, handed over as JSON on its command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// `ws://host:port/ws/v1/servers`.
    pub url: String,
    /// The nodes of a cluster (`ws://…/ws/v1/servers` each): server
    /// `global` connects to `urls[global % len]`; empty, all to `url`.
    #[serde(default)]
    pub urls: Vec<String>,
    pub key: String,
    pub config: String,
    pub environment: String,
    /// Index of this worker's first server (server ids are global).
    pub first: usize,
    pub count: usize,
    /// Source address for every socket of this worker.
    pub source: Option<IpAddr>,
    pub model: PlayerModel,
    /// Metrics interval; 0 takes the hub's `metricsMs` from `welcome`.
    pub metrics_ms: u64,
    pub metrics: bool,
    /// Opening sockets this many at a time.
    pub connect_concurrency: usize,
}

/// A command from the coordinator.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Command {
    Status,
    /// Frames received since the last `collect`, drained.
    Collect,
    Regress {
        revision: i64,
        factor: f64,
    },
    Metrics {
        enabled: bool,
    },
    /// Servers welcomed at or after `since_us` that hold `revision`.
    Synced {
        since_us: u64,
        revision: i64,
    },
    /// Open one plain socket per server to the floor server; each expects
    /// frames of `frame_len` bytes, read as `client` says.
    Floor {
        addr: SocketAddr,
        frame_len: usize,
        #[serde(default)]
        client: FloorClient,
    },
    FloorCollect,
    /// Open one WebSocket per server to a peer pub/sub server (nginx +
    /// nchan) at `ws://{addr}{path}`; each reads and acks its messages as
    /// a floor socket does.
    Peer {
        addr: SocketAddr,
        path: String,
    },
    PeerCollect,
    Stop,
}

/// How a floor socket reads its frames and answers them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FloorClient {
    /// As a simulated server reads the hub's frames: through
    /// tokio-tungstenite (same buffers), the frame decoded and its ack
    /// encoded and sent as a WebSocket message.
    #[default]
    WebSocket,
    /// A bare `read_exact` of the frame's bytes and a pre-framed ack: less
    /// client work than a hub frame costs a simulated server.
    Raw,
}

/// One snapshot or delta as a server saw it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub server: u32,
    pub revision: i64,
    /// The hub's `sentAtMs`.
    pub sent_at_ms: i64,
    /// When the frame reached the server's socket: the kernel's receive
    /// time (Unix µs, see [`crate::stamped`]).
    pub received_us: u64,
    /// When the server's task had read and decoded it: later than
    /// `received_us` by the wait for the other simulated servers sharing
    /// its thread.
    pub handled_us: u64,
    /// When its ack had been written to the socket.
    pub acked_us: u64,
}

struct Shared {
    spec: WorkerSpec,
    /// Per node (one alone), its address.
    hubs: Vec<SocketAddr>,
    connected: AtomicUsize,
    welcomes: AtomicU64,
    revisions: Vec<AtomicI64>,
    welcomed_us: Vec<AtomicU64>,
    /// When the latest `reconnect` arrived, and the moment it asked for
    /// (arrival + `retryAfterMs`), Unix µs.
    told_us: Vec<AtomicU64>,
    asked_for_us: Vec<AtomicU64>,
    received_us: Vec<AtomicU64>,
    deliveries: Mutex<Vec<Delivery>>,
    out_of_order: AtomicU64,
    unstamped_reads: AtomicU64,
    resyncs: AtomicU64,
    metrics_sent: AtomicU64,
    metrics_on: AtomicBool,
    regress_revision: AtomicI64,
    regress_factor_bits: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    hub_errors: Mutex<BTreeMap<String, u64>>,
    /// Close frames from the hub, by code (and reason for the hub's own).
    hub_closes: Mutex<BTreeMap<String, u64>>,
    last_failure: Mutex<Option<String>>,
    /// Floor frames: (kernel receive time, read time, ack written), Unix µs.
    floor_received: Mutex<Vec<(u64, u64, u64)>>,
    /// The same for the peer's messages.
    peer_received: Mutex<Vec<(u64, u64, u64)>>,
    stop: watch::Sender<bool>,
}

/// Runs a worker until `stop` (or stdin closes).
pub async fn run(spec: WorkerSpec) -> anyhow::Result<()> {
    let mut hubs = Vec::new();
    if spec.urls.is_empty() {
        hubs.push(resolve(&spec.url).await?);
    }
    for url in &spec.urls {
        hubs.push(resolve(url).await?);
    }
    let (stop, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        hubs,
        connected: AtomicUsize::new(0),
        welcomes: AtomicU64::new(0),
        revisions: (0..spec.count).map(|_| AtomicI64::new(0)).collect(),
        welcomed_us: (0..spec.count).map(|_| AtomicU64::new(0)).collect(),
        told_us: (0..spec.count).map(|_| AtomicU64::new(0)).collect(),
        asked_for_us: (0..spec.count).map(|_| AtomicU64::new(0)).collect(),
        received_us: (0..spec.count).map(|_| AtomicU64::new(0)).collect(),
        deliveries: Mutex::new(Vec::new()),
        out_of_order: AtomicU64::new(0),
        unstamped_reads: AtomicU64::new(0),
        resyncs: AtomicU64::new(0),
        metrics_sent: AtomicU64::new(0),
        metrics_on: AtomicBool::new(spec.metrics),
        regress_revision: AtomicI64::new(-1),
        regress_factor_bits: AtomicU64::new(1f64.to_bits()),
        connect_failures: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        hub_errors: Mutex::new(BTreeMap::new()),
        hub_closes: Mutex::new(BTreeMap::new()),
        last_failure: Mutex::new(None),
        floor_received: Mutex::new(Vec::new()),
        peer_received: Mutex::new(Vec::new()),
        stop,
        spec,
    });
    // Open sockets a few at a time so the hub sees a ramp, not a SYN flood.
    let gate = Arc::new(tokio::sync::Semaphore::new(
        shared.spec.connect_concurrency.max(1),
    ));
    for index in 0..shared.spec.count {
        let (shared, gate) = (shared.clone(), gate.clone());
        tokio::spawn(async move { server(shared, index, gate).await });
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let command: Command = match serde_json::from_str(&line) {
            Ok(command) => command,
            Err(error) => {
                reply(&mut stdout, &json!({ "error": error.to_string() })).await?;
                continue;
            }
        };
        let stopping = matches!(command, Command::Stop);
        let answer = handle(&shared, command).await;
        reply(&mut stdout, &answer).await?;
        if stopping {
            break;
        }
    }
    let _ = shared.stop.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

async fn reply(stdout: &mut tokio::io::Stdout, value: &Value) -> anyhow::Result<()> {
    let mut line = value.to_string();
    line.push('\n');
    stdout.write_all(line.as_bytes()).await?;
    stdout.flush().await?;
    Ok(())
}

async fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow::anyhow!("the socket URL must start with ws://"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    tokio::net::lookup_host(host)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} resolves to nothing"))
}

async fn handle(shared: &Arc<Shared>, command: Command) -> Value {
    match command {
        Command::Status => {
            let mut revisions: BTreeMap<i64, u64> = BTreeMap::new();
            for r in &shared.revisions {
                *revisions.entry(r.load(Relaxed)).or_default() += 1;
            }
            json!({
                "connected": shared.connected.load(Relaxed),
                "welcomes": shared.welcomes.load(Relaxed),
                "revisions": revisions,
                "outOfOrder": shared.out_of_order.load(Relaxed),
                "unstampedReads": shared.unstamped_reads.load(Relaxed),
                "resyncs": shared.resyncs.load(Relaxed),
                "metricsSent": shared.metrics_sent.load(Relaxed),
                "connectFailures": shared.connect_failures.load(Relaxed),
                "disconnects": shared.disconnects.load(Relaxed),
                "hubErrors": *shared.hub_errors.lock().unwrap(),
                "hubCloses": *shared.hub_closes.lock().unwrap(),
                "lastFailure": *shared.last_failure.lock().unwrap(),
            })
        }
        Command::Collect => {
            let deliveries = std::mem::take(&mut *shared.deliveries.lock().unwrap());
            json!({ "deliveries": deliveries })
        }
        Command::Regress { revision, factor } => {
            shared.regress_factor_bits.store(factor.to_bits(), Relaxed);
            shared.regress_revision.store(revision, Relaxed);
            json!({ "ok": true })
        }
        Command::Metrics { enabled } => {
            shared.metrics_on.store(enabled, Relaxed);
            json!({ "ok": true })
        }
        Command::Synced { since_us, revision } => {
            let mut synced = 0u64;
            let (mut last_us, mut told_last_us, mut asked_last_us) = (0u64, 0u64, 0u64);
            for i in 0..shared.spec.count {
                let told = shared.told_us[i].load(Relaxed);
                if told >= since_us {
                    told_last_us = told_last_us.max(told);
                    asked_last_us = asked_last_us.max(shared.asked_for_us[i].load(Relaxed));
                }
                let welcomed = shared.welcomed_us[i].load(Relaxed);
                if welcomed >= since_us && shared.revisions[i].load(Relaxed) == revision {
                    synced += 1;
                    // Synced at the welcome, or at the frame that followed it.
                    let received = shared.received_us[i].load(Relaxed);
                    last_us = last_us.max(welcomed.max(received));
                }
            }
            json!({
                "synced": synced,
                "lastUs": last_us,
                "toldLastUs": told_last_us,
                "askedLastUs": asked_last_us,
            })
        }
        Command::Floor {
            addr,
            frame_len,
            client,
        } => match floor_connect(shared, addr, frame_len, client).await {
            Ok(()) => json!({ "ok": true }),
            Err(error) => json!({ "error": error.to_string() }),
        },
        Command::FloorCollect => {
            let received = std::mem::take(&mut *shared.floor_received.lock().unwrap());
            json!({ "receivedUs": received })
        }
        Command::Peer { addr, path } => match peer_connect(shared, addr, &path).await {
            Ok(()) => json!({ "ok": true }),
            Err(error) => json!({ "error": error.to_string() }),
        },
        Command::PeerCollect => {
            let received = std::mem::take(&mut *shared.peer_received.lock().unwrap());
            json!({ "receivedUs": received })
        }
        Command::Stop => {
            let _ = shared.stop.send(true);
            json!({ "ok": true })
        }
    }
}

/// A WebSocket binary frame from a client (masked, RFC 6455 §5.3).
fn masked_frame(rng: &mut Rng, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 8);
    frame.push(0x82);
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n.min(usize::from(u16::MAX)) as u16).to_be_bytes());
        }
    }
    let mask = (rng.next_u64() as u32).to_be_bytes();
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// One plain socket per server to the floor server; each records when a
/// whole frame arrived and answers it with an ack, as a server answers the
/// hub (the floor server does not read them: they only give the machine
/// the same client load as the hub's fan-out has).
async fn floor_connect(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    frame_len: usize,
    client: FloorClient,
) -> anyhow::Result<()> {
    for index in 0..shared.spec.count {
        let stream = client_socket(shared.spec.source)?.connect(addr).await?;
        stream.set_nodelay(true)?;
        let stream = StampedStream::new(stream)?;
        let (shared, stop) = (shared.clone(), shared.stop.subscribe());
        let rng = Rng::new(shared.spec.first as u64 + index as u64 + 7);
        match client {
            FloorClient::WebSocket => {
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    stream,
                    Role::Client,
                    Some(ws_config()),
                )
                .await;
                tokio::spawn(floor_websocket(shared, ws, stop, false));
            }
            FloorClient::Raw => {
                tokio::spawn(floor_raw(shared, stream, stop, rng, frame_len));
            }
        }
    }
    Ok(())
}

/// One WebSocket per server to the peer at `ws://{addr}{path}` (its
/// handshake made), read and acked as the floor's.
async fn peer_connect(shared: &Arc<Shared>, addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    for _ in 0..shared.spec.count {
        let stream = client_socket(shared.spec.source)?.connect(addr).await?;
        stream.set_nodelay(true)?;
        let stream = StampedStream::new(stream)?;
        let request = format!("ws://{addr}{path}").into_client_request()?;
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await?;
        let (shared, stop) = (shared.clone(), shared.stop.subscribe());
        tokio::spawn(floor_websocket(shared, ws, stop, true));
    }
    Ok(())
}

/// A floor (or peer) socket read as a simulated server reads the hub: the
/// same WebSocket settings, the same frame decode, the same ack sent the
/// same way (a floor socket is taken as already upgraded).
async fn floor_websocket(
    shared: Arc<Shared>,
    mut ws: tokio_tungstenite::WebSocketStream<StampedStream>,
    mut stop: watch::Receiver<bool>,
    peer: bool,
) {
    let mut counted = 0;
    loop {
        tokio::select! {
            frame = ws.next() => {
                let bytes = match frame {
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(_)) => continue,
                    _ => return,
                };
                let handled = now_us();
                let received = ws.get_ref().received_us().min(handled);
                let Ok(Frame { config: Some(config), revision: Some(revision), .. }) =
                    rmp_serde::from_slice::<Frame>(&bytes)
                else {
                    *shared.hub_errors.lock().unwrap().entry("undecodable floor frame".into()).or_default() += 1;
                    return;
                };
                if ws.send(applied(config, revision, handled)).await.is_err() {
                    return;
                }
                let stamps = (received, handled, now_us());
                let sink = if peer { &shared.peer_received } else { &shared.floor_received };
                sink.lock().unwrap().push(stamps);
                let unstamped = ws.get_ref().unstamped_reads();
                shared.unstamped_reads.fetch_add(unstamped - counted, Relaxed);
                counted = unstamped;
            }
            _ = stop.changed() => return,
        }
    }
}

/// A floor socket read bare: `read_exact` of the frame's bytes, answered
/// with a masked ack frame of a real ack's size.
async fn floor_raw(
    shared: Arc<Shared>,
    mut stream: StampedStream,
    mut stop: watch::Receiver<bool>,
    mut rng: Rng,
    frame_len: usize,
) {
    let config = shared.spec.config.clone();
    let mut frame = vec![0u8; frame_len];
    let mut counted = 0;
    let mut revision = 0;
    loop {
        tokio::select! {
            read = stream.read_exact(&mut frame) => {
                if read.is_err() {
                    return;
                }
                let (received, handled) = (stream.received_us(), now_us());
                revision += 1;
                let ack = ServerMessage::Ack(Ack {
                    config: config.clone(),
                    revision,
                    ok: true,
                    error: None,
                    apply_micros: now_us().saturating_sub(handled),
                });
                let ack = masked_frame(&mut rng, &protocol::encode(&ack));
                if stream.write_all(&ack).await.is_err() {
                    return;
                }
                let stamps = (received, handled, now_us());
                shared.floor_received.lock().unwrap().push(stamps);
                shared.unstamped_reads.fetch_add(stream.unstamped_reads() - counted, Relaxed);
                counted = stream.unstamped_reads();
            }
            _ = stop.changed() => return,
        }
    }
}

/// A light view of a hub frame: only the fields the harness reads
/// (documents and patches are skipped, not decoded).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    config: Option<String>,
    revision: Option<i64>,
    base_revision: Option<i64>,
    sent_at_ms: Option<i64>,
    retry_after_ms: Option<u64>,
    heartbeat_ms: Option<u64>,
    metrics_ms: Option<u64>,
    code: Option<String>,
}

/// One simulated server: connects, and reconnects after every loss (after
/// the hub's `retryAfterMs`, or a jittered backoff) until told to stop.
async fn server(shared: Arc<Shared>, index: usize, gate: Arc<tokio::sync::Semaphore>) {
    let global = shared.spec.first + index;
    let mut rng = Rng::new(global as u64 + 1);
    let mut stop = shared.stop.subscribe();
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        if *stop.borrow() {
            return;
        }
        let permit = if first {
            gate.clone().acquire_owned().await.ok()
        } else {
            None
        };
        first = false;
        let outcome = session(&shared, index, global, &mut rng, &mut stop, permit).await;
        if *stop.borrow() {
            return;
        }
        let wait = match outcome {
            // The hub has already spread these over its reconnect window.
            Ok(Some(retry_after)) => {
                backoff = Duration::from_millis(100);
                retry_after
            }
            Ok(None) => jittered(&mut rng, backoff),
            Err(error) => {
                shared.connect_failures.fetch_add(1, Relaxed);
                *shared.last_failure.lock().unwrap() = Some(error.to_string());
                backoff = (backoff * 2).min(Duration::from_secs(2));
                jittered(&mut rng, backoff)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// `wait` plus up to half of it again, at random.
fn jittered(rng: &mut Rng, wait: Duration) -> Duration {
    wait + Duration::from_millis(rng.next_u64() % (wait.as_millis() as u64 / 2 + 1))
}

/// A client socket, bound to `source` when given. Its port is chosen at
/// `connect` (`IP_BIND_ADDRESS_NO_PORT`), as for an unbound socket: a
/// port is then taken only if its 4-tuple is free, and loopback ports in
/// TIME_WAIT are reused. A plain bind to port 0 reserves a port that no
/// other socket on the address holds, TIME_WAIT ones included: after a few
/// thousand reconnects (a reconnect storm, or the run before) the kernel's
/// search for one grows to milliseconds per bind, and 5,000 binds stall
/// the worker's thread for seconds (its servers then miss the hub's
/// request and hello timeouts: 408s and 4001s).
fn client_socket(source: Option<IpAddr>) -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source {
        setsockopt(&socket, IpBindAddressNoPort, &true).map_err(std::io::Error::from)?;
        socket.bind(SocketAddr::new(source, 0))?;
    }
    Ok(socket)
}

/// The ack of `revision` of `config`, applied since `handled` (Unix µs),
/// as a WebSocket message.
fn applied(config: String, revision: i64, handled: u64) -> Message {
    let ack = ServerMessage::Ack(Ack {
        config,
        revision,
        ok: true,
        error: None,
        apply_micros: now_us().saturating_sub(handled),
    });
    Message::Binary(protocol::encode(&ack).into())
}

/// A simulated server's WebSocket settings (the floor's too).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(4 << 20))
}

/// One session. `Ok(Some(d))`: the hub asked to come back after `d`.
async fn session(
    shared: &Arc<Shared>,
    index: usize,
    global: usize,
    rng: &mut Rng,
    stop: &mut watch::Receiver<bool>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> anyhow::Result<Option<Duration>> {
    let spec = &shared.spec;
    // Each server keeps to one node of a cluster.
    let node = global % shared.hubs.len();
    let url = spec.urls.get(node).unwrap_or(&spec.url);
    let stream = client_socket(spec.source)?
        .connect(shared.hubs[node])
        .await?;
    stream.set_nodelay(true)?;
    let stream = StampedStream::new(stream)?;
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", spec.key))?,
    );
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await?;
    let held = shared.revisions[index].load(Relaxed);
    let hello = ServerMessage::Hello(Hello {
        server_id: format!("lt-{global:05}"),
        region: REGIONS[global % REGIONS.len()].to_owned(),
        environment: spec.environment.clone(),
        tags: vec!["loadtest".to_owned()],
        capacity: spec.model.players_per_server * 2,
        players: spec.model.players_per_server,
        subscriptions: vec![spec.config.clone()],
        known: if held > 0 {
            [(spec.config.clone(), held)].into()
        } else {
            BTreeMap::new()
        },
        hostname: None,
        address: None,
        build: Some("loadtest".to_owned()),
        sdk: Some(concat!("hotswap-loadtest/", env!("CARGO_PKG_VERSION")).to_owned()),
        liveops: false,
    });
    ws.send(Message::Binary(protocol::encode(&hello).into()))
        .await?;
    drop(permit);
    let mut heartbeat = tokio::time::interval(Duration::from_secs(3600));
    let mut metrics = tokio::time::interval(Duration::from_secs(3600));
    heartbeat.reset();
    metrics.reset();
    let mut welcomed = false;
    let mut counted = 0;
    let mut seq = 0u64;
    let mut last_report_us = now_us();
    let result = loop {
        tokio::select! {
            frame = ws.next() => {
                let bytes = match frame {
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Close(close))) => {
                        let key = match close {
                            Some(frame) => format!("{} {}", u16::from(frame.code), frame.reason),
                            None => "none".to_owned(),
                        };
                        *shared.hub_closes.lock().unwrap().entry(key).or_default() += 1;
                        break Ok(None);
                    }
                    None => break Ok(None),
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => break Err(error.into()),
                };
                let handled = now_us();
                let received = ws.get_ref().received_us().min(handled);
                let unstamped = ws.get_ref().unstamped_reads();
                shared.unstamped_reads.fetch_add(unstamped - counted, Relaxed);
                counted = unstamped;
                let Ok(frame) = rmp_serde::from_slice::<Frame>(&bytes) else {
                    *shared.hub_errors.lock().unwrap().entry("undecodable".into()).or_default() += 1;
                    continue;
                };
                match frame.kind.as_str() {
                    "welcome" => {
                        welcomed = true;
                        shared.connected.fetch_add(1, Relaxed);
                        shared.welcomes.fetch_add(1, Relaxed);
                        shared.welcomed_us[index].store(received, Relaxed);
                        let beat = Duration::from_millis(frame.heartbeat_ms.unwrap_or(10_000).max(100));
                        let every = if spec.metrics_ms > 0 { spec.metrics_ms } else { frame.metrics_ms.unwrap_or(10_000) };
                        heartbeat = tokio::time::interval(beat);
                        heartbeat.reset();
                        // Spread reports over the interval.
                        let every = Duration::from_millis(every.max(100));
                        let offset = Duration::from_micros(rng.next_u64() % every.as_micros() as u64);
                        metrics = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
                        last_report_us = handled;
                    }
                    "snapshot" | "delta" => {
                        let (Some(config), Some(revision)) = (frame.config, frame.revision) else { continue };
                        let held = shared.revisions[index].load(Relaxed);
                        if frame.kind == "delta" && frame.base_revision != Some(held) {
                            shared.out_of_order.fetch_add(1, Relaxed);
                            shared.resyncs.fetch_add(1, Relaxed);
                            ws.send(Message::Binary(protocol::encode(&ServerMessage::Resync { config }).into())).await?;
                            continue;
                        }
                        shared.revisions[index].store(revision, Relaxed);
                        shared.received_us[index].store(received, Relaxed);
                        ws.send(applied(config, revision, handled)).await?;
                        let acked = now_us();
                        shared.deliveries.lock().unwrap().push(Delivery {
                            server: global as u32,
                            revision,
                            sent_at_ms: frame.sent_at_ms.unwrap_or(0),
                            received_us: received,
                            handled_us: handled,
                            acked_us: acked,
                        });
                    }
                    "error" => {
                        let code = frame.code.unwrap_or_else(|| "unknown".into());
                        *shared.hub_errors.lock().unwrap().entry(code).or_default() += 1;
                    }
                    "reconnect" => {
                        let after = Duration::from_millis(frame.retry_after_ms.unwrap_or(1000));
                        shared.told_us[index].store(received, Relaxed);
                        shared.asked_for_us[index].store(received + after.as_micros() as u64, Relaxed);
                        let _ = ws.close(None).await;
                        break Ok(Some(after));
                    }
                    _ => {}
                }
            }
            _ = heartbeat.tick(), if welcomed => {
                let beat = ServerMessage::Heartbeat {
                    players: spec.model.players_per_server,
                    status: Health::Healthy,
                    load: Some(0.5),
                };
                ws.send(Message::Binary(protocol::encode(&beat).into())).await?;
            }
            _ = metrics.tick(), if welcomed => {
                let now = now_us();
                let window_ms = (now.saturating_sub(last_report_us) / 1000).clamp(1, 3_600_000);
                last_report_us = now;
                if !shared.metrics_on.load(Relaxed) {
                    // Players not reported are not carried into the next window.
                    continue;
                }
                let held = shared.revisions[index].load(Relaxed);
                let factor = if held == shared.regress_revision.load(Relaxed) {
                    f64::from_bits(shared.regress_factor_bits.load(Relaxed))
                } else {
                    1.0
                };
                seq += 1;
                let report = spec.model.report(rng, seq, window_ms, factor);
                ws.send(Message::Binary(protocol::encode(&ServerMessage::Metrics(Box::new(report))).into())).await?;
                shared.metrics_sent.fetch_add(1, Relaxed);
            }
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                break Ok(None);
            }
        }
    };
    if welcomed {
        shared.connected.fetch_sub(1, Relaxed);
        shared.disconnects.fetch_add(1, Relaxed);
    }
    result
}
