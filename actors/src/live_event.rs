//! The live-event actor: one per live event that is not finished. It owns
//! the event's timers and serializes everything that moves the event:
//! operators' commands and the instants its schedule names (a start, an
//! end, a preview or ending-soon lead).
//!
//! Like the deployment actor it is a tokio task with a bounded mailbox:
//! each step awaits the store before its effect. It sleeps until the
//! driver's next instant on its [`Clock`] (Unix milliseconds), at most
//! [`MAX_SLEEP`] at a time so a system clock jump is noticed within it; a
//! move of the [`Clock`] itself wakes it at once.

use crate::clock::Clock;
use crate::deployment::{Flow, Stopped};
use futures_util::future::LocalBoxFuture;
use std::time::Duration;
use tokio::sync::mpsc;

/// The longest the actor sleeps before it looks at the clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// What a live event does; the hub implements it.
pub trait LiveEventDriver: 'static {
    type Command: 'static;
    /// When the driver next wants [`LiveEventDriver::wake`] (Unix ms);
    /// `None`: only commands move it.
    fn next_wake_ms(&self) -> Option<i64>;
    /// The instant came (or passed: the actor may wake late, never early).
    fn wake(&mut self) -> LocalBoxFuture<'_, Flow>;
    fn command(&mut self, command: Self::Command) -> LocalBoxFuture<'_, Flow>;
}

/// The way in: cheap to clone.
#[derive(Debug)]
pub struct LiveEventHandle<C> {
    commands: mpsc::Sender<C>,
}

impl<C> Clone for LiveEventHandle<C> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
        }
    }
}

impl<C> LiveEventHandle<C> {
    /// Queues a command, waiting for room.
    pub async fn command(&self, command: C) -> Result<(), Stopped> {
        self.commands.send(command).await.map_err(|_| Stopped)
    }

    pub fn is_stopped(&self) -> bool {
        self.commands.is_closed()
    }
}

/// Starts the actor on the current thread's runtime (`spawn_local`). It
/// first wakes at the driver's first instant (at once, when it has passed:
/// an activation missed while the hub was down). When a step says stop,
/// the commands already queued are still carried out.
pub fn spawn<D: LiveEventDriver>(
    mailbox: usize,
    clock: Clock,
    mut driver: D,
) -> LiveEventHandle<D::Command> {
    let (commands, mut command_rx) = mpsc::channel::<D::Command>(mailbox.clamp(1, 1024));
    actix::spawn(async move {
        loop {
            let next = driver.next_wake_ms();
            // Commands first, even when an instant is due: a step that
            // takes longer than the time to the next instant must not
            // starve operators' commands.
            let flow = tokio::select! {
                biased;
                command = command_rx.recv() => match command {
                    Some(command) => driver.command(command).await,
                    None => Flow::Stop,
                },
                _ = clock.sleep_until(next, MAX_SLEEP) => {
                    if driver.next_wake_ms().is_some_and(|at| at <= clock.now_ms()) {
                        driver.wake().await
                    } else {
                        Flow::Continue
                    }
                }
            };
            if flow == Flow::Stop {
                // Commands already queued are answered, not dropped; from
                // now on senders see the actor stopped.
                command_rx.close();
                while let Ok(command) = command_rx.try_recv() {
                    driver.command(command).await;
                }
                break;
            }
        }
    });
    LiveEventHandle { commands }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{cell::RefCell, rc::Rc};

    struct Alarm {
        clock: Clock,
        at: Option<i64>,
        log: Rc<RefCell<Vec<String>>>,
    }

    impl LiveEventDriver for Alarm {
        type Command = i64;
        fn next_wake_ms(&self) -> Option<i64> {
            self.at
        }
        fn wake(&mut self) -> LocalBoxFuture<'_, Flow> {
            self.log.borrow_mut().push("wake".into());
            self.at = None;
            Box::pin(async { Flow::Continue })
        }
        fn command(&mut self, in_ms: i64) -> LocalBoxFuture<'_, Flow> {
            self.log.borrow_mut().push(format!("command {in_ms}"));
            if in_ms < 0 {
                return Box::pin(async { Flow::Stop });
            }
            self.at = Some(self.clock.now_ms() + in_ms);
            Box::pin(async { Flow::Continue })
        }
    }

    #[test]
    fn wakes_at_its_instants_and_at_once_for_a_passed_one() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, async {
            let log = Rc::new(RefCell::new(Vec::new()));
            let clock = Clock::system();
            // An instant already past: woken at once.
            let handle = spawn(
                4,
                clock.clone(),
                Alarm {
                    clock: clock.clone(),
                    at: Some(clock.now_ms() - 10_000),
                    log: log.clone(),
                },
            );
            let settle = || async {
                for _ in 0..200 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(*log.borrow(), vec!["wake"]);
            // A command sets the next instant; the actor sleeps until it.
            let asked = std::time::Instant::now();
            handle.command(150).await.unwrap();
            while log.borrow().len() < 3 && asked.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(*log.borrow(), vec!["wake", "command 150", "wake"]);
            assert!(asked.elapsed() >= Duration::from_millis(140), "not early");
            // An instant an hour away comes at once when the clock moves to it.
            handle.command(3_600_000).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(log.borrow().len(), 4, "asleep until the clock moves");
            clock.set_now_ms(clock.now_ms() + 3_600_000);
            let moved = std::time::Instant::now();
            while log.borrow().len() < 5 && moved.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(log.borrow()[3..], ["command 3600000", "wake"]);
            assert!(moved.elapsed() < Duration::from_secs(5));
            handle.command(-1).await.unwrap();
            settle().await;
            assert!(handle.is_stopped());
            assert_eq!(handle.command(1).await, Err(Stopped));
        });
    }
}
