//! Starting deployments and talking to their actors: `Hub::deploy` commits
//! a new deployment and hands it to its actor, which runs it from its first
//! step; operators' commands go to the actor; the kill switch; resuming
//! after a restart; stopping with the hub.

use super::{
    Action, Command, LiveRun, RunHandle, plan::plan_for, run::DeploymentRun, serving::Serving,
};
use crate::{
    catalog::Actor,
    domain::{
        kinds::Strategy,
        plan::Plan,
        rollout::{Assignment, Cover, DeploymentState, Event as Transition, transition},
    },
    hub::{
        Hub,
        deployments::{
            DeploymentError, DeploymentView, NewDeploymentRequest, RollbackRequest, RunRecord,
        },
    },
    store::{StoreError, audit, hub as store_hub, now_ms},
};
use serde_json::json;
use std::{sync::Arc, time::Duration};
use tokio::sync::oneshot;

impl Hub {
    /// Starts a deployment: checked, reserved (a second deployment of the
    /// config is refused from here on), committed with its audit row, then
    /// handed to its actor, which takes its first step before the answer.
    pub async fn deploy(
        self: &Arc<Self>,
        actor: &Actor,
        request: NewDeploymentRequest,
    ) -> Result<DeploymentView, DeploymentError> {
        self.deploy_with(actor, request, false, None).await
    }

    /// A deployment a live event starts for its server-wide overrides:
    /// the event was checked and audited when it was created, so neither
    /// the version nor the deployment waits for an approval. Its id is the
    /// event's, recorded before (a hub stopped in between finds it missing
    /// and starts it under that id: none is ever left unrecorded).
    pub async fn deploy_for_event(
        self: &Arc<Self>,
        actor: &Actor,
        request: NewDeploymentRequest,
        id: &str,
    ) -> Result<DeploymentView, DeploymentError> {
        // Stored in its canonical spelling; never an id in use.
        let Ok(id) = uuid::Uuid::parse_str(id).map(|id| id.to_string()) else {
            return Err(DeploymentError::Invalid(format!(
                "{id:?} is not a deployment id"
            )));
        };
        if self.runs.get(&id).is_some() {
            return Err(DeploymentError::Conflict(format!("deployment {id} exists")));
        }
        self.deploy_with(actor, request, true, Some(&id)).await
    }

    /// Whether `request` makes a deployment plan (phases, durations,
    /// thresholds), without starting anything: a live event's rollout and
    /// guardrails are checked when it is defined and before each version
    /// derived for it is stored.
    pub fn check_plan(&self, request: &NewDeploymentRequest) -> Result<(), DeploymentError> {
        plan_for(self, request, Vec::new()).map(|_| ())
    }

    /// Whether another deployment could start now (the hub's cap on
    /// deployments running at once).
    pub fn deployment_room(&self) -> bool {
        self.runs.running() < self.deployment_settings.max_concurrent
    }

    async fn deploy_with(
        self: &Arc<Self>,
        actor: &Actor,
        request: NewDeploymentRequest,
        preapproved: bool,
        id: Option<&str>,
    ) -> Result<DeploymentView, DeploymentError> {
        let strategy = request.strategy;
        let (target, variants) = self.resolve_targets(&request).await?;
        if let Some(environment) = &request.environment
            && *environment != target.environment
        {
            return Err(DeploymentError::Invalid(format!(
                "{} is a {} config, not {environment}",
                target.config, target.environment
            )));
        }
        let policy = self.policy(&target.environment);
        if !preapproved && policy.breaking_needs_approval && target.breaking && !target.approved {
            return Err(DeploymentError::ApprovalRequired {
                config: target.config,
                version: target.version,
            });
        }
        let mut plan = plan_for(self, &request, variants)?;
        plan.needs_approval = policy.deployment_needs_approval && !preapproved;
        let id = id.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
        let previous = loop {
            let superseded = {
                let mut serving = self.serving_write();
                let running = self.runs.running();
                let entry = serving
                    .entry(target.config.clone())
                    .or_insert_with(|| Serving::new(&target.environment));
                match entry.live() {
                    Some(live) if request.supersede == Some(true) => Some(live.clone()),
                    Some(live) => {
                        return Err(DeploymentError::InProgress(live.deployment_id.to_string()));
                    }
                    None if running >= self.deployment_settings.max_concurrent => {
                        return Err(DeploymentError::TooMany(running));
                    }
                    None => {
                        let placeholder = store_hub::DeploymentRow {
                            id: id.clone(),
                            config_id: target.config_id.clone(),
                            config_name: target.config.clone(),
                            version: target.version.clone(),
                            revision: target.revision,
                            previous_revision: entry.layers().active,
                            strategy: strategy.as_str().into(),
                            environment: target.environment.clone(),
                            status: DeploymentState::Pending.name().into(),
                            created_by: actor.subject.clone(),
                            created_at: now_ms(),
                            completed_at: None,
                            target_count: 0,
                            acked_count: 0,
                            failed_count: 0,
                            spec: serde_json::to_string(&plan).expect("a plan serializes"),
                            phase: 0,
                            phase_started_at: None,
                            cover_bucket: None,
                            approved_by: None,
                            rollback: None,
                            updated_at: None,
                            scoped: i64::from(plan.scoped(strategy)),
                        };
                        let record = RunRecord::new(placeholder);
                        // Covers nobody until its actor serves its first state.
                        entry.fly(
                            Arc::new(Assignment {
                                deployment_id: id.clone(),
                                revision: target.revision,
                                scope: plan.scope.clone(),
                                cover: Cover::Nobody,
                            }),
                            LiveRun {
                                deployment_id: Arc::from(id.as_str()),
                                record: record.clone(),
                                handle: None,
                                variant_names: Arc::from(Vec::new()),
                                mirror: false,
                            },
                        );
                        self.runs.insert(record);
                        None
                    }
                }
            };
            match superseded {
                Some(live) if live.mirror => {
                    // Driven by another node: cancelled there, then read back.
                    self.forward(&live.deployment_id, &Action::Supersede(id.clone()), actor)
                        .await?;
                    self.refresh_from_store()
                        .await
                        .map_err(|e| DeploymentError::OwnerUnreachable(e.to_string()))?;
                }
                Some(live) => {
                    let Some(handle) = live.handle else {
                        return Err(DeploymentError::InProgress(live.deployment_id.to_string()));
                    };
                    self.send(&handle, Action::Supersede(id.clone()), actor)
                        .await?;
                }
                None => {
                    break self
                        .serving_read()
                        .get(&target.config)
                        .and_then(|s| s.layers().active);
                }
            }
        };
        let record = self.runs.get(&id).expect("the run was just reserved");
        let mut row = record.row();
        row.previous_revision = previous;
        let state = transition(
            DeploymentState::Pending,
            Transition::Start {
                needs_approval: plan.needs_approval,
            },
        )
        .expect("a pending deployment starts");
        row.status = state.name().into();
        row.phase_started_at = Some(row.created_at);
        row.updated_at = Some(row.created_at);
        let stored = async {
            let mut tx = self.store.begin().await?;
            store_hub::insert_deployment(&mut tx, &row).await?;
            // In a cluster this node drives it: its lease commits with it
            // (and is held only once it is committed).
            let lease = self.lease_new(&mut tx, &row.id).await?;
            audit::record(
                &mut tx,
                actor.audit_entry(
                    "deployment.create",
                    format!("deployments/{}", row.id),
                    json!({ "config": target.config, "version": target.version, "revision": target.revision, "previousRevision": previous, "strategy": strategy.as_str(), "plan": plan }),
                ),
            )
            .await?;
            tx.commit().await.map_err(StoreError::from)?;
            self.lease_committed(&row.id, lease);
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(error) = stored {
            self.unreserve(&target.config, &id);
            return Err(error.into());
        }
        self.meters.deployment_started(strategy.as_str());
        if self.tracer.enabled() {
            use crate::observability::traces::{AttrValue, current};
            let mut span = self.tracer.start("config.deploy", current());
            span.set("deployment.id", AttrValue::Text(row.id.clone()));
            span.set("config", AttrValue::Text(row.config_name.clone()));
            span.set("version", AttrValue::Text(row.version.clone()));
            span.set("strategy", AttrValue::Text(strategy.as_str().to_owned()));
            hotswap_client::sync::lock(&self.deploy_spans).insert(row.id.clone(), span);
        }
        let span_id = row.id.clone();
        record.set_row(row);
        // Stored: from here the config stays reserved (a restart resumes it).
        let run = match DeploymentRun::new(self.clone(), record.clone(), plan) {
            Ok(run) => run,
            Err(error) => {
                self.end_deploy_span(&span_id, &error.to_string());
                return Err(error);
            }
        };
        // The actor runs the deployment from its first step; the answer
        // waits for that step (its frames are out, a Direct deployment with
        // nothing to wait for is complete).
        let handle = self.spawn_run(run);
        let (reply, started) = oneshot::channel();
        let sent = handle
            .command(Command::Start {
                actor: actor.clone(),
                reply,
            })
            .await;
        if sent.is_err() || started.await.is_err() {
            // The hub is stopping: the deployment is stored and resumes
            // with the next start.
            self.end_deploy_span(&span_id, "the hub stopped before its first step");
            return Err(DeploymentError::Stopping);
        }
        Ok(record.view())
    }

    /// Frees the config reserved for deployment `id` (it was not stored).
    fn unreserve(&self, config: &str, id: &str) {
        if let Some(entry) = self.serving_write().get_mut(config) {
            entry.land(id);
        }
        self.runs.remove(id);
    }

    /// Starts the actor that drives `run` from here on, and returns its handle.
    fn spawn_run(&self, mut run: DeploymentRun) -> RunHandle {
        hotswap_actors::deployment::spawn(self.deployment_settings.mailbox, |handle| {
            run.set_handle(handle.clone());
            run
        })
    }

    /// Sends an action to a running deployment's actor and waits for its answer.
    pub(in crate::hub) async fn send(
        &self,
        handle: &RunHandle,
        action: Action,
        actor: &Actor,
    ) -> Result<(), DeploymentError> {
        let (reply, answer) = oneshot::channel();
        handle
            .command(Command::Control {
                action,
                actor: actor.clone(),
                reply,
            })
            .await
            .map_err(|_| DeploymentError::Stopping)?;
        answer.await.map_err(|_| DeploymentError::Stopping)?
    }

    /// An operator's action on a deployment.
    pub async fn control(
        self: &Arc<Self>,
        id: &str,
        action: Action,
        actor: &Actor,
    ) -> Result<DeploymentView, DeploymentError> {
        match self.control_once(id, action.clone(), actor).await {
            // The run ended between the look at it and the send (its last
            // ack completed it, its rollback finished): its actor took
            // nothing. Once more, on what it stored (a rollback of a
            // completed deployment is its kill switch).
            Err(DeploymentError::Stopping)
                if !self.stopping.load(std::sync::atomic::Ordering::Acquire) =>
            {
                self.control_once(id, action, actor).await
            }
            answer => answer,
        }
    }

    async fn control_once(
        self: &Arc<Self>,
        id: &str,
        action: Action,
        actor: &Actor,
    ) -> Result<DeploymentView, DeploymentError> {
        let row = self.deployment_row(id).await?;
        let handle = self
            .serving_read()
            .get(&row.config_name)
            .and_then(|s| s.live())
            .filter(|l| *l.deployment_id == *row.id)
            .and_then(|l| l.handle.clone());
        match handle {
            Some(handle) => self.send(&handle, action, actor).await?,
            // In a cluster: the node driving it carries it out.
            None if self.driven_elsewhere(&row.id, &row.status) => {
                self.forward(&row.id, &action, actor).await?;
                // Its answer came after its commit: read what it stored.
                self.refresh_from_store()
                    .await
                    .map_err(|e| DeploymentError::OwnerUnreachable(e.to_string()))?;
            }
            None => match action {
                Action::Rollback(request) if row.status == DeploymentState::Completed.name() => {
                    self.kill_switch(row, request, actor, false).await?
                }
                action => {
                    return Err(DeploymentError::Conflict(format!(
                        "cannot {} a deployment that is {}",
                        action.name(),
                        row.status
                    )));
                }
            },
        }
        self.deployment(id).await
    }

    /// Rolls back a completed deployment: the newest completed one of its
    /// config, with nothing in flight. An actor drives the rollback, as any
    /// other: started on the completed run, it is sent the rollback.
    ///
    /// A live event's deployment (`layer_only`) may be rolled back when it
    /// still stands anywhere among the layers (its layer is withdrawn), or,
    /// unscoped, while the active revision is still its own.
    async fn kill_switch(
        self: &Arc<Self>,
        row: store_hub::DeploymentRow,
        request: RollbackRequest,
        actor: &Actor,
        layer_only: bool,
    ) -> Result<(), DeploymentError> {
        let plan: Plan = serde_json::from_str(&row.spec).map_err(|e| {
            DeploymentError::Conflict(format!("this deployment's plan cannot be read: {e}"))
        })?;
        let strategy: Strategy = row.strategy.parse().map_err(DeploymentError::Invalid)?;
        {
            let serving = self.serving_read();
            let entry = serving.get(&row.config_name);
            if let Some(live) = entry.and_then(|e| e.live()) {
                return Err(DeploymentError::InProgress(live.deployment_id.to_string()));
            }
            let layers = entry.map(|e| e.layers());
            let current = if layer_only {
                layers.map(|l| {
                    if plan.scoped(strategy) {
                        l.stands(&row.id)
                    } else {
                        l.active == Some(row.revision)
                    }
                })
            } else if plan.scoped(strategy) {
                layers
                    .and_then(|l| l.newest_standing())
                    .map(|l| l.deployment_id == row.id)
            } else {
                layers.map(|l| l.active == Some(row.revision) && !l.has_standing())
            };
            if current != Some(true) {
                return Err(DeploymentError::Conflict(
                    "only the config's newest completed deployment can be rolled back; deploy the version you want instead".into(),
                ));
            }
        }
        // In a cluster this node drives the rollback: it takes the lease.
        self.lease_take(&row.id).await?;
        let record = RunRecord::new(row.clone());
        // The servers it moves back off this revision it tracks, so it is
        // `RolledBack` once they acked (or its ack timeout passed), not
        // before.
        record.track_moves_from(row.revision);
        self.runs.insert(record.clone());
        let run = DeploymentRun::new(self.clone(), record, plan)?;
        // The run is completed: its actor stops after this one command,
        // unless the rollback starts (then it drives it to its end).
        let handle = self.spawn_run(run);
        self.send(&handle, Action::Rollback(request), actor).await
    }

    /// Ends a live event's deployment: rolled back by its actor when it is
    /// in flight, by the kill switch when it completed (its layer
    /// withdrawn, wherever it stands); nothing when it already finished
    /// otherwise.
    pub async fn end_event_deployment(
        self: &Arc<Self>,
        id: &str,
        actor: &Actor,
    ) -> Result<(), DeploymentError> {
        let row = self.deployment_row(id).await?;
        let request = RollbackRequest {
            region: None,
            reason: Some("the live event's occurrence ended".into()),
        };
        let handle = self
            .serving_read()
            .get(&row.config_name)
            .and_then(|s| s.live())
            .filter(|l| *l.deployment_id == *row.id)
            .and_then(|l| l.handle.clone());
        match handle {
            Some(handle) => self.send(&handle, Action::Rollback(request), actor).await,
            None if row.status == DeploymentState::Completed.name() => {
                self.kill_switch(row, request, actor, true).await
            }
            None if self.driven_elsewhere(&row.id, &row.status) => {
                self.forward(&row.id, &Action::Rollback(request), actor)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Resumes the deployments a previous run left unfinished.
    /// In a cluster, `records` are what this node tracked of a deployment
    /// it served as a mirror before taking it over: its own servers' part
    /// carries on.
    pub(in crate::hub) async fn resume(
        self: &Arc<Self>,
        rows: Vec<store_hub::DeploymentRow>,
        records: Option<&std::collections::HashMap<String, Arc<RunRecord>>>,
    ) -> anyhow::Result<()> {
        for row in rows {
            let plan: Plan = match serde_json::from_str(&row.spec) {
                Ok(plan) => plan,
                Err(error) => {
                    tracing::error!(deployment = %row.id, error = %error, "cannot read a deployment's plan; marking it failed");
                    let mut failed = row.clone();
                    failed.status = DeploymentState::Failed.name().into();
                    failed.completed_at = Some(now_ms());
                    let mut tx = self.store.begin().await?;
                    store_hub::save_deployment(&mut tx, &failed).await?;
                    tx.commit().await?;
                    continue;
                }
            };
            let record = match records.and_then(|r| r.get(&row.id)) {
                Some(record) => {
                    record.set_row(row.clone());
                    record.clone()
                }
                None => RunRecord::new(row.clone()),
            };
            let state = DeploymentState::from_stored(&row.status, row.phase);
            // A rollback interrupted by a restart waits for the servers it
            // was moving back (recorded with its decision) until they ack
            // the previous revision, or the ack timeout lists them as
            // unacked: per-server progress lives in memory only.
            if state == DeploymentState::RollingBack
                && let Some(previous) = row.previous_revision
            {
                let mut conn = self.store.conn().await?;
                let targets = store_hub::rollback_targets(&mut conn, &row.id).await?;
                drop(conn);
                let mut claims = record.claims();
                for server in targets {
                    claims.claim(&Arc::from(server.as_str()), previous);
                }
            }
            self.runs.insert(record.clone());
            let run = DeploymentRun::new(self.clone(), record.clone(), plan)?;
            let assignment = run.assignment();
            let variant_names = run.variant_names();
            let handle = self.spawn_run(run);
            // Served from its stored state at once (nothing awaits before
            // this, so its actor has not run yet); the actor pushes what
            // servers miss on its first tick.
            self.serving_write()
                .entry(row.config_name.clone())
                .or_insert_with(|| Serving::new(&row.environment))
                .fly(
                    assignment,
                    LiveRun {
                        deployment_id: Arc::from(row.id.as_str()),
                        record,
                        handle: Some(handle),
                        variant_names,
                        mirror: false,
                    },
                );
            tracing::info!(deployment = %row.id, status = %row.status, phase = row.phase, "resuming a deployment");
        }
        Ok(())
    }

    /// Stops every deployment actor (the hub is shutting down) and waits
    /// (up to 5 s) until each has finished the step it was in, so none is
    /// cut off mid-transaction. Their state stays in the store; the next
    /// start resumes them.
    pub async fn stop_runs(&self) {
        let handles: Vec<RunHandle> = self
            .serving_read()
            .values()
            .filter_map(|s| s.live()?.handle.clone())
            .collect();
        for handle in &handles {
            let _ = handle.command(Command::Shutdown).await;
        }
        let all = futures_util::future::join_all(handles.iter().map(|h| h.stopped()));
        if actix_web::rt::time::timeout(Duration::from_secs(5), all)
            .await
            .is_err()
        {
            tracing::warn!("a deployment actor did not stop within 5 s");
        }
        // In a cluster, another node takes them over at once.
        self.release_leases().await;
    }
}
