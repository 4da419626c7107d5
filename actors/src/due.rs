//! Fan-out writes still due on a worker thread, so that its socket set
//! lets reads wait behind them (`reactor.rs`): the acks a push causes are
//! read once the push is out, not between its writes.
//!
//! A frame a [`crate::Fanout`] wakes a session's writer for counts on the
//! session's home worker until the writer has taken everything queued, or
//! finds its socket full (a server that stopped reading holds nobody's
//! reads), or stops. Reads wait at most [`MAX_READ_HOLD`], so a count that
//! never fell (a bug) would cost latency, never a read.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

/// The longest a read waits for its worker's fan-out writes.
pub const MAX_READ_HOLD: Duration = Duration::from_millis(100);

thread_local! {
    static DUE: Arc<AtomicUsize> = Arc::new(AtomicUsize::new(0));
}

/// This thread's count of fan-out writes due, shared with every thread
/// that queues to its sessions.
pub(crate) fn on_this_thread() -> Arc<AtomicUsize> {
    DUE.with(Arc::clone)
}

/// Whether fan-out writes are due on this thread.
pub(crate) fn writes_due() -> bool {
    DUE.with(|due| due.load(Ordering::SeqCst) > 0)
}

/// One session's part in its worker's count (the worker's counter is
/// its home's, `outbox.rs`): whether it is counted.
#[derive(Debug, Default)]
pub(crate) struct Due {
    counted: AtomicBool,
}

impl Due {
    /// A fan-out frame was queued. The count rises before the flag is
    /// set, so a writer's [`Due::taken`] (which falls only after it finds
    /// the flag set) never takes it below 0. `writer_gone` is read after:
    /// a writer that stopped before would never take the frame (and one
    /// that stops after finds it counted and clears it).
    pub(crate) fn queued(&self, worker: &AtomicUsize, writer_gone: &AtomicBool) {
        if self.counted.load(Ordering::SeqCst) {
            return;
        }
        worker.fetch_add(1, Ordering::SeqCst);
        if self.counted.swap(true, Ordering::SeqCst) {
            // Counted meanwhile by another fan-out.
            worker.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        if writer_gone.load(Ordering::SeqCst) {
            self.taken(worker);
        }
    }

    /// The writer took what was queued, found its socket full, or stopped.
    pub(crate) fn taken(&self, worker: &AtomicUsize) {
        if self.counted.swap(false, Ordering::SeqCst) {
            worker.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_counts_once_until_its_writer_takes_the_frames() {
        let worker = AtomicUsize::new(0);
        let (a, b) = (Due::default(), Due::default());
        let alive = AtomicBool::new(false);
        a.queued(&worker, &alive);
        a.queued(&worker, &alive);
        b.queued(&worker, &alive);
        assert_eq!(worker.load(Ordering::SeqCst), 2, "one per session");
        a.taken(&worker);
        a.taken(&worker);
        assert_eq!(worker.load(Ordering::SeqCst), 1);
        b.taken(&worker);
        assert_eq!(worker.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_frame_queued_to_a_stopped_writer_is_not_counted() {
        let worker = AtomicUsize::new(0);
        Due::default().queued(&worker, &AtomicBool::new(true));
        assert_eq!(worker.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn each_thread_has_its_own_count() {
        let here = on_this_thread();
        here.fetch_add(1, Ordering::SeqCst);
        assert!(writes_due());
        let there = std::thread::spawn(writes_due).join().unwrap();
        assert!(!there);
        here.fetch_sub(1, Ordering::SeqCst);
        assert!(!writes_due());
    }
}
