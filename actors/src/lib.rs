//! HotSwap's actors and connection state.
//!
//! **Architecture invariant:** only this crate holds connection state. The
//! hub's decisions (what a server should run, which frame to send) come in
//! through the [`SessionHost`] trait, so the actor layer could move to plain
//! tokio tasks without touching the hub.
//!
//! # Layout
//! - `bucket.rs`: a token bucket (a session's metrics and resyncs).
//! - `clock.rs`: [`Clock`], the wall clock live ops read: the system's,
//!   which tests may move (sleepers wake on a move).
//! - `gate.rs`: [`SessionGate`], admission of sockets (caps in all and per
//!   API key, from the upgrade on) and every open socket of a key, so a
//!   revocation closes them whether they said `hello` or not.
//! - `deployment.rs`: the deployment actor: a task with bounded command and
//!   event mailboxes and a tick, driving the hub's [`DeploymentDriver`].
//! - `live_event.rs`: the live-event actor: a task with a bounded mailbox
//!   that sleeps until its event's next instant, driving the hub's
//!   [`LiveEventDriver`].
//! - `outbox.rs`: [`Outbox`], a session's bounded queue of encoded frames,
//!   drained by the socket's writer.
//! - `fanout.rs`: [`Fanout`], one frame queued to many sessions and woken
//!   per worker thread.
//! - `registry.rs`: [`Registry`], every known game server, indexed by
//!   subscription for fan-out, with the outboxes of the connected ones.
//! - `session.rs`: [`ServerSession`], one task per connected socket (an
//!   actor without a mailbox: the hub reaches it through its outbox).
//! - `due.rs`: fan-out writes still due on a worker, which its reads wait
//!   behind.
//! - `reactor/`: a worker thread's own epoll set for the plain-TCP
//!   sockets it took, read in batches when busy (one wake for many frames).
//! - `socket.rs`: a socket the hub took from the HTTP server: its reader
//!   (WebSocket frames, polled by the session's task) and its writer task
//!   (the outbox, straight to the stream).
//! - `wsframe.rs`: RFC 6455 client frames, parsed and bounded.

pub mod bucket;
pub mod clock;
pub mod deployment;
mod due;
pub mod fanout;
pub mod gate;
pub mod live_event;
pub mod outbox;
pub mod reactor;
pub mod registry;
pub mod session;
pub mod socket;
mod wsframe;

pub use clock::Clock;
pub use deployment::{DeploymentDriver, DeploymentHandle, Flow, Stopped};
pub use fanout::Fanout;
pub use gate::{GateLimits, Refused, SessionGate, SessionPermit};
pub use live_event::{LiveEventDriver, LiveEventHandle};
pub use outbox::{CloseReason, Outbox, OutboxReceiver, PushError};
pub use registry::{ConnectedTarget, Registry, ServerFilter, ServerRecord};
pub use session::{
    FrameError, Hello, HelloOutcome, KeyScope, Refusal, ServerSession, SessionHost, SessionSettings,
};
