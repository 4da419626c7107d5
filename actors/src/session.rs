//! `ServerSession`: one task per connected game server, on the worker
//! thread that took its socket. It polls the socket's reader (`socket.rs`;
//! MessagePack frames), enforces the protocol (`hello` first within 5 s,
//! binary frames only, known types, size limit, heartbeats) and hands
//! every decision to the hub through [`SessionHost`]. Frames go out through
//! its [`Outbox`].
//!
//! The task is a plain future, not an actix actor: nothing else sends it
//! messages (the hub reaches a server through its outbox), so it keeps no
//! mailbox to look at on every wake. Its timers (the hello's deadline, the
//! heartbeat, resyncs waiting their turn) share one [`Sleep`], looked at
//! only when one of them is due: a wake for an ack reads the socket, hands
//! the frame over, and touches nothing else.

use crate::{
    bucket::TokenBucket,
    gate::SessionPermit,
    outbox::{CloseReason, Outbox, PushError},
    socket::{Incoming, ReadError},
};
use bytes::Bytes;
use futures_util::{
    FutureExt, Stream,
    future::{BoxFuture, CatchUnwind},
};
use hotswap_client::protocol::{self, Health, MetricsReport, ServerMessage, close_code};
use std::{
    collections::BTreeSet,
    future::Future,
    panic::AssertUnwindSafe,
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Sleep};

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

/// Messages a session handles in one wake before it lets the worker's
/// other tasks run (it is woken again at once).
const MESSAGES_PER_WAKE: usize = 64;

/// The runtime's timers fire on millisecond ticks, at or after their
/// deadline: the session's timer is looked at once this close to it.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// Runs a host call; `None` if it panicked (a bug): the caller ends only
/// this session (1011), logged, instead of the worker thread every other
/// session on it shares.
fn caught<R>(call: impl FnOnce() -> R) -> Option<R> {
    std::panic::catch_unwind(AssertUnwindSafe(call)).ok()
}

/// A host call's answer, awaited by the session; a panic in it ends only
/// this session.
type Answer<T> = CatchUnwind<AssertUnwindSafe<BoxFuture<'static, T>>>;

pub struct ServerSession {
    session_id: String,
    key: KeyScope,
    /// This socket's place at the gate, freed when the session is dropped.
    _permit: SessionPermit,
    /// Metrics frames the session may still send now.
    metrics_budget: TokenBucket,
    /// Resyncs the session may have answered now, those waiting, and when
    /// the next of them may be answered.
    resync_budget: TokenBucket,
    resyncs_waiting: BTreeSet<String>,
    resync_at: Option<Instant>,
    /// Resyncs being answered by the hub.
    resyncs: Vec<Answer<Result<Option<Bytes>, FrameError>>>,
    outbox: Outbox,
    host: Arc<dyn SessionHost>,
    settings: SessionSettings,
    /// Set once the hub accepted the `hello`.
    server_id: Option<std::rc::Rc<str>>,
    hello_received: bool,
    /// The `hello`'s server id and the hub's answer to it, while awaited:
    /// nothing else is handled meanwhile.
    hello: Option<(String, Answer<Result<HelloOutcome, Refusal>>)>,
    /// Until a `hello` came: when the session is closed for want of one.
    hello_deadline: Option<Instant>,
    next_beat: Instant,
    /// The shared timer is registered for the earliest of the deadlines
    /// above; cleared when one may have moved before it.
    timer_armed: bool,
    /// A future to await was added: it is polled before the socket's next
    /// message, so that it can wake the session.
    unpolled: bool,
    last_heard: Instant,
    stale: bool,
    closed_by_hub: Option<CloseReason>,
    /// The session is over (either side closed it, or the socket ended).
    stopped: bool,
}

impl Drop for ServerSession {
    fn drop(&mut self) {
        // Ended without reaching the end of `run` (its task dropped when the
        // worker stopped, or a panic): the hub still learns it is gone.
        self.tell_closed();
    }
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
    /// Starts the session's task on the current worker thread, reading
    /// `stream` (the socket's reader).
    pub fn start(
        session_id: String,
        key: KeyScope,
        permit: SessionPermit,
        outbox: Outbox,
        stream: impl Stream<Item = Result<Incoming, ReadError>> + 'static,
        host: Arc<dyn SessionHost>,
        settings: SessionSettings,
    ) {
        let now = Instant::now();
        // A zero interval would make the timer due for ever.
        let settings = SessionSettings {
            heartbeat: settings
                .heartbeat
                .max(Duration::from_millis(MIN_HEARTBEAT_MS)),
            ..settings
        };
        let session = ServerSession {
            session_id,
            key,
            _permit: permit,
            metrics_budget: TokenBucket::new(
                METRICS_BURST,
                METRICS_PER_INTERVAL / settings.metrics_interval.as_secs_f64().max(0.001),
            ),
            resync_budget: TokenBucket::new(RESYNC_BURST, RESYNCS_PER_SECOND),
            resyncs_waiting: BTreeSet::new(),
            resync_at: None,
            resyncs: Vec::new(),
            outbox,
            host,
            server_id: None,
            hello_received: false,
            hello: None,
            hello_deadline: Some(now + settings.hello_timeout),
            next_beat: now + settings.heartbeat,
            settings,
            timer_armed: false,
            unpolled: false,
            last_heard: now,
            stale: false,
            closed_by_hub: None,
            stopped: false,
        };
        tokio::task::spawn_local(session.run(stream));
    }

    /// The session, until it is over; then the hub is told.
    async fn run(mut self, stream: impl Stream<Item = Result<Incoming, ReadError>>) {
        let mut stream = pin!(stream);
        let mut timer = pin!(tokio::time::sleep_until(self.next_due()));
        std::future::poll_fn(|cx| self.poll_session(cx, stream.as_mut(), timer.as_mut())).await;
        self.tell_closed();
    }

    /// Tells the hub the session is over, once (at its end, or when its
    /// task is dropped or panicked).
    fn tell_closed(&mut self) {
        let Some(server_id) = self.server_id.take() else {
            return;
        };
        let reason = self
            .closed_by_hub
            .take()
            .or_else(|| self.outbox.close_reason());
        self.host
            .closed(&server_id, &self.session_id, self.stale, reason);
    }

    /// One wake: the `hello`'s answer while it is awaited, then the
    /// resyncs' answers, the socket's messages (at most
    /// [`MESSAGES_PER_WAKE`]), and the timer when something is due — after
    /// the reads, as actix polled them: a heartbeat already in the socket
    /// counts before the silence check.
    fn poll_session<S>(
        &mut self,
        cx: &mut Context<'_>,
        mut stream: Pin<&mut S>,
        mut timer: Pin<&mut Sleep>,
    ) -> Poll<()>
    where
        S: Stream<Item = Result<Incoming, ReadError>>,
    {
        let mut handled = 0;
        loop {
            if self.stopped {
                return Poll::Ready(());
            }
            self.unpolled = false;
            if let Some((_, answer)) = self.hello.as_mut() {
                let Poll::Ready(outcome) = Pin::new(answer).poll(cx) else {
                    return Poll::Pending;
                };
                let (id, _) = self.hello.take().expect("awaited");
                self.hello_answered(id, outcome);
                continue;
            }
            if !self.resyncs.is_empty() {
                self.poll_resyncs(cx);
                if self.stopped {
                    continue;
                }
            }
            let now = Instant::now();
            let mut drained = false;
            while handled < MESSAGES_PER_WAKE {
                match stream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(item)) => {
                        handled += 1;
                        self.last_heard = now;
                        self.handle(item);
                        if self.stopped || self.unpolled {
                            break;
                        }
                    }
                    // The server closed, or the writer stopped.
                    Poll::Ready(None) => self.stopped = true,
                    Poll::Pending => drained = true,
                }
                if self.stopped || drained {
                    break;
                }
            }
            if self.stopped {
                continue;
            }
            self.poll_timer(cx, now, timer.as_mut());
            if self.stopped || self.unpolled {
                continue;
            }
            if !drained {
                // The budget is spent: the worker's other tasks go first.
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
    }

    /// The earliest of the session's deadlines.
    fn next_due(&self) -> Instant {
        [self.hello_deadline, self.resync_at]
            .into_iter()
            .flatten()
            .fold(self.next_beat, Instant::min)
    }

    /// Runs what is due, then registers the timer for what comes next.
    /// While it is registered and not nearly due it is not looked at: it
    /// wakes the session when it fires.
    fn poll_timer(&mut self, cx: &mut Context<'_>, mut now: Instant, mut timer: Pin<&mut Sleep>) {
        if self.timer_armed && now + TIMER_SLACK < timer.deadline() {
            return;
        }
        loop {
            if self.hello_deadline.is_some_and(|at| now >= at) {
                self.hello_deadline = None;
                if !self.hello_received {
                    return self.close(
                        close_code::HELLO_TIMEOUT,
                        "no hello within the time allowed",
                    );
                }
            }
            if now >= self.next_beat {
                self.next_beat = now + self.settings.heartbeat;
                self.beat(now);
                if self.stopped {
                    return;
                }
            }
            if self.resync_at.is_some_and(|at| now >= at) {
                self.resync_at = None;
                self.resync_turn();
                if self.stopped {
                    return;
                }
            }
            let next = self.next_due();
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
            match timer.as_mut().poll(cx) {
                Poll::Pending => {
                    self.timer_armed = true;
                    return;
                }
                // Fired (its deadline rounded to the timer's tick): what
                // was due then is due now.
                Poll::Ready(()) => now = Instant::now().max(next),
            }
        }
    }

    fn handle(&mut self, item: Result<Incoming, ReadError>) {
        match item {
            Ok(Incoming::Binary(frame)) => self.on_frame(frame),
            Ok(Incoming::Text) => self.close(
                close_code::UNSUPPORTED_DATA,
                "text frames are not accepted: send MessagePack in binary frames",
            ),
            Ok(Incoming::Ping(payload)) => self.outbox.pong(payload),
            Ok(Incoming::Pong) => {}
            Ok(Incoming::Close(_)) => self.stopped = true,
            Err(ReadError::Overflow) => {
                let limit = self.settings.max_frame_bytes;
                self.close(
                    close_code::TOO_BIG,
                    format!("frame larger than {limit} bytes"),
                )
            }
            Err(ReadError::Protocol(why)) => self.close(close_code::PROTOCOL_ERROR, why),
            // The connection failed: nobody is left to tell.
            Err(ReadError::Io(error)) => {
                tracing::debug!(session = %self.session_id, server = ?self.server_id, %error, "the socket failed");
                self.stopped = true;
            }
        }
    }

    fn close(&mut self, code: u16, reason: impl Into<String>) {
        let reason = CloseReason::new(code, reason);
        tracing::debug!(session = %self.session_id, server = ?self.server_id, code, reason = %reason.description, "closing session");
        self.closed_by_hub.get_or_insert(reason.clone());
        self.outbox.close(reason);
        self.stopped = true;
    }

    fn push(&mut self, frame: Bytes) {
        if self.outbox.push(frame) == Err(PushError::Full) {
            self.close(
                close_code::SLOW_CONSUMER,
                "the server did not read its frames fast enough",
            );
        }
    }

    /// Hands the `hello` to the hub; nothing else from this socket is
    /// handled until it answers.
    fn start_hello(&mut self, message: protocol::Hello) {
        self.hello_received = true;
        self.hello_deadline = None;
        let id = message.server_id.clone();
        let hello = Hello {
            session_id: self.session_id.clone(),
            key: self.key.clone(),
            message,
        };
        let answer = AssertUnwindSafe(self.host.hello(hello, self.outbox.clone())).catch_unwind();
        self.hello = Some((id, answer));
        self.unpolled = true;
    }

    fn hello_answered(
        &mut self,
        id: String,
        outcome: std::thread::Result<Result<HelloOutcome, Refusal>>,
    ) {
        match outcome {
            Ok(Ok(outcome)) => {
                self.server_id = Some(id.into());
                for frame in outcome.frames {
                    self.push(frame);
                }
            }
            Ok(Err(refusal)) => self.close(refusal.code, refusal.description),
            Err(_) => self.panicked("hello"),
        }
    }

    fn on_frame(&mut self, frame: Bytes) {
        let message = match protocol::decode_server_message(&frame) {
            Ok(message) => message,
            Err(error) => {
                return self.close(close_code::PROTOCOL_ERROR, error.to_string());
            }
        };
        let Some(server_id) = self.server_id.clone() else {
            return match message {
                ServerMessage::Hello(hello) if !self.hello_received => self.start_hello(hello),
                ServerMessage::Hello(_) => {
                    self.close(close_code::POLICY_VIOLATION, "hello was already received")
                }
                _ => self.close(
                    close_code::POLICY_VIOLATION,
                    "the first frame must be hello",
                ),
            };
        };
        match message {
            ServerMessage::Hello(_) => {
                self.close(close_code::POLICY_VIOLATION, "hello was already received")
            }
            ServerMessage::Heartbeat {
                players,
                status,
                load,
            } => {
                if caught(|| self.host.heartbeat(&server_id, players, status, load)).is_none() {
                    self.panicked("heartbeat");
                }
            }
            ServerMessage::Ack(ack) => match caught(|| self.host.ack(&server_id, ack)) {
                Some(Ok(())) => {}
                Some(Err(error)) => self.push(error.encode()),
                None => self.panicked("ack"),
            },
            ServerMessage::Resync { config } => self.resync(config),
            ServerMessage::Metrics(report) => {
                let answer = if self.metrics_budget.take() {
                    match caught(|| self.host.metrics(&server_id, *report)) {
                        Some(answer) => answer,
                        None => return self.panicked("metrics"),
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
                    self.push(error.encode());
                }
            }
        }
    }

    /// Answers a `resync` now if the session's budget allows, else when it
    /// does (one answer per config waiting).
    fn resync(&mut self, config: String) {
        if self.resyncs_waiting.contains(&config) {
            return; // the answer on its way will do
        }
        if self.resyncs_waiting.is_empty() && self.resync_budget.take() {
            return self.answer_resync(config);
        }
        if self.resyncs_waiting.len() >= MAX_RESYNCS_WAITING {
            let error = FrameError::new(
                "rate_limited",
                format!("at most {MAX_RESYNCS_WAITING} resyncs may wait; this one was dropped"),
            );
            return self.push(error.encode());
        }
        self.resyncs_waiting.insert(config);
        self.schedule_resyncs();
    }

    fn schedule_resyncs(&mut self) {
        if self.resync_at.is_some() {
            return;
        }
        self.resync_at = Some(Instant::now() + self.resync_budget.next_in());
        // The timer may be set for later: it is set again before the next read.
        self.timer_armed = false;
    }

    /// The waiting resyncs' turn: as many as the budget allows now.
    fn resync_turn(&mut self) {
        while !self.resyncs_waiting.is_empty() && self.resync_budget.take() {
            if let Some(config) = self.resyncs_waiting.pop_first() {
                self.answer_resync(config);
            }
        }
        if !self.resyncs_waiting.is_empty() {
            self.schedule_resyncs();
        }
    }

    fn answer_resync(&mut self, config: String) {
        let Some(server_id) = self.server_id.clone() else {
            return;
        };
        // A panic in the hub's answer ends this session, not the worker.
        let answer = AssertUnwindSafe(self.host.resync(&server_id, &config)).catch_unwind();
        self.resyncs.push(answer);
        self.unpolled = true;
    }

    /// Sends the resync answers that are ready.
    fn poll_resyncs(&mut self, cx: &mut Context<'_>) {
        let mut i = 0;
        while i < self.resyncs.len() && !self.stopped {
            let Poll::Ready(answer) = Pin::new(&mut self.resyncs[i]).poll(cx) else {
                i += 1;
                continue;
            };
            drop(self.resyncs.swap_remove(i));
            match answer {
                Ok(Ok(Some(frame))) => self.push(frame),
                Ok(Ok(None)) => {}
                Ok(Err(error)) => self.push(error.encode()),
                Err(_) => self.panicked("resync"),
            }
        }
    }

    /// Each heartbeat interval: closes a session silent for 3 of them (and
    /// the most a read may wait behind a push's writes, `due.rs`: a short
    /// interval must not take a held pong for silence), else pings it.
    fn beat(&mut self, now: Instant) {
        let silent = now.saturating_duration_since(self.last_heard);
        if silent > self.settings.heartbeat * 3 + crate::due::MAX_READ_HOLD {
            self.stale = true;
            return self.close(
                close_code::HEARTBEAT_TIMEOUT,
                "nothing heard for 3 heartbeat intervals",
            );
        }
        if self.outbox.ping() == Err(PushError::Full) {
            self.close(
                close_code::SLOW_CONSUMER,
                "the server did not read its frames fast enough",
            );
        }
    }

    fn panicked(&mut self, what: &str) {
        tracing::error!(session = %self.session_id, server = ?self.server_id, what, "the hub panicked on a frame; closing this session");
        self.close(close_code::INTERNAL_ERROR, "the hub failed on this frame");
    }
}
