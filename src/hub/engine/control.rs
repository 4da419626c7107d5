//! Operators' actions on a running deployment, carried out by its actor.

use super::{Action, Frames, run::DeploymentRun};
use crate::{
    catalog::Actor,
    domain::{
        kinds::Strategy,
        rollout::{DeploymentState, Event as Transition, transition},
    },
    hub::deployments::{DeploymentError, merge_rules},
    store::now_ms,
};
use serde_json::json;

impl DeploymentRun {
    pub(super) async fn control(
        &mut self,
        action: Action,
        actor: &Actor,
    ) -> Result<(), DeploymentError> {
        let name = action.name();
        let simple = |state, event| {
            transition(state, event).map_err(|_| {
                DeploymentError::Conflict(format!(
                    "cannot {name} a deployment that is {}",
                    state.name()
                ))
            })
        };
        match action {
            Action::Approve => {
                if actor.subject == self.row.created_by {
                    return Err(DeploymentError::Forbidden(
                        "a deployment is approved by an admin other than its creator".into(),
                    ));
                }
                let next = simple(self.state, Transition::Approve)?;
                let by = actor.subject.clone();
                self.commit(next, actor, "deployment.approve", json!({}), None, |row| {
                    row.approved_by = Some(by)
                })
                .await?;
                if self.strategy == Strategy::Rolling {
                    return self.first_batch(actor).await;
                }
                self.serve().await;
                // A Direct deployment with nothing to wait for completes now.
                self.step(Frames::JustPushed).await?;
            }
            Action::Pause => {
                let next = simple(self.state, Transition::Pause)?;
                self.commit(next, actor, "deployment.pause", json!({}), None, |_| {})
                    .await?;
                self.publish();
            }
            Action::Resume => {
                let next = simple(self.state, Transition::Resume)?;
                self.commit(next, actor, "deployment.resume", json!({}), None, |_| {})
                    .await?;
                self.publish();
            }
            Action::Promote => {
                simple(
                    self.state,
                    Transition::Advance {
                        phases: self.phase_count(),
                    },
                )?;
                if self.strategy == Strategy::ABTest {
                    return Err(DeploymentError::Conflict(
                        "an A/B test has no next phase: cancel it or roll it back".into(),
                    ));
                }
                self.advance(actor, "promoted by an operator").await?;
            }
            Action::Cancel | Action::Supersede(_) => {
                let next = simple(self.state, Transition::Cancel)?;
                let details = match &action {
                    Action::Supersede(by) => json!({ "supersededBy": by }),
                    _ => json!({}),
                };
                self.commit(next, actor, "deployment.cancel", details, None, |_| {})
                    .await?;
                self.apply().await;
            }
            Action::Rollback(request) => {
                self.rollback(actor, request, None, now_ms()).await?;
            }
            Action::Thresholds(request) => {
                if self.state.is_finished() || self.state == DeploymentState::RollingBack {
                    return Err(DeploymentError::Conflict(format!(
                        "cannot change the thresholds of a deployment that is {}",
                        self.state.name()
                    )));
                }
                let mut rules = self.plan.rules.clone();
                merge_rules(&mut rules, &request.thresholds)?;
                let before = (self.plan.rules.clone(), self.plan.rank);
                self.plan.rules = rules;
                if let Some(confidence) = request.confidence {
                    if !(0.5..1.0).contains(&confidence) {
                        self.plan.rules = before.0;
                        return Err(DeploymentError::Invalid(
                            "confidence must be in [0.5, 1)".into(),
                        ));
                    }
                    self.plan.rank.confidence = confidence;
                }
                let details =
                    json!({ "rules": self.plan.rules, "confidence": self.plan.rank.confidence });
                if let Err(error) = self
                    .commit(
                        self.state,
                        actor,
                        "deployment.rollback-thresholds",
                        details,
                        None,
                        |_| {},
                    )
                    .await
                {
                    (self.plan.rules, self.plan.rank) = before;
                    return Err(error);
                }
            }
        }
        Ok(())
    }
}
