//! One frame queued to many sessions ([`Fanout`]): frames are queued at
//! once, in order, but each session's writer is woken from the worker
//! thread the session lives on. A wake from another thread lands in that
//! worker's remote queue, which tokio serves once every 31 tasks while the
//! worker has local work (the acks and metrics of its own sockets): a
//! fan-out woken from one thread left the other worker's half of the fleet
//! waiting behind its acks. Woken at home, writes queue in order, ahead of
//! the acks they cause; and each frame counts as due on its worker until
//! its writer takes it (`due.rs`), so the reads that come meanwhile wait.

use crate::outbox::{CloseReason, Home, Outbox, PushError};
use bytes::Bytes;
use std::thread::ThreadId;

/// One frame queued to many sessions, their writers woken per worker
/// thread from that thread (see the module docs). Writers still waiting
/// are woken when it is dropped.
#[derive(Debug)]
pub struct Fanout {
    /// The thread the fan-out is made on (asked once, not per outbox).
    thread: ThreadId,
    /// Outboxes to wake from here: no home, or this thread's.
    here: Vec<Outbox>,
    /// Per home thread: its arbiter and its outboxes.
    away: Vec<(Home, Vec<Outbox>)>,
}

impl Default for Fanout {
    fn default() -> Self {
        Self::new()
    }
}

impl Fanout {
    pub fn new() -> Self {
        Self {
            thread: std::thread::current().id(),
            here: Vec::new(),
            away: Vec::new(),
        }
    }

    /// Queues `frame` to `outbox`; its writer is woken by [`Fanout::wake`].
    pub fn push(&mut self, outbox: &Outbox, frame: Bytes) -> Result<(), PushError> {
        outbox.queue_frame(frame)?;
        self.add(outbox);
        Ok(())
    }

    /// Queues `frame` then a close to `outbox` (a shutdown's `reconnect`:
    /// thousands of sockets, each told then closed, woken like a push).
    /// Nothing is queued if the socket is closing already.
    pub fn push_then_close(
        &mut self,
        outbox: &Outbox,
        frame: Bytes,
        reason: CloseReason,
    ) -> Result<(), PushError> {
        outbox.queue_frame(frame)?;
        outbox.queue_close(reason);
        self.add(outbox);
        Ok(())
    }

    fn add(&mut self, outbox: &Outbox) {
        match outbox.home() {
            Some(home) if home.thread != self.thread => {
                match self.away.iter_mut().find(|(h, _)| h.thread == home.thread) {
                    Some((_, outboxes)) => outboxes.push(outbox.clone()),
                    None => self.away.push((home.clone(), vec![outbox.clone()])),
                }
            }
            _ => self.here.push(outbox.clone()),
        }
    }

    /// Wakes every writer: this thread's at once, the others' from their
    /// own thread (one message to each worker, not one wake per session).
    pub fn wake(mut self) {
        self.wake_all();
    }

    /// Each frame is due on its worker from its wake (not from its
    /// queueing: a fan-out may wait, for a document, before it wakes
    /// anyone): reads there wait behind the writes.
    fn wake_all(&mut self) {
        for outbox in self.here.drain(..) {
            outbox.mark_due();
            outbox.wake_writer();
        }
        for (home, outboxes) in self.away.drain(..) {
            for outbox in &outboxes {
                outbox.mark_due();
            }
            // Woken where the closure ends: on the home thread when it
            // runs there; here, when a stopping worker refuses it (dropped
            // unrun), rather than never.
            let wakes = WakeOnDrop(outboxes);
            home.arbiter.spawn_fn(move || drop(wakes));
        }
    }
}

/// Wakes the writers of its outboxes when dropped.
struct WakeOnDrop(Vec<Outbox>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        for outbox in &self.0 {
            outbox.wake_writer();
        }
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::tests::{SocketBody, Wakes, poll_with, socket_body};
    use actix::Arbiter;
    use hotswap_client::sync::lock;
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::Poll,
    };

    #[test]
    fn a_fanout_can_tell_then_close_and_wakes_once_done() {
        let (outbox, mut body) = socket_body(8);
        let wakes = Arc::new(Wakes::default());
        assert!(poll_with(&mut body, &wakes).is_pending());
        let mut fanout = Fanout::new();
        let going = CloseReason::new(1001, "going away");
        fanout
            .push_then_close(&outbox, Bytes::from_static(b"r"), going.clone())
            .unwrap();
        assert_eq!(wakes.count.load(Ordering::SeqCst), 0, "queued, not woken");
        assert_eq!(
            fanout.push_then_close(&outbox, Bytes::from_static(b"r"), going),
            Err(PushError::Closed),
            "told once"
        );
        fanout.wake();
        assert_eq!(wakes.count.load(Ordering::SeqCst), 1);
        match poll_with(&mut body, &wakes) {
            Poll::Ready(Some(Ok(chunk))) => {
                assert_eq!(&chunk[..3], &[0x82, 1, b'r'], "the frame first");
                assert_eq!(
                    &chunk[3..7],
                    &[0x88, 12, 0x03, 0xE9],
                    "then the close, 1001"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(poll_with(&mut body, &wakes), Poll::Ready(None)));
        assert_eq!(
            outbox.push(Bytes::from_static(b"z")),
            Err(PushError::Closed)
        );
    }

    #[test]
    fn a_fanout_queues_at_once_and_wakes_when_done() {
        let (first, mut first_body) = socket_body(8);
        let (second, mut second_body) = socket_body(8);
        let wakes = Arc::new(Wakes::default());
        assert!(poll_with(&mut first_body, &wakes).is_pending());
        assert!(poll_with(&mut second_body, &wakes).is_pending());
        let mut fanout = Fanout::new();
        fanout.push(&first, Bytes::from_static(b"f")).unwrap();
        fanout.push(&second, Bytes::from_static(b"f")).unwrap();
        assert_eq!(
            wakes.count.load(Ordering::SeqCst),
            0,
            "no wake before the fan-out is done"
        );
        fanout.wake();
        assert_eq!(wakes.count.load(Ordering::SeqCst), 2);
        for body in [&mut first_body, &mut second_body] {
            match poll_with(body, &wakes) {
                Poll::Ready(Some(Ok(chunk))) => assert_eq!(&chunk[..], &[0x82, 1, b'f']),
                other => panic!("{other:?}"),
            }
        }
        // A fan-out dropped half-way still wakes what it queued.
        let mut fanout = Fanout::new();
        fanout.push(&first, Bytes::from_static(b"g")).unwrap();
        assert!(poll_with(&mut first_body, &wakes).is_ready());
        assert!(poll_with(&mut first_body, &wakes).is_pending());
        fanout.push(&first, Bytes::from_static(b"h")).unwrap();
        drop(fanout);
        // One wake per registered waker, however often the outbox was queued to.
        assert_eq!(wakes.count.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_fanout_frame_is_due_on_its_worker_until_the_writer_takes_it() {
        let system = actix::System::new();
        system.block_on(async {
            let due = Arc::new(AtomicUsize::new(0));
            let home = Home {
                thread: std::thread::current().id(),
                arbiter: Arbiter::current(),
                due: due.clone(),
            };
            let (outbox, receiver) = Outbox::new(8, Some(home));
            let mut body = SocketBody {
                receiver,
                done: false,
            };
            let wakes = Arc::new(Wakes::default());
            let count = || due.load(Ordering::SeqCst);
            let mut fanout = Fanout::new();
            fanout.push(&outbox, Bytes::from_static(b"a")).unwrap();
            fanout.push(&outbox, Bytes::from_static(b"b")).unwrap();
            assert_eq!(count(), 0, "due from the wake, not the queueing");
            fanout.wake();
            assert_eq!(count(), 1, "once per session");
            assert!(poll_with(&mut body, &wakes).is_ready());
            assert_eq!(count(), 0, "taken by the writer");
            // One session's frame is no fan-out: nothing waits for it.
            outbox.push(Bytes::from_static(b"c")).unwrap();
            assert_eq!(count(), 0);
            assert!(poll_with(&mut body, &wakes).is_ready());
            // A writer that stops lets go of what it never took.
            let mut fanout = Fanout::new();
            fanout.push(&outbox, Bytes::from_static(b"d")).unwrap();
            fanout.wake();
            assert_eq!(count(), 1);
            body.receiver.writer_done();
            assert_eq!(count(), 0);
            // Nor is a frame woken for once the writer is gone.
            outbox.mark_due();
            assert_eq!(count(), 0);
        });
    }

    #[test]
    fn a_fanout_wakes_each_session_from_its_home_worker() {
        let system = actix::System::new();
        system.block_on(async {
            let worker = Arbiter::new();
            let (made, made_rx) = std::sync::mpsc::channel();
            assert!(worker.spawn_fn(move || {
                // As `for_socket` does, on the worker that serves the socket.
                let home = Home {
                    thread: std::thread::current().id(),
                    arbiter: Arbiter::current(),
                    due: crate::due::on_this_thread(),
                };
                let (outbox, receiver) = Outbox::new(8, Some(home));
                made.send((outbox, receiver, std::thread::current().id()))
                    .unwrap();
            }));
            let (outbox, receiver, worker_thread) = made_rx.recv().unwrap();
            let mut body = SocketBody {
                receiver,
                done: false,
            };
            let wakes = Arc::new(Wakes::default());
            assert!(poll_with(&mut body, &wakes).is_pending());
            let mut fanout = Fanout::new();
            fanout.push(&outbox, Bytes::from_static(b"d")).unwrap();
            fanout.wake();
            for _ in 0..200 {
                if wakes.count.load(Ordering::SeqCst) > 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert_eq!(*lock(&wakes.threads), vec![worker_thread]);
            assert_ne!(worker_thread, std::thread::current().id());
            assert!(poll_with(&mut body, &wakes).is_ready(), "the frame");
            assert!(poll_with(&mut body, &wakes).is_pending());
            // A worker that stopped refuses the wake: it happens here
            // rather than never.
            worker.stop();
            worker.join().unwrap();
            let mut fanout = Fanout::new();
            fanout.push(&outbox, Bytes::from_static(b"e")).unwrap();
            fanout.wake();
            assert_eq!(
                *lock(&wakes.threads),
                vec![worker_thread, std::thread::current().id()]
            );
        });
    }
}
