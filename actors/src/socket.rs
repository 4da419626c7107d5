//! A game server's socket once the hub has taken it from the HTTP server:
//! a [`FrameReader`] (WebSocket frames in, parsed and bounded here, polled
//! by the session's own task) and a writer task draining the session's
//! [`Outbox`] straight to the stream.
//!
//! Nothing sits between the socket and the session: a metrics frame wakes
//! one task (the actor's), a push wakes one (the writer's), and an idle
//! connection holds no buffer at all. Both buffers exist only while bytes
//! are in flight: the reader reads into the stack and keeps only a partial
//! frame; the writer's buffer is let go once written.
//!
//! A closed socket lingers: once the close frame is out and the write side
//! shut, what the client still sends (its own close, a pong) is read and
//! dropped until it closes too, for at most [`CLOSE_GRACE`]. A socket
//! dropped with unread bytes would be reset, and a reset can take the
//! close frame with it before the client reads it.

use crate::outbox::{Outbox, OutboxReceiver};
pub use crate::wsframe::{Incoming, ReadError};
use crate::wsframe::{Partial, parse};
use bytes::{Buf, BytesMut};
use futures_util::Stream;
use std::{
    any::Any,
    cell::RefCell,
    future::Future,
    io,
    pin::Pin,
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a closing socket's last bytes (the close frame) may take to
/// leave before the connection is dropped: a server that stopped reading
/// must not hold a socket open by never reading its close.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Bytes read from the socket per read, on the stack.
const READ_CHUNK: usize = 4096;

/// The socket's incoming messages, as a stream the session's task polls.
/// It ends when the server closes the connection or the writer stops (a
/// connection that cannot be written is over).
pub struct FrameReader<R> {
    /// Always `Some` until dropped: the writer gets it back then.
    io: Option<R>,
    handoff: Handoff<R>,
    /// Bytes of a frame not yet whole; empty (no allocation) between frames.
    buf: BytesMut,
    partial: Option<Partial>,
    max_message: usize,
    outbox: OutboxReceiver,
    /// The waker the outbox wakes when the writer stops, once registered
    /// (again only if the task's waker changes): a read that would block
    /// then looks at one flag, with no write to the outbox's shared state.
    registered: Option<std::task::Waker>,
    done: bool,
}

impl<R> std::fmt::Debug for FrameReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("buffered", &self.buf.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Whether the writer stopped; the task is woken when it does (the
    /// outbox wakes the registered waker only then).
    fn writer_gone(&mut self, cx: &mut Context<'_>) -> bool {
        if self
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            return self.outbox.writer_stopped();
        }
        self.registered = Some(cx.waker().clone());
        self.outbox.writer_gone(cx)
    }

    fn next_message(&mut self) -> Option<Result<Incoming, ReadError>> {
        let parsed = parse(&mut self.buf, self.max_message, &mut self.partial);
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            // What was read is now messages (which share it) or gone.
            self.buf = BytesMut::new();
        }
        match parsed {
            Ok(Some(message)) => Some(Ok(message)),
            Ok(None) => None,
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

impl<R: AsyncRead + Unpin> Stream for FrameReader<R> {
    type Item = Result<Incoming, ReadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(item) = this.next_message() {
                return Poll::Ready(Some(item));
            }
            if this.outbox.writer_stopped() {
                this.done = true;
                return Poll::Ready(None);
            }
            let read = if this.buf.is_empty() {
                // Between frames: read on the stack, keep only what came.
                let mut stack = [0u8; READ_CHUNK];
                let mut read = ReadBuf::new(&mut stack);
                let io = this.io.as_mut().expect("taken only on drop");
                match Pin::new(io).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        this.buf.extend_from_slice(read.filled());
                        Poll::Ready(Ok(read.filled().len()))
                    }
                    Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                    Poll::Pending => Poll::Pending,
                }
            } else {
                // `parse` reserved what the frame needs (bounded by the limit).
                if this.buf.capacity() == this.buf.len() {
                    this.buf.reserve(READ_CHUNK);
                }
                let io = this.io.as_mut().expect("taken only on drop");
                tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut this.buf)
            };
            match read {
                Poll::Ready(Ok(0)) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(ReadError::Io(error))));
                }
                // Nothing to read: the writer stopping ends the reader too
                // (its waker registered only here, not per frame).
                Poll::Pending if this.writer_gone(cx) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Where a dropped reader leaves its half of the socket for the writer
/// to linger on.
type Handoff<R> = Rc<RefCell<Option<R>>>;

impl<R> Drop for FrameReader<R> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            *self.handoff.borrow_mut() = Some(io);
            self.outbox.wake_writer();
        }
    }
}

/// Drains an outbox to the socket: frames queued when it wakes go out in
/// one write; a close frame ends it. Its buffer is let go once written.
struct SocketWriter<R, W> {
    io: W,
    handoff: Handoff<R>,
    /// The read half, once the reader let it go and the write side is shut.
    lingering: Option<R>,
    /// The write side is shut (after the close frame).
    shut: bool,
    outbox: OutboxReceiver,
    buf: BytesMut,
    /// The close frame is in `buf` (or written): nothing follows it.
    closed: bool,
    /// Set once the session is closing and the socket would not take bytes.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Counts the socket open until the writer is done with it.
    _open: OpenSocket,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> SocketWriter<R, W> {
    /// A closing socket that will not take its bytes gets [`CLOSE_GRACE`].
    fn wait_out(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_GRACE)));
        deadline.as_mut().poll(cx)
    }

    /// After the close: reads and drops what the client still sends until
    /// it closes its side, or the grace runs out.
    fn linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(reader) = self.lingering.as_mut() else {
                self.outbox.register_writer(cx.waker());
                let handed = self.handoff.borrow_mut().take();
                match handed {
                    Some(reader) => self.lingering = Some(reader),
                    // The session still holds it; it lets go when it sees the close.
                    None => return self.wait_out(cx),
                }
                continue;
            };
            let mut stack = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut stack);
            match Pin::new(reader).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if !read.filled().is_empty() => {}
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return self.wait_out(cx),
            }
        }
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Future for SocketWriter<R, W> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if this.shut {
                return this.linger(cx);
            }
            if this.buf.is_empty() {
                if this.closed {
                    match Pin::new(&mut this.io).poll_shutdown(cx) {
                        Poll::Ready(Ok(())) => {
                            this.shut = true;
                            // The session learns now; it hands its half back.
                            this.outbox.writer_done();
                            continue;
                        }
                        Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Pending => return this.wait_out(cx),
                    }
                }
                this.closed = this.outbox.drain_into(&mut this.buf, cx.waker());
                if this.buf.is_empty() && !this.closed {
                    // Idle: what the stream still holds (TLS records) goes now.
                    if let Poll::Ready(Err(_)) = Pin::new(&mut this.io).poll_flush(cx) {
                        return Poll::Ready(());
                    }
                    if this.buf.capacity() > 0 {
                        this.buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
                continue;
            }
            match Pin::new(&mut this.io).poll_write(cx, &this.buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(written)) => this.buf.advance(written),
                Poll::Pending if this.closed || this.outbox.closing() => {
                    this.outbox.stalled();
                    return this.wait_out(cx);
                }
                Poll::Pending => {
                    this.outbox.stalled();
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<R, W> Drop for SocketWriter<R, W> {
    fn drop(&mut self) {
        // However it ended, the session learns the socket is done.
        self.outbox.writer_done();
    }
}

/// The sockets a hub took and has not let go (their writers still run):
/// the HTTP server no longer counts them, so a graceful shutdown waits on
/// this for their last frames (`reconnect`, the close) to leave. Once the
/// door is closed ([`OpenSockets::close_door`]) a new socket is served but
/// not counted: servers sent away come back while the hub still accepts
/// (at once, past the reconnect window), and counting them kept a stopping
/// hub waiting out its whole grace.
#[derive(Debug, Default)]
pub struct OpenSockets {
    /// The sockets counted, and [`DOOR_CLOSED`] once it is: one atomic,
    /// so a socket is either counted before the door closes (and waited
    /// for) or not counted at all, never counted after a wait that missed it.
    count: AtomicUsize,
    none: tokio::sync::Notify,
}

/// [`OpenSockets::count`]'s top bit: the door is closed.
const DOOR_CLOSED: usize = 1 << (usize::BITS - 1);

impl OpenSockets {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire) & !DOOR_CLOSED
    }

    /// From now on a new socket does not count: a shutdown waits only on
    /// the sockets open when it began.
    pub fn close_door(&self) {
        self.count.fetch_or(DOOR_CLOSED, Ordering::AcqRel);
    }

    /// Returns once no socket is open.
    pub async fn none_open(&self) {
        loop {
            let notified = self.none.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn open(self: &Arc<Self>) -> OpenSocket {
        let counted = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n & DOOR_CLOSED == 0).then_some(n + 1)
            })
            .is_ok();
        OpenSocket(counted.then(|| self.clone()))
    }
}

/// One socket counted in [`OpenSockets`] while this lives (`None`: opened
/// after the door closed, not counted).
#[derive(Debug)]
struct OpenSocket(Option<Arc<OpenSockets>>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        if let Some(open) = &self.0
            && open.count.fetch_sub(1, Ordering::AcqRel) & !DOOR_CLOSED == 1
        {
            open.none.notify_waiters();
        }
    }
}

/// A stream the hub took from the HTTP server after the upgrade.
pub trait SocketIo: Any + AsyncRead + AsyncWrite + Unpin {}
impl<T: Any + AsyncRead + AsyncWrite + Unpin> SocketIo for T {}

/// The reader a session polls, over either kind of socket.
pub type SocketReader = FrameReader<Box<dyn AsyncRead + Unpin>>;

/// Serves a taken socket: `read` is what the client sent past the
/// handshake; the socket counts in `open` until its writer is done.
/// Spawns the writer on the current worker (the outbox's home) and
/// returns the outbox and the reader for the session. A plain TCP socket
/// moves to the worker's own set (`reactor.rs`), read in batches when
/// busy; any other stream (TLS) stays on tokio's reactor.
pub fn serve(
    io: Box<dyn SocketIo>,
    read: BytesMut,
    queue_capacity: usize,
    max_message: usize,
    open: &Arc<OpenSockets>,
) -> io::Result<(Outbox, SocketReader)> {
    let (reader, writer): (Box<dyn AsyncRead + Unpin>, Box<dyn AsyncWrite + Unpin>) =
        if (&*io as &dyn Any).is::<tokio::net::TcpStream>() {
            let any: Box<dyn Any> = io;
            let tcp = any
                .downcast::<tokio::net::TcpStream>()
                .expect("checked just above");
            let (reader, writer) = crate::reactor::take(*tcp)?;
            (Box::new(reader), Box::new(writer))
        } else {
            let (reader, writer) = tokio::io::split(io);
            (Box::new(reader), Box::new(writer))
        };
    Ok(serve_halves(
        reader,
        writer,
        read,
        queue_capacity,
        max_message,
        open,
    ))
}

fn serve_halves<W: AsyncWrite + Unpin + 'static>(
    reader: Box<dyn AsyncRead + Unpin>,
    writer: W,
    read: BytesMut,
    queue_capacity: usize,
    max_message: usize,
    open: &Arc<OpenSockets>,
) -> (Outbox, SocketReader) {
    let (outbox, receiver) = Outbox::for_socket(queue_capacity);
    let handoff: Handoff<Box<dyn AsyncRead + Unpin>> = Rc::default();
    let writer = SocketWriter {
        io: writer,
        handoff: handoff.clone(),
        lingering: None,
        shut: false,
        outbox: receiver.clone_end(),
        buf: BytesMut::new(),
        closed: false,
        deadline: None,
        _open: open.open(),
    };
    actix::spawn(writer);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&read);
    let reader = FrameReader {
        io: Some(reader),
        handoff,
        buf,
        partial: None,
        max_message,
        outbox: receiver,
        registered: None,
        done: false,
    };
    (outbox, reader)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::outbox::CloseReason;
    use crate::wsframe::tests::frame;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The reader's next item, failing the test rather than hanging it.
    async fn next_of<R: AsyncRead + Unpin>(
        reader: &mut FrameReader<R>,
    ) -> Option<Result<Incoming, ReadError>> {
        tokio::time::timeout(Duration::from_secs(10), reader.next())
            .await
            .expect("the reader answers in time")
    }

    /// Runs `test` on a current-thread runtime with a local set (the
    /// writer is spawned on the current worker, as on actix's).
    pub(crate) fn local(test: impl std::future::Future<Output = ()>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, test);
    }

    /// Serves `hub_end` and checks what crosses it both ways, then the close.
    async fn served_socket_round_trip(
        hub_end: Box<dyn SocketIo>,
        mut client: impl AsyncRead + AsyncWrite + Unpin,
    ) {
        {
            let early = BytesMut::from(&frame(0x82, b"early")[..]);
            let (outbox, mut reader) = serve(hub_end, early, 8, 1024, &Arc::default()).unwrap();
            assert_eq!(
                next_of(&mut reader).await.unwrap().unwrap(),
                Incoming::Binary(Bytes::from_static(b"early"))
            );
            client.write_all(&frame(0x82, b"later")).await.unwrap();
            assert_eq!(
                next_of(&mut reader).await.unwrap().unwrap(),
                Incoming::Binary(Bytes::from_static(b"later"))
            );
            assert_eq!(reader.buf.capacity(), 0, "no buffer kept between frames");

            outbox.push(Bytes::from_static(b"ab")).unwrap();
            outbox.push(Bytes::from_static(b"c")).unwrap();
            let mut got = [0; 7];
            tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut got))
                .await
                .expect("written in time")
                .unwrap();
            assert_eq!(got, [0x82, 2, b'a', b'b', 0x82, 1, b'c']);

            outbox.close(CloseReason::new(4003, "bye"));
            let mut close = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut close))
                .await
                .expect("closed in time")
                .unwrap();
            assert_eq!(close, [0x88, 5, 0x0f, 0xa3, b'b', b'y', b'e']);
            // The writer is done: the reader ends too.
            assert!(next_of(&mut reader).await.is_none());
            assert_eq!(
                outbox.push(Bytes::from_static(b"x")),
                Err(crate::PushError::Closed)
            );
        }
    }

    #[test]
    fn a_served_socket_reads_what_came_with_the_handshake_and_writes_its_outbox() {
        local(async {
            let (hub_end, client) = tokio::io::duplex(64 * 1024);
            served_socket_round_trip(Box::new(hub_end), client).await;
        });
    }

    #[test]
    fn a_served_tcp_socket_moves_to_the_worker_set_and_behaves_the_same() {
        local(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
            let (client, accepted) = tokio::join!(client, listener.accept());
            served_socket_round_trip(Box::new(accepted.unwrap().0), client.unwrap()).await;
        });
    }

    #[test]
    fn a_client_that_stops_reading_is_let_go_after_the_grace() {
        local(async {
            tokio::time::pause();
            // Room for little: the client never reads.
            let (hub_end, client) = tokio::io::duplex(64);
            let open = Arc::new(OpenSockets::default());
            let (outbox, mut reader) =
                serve(Box::new(hub_end), BytesMut::new(), 8, 1024, &open).unwrap();
            assert_eq!(open.count(), 1);
            outbox.push(Bytes::from(vec![7; 1000])).unwrap();
            tokio::task::yield_now().await;
            outbox.close(CloseReason::new(4008, "slow"));
            let started = tokio::time::Instant::now();
            assert!(
                next_of(&mut reader).await.is_none(),
                "the reader ends with the writer"
            );
            let waited = started.elapsed();
            assert!(
                waited >= CLOSE_GRACE && waited < CLOSE_GRACE * 2,
                "{waited:?}"
            );
            // The writer let the socket go: a shutdown waiting on it goes on.
            tokio::time::timeout(Duration::from_secs(1), open.none_open())
                .await
                .expect("no socket open");
            assert_eq!(open.count(), 0);
            drop(client);
        });
    }

    #[test]
    fn a_socket_served_after_the_door_closed_is_not_waited_for() {
        local(async {
            let open = Arc::new(OpenSockets::default());
            let (before, _before_client) = tokio::io::duplex(1024);
            let (before_outbox, _before_reader) =
                serve(Box::new(before), BytesMut::new(), 8, 1024, &open).unwrap();
            open.close_door();
            let (after, _after_client) = tokio::io::duplex(1024);
            let (_after_outbox, _after_reader) =
                serve(Box::new(after), BytesMut::new(), 8, 1024, &open).unwrap();
            assert_eq!(
                open.count(),
                1,
                "only the socket from before the door closed"
            );
            // Its close lets a shutdown go on, the newer socket still open.
            before_outbox.close(CloseReason::new(1001, "going away"));
            tokio::time::timeout(Duration::from_secs(5), open.none_open())
                .await
                .expect("nothing counted is left open");
        });
    }

    #[test]
    fn a_client_going_away_ends_the_reader() {
        local(async {
            let (hub_end, client) = tokio::io::duplex(1024);
            let (_outbox, mut reader) =
                serve(Box::new(hub_end), BytesMut::new(), 8, 1024, &Arc::default()).unwrap();
            drop(client);
            assert!(next_of(&mut reader).await.is_none());
        });
    }
}
