//! A session's outgoing side: a bounded queue of already-encoded frames
//! (`Bytes`, shared between every session a frame goes to), and one task
//! that writes the queue to the socket. A full queue means the server is not
//! reading: the push fails and the caller closes the session, so a slow
//! server never delays the others or grows the hub's memory.

use bytes::Bytes;
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use tokio::sync::{mpsc, watch};

/// Why the hub closes a socket: a WebSocket close code and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub description: String,
}

impl CloseReason {
    pub fn new(code: u16, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is full: the server is not keeping up.
    Full,
    /// The session is gone.
    Closed,
}

/// The receiving side of an [`Outbox`].
#[derive(Debug)]
pub struct OutboxReceiver {
    queue: mpsc::Receiver<Outgoing>,
    closed: watch::Receiver<Option<CloseReason>>,
}

impl OutboxReceiver {
    /// Takes the next queued frame, if any (benchmarks and tests).
    pub fn try_next_frame(&mut self) -> Option<Bytes> {
        match self.queue.try_recv().ok()? {
            Outgoing::Frame(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// Writes the queue to the socket until the outbox is closed or dropped.
    /// Every send races the close signal: a peer that stopped reading fills
    /// the socket's own buffer, and the close must still win.
    async fn write_to(self, mut session: actix_ws::Session) {
        let OutboxReceiver {
            mut queue,
            mut closed,
        } = self;
        let reason = loop {
            let next = tokio::select! {
                biased;
                changed = closed.changed() => {
                    break if changed.is_ok() { closed.borrow().clone() } else { None };
                }
                next = queue.recv() => next,
            };
            let sent = match next {
                Some(Outgoing::Close(reason)) => break Some(reason),
                None => break None,
                Some(outgoing) => {
                    let send = async {
                        match outgoing {
                            Outgoing::Frame(bytes) => session.binary(bytes).await,
                            Outgoing::Ping => session.ping(b"").await,
                            Outgoing::Pong(bytes) => session.pong(&bytes).await,
                            Outgoing::Close(_) => unreachable!("handled above"),
                        }
                    };
                    tokio::select! {
                        biased;
                        changed = closed.changed() => {
                            break if changed.is_ok() { closed.borrow().clone() } else { None };
                        }
                        sent = send => sent,
                    }
                }
            };
            if sent.is_err() {
                return;
            }
        };
        let reason = reason.map(|r| actix_ws::CloseReason {
            code: actix_ws::CloseCode::from(r.code),
            description: Some(r.description),
        });
        // A peer that stopped reading cannot take the close frame either:
        // give up after a moment; dropping the session ends the connection.
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), session.close(reason)).await;
    }
}

#[derive(Debug)]
enum Outgoing {
    Frame(Bytes),
    Ping,
    Pong(Bytes),
    Close(CloseReason),
}

/// The sending half; cloning it is one reference count (fan-out clones it
/// for every target).
#[derive(Debug, Clone)]
pub struct Outbox(Arc<OutboxInner>);

#[derive(Debug)]
struct OutboxInner {
    frames: mpsc::Sender<Outgoing>,
    close: watch::Sender<Option<CloseReason>>,
    closing: AtomicBool,
}

impl Outbox {
    /// An outbox and the receiving end of its queue, unattached to a
    /// socket (the writer task, and benchmarks, drain the receiver).
    pub fn channel(capacity: usize) -> (Self, OutboxReceiver) {
        let (frames, queue) = mpsc::channel::<Outgoing>(capacity.max(1));
        let (close, closed) = watch::channel::<Option<CloseReason>>(None);
        let outbox = Self(Arc::new(OutboxInner {
            frames,
            close,
            closing: AtomicBool::new(false),
        }));
        (outbox, OutboxReceiver { queue, closed })
    }

    /// Creates the outbox and starts the writer task on the current runtime.
    pub fn start(session: actix_ws::Session, capacity: usize) -> Self {
        let (outbox, receiver) = Self::channel(capacity);
        actix_web::rt::spawn(receiver.write_to(session));
        outbox
    }

    /// Queues a frame without waiting.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        if self.0.closing.load(Ordering::Relaxed) {
            return Err(PushError::Closed);
        }
        self.0
            .frames
            .try_send(Outgoing::Frame(frame))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => PushError::Full,
                mpsc::error::TrySendError::Closed(_) => PushError::Closed,
            })
    }

    pub(crate) fn ping(&self) -> Result<(), PushError> {
        self.0
            .frames
            .try_send(Outgoing::Ping)
            .map_err(|_| PushError::Full)
    }

    pub(crate) fn pong(&self, payload: Bytes) {
        let _ = self.0.frames.try_send(Outgoing::Pong(payload));
    }

    /// Closes the socket with a code and reason (frames still queued are dropped).
    pub fn close(&self, reason: CloseReason) {
        if !self.0.closing.swap(true, Ordering::Relaxed) {
            let _ = self.0.close.send(Some(reason));
        }
    }

    /// Closes the socket after the frames already queued are written (the
    /// `reconnect` of a shutdown must arrive before the close).
    pub fn close_after_queued(&self, reason: CloseReason) {
        if self.0.closing.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(Outgoing::Close(reason))) =
            self.0.frames.try_send(Outgoing::Close(reason))
        {
            let _ = self.0.close.send(Some(reason));
        }
    }

    /// Why the socket was closed, if the hub closed it.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.0.close.borrow().clone()
    }
}
