//! A session's outgoing side: a bounded queue of already-encoded frames
//! (`Bytes`, shared between every session a frame goes to), drained by the
//! socket's writer task (`socket.rs`) straight to the stream: every frame
//! queued when the writer wakes goes out in one write. A full queue means
//! the server is not reading: the push fails and the caller closes the
//! session, so a slow server never delays the others or grows the hub's
//! memory.
//!
//! A fan-out to many sessions goes through a [`crate::Fanout`]
//! (`fanout.rs`), which wakes each writer from its session's home worker.

use crate::due::Due;
use actix::{Arbiter, ArbiterHandle};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use hotswap_client::sync::lock;
use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::Waker,
    thread::ThreadId,
};

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

/// Bytes the writer takes from the queue per write, at most (it writes
/// them and takes again).
const MAX_CHUNK: usize = 64 * 1024;

/// WebSocket opcodes the hub sends.
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Appends one unmasked, unfragmented WebSocket frame (RFC 6455 §5.2: a
/// server never masks).
fn put_frame(buf: &mut BytesMut, opcode: u8, payload: &[u8]) {
    buf.reserve(payload.len() + 10);
    buf.put_u8(0x80 | opcode);
    match payload.len() {
        n if n < 126 => buf.put_u8(n as u8),
        n if n <= usize::from(u16::MAX) => {
            buf.put_u8(126);
            buf.put_u16(n as u16);
        }
        n => {
            buf.put_u8(127);
            buf.put_u64(n as u64);
        }
    }
    buf.extend_from_slice(payload);
}

/// A close frame: the code, then the reason cut to fit a control frame's
/// 125 bytes on a character boundary.
fn put_close(buf: &mut BytesMut, reason: Option<&CloseReason>) {
    let Some(reason) = reason else {
        return put_frame(buf, CLOSE, &[]);
    };
    let mut end = reason.description.len().min(123);
    while !reason.description.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(end + 2);
    payload.extend_from_slice(&reason.code.to_be_bytes());
    payload.extend_from_slice(&reason.description.as_bytes()[..end]);
    put_frame(buf, CLOSE, &payload);
}

#[derive(Debug)]
enum Outgoing {
    Frame(Bytes),
    Ping,
    Pong(Bytes),
    Close(CloseReason),
}

/// The worker thread a session lives on, and a way to run code there.
#[derive(Debug, Clone)]
pub(crate) struct Home {
    pub(crate) thread: ThreadId,
    pub(crate) arbiter: ArbiterHandle,
    /// The worker's count of fan-out writes due (`due.rs`).
    pub(crate) due: Arc<AtomicUsize>,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    /// Set once, by [`Outbox::close`]: the writer sends it and ends,
    /// dropping what is queued.
    reason: Option<CloseReason>,
    /// Every [`Outbox`] is gone: the writer sends what is queued and a close.
    senders_gone: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    capacity: usize,
    closing: AtomicBool,
    /// The writer's task.
    wake: AtomicWaker,
    /// The writer stopped (the close is out, or the socket failed): the
    /// reader ends too.
    writer_gone: AtomicBool,
    /// The reader's task (the session's), woken when the writer stops.
    reader_wake: AtomicWaker,
    home: Option<Home>,
    /// Counted as due on the home worker (never without a home).
    due: Due,
}

impl Shared {
    /// Queues `item`, within capacity unless `always`.
    fn enqueue(&self, item: Outgoing, always: bool) -> Result<(), PushError> {
        let mut queue = lock(&self.queue);
        if queue.reason.is_some() {
            return Err(PushError::Closed);
        }
        if !always && queue.items.len() >= self.capacity {
            return Err(PushError::Full);
        }
        queue.items.push_back(item);
        Ok(())
    }

    /// The writer took what is queued, or stopped: nothing of this
    /// session is due on its worker any more.
    fn taken(&self) {
        if let Some(home) = &self.home {
            self.due.taken(&home.due);
        }
    }
}

/// The sending half; cloning it is one reference count (fan-out clones it
/// for every target). When the last clone is dropped, the socket closes
/// after what is queued.
#[derive(Debug, Clone)]
pub struct Outbox(Arc<Sender>);

#[derive(Debug)]
struct Sender(Arc<Shared>);

impl Drop for Sender {
    fn drop(&mut self) {
        lock(&self.0.queue).senders_gone = true;
        self.0.wake.wake();
    }
}

/// The receiving end of an [`Outbox`]: drained by the socket's writer
/// (`socket.rs`), or by hand in benchmarks.
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

impl OutboxReceiver {
    /// Takes the next queued frame, if any (benchmarks and tests).
    pub fn try_next_frame(&mut self) -> Option<Bytes> {
        match lock(&self.shared.queue).items.pop_front()? {
            Outgoing::Frame(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// A second handle on the same queue (the reader's, to learn the writer stopped).
    pub(crate) fn clone_end(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }

    /// Appends what is queued to `buf` as WebSocket frames (up to
    /// [`MAX_CHUNK`] bytes), `waker` woken by the next push. True once the
    /// close frame is in `buf`: nothing may follow it.
    pub(crate) fn drain_into(&self, buf: &mut BytesMut, waker: &Waker) -> bool {
        // Registered before the queue is read: a push after the read wakes us.
        self.shared.wake.register(waker);
        let mut queue = lock(&self.shared.queue);
        // A close wins over what is queued: a server that stopped reading
        // must still be let go.
        if let Some(reason) = &queue.reason {
            put_close(buf, Some(reason));
            queue.items.clear();
            self.shared.taken();
            return true;
        }
        while buf.len() < MAX_CHUNK {
            match queue.items.pop_front() {
                Some(Outgoing::Frame(frame)) => put_frame(buf, BINARY, &frame),
                Some(Outgoing::Ping) => put_frame(buf, PING, &[]),
                Some(Outgoing::Pong(payload)) => {
                    put_frame(buf, PONG, &payload[..payload.len().min(125)]);
                }
                Some(Outgoing::Close(reason)) => {
                    put_close(buf, Some(&reason));
                    queue.items.clear();
                    self.shared.taken();
                    return true;
                }
                // Every sender is gone: the session is over.
                None if queue.senders_gone => {
                    put_close(buf, None);
                    self.shared.taken();
                    return true;
                }
                None => break,
            }
        }
        // Taken only once nothing is left queued (told under the queue's
        // lock: a fan-out frame queued after it is counted at its wake).
        if queue.items.is_empty() {
            self.shared.taken();
        }
        false
    }

    /// The socket would take no more bytes: what is queued waits for the
    /// server, and holds no reads on its worker meanwhile.
    pub(crate) fn stalled(&self) {
        self.shared.taken();
    }

    /// Wakes the writer (the reader handed its half back).
    pub(crate) fn wake_writer(&self) {
        self.shared.wake.wake();
    }

    /// `waker` is woken by the next push or [`OutboxReceiver::wake_writer`].
    pub(crate) fn register_writer(&self, waker: &Waker) {
        self.shared.wake.register(waker);
    }

    /// The session is closing (the hub closed it or every sender is gone).
    pub(crate) fn closing(&self) -> bool {
        self.shared.closing.load(Ordering::Relaxed) || lock(&self.shared.queue).senders_gone
    }

    /// The writer stopped: later pushes fail and the reader ends.
    pub(crate) fn writer_done(&self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        // Before the count is cleared (`Due::queued` reads it after).
        self.shared.writer_gone.store(true, Ordering::SeqCst);
        self.shared.taken();
        self.shared.reader_wake.wake();
    }

    /// Whether the writer stopped (a load: nothing registered).
    pub(crate) fn writer_stopped(&self) -> bool {
        self.shared.writer_gone.load(Ordering::Acquire)
    }

    /// Whether the writer stopped; `cx` is woken when it does.
    pub(crate) fn writer_gone(&self, cx: &mut std::task::Context<'_>) -> bool {
        if self.shared.writer_gone.load(Ordering::Acquire) {
            return true;
        }
        self.shared.reader_wake.register(cx.waker());
        self.shared.writer_gone.load(Ordering::Acquire)
    }
}

impl Outbox {
    pub(crate) fn new(capacity: usize, home: Option<Home>) -> (Self, OutboxReceiver) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            capacity: capacity.max(1),
            closing: AtomicBool::new(false),
            wake: AtomicWaker::new(),
            writer_gone: AtomicBool::new(false),
            reader_wake: AtomicWaker::new(),
            due: Due::default(),
            home,
        });
        let receiver = OutboxReceiver {
            shared: shared.clone(),
        };
        (Self(Arc::new(Sender(shared))), receiver)
    }

    /// An outbox and the receiving end of its queue, unattached to a
    /// socket and to a worker (benchmarks drain the receiver by hand).
    pub fn channel(capacity: usize) -> (Self, OutboxReceiver) {
        Self::new(capacity, None)
    }

    /// The outbox of a socket served on this thread, which becomes its
    /// home (a fan-out wakes its writer from here).
    pub(crate) fn for_socket(capacity: usize) -> (Self, OutboxReceiver) {
        let home = Arbiter::try_current().map(|arbiter| Home {
            thread: std::thread::current().id(),
            arbiter,
            due: crate::due::on_this_thread(),
        });
        Self::new(capacity, home)
    }

    fn shared(&self) -> &Shared {
        &self.0.0
    }

    /// The worker the session lives on, if it has one.
    pub(crate) fn home(&self) -> Option<&Home> {
        self.shared().home.as_ref()
    }

    /// Wakes the writer (a fan-out, once its frames are queued).
    pub(crate) fn wake_writer(&self) {
        self.shared().wake.wake();
    }

    /// A fan-out frame is queued: due on the home worker until the writer
    /// takes it (`due.rs`).
    pub(crate) fn mark_due(&self) {
        let shared = self.shared();
        if let Some(home) = &shared.home {
            shared.due.queued(&home.due, &shared.writer_gone);
        }
    }

    /// Queues a frame without waiting, and wakes the writer.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        self.queue_frame(frame)?;
        self.shared().wake.wake();
        Ok(())
    }

    /// Queues a frame; the caller wakes the writer.
    pub(crate) fn queue_frame(&self, frame: Bytes) -> Result<(), PushError> {
        if self.shared().closing.load(Ordering::Relaxed) {
            return Err(PushError::Closed);
        }
        self.shared().enqueue(Outgoing::Frame(frame), false)
    }

    pub(crate) fn ping(&self) -> Result<(), PushError> {
        self.shared().enqueue(Outgoing::Ping, false)?;
        self.shared().wake.wake();
        Ok(())
    }

    pub(crate) fn pong(&self, payload: Bytes) {
        if self
            .shared()
            .enqueue(Outgoing::Pong(payload), false)
            .is_ok()
        {
            self.shared().wake.wake();
        }
    }

    /// Closes the socket with a code and reason (frames still queued are dropped).
    pub fn close(&self, reason: CloseReason) {
        if !self.shared().closing.swap(true, Ordering::Relaxed) {
            lock(&self.shared().queue).reason = Some(reason);
            self.shared().wake.wake();
        }
    }

    /// Closes the socket after the frames already queued are written (the
    /// `reconnect` of a shutdown must arrive before the close).
    pub fn close_after_queued(&self, reason: CloseReason) {
        if self.queue_close(reason) {
            self.shared().wake.wake();
        }
    }

    /// Queues a close after what is queued; the caller wakes the writer.
    /// False if the socket was closing already.
    pub(crate) fn queue_close(&self, reason: CloseReason) -> bool {
        if self.shared().closing.swap(true, Ordering::Relaxed) {
            return false;
        }
        let shared = self.shared();
        let mut queue = lock(&shared.queue);
        if queue.items.len() < shared.capacity {
            queue.items.push_back(Outgoing::Close(reason));
        } else {
            // A server this far behind would not read the close either.
            queue.reason = Some(reason);
        }
        true
    }

    /// Why the socket was closed, if the hub closed it.
    pub fn close_reason(&self) -> Option<CloseReason> {
        let queue = lock(&self.shared().queue);
        queue.reason.clone().or_else(|| {
            queue.items.iter().find_map(|item| match item {
                Outgoing::Close(reason) => Some(reason.clone()),
                _ => None,
            })
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures_util::{Stream, StreamExt};
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    /// The writer's side of the queue as a stream of chunks (each what
    /// one write would carry), ending after the close frame.
    pub(crate) struct SocketBody {
        pub(crate) receiver: OutboxReceiver,
        pub(crate) done: bool,
    }

    impl futures_util::Stream for SocketBody {
        type Item = Result<Bytes, std::io::Error>;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            let this = self.get_mut();
            if this.done {
                return Poll::Ready(None);
            }
            let mut buf = BytesMut::new();
            this.done = this.receiver.drain_into(&mut buf, cx.waker());
            if buf.is_empty() {
                return Poll::Pending;
            }
            Poll::Ready(Some(Ok(buf.freeze())))
        }
    }

    pub(crate) fn socket_body(capacity: usize) -> (Outbox, SocketBody) {
        let (outbox, receiver) = Outbox::channel(capacity);
        let body = SocketBody {
            receiver,
            done: false,
        };
        (outbox, body)
    }

    /// A waker that counts its wakes and the threads they came from.
    #[derive(Default)]
    pub(crate) struct Wakes {
        pub(crate) count: std::sync::atomic::AtomicUsize,
        pub(crate) threads: Mutex<Vec<ThreadId>>,
    }

    impl futures_util::task::ArcWake for Wakes {
        fn wake_by_ref(wakes: &Arc<Self>) {
            wakes.count.fetch_add(1, Ordering::SeqCst);
            lock(&wakes.threads).push(std::thread::current().id());
        }
    }

    pub(crate) fn poll_with(
        body: &mut SocketBody,
        wakes: &Arc<Wakes>,
    ) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        let waker = futures_util::task::waker(wakes.clone());
        Pin::new(body).poll_next(&mut Context::from_waker(&waker))
    }

    #[test]
    fn frames_carry_their_length_unmasked() {
        let mut buf = BytesMut::new();
        put_frame(&mut buf, BINARY, &[7; 3]);
        assert_eq!(&buf[..], &[0x82, 3, 7, 7, 7]);
        buf.clear();
        put_frame(&mut buf, BINARY, &[0; 300]);
        assert_eq!(&buf[..4], &[0x82, 126, 1, 44]);
        assert_eq!(buf.len(), 304);
        buf.clear();
        put_frame(&mut buf, BINARY, &vec![0; 70_000]);
        assert_eq!(&buf[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(buf[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn close_reasons_fit_a_control_frame_on_a_char_boundary() {
        let mut buf = BytesMut::new();
        put_close(&mut buf, Some(&CloseReason::new(4001, "é".repeat(100))));
        assert_eq!(buf[0], 0x88);
        let len = usize::from(buf[1]);
        assert!(len <= 125, "{len}");
        assert_eq!(&buf[2..4], &4001u16.to_be_bytes());
        assert!(std::str::from_utf8(&buf[4..]).is_ok());
        assert_eq!(buf.len(), 2 + len);
    }

    #[tokio::test]
    async fn queued_frames_go_out_together_and_a_close_ends_the_body() {
        let (outbox, mut body) = socket_body(8);
        outbox.push(Bytes::from_static(b"ab")).unwrap();
        outbox.push(Bytes::from_static(b"c")).unwrap();
        let chunk = body.next().await.unwrap().unwrap();
        assert_eq!(&chunk[..], &[0x82, 2, b'a', b'b', 0x82, 1, b'c']);
        outbox.close(CloseReason::new(4003, "bye"));
        assert_eq!(
            outbox.push(Bytes::from_static(b"late")),
            Err(PushError::Closed)
        );
        let chunk = body.next().await.unwrap().unwrap();
        assert_eq!(&chunk[..], &[0x88, 5, 0x0f, 0xa3, b'b', b'y', b'e']);
        assert!(body.next().await.is_none());
        assert_eq!(outbox.close_reason().unwrap().code, 4003);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_close_still_wins() {
        let (outbox, mut body) = socket_body(2);
        outbox.push(Bytes::from_static(b"1")).unwrap();
        outbox.push(Bytes::from_static(b"2")).unwrap();
        assert_eq!(outbox.push(Bytes::from_static(b"3")), Err(PushError::Full));
        assert_eq!(outbox.ping(), Err(PushError::Full));
        outbox.close(CloseReason::new(4008, "slow"));
        let chunk = body.next().await.unwrap().unwrap();
        assert_eq!(
            chunk[0], 0x88,
            "the close goes first, queued frames are dropped"
        );
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn close_after_queued_keeps_order_and_a_dropped_outbox_closes() {
        let (outbox, mut body) = socket_body(8);
        outbox.push(Bytes::from_static(b"x")).unwrap();
        outbox.close_after_queued(CloseReason::new(1001, "going away"));
        assert_eq!(outbox.close_reason().unwrap().code, 1001);
        let chunk = body.next().await.unwrap().unwrap();
        assert_eq!(&chunk[..3], &[0x82, 1, b'x']);
        assert_eq!(&chunk[3..5], &[0x88, 12]);
        assert!(body.next().await.is_none());

        let (outbox, mut body) = socket_body(8);
        outbox.push(Bytes::from_static(b"y")).unwrap();
        let clone = outbox.clone();
        drop(outbox);
        assert!(
            poll_with(&mut body, &Arc::default()).is_ready(),
            "the frame goes"
        );
        let wakes = Arc::new(Wakes::default());
        assert!(
            poll_with(&mut body, &wakes).is_pending(),
            "one sender is left"
        );
        drop(clone);
        assert_eq!(
            wakes.count.load(Ordering::SeqCst),
            1,
            "the last drop woke the body"
        );
        assert_eq!(&body.next().await.unwrap().unwrap()[..], &[0x88, 0]);
        assert!(body.next().await.is_none());
    }

    #[test]
    fn a_close_wakes_a_waiting_body() {
        let (outbox, mut body) = socket_body(8);
        let wakes = Arc::new(Wakes::default());
        assert!(poll_with(&mut body, &wakes).is_pending());
        outbox.close(CloseReason::new(4004, "revoked"));
        assert_eq!(
            wakes.count.load(Ordering::SeqCst),
            1,
            "the close woke the body"
        );
        match poll_with(&mut body, &wakes) {
            Poll::Ready(Some(Ok(chunk))) => assert_eq!(chunk[0], 0x88),
            other => panic!("{other:?}"),
        }
    }
}
