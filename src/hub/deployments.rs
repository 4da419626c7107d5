//! Direct deployments: the version becomes the config's active revision (in
//! the store first), then goes to every connected, subscribed server of the
//! config's environment at once; acks are tracked per server. The
//! progressive strategies join this path in the deployment engine.

use super::{Hub, documents::now_ms};
use crate::{
    catalog::{Actor, CatalogError, DeploymentTarget, views::rfc3339},
    domain::kinds::Strategy,
    store::{StoreError, audit, hub as store_hub},
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewDeploymentRequest {
    pub config: String,
    pub version: String,
    /// `Direct` today; the progressive strategies come with the deployment engine.
    pub strategy: Strategy,
}

/// Why a deployment cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("strategy {0} is not available yet; use Direct")]
    StrategyUnavailable(Strategy),
    #[error(
        "version {version} of {config} has breaking changes and needs an admin's approval before a production deployment"
    )]
    ApprovalRequired { config: String, version: String },
    #[error("deployment {0} of this config is still in progress")]
    InProgress(String),
    #[error("deployment {0} does not exist")]
    NotFound(String),
}

impl From<StoreError> for DeploymentError {
    fn from(error: StoreError) -> Self {
        DeploymentError::Catalog(error.into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    Pushed,
    Acked,
    Failed,
}

#[derive(Debug, Clone)]
struct ServerProgress {
    state: ServerState,
    error: Option<String>,
    apply_micros: Option<u64>,
    updated_at_ms: i64,
}

#[derive(Debug, Clone)]
struct Progress {
    row: store_hub::DeploymentRow,
    servers: BTreeMap<String, ServerProgress>,
}

impl Progress {
    fn counts(&self) -> (i64, i64, i64) {
        let count = |state| self.servers.values().filter(|s| s.state == state).count() as i64;
        (
            self.servers.len() as i64,
            count(ServerState::Acked),
            count(ServerState::Failed),
        )
    }

    fn finished(&self) -> bool {
        self.servers
            .values()
            .all(|s| s.state != ServerState::Pushed)
    }
}

/// What a deployment looks like through the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    pub id: String,
    pub config: String,
    pub version: String,
    pub revision: i64,
    pub previous_revision: Option<i64>,
    pub strategy: String,
    pub environment: String,
    /// `InProgress` until every targeted server acked or failed, then `Completed`.
    pub status: String,
    pub created_by: String,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub targets: i64,
    pub pushed: i64,
    pub acked: i64,
    pub failed: i64,
    /// Per server, while this hub tracks the deployment.
    pub servers: Vec<ServerProgressView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerProgressView {
    pub server_id: String,
    pub state: ServerState,
    pub error: Option<String>,
    pub apply_micros: Option<u64>,
    pub updated_at: String,
}

fn view(
    row: &store_hub::DeploymentRow,
    servers: Option<&BTreeMap<String, ServerProgress>>,
) -> DeploymentView {
    let servers: Vec<ServerProgressView> = servers
        .into_iter()
        .flatten()
        .map(|(id, p)| ServerProgressView {
            server_id: id.clone(),
            state: p.state,
            error: p.error.clone(),
            apply_micros: p.apply_micros,
            updated_at: rfc3339(p.updated_at_ms),
        })
        .collect();
    let live = !servers.is_empty();
    let count = |state| servers.iter().filter(|s| s.state == state).count() as i64;
    DeploymentView {
        id: row.id.clone(),
        config: row.config_name.clone(),
        version: row.version.clone(),
        revision: row.revision,
        previous_revision: row.previous_revision,
        strategy: row.strategy.clone(),
        environment: row.environment.clone(),
        status: row.status.clone(),
        created_by: row.created_by.clone(),
        created_at: rfc3339(row.created_at),
        completed_at: row.completed_at.map(rfc3339),
        targets: if live {
            servers.len() as i64
        } else {
            row.target_count
        },
        pushed: if live { count(ServerState::Pushed) } else { 0 },
        acked: if live {
            count(ServerState::Acked)
        } else {
            row.acked_count
        },
        failed: if live {
            count(ServerState::Failed)
        } else {
            row.failed_count
        },
        servers,
    }
}

/// Finished deployments kept in memory with their per-server detail.
const KEEP_FINISHED: usize = 64;

/// Deployments this hub is driving, in memory (acks never touch the store).
#[derive(Debug, Default)]
pub(super) struct DeploymentTracker {
    live: Mutex<HashMap<String, Progress>>,
}

impl DeploymentTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Progress>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The in-progress deployment bringing `config` to `revision`.
    pub(super) fn in_flight(&self, config: &str, revision: i64) -> Option<String> {
        self.lock()
            .values()
            .find(|p| {
                p.row.config_name == config
                    && p.row.revision == revision
                    && p.row.status == "InProgress"
            })
            .map(|p| p.row.id.clone())
    }

    /// Starts tracking `row`, unless a deployment of its config is in flight.
    fn reserve(&self, row: &store_hub::DeploymentRow) -> Result<(), DeploymentError> {
        let mut live = self.lock();
        if let Some(running) = live
            .values()
            .find(|p| p.row.config_name == row.config_name && p.row.status == "InProgress")
        {
            return Err(DeploymentError::InProgress(running.row.id.clone()));
        }
        // Finished deployments stay for their per-server detail, the newest few only.
        let mut finished: Vec<(i64, String)> = live
            .values()
            .filter(|p| p.row.status != "InProgress")
            .map(|p| (p.row.created_at, p.row.id.clone()))
            .collect();
        if finished.len() >= KEEP_FINISHED {
            finished.sort();
            for (_, id) in &finished[..finished.len() + 1 - KEEP_FINISHED] {
                live.remove(id);
            }
        }
        live.insert(
            row.id.clone(),
            Progress {
                row: row.clone(),
                servers: BTreeMap::new(),
            },
        );
        Ok(())
    }

    fn release(&self, id: &str) {
        self.lock().remove(id);
    }

    pub(super) fn add_target(&self, deployment: &str, server_id: &str) {
        if let Some(progress) = self.lock().get_mut(deployment) {
            progress.servers.insert(
                server_id.to_owned(),
                ServerProgress {
                    state: ServerState::Pushed,
                    error: None,
                    apply_micros: None,
                    updated_at_ms: now_ms(),
                },
            );
        }
    }

    /// Records an ack; returns the deployment's row when this ack finished it.
    pub(super) fn ack(
        &self,
        config: &str,
        server_id: &str,
        revision: i64,
        ok: bool,
        error: Option<String>,
        apply_micros: u64,
    ) -> Option<store_hub::DeploymentRow> {
        let mut live = self.lock();
        let progress = live.values_mut().find(|p| {
            p.row.config_name == config
                && p.row.revision == revision
                && p.row.status == "InProgress"
        })?;
        let server = progress.servers.get_mut(server_id)?;
        server.state = if ok {
            ServerState::Acked
        } else {
            ServerState::Failed
        };
        server.error = error.filter(|_| !ok).map(|e| e.chars().take(500).collect());
        server.apply_micros = Some(apply_micros);
        server.updated_at_ms = now_ms();
        Self::finish_if_done(progress)
    }

    /// A server went away: what it had not acked failed.
    pub(super) fn server_gone(&self, server_id: &str) -> Vec<store_hub::DeploymentRow> {
        let mut live = self.lock();
        let mut finished = Vec::new();
        for progress in live.values_mut().filter(|p| p.row.status == "InProgress") {
            if let Some(server) = progress
                .servers
                .get_mut(server_id)
                .filter(|s| s.state == ServerState::Pushed)
            {
                server.state = ServerState::Failed;
                server.error = Some("disconnected before acking".into());
                server.updated_at_ms = now_ms();
                finished.extend(Self::finish_if_done(progress));
            }
        }
        finished
    }

    fn finish_if_done(progress: &mut Progress) -> Option<store_hub::DeploymentRow> {
        if !progress.finished() {
            return None;
        }
        let (targets, acked, failed) = progress.counts();
        progress.row.status = "Completed".into();
        progress.row.completed_at = Some(now_ms());
        progress.row.target_count = targets;
        progress.row.acked_count = acked;
        progress.row.failed_count = failed;
        Some(progress.row.clone())
    }

    fn view(&self, id: &str) -> Option<DeploymentView> {
        self.lock().get(id).map(|p| view(&p.row, Some(&p.servers)))
    }
}

impl Hub {
    /// Starts a deployment (Direct): persisted with the new active revision
    /// and its audit row before any frame goes out.
    pub async fn deploy(
        self: &Arc<Self>,
        actor: &Actor,
        request: NewDeploymentRequest,
    ) -> Result<DeploymentView, DeploymentError> {
        if request.strategy != Strategy::Direct {
            return Err(DeploymentError::StrategyUnavailable(request.strategy));
        }
        let target: DeploymentTarget = self
            .catalog
            .deployment_target(&request.config, &request.version)
            .await?;
        if target.environment == "production" && target.breaking && !target.approved {
            return Err(DeploymentError::ApprovalRequired {
                config: target.config,
                version: target.version,
            });
        }
        let previous = self.active(&target.config).map(|a| a.revision);
        let row = store_hub::DeploymentRow {
            id: uuid::Uuid::now_v7().to_string(),
            config_id: target.config_id.clone(),
            config_name: target.config.clone(),
            version: target.version.clone(),
            revision: target.revision,
            previous_revision: previous,
            strategy: Strategy::Direct.as_str().into(),
            environment: target.environment.clone(),
            status: "InProgress".into(),
            created_by: actor.subject.clone(),
            created_at: now_ms(),
            completed_at: None,
            target_count: 0,
            acked_count: 0,
            failed_count: 0,
        };
        // Reserve the config under the tracker's lock: a second deployment
        // of it is refused from here on, even while this one is being stored.
        self.deployments.reserve(&row)?;
        let stored = async {
            let mut tx = self.store.begin().await?;
            store_hub::insert_deployment(&mut tx, &row).await?;
            store_hub::set_active_revision(&mut tx, &target.config_id, target.revision).await?;
            audit::record(
                &mut tx,
                actor.audit_entry(
                    "deployment.create",
                    format!("deployments/{}", row.id),
                    json!({ "config": target.config, "version": target.version, "revision": target.revision, "previousRevision": previous, "strategy": "Direct" }),
                ),
            )
            .await?;
            tx.commit().await.map_err(StoreError::from)
        }
        .await;
        if let Err(error) = stored {
            self.deployments.release(&row.id);
            return Err(error.into());
        }
        self.set_active(&target.config, &target.environment, target.revision);
        self.fan_out(&target, &row.id).await;
        let current = {
            let mut live = self.deployments.lock();
            live.get_mut(&row.id).map(|progress| {
                DeploymentTracker::finish_if_done(progress);
                let (targets, acked, failed) = progress.counts();
                let mut snapshot = progress.row.clone();
                (
                    snapshot.target_count,
                    snapshot.acked_count,
                    snapshot.failed_count,
                ) = (targets, acked, failed);
                snapshot
            })
        };
        if let Some(current) = current {
            self.persist_progress(current);
        }
        self.deployment(&row.id).await
    }

    /// Sends `target` to every connected subscriber of its environment. One
    /// frame is encoded per distinct starting revision and shared by all the
    /// servers starting there. Every target is registered before the first
    /// frame leaves, so an early ack cannot finish the deployment while
    /// others are still being added.
    async fn fan_out(&self, target: &DeploymentTarget, deployment: &str) {
        let targets = self.registry.targets(&target.config, |record| {
            record.environment == target.environment
        });
        for server in &targets {
            self.deployments.add_target(deployment, &server.server_id);
        }
        let mut by_base: BTreeMap<Option<i64>, Vec<hotswap_actors::ConnectedTarget>> =
            BTreeMap::new();
        for server in targets {
            by_base.entry(server.applied).or_default().push(server);
        }
        for (base, servers) in by_base {
            let frame: Option<Bytes> = self
                .frame_towards(&target.config, base, target.revision, Some(deployment))
                .await;
            for server in servers {
                if base == Some(target.revision) {
                    // Already there: nothing to send, nothing to wait for.
                    self.deployments.ack(
                        &target.config,
                        &server.server_id,
                        target.revision,
                        true,
                        None,
                        0,
                    );
                    continue;
                }
                let delivered = match &frame {
                    Some(frame) => self.push(&server.outbox, frame.clone()),
                    None => false,
                };
                if !delivered {
                    for finished in self.deployments.server_gone(&server.server_id) {
                        self.persist_progress(finished);
                    }
                }
            }
        }
    }

    /// Queues a deployment's counts and status for the next flush (acks
    /// never wait on the store).
    pub(super) fn persist_progress(&self, row: store_hub::DeploymentRow) {
        super::lock(&self.dirty_deployments).insert(row.id.clone(), row);
    }

    /// A deployment: live progress if this hub tracks it, else the stored record.
    pub async fn deployment(&self, id: &str) -> Result<DeploymentView, DeploymentError> {
        if let Some(live) = self.deployments.view(id) {
            return Ok(live);
        }
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(DeploymentError::NotFound(id.to_owned()));
        }
        let mut conn = self.store.conn().await?;
        let row = store_hub::deployment(&mut conn, id)
            .await?
            .ok_or_else(|| DeploymentError::NotFound(id.to_owned()))?;
        Ok(view(&row, None))
    }

    /// Deployments, newest first.
    pub async fn deployments(
        &self,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeploymentView>, DeploymentError> {
        let mut conn = self.store.conn().await?;
        let rows = store_hub::deployments(&mut conn, before, limit).await?;
        Ok(rows
            .iter()
            .map(|row| {
                self.deployments
                    .view(&row.id)
                    .unwrap_or_else(|| view(row, None))
            })
            .collect())
    }

    /// Deployments a previous run left in progress: the active revision is
    /// already stored, so servers get it as they reconnect; the record is
    /// closed with the counts it had.
    pub(super) async fn close_out_interrupted(
        &self,
        rows: Vec<store_hub::DeploymentRow>,
    ) -> anyhow::Result<()> {
        for row in rows {
            let mut tx = self.store.begin().await?;
            store_hub::update_deployment(
                &mut tx,
                &row.id,
                "Completed",
                (row.target_count, row.acked_count, row.failed_count),
                Some(now_ms()),
            )
            .await?;
            tx.commit().await?;
            tracing::info!(deployment = %row.id, "closed a deployment interrupted by a restart");
        }
        Ok(())
    }
}
