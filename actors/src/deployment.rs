//! The deployment actor: one per running deployment. It owns the
//! deployment's mutable state (the hub's [`DeploymentDriver`]: phase, cohort
//! metric windows, the last judgement) and serializes everything that
//! touches it: operator commands, metric events and the evaluation tick.
//! The tick can also be asked for early ([`DeploymentHandle::step_now`]):
//! when the last server a phase waits on acks, the phase need not wait
//! for the next period to move on.
//!
//! It is a tokio task with two bounded mailboxes rather than an actix actor:
//! every step of a deployment awaits the store before its effects go out
//! (persist, then push), which a plain `async` loop expresses directly.
//! Commands wait for room; metric events never wait; when the event
//! mailbox is full the event is dropped and counted, so a flood of metrics
//! can neither grow memory nor slow the sessions that send them.

use futures_util::future::LocalBoxFuture;
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::sync::{Notify, mpsc};

/// Whether the actor keeps running after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// What a deployment does; the hub implements it.
pub trait DeploymentDriver: 'static {
    type Command: 'static;
    type Event: 'static;
    /// How often [`DeploymentDriver::tick`] runs.
    fn every(&self) -> Duration;
    /// Cheap and synchronous: folding a metric report, say.
    fn event(&mut self, event: Self::Event);
    fn command(&mut self, command: Self::Command) -> LocalBoxFuture<'_, Flow>;
    fn tick(&mut self) -> LocalBoxFuture<'_, Flow>;
    /// An early step asked for ([`DeploymentHandle::step_now`]): the
    /// driver decides whether it is worth a tick's work.
    fn nudged(&mut self) -> LocalBoxFuture<'_, Flow> {
        self.tick()
    }
}

/// The actor has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the deployment actor has stopped")
    }
}

impl std::error::Error for Stopped {}

/// The way in: cheap to clone, safe to use from any thread.
#[derive(Debug)]
pub struct DeploymentHandle<C, E> {
    commands: mpsc::Sender<C>,
    events: mpsc::Sender<E>,
    dropped: Arc<AtomicU64>,
    /// Asks for a tick now; requests made while one runs make one more.
    nudge: Arc<Notify>,
}

impl<C, E> Clone for DeploymentHandle<C, E> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            events: self.events.clone(),
            dropped: self.dropped.clone(),
            nudge: self.nudge.clone(),
        }
    }
}

impl<C, E> DeploymentHandle<C, E> {
    /// Queues a command, waiting for room.
    pub async fn command(&self, command: C) -> Result<(), Stopped> {
        self.commands.send(command).await.map_err(|_| Stopped)
    }

    /// Queues an event unless the mailbox is full (then it is dropped and
    /// counted); false when dropped or stopped.
    pub fn event(&self, event: E) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks the actor for an early step ([`DeploymentDriver::nudged`]),
    /// after the commands and events already queued; the periodic ticks go
    /// on as before. Never waits; asks made before the actor gets to them
    /// count once.
    pub fn step_now(&self) {
        self.nudge.notify_one();
    }

    /// Events dropped because the mailbox was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn is_stopped(&self) -> bool {
        self.commands.is_closed()
    }

    /// Resolves once the actor has stopped (its task has ended).
    pub async fn stopped(&self) {
        self.commands.closed().await
    }
}

/// Starts the actor on the current thread's runtime (`spawn_local`: the
/// driver need not be `Send`). `make` builds the driver, given the actor's
/// own handle. Commands go first, then events, then an early step, then
/// ticks.
pub fn spawn<D: DeploymentDriver>(
    mailbox: usize,
    make: impl FnOnce(&DeploymentHandle<D::Command, D::Event>) -> D,
) -> DeploymentHandle<D::Command, D::Event> {
    let (commands, mut command_rx) = mpsc::channel::<D::Command>(mailbox.clamp(1, 1024));
    let (events, mut event_rx) = mpsc::channel::<D::Event>(mailbox.max(1));
    let handle = DeploymentHandle {
        commands,
        events,
        dropped: Arc::new(AtomicU64::new(0)),
        nudge: Arc::new(Notify::new()),
    };
    let nudge = handle.nudge.clone();
    let mut driver = make(&handle);
    actix::spawn(async move {
        // The first tick is one period away: a new deployment has just run
        // its first step (while its frames go out), a resumed one can wait.
        let period = driver.every();
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let flow = tokio::select! {
                biased;
                command = command_rx.recv() => match command {
                    Some(command) => driver.command(command).await,
                    None => Flow::Stop,
                },
                Some(event) = event_rx.recv() => {
                    driver.event(event);
                    // Drain what is already queued before looking at anything else.
                    while let Ok(event) = event_rx.try_recv() {
                        driver.event(event);
                    }
                    Flow::Continue
                }
                // The periodic ticks keep their pace: an early step that
                // decides nothing must not put off the next evaluation.
                _ = nudge.notified() => driver.nudged().await,
                _ = every.tick() => driver.tick().await,
            };
            if flow == Flow::Stop {
                break;
            }
        }
    });
    handle
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{cell::RefCell, rc::Rc};

    struct Counter {
        seen: Rc<RefCell<Vec<String>>>,
        ticks: u32,
        every: Duration,
    }

    impl DeploymentDriver for Counter {
        type Command = &'static str;
        type Event = u32;
        fn every(&self) -> Duration {
            self.every
        }
        fn event(&mut self, event: u32) {
            self.seen.borrow_mut().push(format!("event {event}"));
        }
        fn command(&mut self, command: &'static str) -> LocalBoxFuture<'_, Flow> {
            self.seen.borrow_mut().push(format!("command {command}"));
            Box::pin(async move {
                if command == "stop" {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            })
        }
        fn tick(&mut self) -> LocalBoxFuture<'_, Flow> {
            self.ticks += 1;
            self.seen.borrow_mut().push(format!("tick {}", self.ticks));
            Box::pin(async { Flow::Continue })
        }
    }

    /// Runs `test` on a current-thread runtime (its clock paused when
    /// asked) with a `Counter` actor ticking `every`: its handle, and what
    /// it saw.
    fn with_counter<F: std::future::Future<Output = ()>>(
        mailbox: usize,
        every: Duration,
        paused: bool,
        test: impl FnOnce(DeploymentHandle<&'static str, u32>, Rc<RefCell<Vec<String>>>) -> F,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(paused)
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, async {
            let seen = Rc::new(RefCell::new(Vec::new()));
            let handle = spawn(mailbox, |_| Counter {
                seen: seen.clone(),
                ticks: 0,
                every,
            });
            test(handle, seen).await;
        });
    }

    #[test]
    fn commands_go_first_events_fold_and_a_full_mailbox_drops() {
        with_counter(
            2,
            Duration::from_secs(3600),
            false,
            |handle, seen| async move {
                // The actor has not run yet: two events fit, the third is dropped.
                assert!(handle.event(1));
                assert!(handle.event(2));
                assert!(!handle.event(3));
                assert_eq!(handle.dropped_events(), 1);
                handle.command("hello").await.unwrap();
                for _ in 0..100 {
                    if seen.borrow().len() == 3 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                assert_eq!(
                    *seen.borrow(),
                    vec!["command hello", "event 1", "event 2"],
                    "commands are served before events"
                );
                handle.command("stop").await.unwrap();
                for _ in 0..100 {
                    if handle.is_stopped() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                assert!(handle.is_stopped(), "the actor stops on Flow::Stop");
                assert_eq!(handle.command("late").await, Err(Stopped));
                assert!(!handle.event(4));
            },
        );
    }

    #[test]
    fn step_now_ticks_early_once_per_ask_and_keeps_the_pace() {
        with_counter(4, Duration::from_secs(1), true, |handle, seen| async move {
            let settle = || async {
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
            };
            let ms = |n| tokio::time::sleep(Duration::from_millis(n));
            // Asked twice before the actor ran: one step, at once.
            handle.step_now();
            handle.step_now();
            settle().await;
            assert_eq!(*seen.borrow(), vec!["tick 1"]);
            // Queued commands and events go first.
            ms(500).await;
            assert!(handle.event(7));
            handle.step_now();
            handle.command("hello").await.unwrap();
            settle().await;
            assert_eq!(
                *seen.borrow(),
                vec!["tick 1", "command hello", "event 7", "tick 2"]
            );
            // The periodic tick keeps its time (1 s after the start), however
            // many early steps came between.
            ms(499).await;
            settle().await;
            assert_eq!(seen.borrow().len(), 4, "no tick without an ask");
            ms(2).await;
            settle().await;
            assert_eq!(seen.borrow().last().unwrap(), "tick 3");
            handle.command("stop").await.unwrap();
            settle().await;
            assert!(handle.is_stopped());
            // Asking a stopped actor is harmless.
            handle.step_now();
        });
    }
}
