//! `ServerSession`: one actix actor per connected game server. It polls the
//! socket's reader (`socket.rs`; MessagePack frames), enforces the protocol (`hello` first within
//! 5 s, binary frames only, known types, size limit, heartbeats) and hands
//! every decision to the hub through [`SessionHost`]. Frames go out through
//! its [`Outbox`].

use crate::{
    bucket::TokenBucket,
    gate::SessionPermit,
    outbox::{CloseReason, Outbox, PushError},
    socket::{Incoming, ReadError},
};
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Running, StreamHandler, WrapFuture,
};
use bytes::Bytes;
use futures_util::{FutureExt, Stream, future::BoxFuture};
use hotswap_client::protocol::{self, Health, MetricsReport, ServerMessage, close_code};
use std::{
    collections::BTreeSet,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

/// Timing and limits of every session.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub heartbeat: Duration,
    pub hello_timeout: Duration,
    /// Frames a session may have queued before it counts as not reading.
    pub queue_capacity: usize,
    pub max_frame_bytes: usize,
    /// The metrics interval told to servers: a session may send
    /// [`METRICS_BURST`] frames at once and [`METRICS_PER_INTERVAL`] per
    /// interval over time; the rest are answered `rate_limited` and dropped.
    pub metrics_interval: Duration,
}

/// Metrics frames a session may send at once.
pub const METRICS_BURST: f64 = 4.0;
/// Metrics frames a session may send per metrics interval, over time.
pub const METRICS_PER_INTERVAL: f64 = 2.0;
/// Resyncs a session has answered at once; the next ones wait their turn,
/// one per config, answered [`RESYNCS_PER_SECOND`] (a snapshot may be
/// a megabyte: a few bytes of `resync` must not buy a stream of them).
pub const RESYNC_BURST: f64 = 16.0;
pub const RESYNCS_PER_SECOND: f64 = 1.0;
/// Configs whose resync may wait at once (a `hello` subscribes to at most
/// 256); past it a resync is answered `rate_limited` and dropped.
const MAX_RESYNCS_WAITING: usize = 256;

/// An `error` frame's content: a problem the session survives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
}

impl FrameError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn encode(&self) -> Bytes {
        Bytes::from(protocol::encode(&protocol::HubMessage::Error {
            code: self.code.into(),
            message: self.message.clone(),
        }))
    }
}

/// The `hello` of a session, with the session's id and its API key's scope.
#[derive(Debug, Clone)]
pub struct Hello {
    pub session_id: String,
    pub key: KeyScope,
    pub message: protocol::Hello,
}

/// The API key a session authenticated with, and what it allows.
#[derive(Debug, Clone)]
pub struct KeyScope {
    pub key_id: String,
    pub environments: Vec<String>,
    pub regions: Vec<String>,
}

/// What to send after a `hello`: the `welcome`, then one frame per subscription that needs one.
#[derive(Debug)]
pub struct HelloOutcome {
    pub frames: Vec<Bytes>,
}

/// Why the hub closes a session (a `hello` it refuses, a revoked key...).
pub type Refusal = CloseReason;

/// The hub, as a session sees it.
pub trait SessionHost: Send + Sync + 'static {
    /// Validates and registers a `hello` (the session's outbox is given so
    /// the registry can reach it), and says what to send.
    fn hello(
        &self,
        hello: Hello,
        outbox: Outbox,
    ) -> BoxFuture<'static, Result<HelloOutcome, Refusal>>;
    fn heartbeat(&self, server_id: &str, players: u32, status: Health, load: Option<f64>);
    /// Records an ack; `Err` (a config the session did not subscribe to,
    /// say) is sent back as an `error` frame and changes nothing.
    fn ack(&self, server_id: &str, ack: protocol::Ack) -> Result<(), FrameError>;
    /// A full snapshot of `config` for this server, if it should have one.
    fn resync(
        &self,
        server_id: &str,
        config: &str,
    ) -> BoxFuture<'static, Result<Option<Bytes>, FrameError>>;
    /// Validates and counts a metrics report; `Err` is sent back as an `error` frame.
    fn metrics(&self, server_id: &str, report: MetricsReport) -> Result<(), FrameError>;
    /// The session is over: `reason` is why the hub closed it (`None` when
    /// the server went away); `stale` when it was closed for silence.
    fn closed(&self, server_id: &str, session_id: &str, stale: bool, reason: Option<CloseReason>);
}

/// The shortest heartbeat interval a hub keeps (and tells servers in its
/// `welcome`), ms.
pub const MIN_HEARTBEAT_MS: u64 = 50;

pub struct ServerSession {
    session_id: String,
    key: KeyScope,
    /// This socket's place at the gate, freed when the actor is dropped.
    _permit: SessionPermit,
    /// Metrics frames the session may still send now.
    metrics_budget: TokenBucket,
    /// Resyncs the session may have answered now, and those waiting.
    resync_budget: TokenBucket,
    resyncs_waiting: BTreeSet<String>,
    resync_timer_set: bool,
    outbox: Outbox,
    host: Arc<dyn SessionHost>,
    settings: SessionSettings,
    /// Set once the hub accepted the `hello`.
    server_id: Option<std::rc::Rc<str>>,
    hello_received: bool,
    last_heard: Instant,
    stale: bool,
    closed_by_hub: Option<CloseReason>,
}

impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession")
            .field("session_id", &self.session_id)
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

impl ServerSession {
    /// Starts the actor on the current arbiter, reading `stream` (the
    /// socket's reader, polled by the actor's own task).
    pub fn start(
        session_id: String,
        key: KeyScope,
        permit: SessionPermit,
        outbox: Outbox,
        stream: impl Stream<Item = Result<Incoming, ReadError>> + 'static,
        host: Arc<dyn SessionHost>,
        settings: SessionSettings,
    ) {
        ServerSession::create(move |ctx| {
            ctx.add_stream(stream);
            ServerSession {
                session_id,
                key,
                _permit: permit,
                metrics_budget: TokenBucket::new(
                    METRICS_BURST,
                    METRICS_PER_INTERVAL / settings.metrics_interval.as_secs_f64().max(0.001),
                ),
                resync_budget: TokenBucket::new(RESYNC_BURST, RESYNCS_PER_SECOND),
                resyncs_waiting: BTreeSet::new(),
                resync_timer_set: false,
                outbox,
                host,
                settings,
                server_id: None,
                hello_received: false,
                last_heard: Instant::now(),
                stale: false,
                closed_by_hub: None,
            }
        });
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: u16, reason: impl Into<String>) {
        let reason = CloseReason::new(code, reason);
        tracing::debug!(session = %self.session_id, server = ?self.server_id, code, reason = %reason.description, "closing session");
        self.closed_by_hub.get_or_insert(reason.clone());
        self.outbox.close(reason);
        ctx.stop();
    }

    fn push(&mut self, ctx: &mut Context<Self>, frame: Bytes) {
        if self.outbox.push(frame) == Err(PushError::Full) {
            self.close(
                ctx,
                close_code::SLOW_CONSUMER,
                "the server did not read its frames fast enough",
            );
        }
    }

    /// Hands the `hello` to the hub; nothing else from this socket is
    /// handled until it answers.
    fn start_hello(&mut self, ctx: &mut Context<Self>, message: protocol::Hello) {
        self.hello_received = true;
        let id = message.server_id.clone();
        let hello = Hello {
            session_id: self.session_id.clone(),
            key: self.key.clone(),
            message,
        };
        let future = AssertUnwindSafe(self.host.hello(hello, self.outbox.clone())).catch_unwind();
        ctx.wait(
            future
                .into_actor(self)
                .map(move |outcome, actor, ctx| match outcome {
                    Ok(Ok(outcome)) => {
                        actor.server_id = Some(id.into());
                        for frame in outcome.frames {
                            actor.push(ctx, frame);
                        }
                    }
                    Ok(Err(refusal)) => actor.close(ctx, refusal.code, refusal.description),
                    Err(_) => actor.panicked(ctx, "hello"),
                }),
        );
    }

    fn on_frame(&mut self, ctx: &mut Context<Self>, frame: Bytes) {
        let message = match protocol::decode_server_message(&frame) {
            Ok(message) => message,
            Err(error) => {
                return self.close(ctx, close_code::PROTOCOL_ERROR, error.to_string());
            }
        };
        let Some(server_id) = self.server_id.clone() else {
            return match message {
                ServerMessage::Hello(hello) if !self.hello_received => self.start_hello(ctx, hello),
                ServerMessage::Hello(_) => self.close(
                    ctx,
                    close_code::POLICY_VIOLATION,
                    "hello was already received",
                ),
                _ => self.close(
                    ctx,
                    close_code::POLICY_VIOLATION,
                    "the first frame must be hello",
                ),
            };
        };
        match message {
            ServerMessage::Hello(_) => self.close(
                ctx,
                close_code::POLICY_VIOLATION,
                "hello was already received",
            ),
            ServerMessage::Heartbeat {
                players,
                status,
                load,
            } => {
                let host = self.host.clone();
                self.guarded(ctx, "heartbeat", || {
                    host.heartbeat(&server_id, players, status, load)
                });
            }
            ServerMessage::Ack(ack) => {
                let host = self.host.clone();
                if let Some(Err(error)) = self.guarded(ctx, "ack", || host.ack(&server_id, ack)) {
                    self.push(ctx, error.encode());
                }
            }
            ServerMessage::Resync { config } => self.resync(ctx, config),
            ServerMessage::Metrics(report) => {
                let answer = if self.metrics_budget.take() {
                    let host = self.host.clone();
                    match self.guarded(ctx, "metrics", || host.metrics(&server_id, *report)) {
                        Some(answer) => answer,
                        None => return,
                    }
                } else {
                    Err(FrameError::new(
                        "rate_limited",
                        format!(
                            "at most {METRICS_PER_INTERVAL} metrics frames per metricsMs \
                             ({} ms); this one was dropped",
                            self.settings.metrics_interval.as_millis()
                        ),
                    ))
                };
                if let Err(error) = answer {
                    self.push(ctx, error.encode());
                }
            }
        }
    }

    /// Runs a host call; if it panics (a bug), only this session ends
    /// (1011), logged, instead of the worker thread every other session
    /// on it shares.
    fn guarded<R>(
        &mut self,
        ctx: &mut Context<Self>,
        what: &str,
        call: impl FnOnce() -> R,
    ) -> Option<R> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
            Ok(answer) => Some(answer),
            Err(_) => {
                self.panicked(ctx, what);
                None
            }
        }
    }

    /// Answers a `resync` now if the session's budget allows, else when it
    /// does (one answer per config waiting).
    fn resync(&mut self, ctx: &mut Context<Self>, config: String) {
        if self.resyncs_waiting.contains(&config) {
            return; // the answer on its way will do
        }
        if self.resyncs_waiting.is_empty() && self.resync_budget.take() {
            return self.answer_resync(ctx, config);
        }
        if self.resyncs_waiting.len() >= MAX_RESYNCS_WAITING {
            let error = FrameError::new(
                "rate_limited",
                format!("at most {MAX_RESYNCS_WAITING} resyncs may wait; this one was dropped"),
            );
            return self.push(ctx, error.encode());
        }
        self.resyncs_waiting.insert(config);
        self.schedule_resyncs(ctx);
    }

    fn schedule_resyncs(&mut self, ctx: &mut Context<Self>) {
        if self.resync_timer_set {
            return;
        }
        self.resync_timer_set = true;
        ctx.run_later(self.resync_budget.next_in(), |actor, ctx| {
            actor.resync_timer_set = false;
            while !actor.resyncs_waiting.is_empty() && actor.resync_budget.take() {
                if let Some(config) = actor.resyncs_waiting.pop_first() {
                    actor.answer_resync(ctx, config);
                }
            }
            if !actor.resyncs_waiting.is_empty() {
                actor.schedule_resyncs(ctx);
            }
        });
    }

    fn answer_resync(&mut self, ctx: &mut Context<Self>, config: String) {
        let Some(server_id) = self.server_id.clone() else {
            return;
        };
        // A panic in the hub's answer ends this session, not the worker.
        let future = AssertUnwindSafe(self.host.resync(&server_id, &config)).catch_unwind();
        ctx.spawn(
            future
                .into_actor(self)
                .map(|answer, actor, ctx| match answer {
                    Ok(Ok(Some(frame))) => actor.push(ctx, frame),
                    Ok(Ok(None)) => {}
                    Ok(Err(error)) => actor.push(ctx, error.encode()),
                    Err(_) => actor.panicked(ctx, "resync"),
                }),
        );
    }

    /// Each heartbeat interval: closes a session silent for 3 of them (and
    /// the most a read may wait behind a push's writes, `due.rs`: a short
    /// interval must not take a held pong for silence), else pings it.
    fn beat(&mut self, ctx: &mut Context<Self>) {
        if self.last_heard.elapsed() > self.settings.heartbeat * 3 + crate::due::MAX_READ_HOLD {
            self.stale = true;
            return self.close(
                ctx,
                close_code::HEARTBEAT_TIMEOUT,
                "nothing heard for 3 heartbeat intervals",
            );
        }
        if self.outbox.ping() == Err(PushError::Full) {
            self.close(
                ctx,
                close_code::SLOW_CONSUMER,
                "the server did not read its frames fast enough",
            );
        }
    }

    fn panicked(&mut self, ctx: &mut Context<Self>, what: &str) {
        tracing::error!(session = %self.session_id, server = ?self.server_id, what, "the hub panicked on a frame; closing this session");
        self.close(
            ctx,
            close_code::INTERNAL_ERROR,
            "the hub failed on this frame",
        );
    }
}

impl Actor for ServerSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_later(self.settings.hello_timeout, |actor, ctx| {
            if !actor.hello_received {
                actor.close(
                    ctx,
                    close_code::HELLO_TIMEOUT,
                    "no hello within the time allowed",
                );
            }
        });
        ctx.run_interval(self.settings.heartbeat, Self::beat);
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if let Some(server_id) = &self.server_id {
            let reason = self
                .closed_by_hub
                .take()
                .or_else(|| self.outbox.close_reason());
            self.host
                .closed(server_id, &self.session_id, self.stale, reason);
        }
        Running::Stop
    }
}

impl StreamHandler<Result<Incoming, ReadError>> for ServerSession {
    fn handle(&mut self, item: Result<Incoming, ReadError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(Incoming::Binary(frame)) => self.on_frame(ctx, frame),
            Ok(Incoming::Text) => self.close(
                ctx,
                close_code::UNSUPPORTED_DATA,
                "text frames are not accepted: send MessagePack in binary frames",
            ),
            Ok(Incoming::Ping(payload)) => self.outbox.pong(payload),
            Ok(Incoming::Pong) => {}
            Ok(Incoming::Close(_)) => ctx.stop(),
            Err(ReadError::Overflow) => {
                let limit = self.settings.max_frame_bytes;
                self.close(
                    ctx,
                    close_code::TOO_BIG,
                    format!("frame larger than {limit} bytes"),
                )
            }
            Err(ReadError::Protocol(why)) => self.close(ctx, close_code::PROTOCOL_ERROR, why),
            // The connection failed: nobody is left to tell.
            Err(ReadError::Io(error)) => {
                tracing::debug!(session = %self.session_id, server = ?self.server_id, %error, "the socket failed");
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
