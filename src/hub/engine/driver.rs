//! A run as its actor's [`DeploymentDriver`]: commands (the first step,
//! operators' actions), metric events folded into the cohort windows, and
//! the evaluation tick. The actor is the run's one driver, from its first
//! step to its last.

use super::{Command, Event, Frames, run::DeploymentRun};
use crate::{
    domain::{rollout::DeploymentState, strategy},
    store::now_ms,
};
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
            Event::Slice {
                cohort,
                region,
                slice,
                at_ms,
            } => self.fold(cohort, region, at_ms, |w, at| w.merge(at, &slice)),
        }
    }

    fn command(&mut self, command: Command) -> LocalBoxFuture<'_, Flow> {
        Box::pin(async move {
            if self.lost_lease() {
                return Flow::Stop;
            }
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

    /// The last ack a phase waited on came in: the tick's step, now, if
    /// the run was waiting on acks (`awaiting_acks`, taken here) and they
    /// could move it (a canary phase mid-interval waits on).
    fn nudged(&mut self) -> LocalBoxFuture<'_, Flow> {
        if self.awaiting_acks && self.acks_move_it() {
            self.awaiting_acks = false;
            self.tick()
        } else {
            Box::pin(async { Flow::Continue })
        }
    }

    fn tick(&mut self) -> LocalBoxFuture<'_, Flow> {
        Box::pin(async move {
            if self.lost_lease() {
                return Flow::Stop;
            }
            if !self.hub.lease_current(&self.row.id) {
                // Not renewed in time (this node was paused, or the store
                // is slow): nothing moves until the keeper renews it, or
                // finds another node took it.
                return Flow::Continue;
            }
            if let Err(error) = self.step(Frames::Reconcile).await {
                tracing::warn!(deployment = %self.row.id, error = %error, "deployment step failed; will retry");
            }
            self.flow()
        })
    }
}

impl DeploymentRun {
    /// Whether the step asked for by the last ack a phase waited on
    /// (`DeploymentHandle::step_now`) could move anything: nobody is
    /// waiting still (the ask may have come while a walk was claiming
    /// more), and a rollback finishes once acked, a running phase asks the
    /// domain.
    fn acks_move_it(&self) -> bool {
        if self.record.tally().pushed > 0 {
            return false;
        }
        match self.state {
            DeploymentState::RollingBack => true,
            DeploymentState::InProgress { .. } => {
                let now = now_ms();
                strategy::acks_move_it(
                    &self.plan,
                    self.strategy,
                    self.phase(),
                    now - self.row.phase_started_at.unwrap_or(now),
                )
            }
            _ => false,
        }
    }

    /// Whether another node took this deployment over (this node's lease
    /// lapsed): its actor stops, and the node serves the deployment as
    /// the new owner stores it.
    fn lost_lease(&self) -> bool {
        // Alone every run holds epoch 0; in a cluster a run without an
        // epoch could never write, and stands down as well.
        if self.epoch.is_some() && self.hub.lease_epoch(&self.row.id) == self.epoch {
            return false;
        }
        tracing::warn!(deployment = %self.row.id, "another node drives this deployment now; stopping its actor here");
        self.hub.demote(&self.row.config_name, &self.row.id);
        true
    }

    /// A finished deployment's actor stops (and gives its lease up: a
    /// refused kill switch's run is finished from the start).
    fn flow(&self) -> Flow {
        if self.state.is_finished() {
            self.hub.lease_done(&self.row.id);
            Flow::Stop
        } else {
            Flow::Continue
        }
    }
}
