//! The deployment engine: one actor per deployment
//! (`hotswap_actors::deployment`) driving a [`run::DeploymentRun`]. The
//! decisions are the domain's (`domain::strategy`, `domain::evaluation`,
//! `domain::plan`, `domain::layers`); this carries them out.
//!
//! Every state change is written to the store (with its audit row, and the
//! config's active revision when it moves) **before** its effect goes out:
//! only then does the assignment the hub serves from change, and only then
//! are frames pushed (`Hub::reconcile`). A hub killed at any moment restarts
//! from the stored state, and every server's revision is one that a stored
//! deployment or the config's active revision accounts for.
//!
//! # Layout
//! - `serving.rs`: [`Serving`], how the hub serves one config (the
//!   domain's layers plus the handle of the deployment in flight); cohort
//!   names and sizes.
//! - `reconcile.rs`: `Hub::reconcile`, which brings every connected server
//!   of a config to what the layers give it, one frame per (from, to) pair.
//! - `plan.rs`: a request read into the domain's `Plan`; the versions it
//!   names as revisions.
//! - `run.rs`: [`run::DeploymentRun`], a deployment's state owned by its
//!   actor: commit, serve, judge, publish.
//! - `step.rs`: what a run does on each tick and on its first step
//!   (advance, complete, roll back), as `domain::strategy` decides.
//! - `control.rs`: operators' actions on a run (approve, pause, resume,
//!   promote, cancel, roll back, thresholds).
//! - `driver.rs`: the run as the actor's `DeploymentDriver`.
//! - `deploy.rs`: `Hub::deploy` (commit, then hand the run to its actor),
//!   commands to runs, the kill switch, resuming after a restart, stopping.
//! - `lookups.rs`: deployments as the API reads them.
//! - `alert.rs`: the rollback webhook.

mod alert;
mod control;
mod deploy;
mod driver;
mod lookups;
mod plan;
mod reconcile;
mod run;
mod serving;
mod step;

pub use serving::Serving;
pub(super) use serving::{BASELINE, CANARY, LiveRun};

use super::deployments::{RollbackRequest, ThresholdsRequest};
use crate::{catalog::Actor, domain::window::Report};
use hotswap_actors::DeploymentHandle;
use std::sync::Arc;
use tokio::sync::oneshot;

use super::deployments::DeploymentError;

pub(super) type RunHandle = DeploymentHandle<Command, Event>;

/// What operators can ask of a deployment.
#[derive(Debug, Clone)]
pub enum Action {
    Approve,
    Pause,
    Resume,
    Promote,
    Cancel,
    /// Cancelled because a new deployment of the config replaces it.
    Supersede(String),
    Rollback(RollbackRequest),
    Thresholds(ThresholdsRequest),
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Promote => "promote",
            Action::Cancel | Action::Supersede(_) => "cancel",
            Action::Rollback(_) => "rollback",
            Action::Thresholds(_) => "rollback-thresholds",
        }
    }
}

/// What a deployment's actor is asked; each answers on `reply`.
#[derive(Debug)]
pub(super) enum Command {
    /// A new deployment, just committed: its first step (the first batch,
    /// or its first phase served and judged).
    Start {
        actor: Actor,
        reply: oneshot::Sender<()>,
    },
    Control {
        action: Action,
        actor: Actor,
        reply: oneshot::Sender<Result<(), DeploymentError>>,
    },
    /// The hub is stopping: stop without touching the deployment.
    Shutdown,
}

/// What the hot paths tell a deployment's actor (never waiting for room).
#[derive(Debug)]
pub(super) enum Event {
    Metrics {
        cohort: Arc<str>,
        region: Arc<str>,
        report: Arc<Report>,
        at_ms: i64,
    },
    Complaints {
        cohort: Arc<str>,
        region: Arc<str>,
        count: u64,
        at_ms: i64,
    },
    /// Another node's servers' metrics for the slot of `at_ms`.
    Slice {
        cohort: Arc<str>,
        region: Arc<str>,
        slice: Box<crate::domain::window::Slice>,
        at_ms: i64,
    },
}

/// Whether a step pushes what servers miss, or the frames of the state it
/// steps from were pushed just now (a second pass would find nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frames {
    Reconcile,
    JustPushed,
}
