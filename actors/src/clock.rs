//! [`Clock`]: the wall clock live ops read (Unix milliseconds).
//!
//! It is the system clock, shifted by an offset that is zero unless
//! someone moves it: tests (and rehearsals of a schedule) move it to an
//! instant hours or months away, to watch an event cross a
//! daylight-saving change in seconds. A move wakes every actor sleeping
//! on the clock, so none oversleeps an instant the move brought near.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::sync::watch;

/// Cheap to clone; clones share the offset.
#[derive(Debug, Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    offset_ms: AtomicI64,
    /// Bumped on each move; sleepers watch it.
    moves: watch::Sender<u64>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Clock {
    /// The system clock, unshifted.
    pub fn system() -> Self {
        Self {
            inner: Arc::new(Inner {
                offset_ms: AtomicI64::new(0),
                moves: watch::channel(0).0,
            }),
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        system_ms().saturating_add(self.inner.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock so that now is `at_ms` (it keeps running from
    /// there at the system clock's pace) and wakes every sleeper.
    pub fn set_now_ms(&self, at_ms: i64) {
        self.inner
            .offset_ms
            .store(at_ms.saturating_sub(system_ms()), Ordering::Relaxed);
        self.inner.moves.send_modify(|moves| *moves += 1);
    }

    /// Sleeps until `at_ms` on this clock, or for `max` at most; returns
    /// early (to be asked again) when the clock moves.
    pub async fn sleep_until(&self, at_ms: Option<i64>, max: Duration) {
        let mut moves = self.inner.moves.subscribe();
        let sleep = at_ms.map_or(max, |at| {
            Duration::from_millis(at.saturating_sub(self.now_ms()).max(0) as u64).min(max)
        });
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = moves.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_from_where_it_was_moved() {
        let clock = Clock::system();
        assert!((clock.now_ms() - system_ms()).abs() < 1000);
        let shared = clock.clone();
        shared.set_now_ms(1_800_000_000_000);
        let now = clock.now_ms();
        assert!(
            (1_800_000_000_000..1_800_000_001_000).contains(&now),
            "{now}"
        );
    }

    #[test]
    fn a_move_wakes_a_sleeper() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let clock = Clock::system();
            let far = clock.now_ms() + 3_600_000;
            let sleeper = tokio::spawn({
                let clock = clock.clone();
                async move {
                    let started = std::time::Instant::now();
                    clock.sleep_until(Some(far), Duration::from_secs(60)).await;
                    started.elapsed()
                }
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            clock.set_now_ms(far);
            let slept = sleeper.await.unwrap();
            assert!(slept < Duration::from_secs(5), "{slept:?}");
            assert!(clock.now_ms() >= far);
        });
    }
}
