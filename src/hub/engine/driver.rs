//! A run as its actor's [`DeploymentDriver`]: commands (the first step,
//! operators' actions), metric events folded into the cohort windows, and
//! the evaluation tick. The actor is the run's one driver, from its first
//! step to its last.

use super::{Command, Event, Frames, run::DeploymentRun};
use futures_util::future::LocalBoxFuture;
use hotswap_actors::{DeploymentDriver, Flow};
use std::time::Duration;

impl DeploymentDriver for DeploymentRun {
    type Command = Command;
    type Event = Event;

    fn every(&self) -> Duration {
        Duration::from_millis(self.hub.deployment_settings.evaluate_every_ms.max(10))
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Metrics {
                cohort,
                region,
                report,
                at_ms,
            } => self.fold(cohort, region, at_ms, |w, at| w.fold(at, &report)),
            Event::Complaints {
                cohort,
                region,
                count,
                at_ms,
            } => self.fold(cohort, region, at_ms, |w, at| w.add_complaints(at, count)),
        }
    }

    fn command(&mut self, command: Command) -> LocalBoxFuture<'_, Flow> {
        Box::pin(async move {
            match command {
                Command::Shutdown => return Flow::Stop,
                Command::Start { actor, reply } => {
                    // A failed first step is retried by the next tick; the
                    // deployment itself is committed.
                    if let Err(error) = self.start(&actor).await {
                        tracing::warn!(deployment = %self.row.id, error = %error, "first step failed; the next tick retries");
                    }
                    let _ = reply.send(());
                }
                Command::Control {
                    action,
                    actor,
                    reply,
                } => {
                    let result = self.control(action, &actor).await;
                    if let Err(error) = &result {
                        tracing::info!(deployment = %self.row.id, error = %error, "deployment command refused");
                    }
                    let _ = reply.send(result);
                }
            }
            self.flow()
        })
    }

    fn tick(&mut self) -> LocalBoxFuture<'_, Flow> {
        Box::pin(async move {
            if let Err(error) = self.step(Frames::Reconcile).await {
                tracing::warn!(deployment = %self.row.id, error = %error, "deployment step failed; will retry");
            }
            self.flow()
        })
    }
}

impl DeploymentRun {
    /// A finished deployment's actor stops.
    fn flow(&self) -> Flow {
        if self.state.is_finished() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }
}
