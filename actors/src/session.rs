//! `ServerSession`: one actix actor per connected game server. It reads the
//! socket (MessagePack frames), enforces the protocol (`hello` first within
//! 5 s, binary frames only, known types, size limit, heartbeats) and hands
//! every decision to the hub through [`SessionHost`]. Frames go out through
//! its [`Outbox`].

use crate::outbox::{CloseReason, Outbox, PushError};
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Running, StreamHandler, WrapFuture,
};
use actix_ws::{AggregatedMessage, ProtocolError};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use hotswap_client::protocol::{self, Health, MetricsReport, ServerMessage, close_code};
use std::{
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
    fn ack(&self, server_id: &str, ack: protocol::Ack);
    /// A full snapshot of `config` for this server, if it should have one.
    fn resync(&self, server_id: &str, config: &str) -> BoxFuture<'static, Option<Bytes>>;
    /// Validates and counts a metrics report; `Err` is sent back as an `error` frame.
    fn metrics(&self, server_id: &str, report: MetricsReport) -> Result<(), String>;
    /// The session is over: `reason` is why the hub closed it (`None` when
    /// the server went away); `stale` when it was closed for silence.
    fn closed(&self, server_id: &str, session_id: &str, stale: bool, reason: Option<CloseReason>);
}

pub struct ServerSession {
    session_id: String,
    key: KeyScope,
    outbox: Outbox,
    host: Arc<dyn SessionHost>,
    settings: SessionSettings,
    /// Set once the hub accepted the `hello`.
    server_id: Option<String>,
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
    /// Starts the actor on the current arbiter, reading `stream`.
    pub fn start(
        session_id: String,
        key: KeyScope,
        outbox: Outbox,
        stream: actix_ws::AggregatedMessageStream,
        host: Arc<dyn SessionHost>,
        settings: SessionSettings,
    ) {
        ServerSession::create(move |ctx| {
            ctx.add_stream(stream);
            ServerSession {
                session_id,
                key,
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
        let future = self.host.hello(hello, self.outbox.clone());
        ctx.wait(
            future
                .into_actor(self)
                .map(move |outcome, actor, ctx| match outcome {
                    Ok(outcome) => {
                        actor.server_id = Some(id);
                        for frame in outcome.frames {
                            actor.push(ctx, frame);
                        }
                    }
                    Err(refusal) => actor.close(ctx, refusal.code, refusal.description),
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
            } => self.host.heartbeat(&server_id, players, status, load),
            ServerMessage::Ack(ack) => self.host.ack(&server_id, ack),
            ServerMessage::Resync { config } => {
                let future = self.host.resync(&server_id, &config);
                ctx.spawn(future.into_actor(self).map(|frame, actor, ctx| {
                    if let Some(frame) = frame {
                        actor.push(ctx, frame);
                    }
                }));
            }
            ServerMessage::Metrics(report) => {
                if let Err(why) = self.host.metrics(&server_id, *report) {
                    let error = protocol::encode(&protocol::HubMessage::Error {
                        code: "invalid_metrics".into(),
                        message: why,
                    });
                    self.push(ctx, Bytes::from(error));
                }
            }
        }
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
        ctx.run_interval(self.settings.heartbeat, |actor, ctx| {
            if actor.last_heard.elapsed() > actor.settings.heartbeat * 3 {
                actor.stale = true;
                return actor.close(
                    ctx,
                    close_code::HEARTBEAT_TIMEOUT,
                    "nothing heard for 3 heartbeat intervals",
                );
            }
            if actor.outbox.ping() == Err(PushError::Full) {
                actor.close(
                    ctx,
                    close_code::SLOW_CONSUMER,
                    "the server did not read its frames fast enough",
                );
            }
        });
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

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for ServerSession {
    fn handle(&mut self, item: Result<AggregatedMessage, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(AggregatedMessage::Binary(frame)) => self.on_frame(ctx, frame),
            Ok(AggregatedMessage::Text(_)) => self.close(
                ctx,
                close_code::UNSUPPORTED_DATA,
                "text frames are not accepted: send MessagePack in binary frames",
            ),
            Ok(AggregatedMessage::Ping(payload)) => self.outbox.pong(payload),
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(_)) => ctx.stop(),
            Err(ProtocolError::Overflow) => {
                let limit = self.settings.max_frame_bytes;
                self.close(
                    ctx,
                    close_code::TOO_BIG,
                    format!("frame larger than {limit} bytes"),
                )
            }
            Err(error) => self.close(ctx, close_code::PROTOCOL_ERROR, error.to_string()),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
