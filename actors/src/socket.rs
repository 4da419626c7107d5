//! A game server's socket once the hub has taken it from the HTTP server:
//! a [`FrameReader`] (WebSocket frames in, parsed and bounded here, polled
//! by the session actor itself) and a writer task draining the session's
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
use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use hotswap_client::sync::lock;
use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};

/// How long a closing socket's last bytes (the close frame) may take to
/// leave before the connection is dropped: a server that stopped reading
/// must not hold a socket open by never reading its close.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Bytes read from the socket per read, on the stack.
const READ_CHUNK: usize = 4096;

/// What a game server sent: one whole message (continuations joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Binary(Bytes),
    /// A text message (refused by the protocol; its content is not kept).
    Text,
    Ping(Bytes),
    Pong,
    /// A close frame, with its code if it carried one.
    Close(Option<u16>),
}

/// Why reading the socket stopped.
#[derive(Debug)]
pub enum ReadError {
    /// A message longer than the limit (its bytes were never buffered).
    Overflow,
    /// Not WebSocket as RFC 6455 says a client speaks it.
    Protocol(String),
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Overflow => f.write_str("message larger than the limit"),
            ReadError::Protocol(why) => f.write_str(why),
            ReadError::Io(error) => write!(f, "reading the socket: {error}"),
        }
    }
}

fn protocol(why: impl Into<String>) -> ReadError {
    ReadError::Protocol(why.into())
}

/// A message begun by a data frame without FIN, waiting for its continuations.
#[derive(Debug)]
struct Partial {
    binary: bool,
    data: BytesMut,
}

/// The WebSocket opcodes (RFC 6455 §5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Takes the next whole message off the front of `buf`, if it holds one.
/// Every length is checked against `max_message` before a byte of it is
/// buffered; a client's frames must be masked, carry no reserved bits (no
/// extension is negotiated) and use known opcodes; control frames are
/// short and unfragmented.
fn parse(
    buf: &mut BytesMut,
    max_message: usize,
    partial: &mut Option<Partial>,
) -> Result<Option<Incoming>, ReadError> {
    loop {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (first, second) = (buf[0], buf[1]);
        if first & 0x70 != 0 {
            return Err(protocol("reserved bits set, and no extension was agreed"));
        }
        if second & 0x80 == 0 {
            return Err(protocol("a client's frames must be masked"));
        }
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0F;
        let control = opcode & 0x08 != 0;
        if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
            return Err(protocol(format!("unknown opcode {opcode}")));
        }
        let (length, header) = match second & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(bytes), 10)
            }
            short => (u64::from(short), 2),
        };
        if control && (!fin || length > 125) {
            return Err(protocol(
                "control frames are at most 125 bytes and never fragmented",
            ));
        }
        // A control frame between fragments is not part of the message.
        let held = if control {
            0
        } else {
            partial.as_ref().map_or(0, |p| p.data.len()) as u64
        };
        if length.saturating_add(held) > max_message as u64 {
            return Err(ReadError::Overflow);
        }
        // Bounded by `max_message` just above.
        let length = length as usize;
        let total = header + 4 + length;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mask = [
            buf[header],
            buf[header + 1],
            buf[header + 2],
            buf[header + 3],
        ];
        buf.advance(header + 4);
        let mut payload = buf.split_to(length);
        unmask(&mut payload, mask);
        match opcode {
            CLOSE => {
                return match payload.len() {
                    0 => Ok(Some(Incoming::Close(None))),
                    1 => Err(protocol("a close frame's code is two bytes")),
                    _ => Ok(Some(Incoming::Close(Some(u16::from_be_bytes([
                        payload[0], payload[1],
                    ]))))),
                };
            }
            PING => return Ok(Some(Incoming::Ping(payload.freeze()))),
            PONG => return Ok(Some(Incoming::Pong)),
            CONTINUATION => {
                let Some(message) = partial.as_mut() else {
                    return Err(protocol("a continuation frame with no message to continue"));
                };
                message.data.extend_from_slice(&payload);
                if fin {
                    let done = partial.take().expect("checked above");
                    return Ok(Some(whole(done.binary, done.data)));
                }
            }
            _ => {
                if partial.is_some() {
                    return Err(protocol("a new message began before the last one ended"));
                }
                let binary = opcode == BINARY;
                if fin {
                    return Ok(Some(whole(binary, payload)));
                }
                *partial = Some(Partial {
                    binary,
                    data: payload,
                });
            }
        }
    }
}

fn whole(binary: bool, data: BytesMut) -> Incoming {
    if binary {
        Incoming::Binary(data.freeze())
    } else {
        Incoming::Text
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i];
    }
}

/// The socket's incoming messages, as a stream the session actor polls.
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
                Poll::Pending if this.outbox.writer_gone(cx) => {
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
type Handoff<R> = Arc<Mutex<Option<R>>>;

impl<R> Drop for FrameReader<R> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            *lock(&self.handoff) = Some(io);
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
                let handed = lock(&self.handoff).take();
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
                Poll::Pending if this.closed || this.outbox.closing() => return this.wait_out(cx),
                Poll::Pending => return Poll::Pending,
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
/// this for their last frames (`reconnect`, the close) to leave.
#[derive(Debug, Default)]
pub struct OpenSockets {
    count: AtomicUsize,
    none: tokio::sync::Notify,
}

impl OpenSockets {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
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
        self.count.fetch_add(1, Ordering::AcqRel);
        OpenSocket(self.clone())
    }
}

/// One socket counted in [`OpenSockets`] while this lives.
#[derive(Debug)]
struct OpenSocket(Arc<OpenSockets>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none.notify_waiters();
        }
    }
}

/// A stream the hub took from the HTTP server after the upgrade.
pub trait SocketIo: AsyncRead + AsyncWrite + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + 'static> SocketIo for T {}

/// Serves a taken socket: `read` is what the client sent past the
/// handshake; the socket counts in `open` until its writer is done.
/// Spawns the writer on the current worker (the outbox's home) and
/// returns the outbox and the reader for the session.
pub fn serve<Io: SocketIo>(
    io: Io,
    read: BytesMut,
    queue_capacity: usize,
    max_message: usize,
    open: &Arc<OpenSockets>,
) -> (Outbox, FrameReader<ReadHalf<Io>>) {
    let (outbox, receiver) = Outbox::for_socket(queue_capacity);
    let (reader, writer) = tokio::io::split(io);
    let handoff: Handoff<ReadHalf<Io>> = Arc::default();
    let writer = SocketWriter::<ReadHalf<Io>, WriteHalf<Io>> {
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
        done: false,
    };
    (outbox, reader)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::CloseReason;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client's frame: masked, with `first` as its first byte.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn parse_all(bytes: &[u8], max: usize) -> Vec<Result<Incoming, String>> {
        let mut buf = BytesMut::from(bytes);
        let mut partial = None;
        let mut out = Vec::new();
        loop {
            match parse(&mut buf, max, &mut partial) {
                Ok(Some(message)) => out.push(Ok(message)),
                Ok(None) => return out,
                Err(error) => {
                    out.push(Err(error.to_string()));
                    return out;
                }
            }
        }
    }

    #[test]
    fn masked_frames_of_every_length_form_parse() {
        for size in [0, 5, 125, 126, 300, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let parsed = parse_all(&frame(0x82, &payload), 100_000);
            assert_eq!(parsed, vec![Ok(Incoming::Binary(payload.into()))], "{size}");
        }
    }

    #[test]
    fn a_frame_arriving_a_byte_at_a_time_parses_once_whole() {
        let mut bytes = frame(0x82, b"hello");
        bytes.extend(frame(0x89, b"p"));
        let mut buf = BytesMut::new();
        let mut partial = None;
        let mut got = Vec::new();
        for byte in bytes {
            buf.extend_from_slice(&[byte]);
            while let Some(message) = parse(&mut buf, 1024, &mut partial).unwrap() {
                got.push(message);
            }
        }
        assert_eq!(
            got,
            vec![
                Incoming::Binary(Bytes::from_static(b"hello")),
                Incoming::Ping(Bytes::from_static(b"p"))
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn continuations_join_with_control_frames_between() {
        let mut bytes = frame(0x02, b"ab");
        bytes.extend(frame(0x89, b""));
        bytes.extend(frame(0x00, b"cd"));
        bytes.extend(frame(0x80, b"e"));
        bytes.extend(frame(0x01, b"te"));
        bytes.extend(frame(0x80, b"xt"));
        assert_eq!(
            parse_all(&bytes, 1024),
            vec![
                Ok(Incoming::Ping(Bytes::new())),
                Ok(Incoming::Binary(Bytes::from_static(b"abcde"))),
                Ok(Incoming::Text),
            ]
        );
    }

    #[test]
    fn a_length_past_the_limit_is_refused_before_its_bytes_arrive() {
        // Only the header of a frame claiming 2^62 bytes.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 62).to_be_bytes());
        let mut buf = BytesMut::from(&header[..]);
        let error = parse(&mut buf, 1024, &mut None).unwrap_err();
        assert!(matches!(error, ReadError::Overflow));
        assert!(buf.capacity() < 4096, "nothing was reserved for it");
        // A message whose fragments add up past the limit.
        let mut bytes = frame(0x02, &[1; 600]);
        bytes.extend(frame(0x80, &[2; 600]));
        assert_eq!(
            parse_all(&bytes, 1024),
            vec![Err("message larger than the limit".into())]
        );
        // Exactly the limit is fine.
        assert_eq!(parse_all(&frame(0x82, &[3; 1024]), 1024).len(), 1);
    }

    #[test]
    fn frames_a_client_must_not_send_are_protocol_errors() {
        let unmasked = [0x82, 0x01, 0x00];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (unmasked.to_vec(), "masked"),
            (frame(0xC2, b"x"), "reserved"),
            (frame(0x83, b"x"), "opcode 3"),
            (frame(0x8B, b"x"), "opcode 11"),
            (frame(0x09, b"x"), "control"),
            (frame(0x89, &[0; 126]), "control"),
            (frame(0x80, b"x"), "continuation"),
            (frame(0x88, b"x"), "two bytes"),
            (
                [frame(0x02, b"a"), frame(0x82, b"b")].concat(),
                "new message",
            ),
        ];
        for (bytes, why) in cases {
            let parsed = parse_all(&bytes, 1024);
            match parsed.last() {
                Some(Err(error)) => assert!(error.contains(why), "{why}: {error}"),
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_ping_between_fragments_does_not_count_toward_the_message() {
        let mut bytes = frame(0x02, &[1; 1000]);
        bytes.extend(frame(0x89, &[2; 100]));
        bytes.extend(frame(0x80, &[3; 24]));
        let parsed = parse_all(&bytes, 1024);
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        assert!(matches!(&parsed[1], Ok(Incoming::Binary(b)) if b.len() == 1024));
    }

    #[test]
    fn close_frames_carry_their_code() {
        let mut payload = 4000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let mut bytes = frame(0x88, &payload);
        bytes.extend(frame(0x88, b""));
        assert_eq!(
            parse_all(&bytes, 1024),
            vec![Ok(Incoming::Close(Some(4000))), Ok(Incoming::Close(None))]
        );
    }

    #[test]
    fn unmasking_matches_byte_by_byte() {
        let mask = [1, 2, 3, 4];
        for len in 0..20 {
            let mut data: Vec<u8> = (0..len as u8).collect();
            let expected: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            unmask(&mut data, mask);
            assert_eq!(data, expected);
        }
    }

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
    fn local(test: impl std::future::Future<Output = ()>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, test);
    }

    #[test]
    fn a_served_socket_reads_what_came_with_the_handshake_and_writes_its_outbox() {
        local(async {
            let (hub_end, mut client) = tokio::io::duplex(64 * 1024);
            let early = BytesMut::from(&frame(0x82, b"early")[..]);
            let (outbox, mut reader) = serve(hub_end, early, 8, 1024, &Arc::default());
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
        });
    }

    #[test]
    fn a_client_that_stops_reading_is_let_go_after_the_grace() {
        local(async {
            tokio::time::pause();
            // Room for little: the client never reads.
            let (hub_end, client) = tokio::io::duplex(64);
            let open = Arc::new(OpenSockets::default());
            let (outbox, mut reader) = serve(hub_end, BytesMut::new(), 8, 1024, &open);
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
    fn a_client_going_away_ends_the_reader() {
        local(async {
            let (hub_end, client) = tokio::io::duplex(1024);
            let (_outbox, mut reader) = serve(hub_end, BytesMut::new(), 8, 1024, &Arc::default());
            drop(client);
            assert!(next_of(&mut reader).await.is_none());
        });
    }
}
