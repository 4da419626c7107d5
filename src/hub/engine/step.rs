//! What a run does on its first step and on each tick, as
//! `domain::strategy` decides: advance, complete, roll back, finish a
//! rollback. Each move is committed, then served.

use super::{Frames, run::DeploymentRun};
use crate::{
    catalog::{Actor, views::rfc3339},
    domain::{
        judgement::Judgement,
        kinds::Strategy,
        rollout::{BUCKETS, DeploymentState, Event as Transition, transition},
        strategy::{self, Cause, Next, Progress},
    },
    hub::deployments::{DeploymentError, RollbackRecord, RollbackRequest},
    store::now_ms,
};
use serde_json::json;

impl DeploymentRun {
    /// The first step of a deployment just committed: the first batch of a
    /// rolling one, else its first state served; then a first evaluation
    /// (a Direct deployment with nothing to wait for completes now).
    pub(super) async fn start(&mut self, actor: &Actor) -> Result<(), DeploymentError> {
        // From here on commands reach this actor, whatever the first step
        // does (a failed first batch serves nothing until it is retried).
        if let Some(handle) = self.handle()
            && let Some(entry) = self.hub.serving_write().get_mut(&self.row.config_name)
        {
            entry.set_handle(&self.row.id, handle);
        }
        if self.strategy == Strategy::Rolling && self.state != DeploymentState::AwaitingApproval {
            if let Err(error) = self.first_batch(actor).await {
                tracing::warn!(deployment = %self.row.id, error = %error, "could not start the first batch; the next tick retries");
            }
        } else {
            // Published by the step below.
            self.serve().await;
        }
        self.step(Frames::JustPushed).await
    }

    /// Rolling: covers the first batch.
    pub(super) async fn first_batch(&mut self, actor: &Actor) -> Result<(), DeploymentError> {
        let limit = self.hub.rolling_limit(
            &self.row.config_name,
            &self.row.environment,
            &self.assignment(),
            0,
            self.plan.batch_size,
        );
        if limit >= BUCKETS {
            return self.complete(actor).await;
        }
        self.commit(
            self.state,
            actor,
            "deployment.advance",
            json!({ "phase": 0, "coverBucket": limit }),
            None,
            |row| row.cover_bucket = Some(i64::from(limit)),
        )
        .await?;
        self.apply().await;
        Ok(())
    }

    /// Moves to the next phase (or completes).
    pub(super) async fn advance(
        &mut self,
        actor: &Actor,
        why: &str,
    ) -> Result<(), DeploymentError> {
        let phase = self.phase();
        if self.strategy == Strategy::Rolling {
            let current = self.row.cover_bucket.unwrap_or(0);
            let next = self.hub.rolling_limit(
                &self.row.config_name,
                &self.row.environment,
                &self.assignment(),
                u32::try_from(current.max(0)).unwrap_or(BUCKETS),
                self.plan.batch_size,
            );
            if next >= BUCKETS {
                return self.complete(actor).await;
            }
            self.commit(
                DeploymentState::InProgress { phase: phase + 1 },
                actor,
                "deployment.advance",
                json!({ "phase": phase + 1, "coverBucket": next, "why": why }),
                None,
                |row| row.cover_bucket = Some(i64::from(next)),
            )
            .await?;
            self.apply().await;
            return Ok(());
        }
        let next = transition(
            self.state,
            Transition::Advance {
                phases: self.phase_count(),
            },
        )
        .map_err(|e| DeploymentError::Conflict(e.to_string()))?;
        if next == DeploymentState::Completed {
            return self.complete(actor).await;
        }
        self.commit(
            next,
            actor,
            "deployment.advance",
            json!({ "phase": phase + 1, "why": why }),
            None,
            |_| {},
        )
        .await?;
        self.apply().await;
        Ok(())
    }

    pub(super) async fn complete(&mut self, actor: &Actor) -> Result<(), DeploymentError> {
        let scoped = self.plan.scoped(self.strategy);
        let revision = self.row.revision;
        self.commit(
            DeploymentState::Completed,
            actor,
            "deployment.complete",
            json!({ "revision": revision, "scoped": scoped }),
            (!scoped).then_some(revision),
            |row| row.cover_bucket = row.cover_bucket.map(|_| i64::from(BUCKETS)),
        )
        .await?;
        self.apply().await;
        Ok(())
    }

    /// Rolls back: every server that got the new revision gets its previous
    /// one; done when they all acked (or the ack timeout passed).
    pub(super) async fn rollback(
        &mut self,
        actor: &Actor,
        request: RollbackRequest,
        breach: Option<&Judgement>,
        detected_at: i64,
    ) -> Result<(), DeploymentError> {
        if let Some(region) = request.region.clone() {
            return self.rollback_region(actor, region).await;
        }
        let from_completed = self.state == DeploymentState::Completed;
        let next = transition(self.state, Transition::Rollback)
            .map_err(|e| DeploymentError::Conflict(e.to_string()))?;
        let scoped = self.plan.scoped(self.strategy);
        let to_revision = self.row.previous_revision;
        if to_revision.is_none() && !scoped {
            return Err(DeploymentError::Conflict(
                "this is the config's first deployment: there is no previous revision to roll back to".into(),
            ));
        }
        let deciding = breach.and_then(|j| {
            let metric = j.deciding_metric()?.clone();
            let rule = j
                .rules
                .iter()
                .filter(|r| r.metric == metric)
                .max_by_key(|r| r.level);
            Some((metric, rule.cloned()))
        });
        let now = now_ms();
        let mut record = RollbackRecord {
            trigger: if breach.is_some() {
                "automatic"
            } else {
                "manual"
            }
            .into(),
            reason: request.reason.clone().unwrap_or_else(|| match &deciding {
                Some((metric, _)) => format!("critical breach of {metric:?}"),
                None if breach.is_some() => "critical breach".into(),
                None => format!("rolled back by {}", actor.subject),
            }),
            by: actor.subject.clone(),
            to_revision,
            detected_at: rfc3339(detected_at),
            rollback_started_at: rfc3339(now),
            ..Default::default()
        };
        if let Some((metric, rule)) = deciding {
            record.metric = Some(metric);
            if let Some(rule) = rule {
                record.observed = rule.canary;
                record.baseline = rule.baseline;
                record.change = rule.change;
                record.p_value = rule.p_value;
            }
        }
        let text = serde_json::to_string(&record).expect("a record serializes");
        let active = (from_completed && !scoped).then_some(to_revision).flatten();
        self.commit(
            next,
            actor,
            "deployment.rollback",
            serde_json::to_value(&record).expect("a record serializes"),
            active,
            |row| row.rollback = Some(text),
        )
        .await?;
        self.rollback_deadline_ms =
            Some(now + self.hub.deployment_settings.rollback_ack_timeout_ms as i64);
        if from_completed {
            let mut serving = self.hub.serving_write();
            if let Some(entry) = serving.get_mut(&self.row.config_name) {
                if scoped {
                    entry.layers_mut().withdraw(&self.row.id);
                } else {
                    entry.layers_mut().active = to_revision;
                }
            }
        }
        self.hub.alert(&self.row, &record);
        self.apply().await;
        Ok(())
    }

    /// Geographic: one region goes back; the deployment pauses for a decision.
    pub(super) async fn rollback_region(
        &mut self,
        actor: &Actor,
        region: String,
    ) -> Result<(), DeploymentError> {
        if self.strategy != Strategy::Geographic {
            return Err(DeploymentError::Invalid(
                "region applies to Geographic deployments".into(),
            ));
        }
        if !self
            .plan
            .region_order
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&region))
        {
            return Err(DeploymentError::Invalid(format!(
                "{region} is not one of this deployment's regions"
            )));
        }
        let phase = match self.state {
            DeploymentState::InProgress { phase } | DeploymentState::Paused { phase } => phase,
            other => {
                return Err(DeploymentError::Conflict(format!(
                    "cannot roll back a region of a deployment that is {}",
                    other.name()
                )));
            }
        };
        if !self
            .plan
            .excluded_regions
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&region))
        {
            self.plan.excluded_regions.push(region.clone());
        }
        self.commit(
            DeploymentState::Paused { phase },
            actor,
            "deployment.rollback-region",
            json!({ "region": region }),
            None,
            |_| {},
        )
        .await?;
        self.apply().await;
        Ok(())
    }

    /// Every server moved back acked (or the ack timeout passed).
    async fn finish_rollback(&mut self, now: i64) -> Result<(), DeploymentError> {
        let waiting = self.record.waiting();
        let mut record: RollbackRecord = self
            .row
            .rollback
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        record.rollback_completed_at = Some(rfc3339(now));
        let detected = chrono::DateTime::parse_from_rfc3339(&record.detected_at)
            .map(|d| d.timestamp_millis())
            .unwrap_or(now);
        record.duration_ms = Some(now - detected);
        record.unacked = waiting;
        let text = serde_json::to_string(&record).expect("a record serializes");
        self.commit(
            DeploymentState::RolledBack,
            &Actor::system(),
            "deployment.rolled-back",
            serde_json::to_value(&record).expect("a record serializes"),
            None,
            |row| row.rollback = Some(text),
        )
        .await?;
        self.apply().await;
        Ok(())
    }

    /// One evaluation: judge, roll back on a critical breach, advance when
    /// due (`domain::strategy`). `frames` says whether this state's frames
    /// went out just now (a fresh deployment's first step) or servers may
    /// need them.
    pub(super) async fn step(&mut self, frames: Frames) -> Result<(), DeploymentError> {
        let now = now_ms();
        let system = Actor::system();
        if self.state == DeploymentState::RollingBack {
            let overdue = self.rollback_deadline_ms.is_some_and(|d| now >= d);
            // In a cluster, the nodes up that have not yet moved their
            // servers back count as servers still to ack.
            // (The tally's count of servers still to ack: no sorted list
            // of a fleet's ids at each tick.)
            let pushed = self.record.tally().pushed;
            self.awaiting_acks &= pushed > 0;
            let waiting =
                usize::try_from(pushed).unwrap_or(0) + self.hub.peers_behind(&self.record) as usize;
            if strategy::on_rolling_back(waiting, overdue) == Next::FinishRollback {
                self.finish_rollback(now).await?;
            }
            self.publish();
            return Ok(());
        }
        let (running, paused) = match self.state {
            DeploymentState::InProgress { .. } => (true, false),
            DeploymentState::Paused { .. } => (false, true),
            _ => {
                self.publish();
                return Ok(());
            }
        };
        let collect = self
            .hub
            .deploy_parent(&self.row.id)
            .filter(|_| self.hub.tracer.sample_collect(&self.row.id, now))
            .map(|parent| self.hub.tracer.start("metrics.collect", Some(parent)));
        let verdict = self.evaluate(now);
        if let Some(mut span) = collect {
            span.set(
                "verdict",
                crate::observability::traces::AttrValue::Text(format!("{verdict:?}")),
            );
            span.end();
        }
        let can_roll_back = self.row.previous_revision.is_some() || self.plan.scoped(self.strategy);
        let next = match strategy::on_verdict(running, paused, verdict, can_roll_back) {
            Some(next) => next,
            None => {
                // Only a rolling deployment that stops on failure asks; read
                // before the reconcile below, which sends a failed server
                // the revision again (its failure would be gone).
                let first_failure = (self.strategy == Strategy::Rolling
                    && self.plan.stop_on_failure)
                    .then(|| self.record.first_failure())
                    .flatten();
                // Servers skipped while unhealthy, or whose frame was lost,
                // get what their cohort runs.
                if frames == Frames::Reconcile {
                    self.hub.reconcile(&self.row.config_name).await;
                }
                let tally = self.record.tally();
                self.awaiting_acks &= tally.pushed > 0;
                let progress = Progress {
                    phase: self.phase(),
                    // In a cluster, each node up that has not yet served
                    // this state counts as a server still to ack.
                    unacked: tally.pushed + self.hub.peers_behind(&self.record),
                    first_failure,
                    elapsed_ms: now - self.row.phase_started_at.unwrap_or(now),
                    verdict,
                };
                strategy::on_progress(&self.plan, self.strategy, &progress)
            }
        };
        match next {
            // A paused run was judged all the same: its cohorts and its
            // judgement are published below; nothing moves.
            Next::Wait | Next::FinishRollback => {}
            // Both publish the state they commit (`apply`).
            Next::Advance { why } => return self.advance(&system, why).await,
            Next::Complete => return self.complete(&system).await,
            Next::RollBack(Cause::Breach) => {
                tracing::warn!(deployment = %self.row.id, "critical breach: rolling back");
                let judgement = self.last.clone();
                return self
                    .rollback(&system, RollbackRequest::default(), judgement.as_ref(), now)
                    .await;
            }
            Next::RollBack(Cause::ServerFailed { server, error }) => {
                let reason = format!(
                    "server {server} failed to apply: {}",
                    error.as_deref().unwrap_or("no reason given")
                );
                return self
                    .rollback(
                        &system,
                        RollbackRequest {
                            region: None,
                            reason: Some(reason),
                        },
                        None,
                        now,
                    )
                    .await;
            }
            Next::PauseWithoutPrevious => {
                self.warning = Some("critical breach, but the config has no previous revision to roll back to: paused".into());
                self.commit(
                    DeploymentState::Paused {
                        phase: self.phase(),
                    },
                    &system,
                    "deployment.pause",
                    json!({ "why": "critical breach without a previous revision" }),
                    None,
                    |_| {},
                )
                .await?;
                return Ok(());
            }
        }
        self.publish();
        Ok(())
    }
}
