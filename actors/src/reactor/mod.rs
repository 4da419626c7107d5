//! Plain-TCP game-server sockets, woken in batches.
//!
//! On tokio's own reactor every socket that becomes readable wakes its
//! worker thread: 10,000 servers sending a metrics frame a second each
//! make thousands of thread wake-ups a second, each costing more than the
//! frame's own work. Here a worker's taken sockets sit in an epoll set of
//! their own (one per worker thread), watched two ways:
//!
//! - **Idle**: a watcher thread waits on the set and wakes the worker at
//!   its first event, so a quiet socket's frame is read at once.
//! - **Busy** (a second wake within [`BATCH_WINDOW`] of the last): nobody
//!   waits on the set; the worker looks at it once a window and handles
//!   what every socket got in the meantime in one wake. A read waits at
//!   most about one window more (tokio's timer rounds up to the next
//!   millisecond); writes go straight to the socket and wait only when
//!   its buffer is full. The first look that finds nothing goes back to
//!   idle, and the watcher reports at once anything that came in between.
//! - **Reads held behind a push**: while fan-out writes are due on the
//!   worker (`due.rs`: woken writers that have not yet taken their frames
//!   nor found their sockets full), a socket found readable is marked so
//!   but its reader is not woken; the held readers are woken at the first
//!   look once nothing is due, or once the first has waited
//!   [`MAX_READ_HOLD`]. On two cores the acks a push causes used to be
//!   read between its writes: the last frames left after them.
//!
//! The watcher holds the set's descriptor in a poll of its own, added once
//! while the set is empty: it never takes an event from the set, and the
//! set never moves in or out of another (adding a populated epoll set to
//! another walks every descriptor in it; adding one socket to the nested
//! set checks only that socket's wake-up paths). Readiness follows tokio's rules
//! (edge-triggered, cleared by a read or write that would block or came
//! up short); the sockets' tasks, the set and its driver live on the
//! worker thread.

use crate::due::{self, MAX_READ_HOLD};
use mio::{Events, Interest, Token, unix::SourceFd};
use slab::Slab;
use std::{
    cell::RefCell,
    io::{self, Read, Write},
    net::Shutdown,
    os::fd::AsRawFd,
    pin::Pin,
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
    thread::Thread,
    time::{Duration, Instant},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a busy worker lets socket events gather before it reads them.
pub const BATCH_WINDOW: Duration = Duration::from_millis(1);

/// Events taken per look at the set; more are taken by looking again, up
/// to [`LOOKS_PER_WAKE`] looks, so the tasks just woken get their turn.
const EVENTS_PER_LOOK: usize = 1024;
const LOOKS_PER_WAKE: usize = 4;

/// One socket's readiness and the tasks waiting on it.
#[derive(Debug)]
struct Readiness {
    readable: bool,
    writable: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// A worker thread's set of sockets.
#[derive(Debug)]
struct Reactor {
    /// Registers sockets in the set (a duplicate of its descriptor).
    registry: mio::Registry,
    sockets: RefCell<Slab<Readiness>>,
    /// Set if the driver stopped on an error: sockets then fail their
    /// reads and writes, and the next socket gets a new set.
    failed: RefCell<Option<io::ErrorKind>>,
    /// Looks taken by the window (busy), for tests to see the mode used.
    windowed: std::cell::Cell<u64>,
    /// Wakers taken from `sockets` in a look, woken once it is let go.
    woken: RefCell<Vec<Waker>>,
    /// Readers whose sockets became readable while fan-out writes were due
    /// on this worker (`due.rs`), and since when the first waits: woken once
    /// the writes are out, or [`MAX_READ_HOLD`] after.
    held: RefCell<Vec<Waker>>,
    held_since: std::cell::Cell<Option<Instant>>,
    /// [`MAX_READ_HOLD`]; tests lengthen it to tell the two releases apart.
    max_hold: std::cell::Cell<Duration>,
}

thread_local! {
    static REACTOR: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
}

impl Reactor {
    /// This worker thread's set, made (its driver spawned on the thread's
    /// local task set, its watcher thread started) on first use.
    fn current() -> io::Result<Rc<Reactor>> {
        REACTOR.with(|slot| {
            let mut slot = slot.borrow_mut();
            if let Some(reactor) = slot.as_ref().filter(|r| r.failed.borrow().is_none()) {
                return Ok(reactor.clone());
            }
            let set = mio::Poll::new()?;
            let reactor = Rc::new(Reactor {
                registry: set.registry().try_clone()?,
                sockets: RefCell::new(Slab::new()),
                failed: RefCell::new(None),
                windowed: std::cell::Cell::new(0),
                woken: RefCell::new(Vec::new()),
                held: RefCell::new(Vec::new()),
                held_since: std::cell::Cell::new(None),
                max_hold: std::cell::Cell::new(MAX_READ_HOLD),
            });
            // The watcher's own poll holds the set's descriptor, added
            // once while the set is empty (adding an epoll set to another
            // walks every descriptor in it).
            let watcher_poll = mio::Poll::new()?;
            watcher_poll.registry().register(
                &mut SourceFd(&set.as_raw_fd()),
                SET,
                Interest::READABLE,
            )?;
            let watch = Arc::new(Watch {
                armed: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                failed: AtomicBool::new(false),
                ready: tokio::sync::Notify::new(),
                wake: mio::Waker::new(watcher_poll.registry(), STOP)?,
            });
            let watcher = std::thread::Builder::new()
                .name("hotswap-socket-watch".into())
                .spawn({
                    let watch = watch.clone();
                    move || watch_set(watcher_poll, &watch)
                })?
                .thread()
                .clone();
            // Made here, not in the task: a task dropped before its first
            // poll still stops the watcher and marks the set failed.
            let alive = DriverAlive {
                reactor: reactor.clone(),
                watch,
                watcher,
            };
            tokio::task::spawn_local(drive(alive, set));
            *slot = Some(reactor.clone());
            Ok(reactor)
        })
    }

    /// Takes every event the set holds and wakes the tasks waiting on
    /// them; returns how many there were.
    fn dispatch(&self, poll: &mut mio::Poll, events: &mut Events) -> io::Result<usize> {
        let mut total = 0;
        // A push's writes go out before the reads (its acks among them)
        // that came in meanwhile.
        let hold_reads = due::writes_due();
        for _ in 0..LOOKS_PER_WAKE {
            match poll.poll(events, Some(Duration::ZERO)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            let mut sockets = self.sockets.borrow_mut();
            let mut woken = self.woken.borrow_mut();
            let mut held = self.held.borrow_mut();
            let held_before = held.len();
            let mut taken = 0;
            for event in events.iter() {
                taken += 1;
                // A token freed since (its socket closed) may name another
                // socket now: a spurious wake, which the read or write that
                // would block clears.
                let Some(socket) = sockets.get_mut(event.token().0) else {
                    continue;
                };
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    socket.readable = true;
                    if hold_reads {
                        held.extend(socket.reader.take());
                    } else {
                        woken.extend(socket.reader.take());
                    }
                }
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    socket.writable = true;
                    woken.extend(socket.writer.take());
                }
            }
            if hold_reads && held_before == 0 && !held.is_empty() {
                self.held_since.set(Some(Instant::now()));
            }
            drop(sockets);
            drop(held);
            // Woken with nothing borrowed: a waker may do what it likes.
            let wakers = std::mem::take(&mut *woken);
            drop(woken);
            for waker in &wakers {
                waker.wake_by_ref();
            }
            let mut wakers = wakers;
            wakers.clear();
            *self.woken.borrow_mut() = wakers;
            total += taken;
            if taken < EVENTS_PER_LOOK {
                return Ok(total);
            }
        }
        // More than the looks took: the next look (at once while idle, the
        // next window while busy) takes the rest.
        Ok(total)
    }

    /// Wakes the readers held behind fan-out writes once none is due on
    /// this worker, or once the first has waited [`MAX_READ_HOLD`]; true
    /// while some are still held.
    fn release_reads(&self) -> bool {
        let mut held = self.held.borrow_mut();
        if held.is_empty() {
            return false;
        }
        let overdue = self
            .held_since
            .get()
            .is_none_or(|since| since.elapsed() >= self.max_hold.get());
        if due::writes_due() && !overdue {
            return true;
        }
        let wakers = std::mem::take(&mut *held);
        drop(held);
        self.held_since.set(None);
        wakers.into_iter().for_each(Waker::wake);
        false
    }

    /// The driver stopped: every waiting task learns it from its next
    /// read or write.
    fn fail(&self, kind: io::ErrorKind) {
        *self.failed.borrow_mut() = Some(kind);
        let mut wakers: Vec<Waker> = self
            .sockets
            .borrow_mut()
            .iter_mut()
            .flat_map(|(_, s)| [s.reader.take(), s.writer.take()])
            .flatten()
            .collect();
        wakers.append(&mut self.held.borrow_mut());
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// The watcher's tokens: the set became readable, or it is told to stop.
const SET: Token = Token(0);
const STOP: Token = Token(1);

/// What a worker and its watcher thread share.
#[derive(Debug)]
struct Watch {
    /// The worker is idle: the watcher waits on the set for it.
    armed: AtomicBool,
    stop: AtomicBool,
    /// The watcher's wait failed: the set can no longer be watched.
    failed: AtomicBool,
    /// The set holds an event (or the watcher failed).
    ready: tokio::sync::Notify,
    /// Breaks the watcher's wait when the driver goes away.
    wake: mio::Waker,
}

/// The watcher thread: while the worker is idle, it waits on the set and
/// wakes the worker at its first event; while the worker is busy it
/// sleeps, so events gather with no wake-up at all.
///
/// It never takes an event from the set (the worker does): its own poll
/// holds the set's descriptor, which reads ready while the set holds one.
fn watch_set(mut poll: mio::Poll, watch: &Watch) {
    let mut events = Events::with_capacity(4);
    loop {
        while !watch.armed.swap(false, Ordering::AcqRel) {
            if watch.stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::park();
        }
        if watch.stop.load(Ordering::Acquire) {
            return;
        }
        match poll.poll(&mut events, None) {
            Ok(()) => watch.ready.notify_one(),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {
                watch.armed.store(true, Ordering::Release);
            }
            Err(error) => {
                tracing::error!(%error, "the socket set's watcher stopped");
                watch.failed.store(true, Ordering::Release);
                watch.ready.notify_one();
                return;
            }
        }
    }
}

/// The set's driver, on its worker: woken by the watcher while idle, by
/// the window while busy.
async fn drive(alive: DriverAlive, mut set: mio::Poll) {
    let DriverAlive {
        reactor,
        watch,
        watcher,
    } = &alive;
    let mut events = Events::with_capacity(EVENTS_PER_LOOK);
    let mut last_wake: Option<Instant> = None;
    let stopped = |error: io::Error| {
        tracing::error!(%error, "the socket set's driver stopped");
        reactor.fail(error.kind());
    };
    loop {
        // Idle: the watcher wakes us on the set's first event.
        watch.armed.store(true, Ordering::Release);
        watcher.unpark();
        watch.ready.notified().await;
        if watch.failed.load(Ordering::Acquire) {
            return stopped(io::Error::other("the watcher stopped"));
        }
        if let Err(error) = reactor.dispatch(&mut set, &mut events) {
            return stopped(error);
        }
        let holding = reactor.release_reads();
        let now = Instant::now();
        let busy = last_wake.is_some_and(|last| now.duration_since(last) < BATCH_WINDOW);
        last_wake = Some(now);
        if !busy && !holding {
            continue;
        }
        // Busy, or reads held: the watcher sleeps; the set is read once a
        // window, and the held reads let go when the writes are out.
        loop {
            tokio::time::sleep(BATCH_WINDOW).await;
            reactor.windowed.set(reactor.windowed.get() + 1);
            let taken = match reactor.dispatch(&mut set, &mut events) {
                Ok(taken) => taken,
                Err(error) => return stopped(error),
            };
            if !reactor.release_reads() && taken == 0 {
                break;
            }
        }
        // Back to idle: an event since the last look wakes us at once.
        last_wake = None;
    }
}

/// Stops the watcher, and marks the set failed, when the driver goes away
/// (its runtime stopped): no event would reach its sockets any more.
struct DriverAlive {
    reactor: Rc<Reactor>,
    watch: Arc<Watch>,
    watcher: Thread,
}

impl Drop for DriverAlive {
    fn drop(&mut self) {
        self.watch.stop.store(true, Ordering::Release);
        let _ = self.watch.wake.wake();
        self.watcher.unpark();
        if self.reactor.failed.borrow().is_none() {
            self.reactor.fail(io::ErrorKind::BrokenPipe);
        }
    }
}

/// A socket in its worker's set; deregistered when both halves are gone.
#[derive(Debug)]
struct Socket {
    io: mio::net::TcpStream,
    token: usize,
    reactor: Rc<Reactor>,
}

impl Socket {
    /// Runs `op` once the socket is ready for it (`read` or write),
    /// clearing readiness when it would block or came up short.
    fn poll_io(
        &self,
        cx: &mut Context<'_>,
        read: bool,
        mut op: impl FnMut(&mio::net::TcpStream) -> io::Result<(usize, bool)>,
    ) -> Poll<io::Result<usize>> {
        // Off tokio's reactor, but under its budget still: a socket that
        // always has bytes yields to the worker's other tasks.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        loop {
            if let Some(kind) = *self.reactor.failed.borrow() {
                return Poll::Ready(Err(io::Error::new(kind, "the socket set's driver stopped")));
            }
            {
                let mut sockets = self.reactor.sockets.borrow_mut();
                let socket = &mut sockets[self.token];
                let (ready, waker) = if read {
                    (socket.readable, &mut socket.reader)
                } else {
                    (socket.writable, &mut socket.writer)
                };
                if !ready {
                    match waker {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        _ => *waker = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            }
            match op(&self.io) {
                Ok((n, short)) => {
                    if short {
                        // The kernel's buffer is drained (or full): the
                        // next edge says when there is more.
                        self.clear(read);
                    }
                    coop.made_progress();
                    return Poll::Ready(Ok(n));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => self.clear(read),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    fn clear(&self, read: bool) {
        let mut sockets = self.reactor.sockets.borrow_mut();
        let socket = &mut sockets[self.token];
        if read {
            socket.readable = false;
        } else {
            socket.writable = false;
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Closing the descriptor would take it out of the set too; this
        // says so at once, and frees the token.
        let _ = self.reactor.registry.deregister(&mut self.io);
        self.reactor.sockets.borrow_mut().try_remove(self.token);
    }
}

/// The most one read takes (and zeroes first, where the room is new).
const READ_MAX: usize = 64 * 1024;

/// The read half of a socket in its worker's set.
#[derive(Debug)]
pub struct TcpReader(Rc<Socket>);

/// The write half of a socket in its worker's set.
#[derive(Debug)]
pub struct TcpWriter(Rc<Socket>);

/// Moves `stream` from tokio's reactor into this worker's set. Must run on
/// the worker thread (inside its local task set) that will use the halves.
pub fn take(stream: tokio::net::TcpStream) -> io::Result<(TcpReader, TcpWriter)> {
    let reactor = Reactor::current()?;
    let mut io = mio::net::TcpStream::from_std(stream.into_std()?);
    let token = reactor.sockets.borrow_mut().insert(Readiness {
        // Unknown yet: the first read or write finds out.
        readable: true,
        writable: true,
        reader: None,
        writer: None,
    });
    if let Err(error) = reactor.registry.register(
        &mut io,
        Token(token),
        Interest::READABLE | Interest::WRITABLE,
    ) {
        reactor.sockets.borrow_mut().remove(token);
        return Err(error);
    }
    let socket = Rc::new(Socket { io, token, reactor });
    Ok((TcpReader(socket.clone()), TcpWriter(socket)))
}

impl AsyncRead for TcpReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Only a ready socket's read zeroes (what is not yet initialised
        // of) the room it reads into, and at most READ_MAX of it: a frame
        // trickled a byte at a time must not zero its whole reservation
        // per byte.
        let read = self.0.poll_io(cx, true, |mut io| {
            let room = buf.remaining().min(READ_MAX);
            let n = io.read(buf.initialize_unfilled_to(room))?;
            Ok((n, n > 0 && n < room))
        });
        match read {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TcpWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_io(cx, false, |mut io| {
            let n = io.write(data)?;
            Ok((n, n > 0 && n < data.len()))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.io.shutdown(Shutdown::Write) {
            // Already gone: nothing left to shut.
            Err(error) if error.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            result => Poll::Ready(result),
        }
    }
}

#[cfg(test)]
mod tests;
