//! Deployments as the API reads them: live progress from the runs this
//! hub drives, the stored record otherwise.

use crate::{
    domain::{plan::Plan, rollout::DeploymentState},
    hub::{
        Hub,
        deployments::{
            DeploymentError, DeploymentView, RollbackStatusView, ServerProgressView, ServerState,
            view,
        },
    },
    store::hub as store_hub,
};

impl Hub {
    pub(super) async fn deployment_row(
        &self,
        id: &str,
    ) -> Result<store_hub::DeploymentRow, DeploymentError> {
        if let Some(record) = self.runs.get(id) {
            return Ok(record.row());
        }
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(DeploymentError::NotFound(id.to_owned()));
        }
        let mut conn = self.store.conn().await?;
        store_hub::deployment(&mut conn, id)
            .await?
            .ok_or_else(|| DeploymentError::NotFound(id.to_owned()))
    }

    /// A deployment: live progress if this hub drives it, else (on a
    /// cluster) as its owner showed it lately, else the stored record.
    pub async fn deployment(&self, id: &str) -> Result<DeploymentView, DeploymentError> {
        if let Some(record) = self.runs.get(id) {
            return Ok(record.view());
        }
        if let Some(view) = self.remote_view(id) {
            return Ok(view);
        }
        Ok(view(&self.deployment_row(id).await?))
    }

    /// A page of a deployment's servers (by id, after `after`), and whether
    /// more follow. Empty once the hub no longer holds its per-server detail.
    pub async fn deployment_servers(
        &self,
        id: &str,
        state: Option<ServerState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ServerProgressView>, bool), DeploymentError> {
        if let Some(record) = self.runs.get(id) {
            return Ok(record.servers_page(state, after, limit));
        }
        self.deployment_row(id).await?;
        Ok((Vec::new(), false))
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
            .map(|row| match self.runs.get(&row.id) {
                Some(record) => record.view(),
                None => self.remote_view(&row.id).unwrap_or_else(|| view(row)),
            })
            .collect())
    }

    pub async fn rollback_status(&self, id: &str) -> Result<RollbackStatusView, DeploymentError> {
        let view = self.deployment(id).await?;
        let row = self.deployment_row(id).await?;
        let plan: Option<Plan> = serde_json::from_str(&row.spec).ok();
        let rolling_back = view.status == "RollingBack";
        Ok(RollbackStatusView {
            deployment_id: view.id,
            automatic: !DeploymentState::from_stored(&row.status, row.phase).is_finished(),
            status: view.status,
            rollback: view.rollback,
            waiting_for: if rolling_back {
                self.runs.get(id).map(|r| r.waiting()).unwrap_or_default()
            } else {
                Vec::new()
            },
            rules: plan.map(|p| p.rules).unwrap_or_default(),
            judgement: view.live.and_then(|l| l.judgement),
        })
    }
}

impl Hub {
    /// The revision a player in `region` sees of `config` before any live
    /// event or experiment: what a server there runs outside a deployment
    /// in flight (a standing layer narrowed to the region, else the active
    /// revision). `None` for a config the hub does not serve.
    pub fn player_base(&self, config: &str, region: &str) -> Option<i64> {
        let serving = self.serving_read();
        let who = crate::domain::layers::Who {
            server_id: "",
            region,
            tags: &[],
            operator_tags: &[],
        };
        serving
            .get(config)?
            .layers()
            .settled(&who)
            .map(|resolved| resolved.revision)
    }
}

impl Hub {
    /// Ends a deployment's `config.deploy` span as failed (a start that
    /// did not happen; a hub stopping).
    pub(crate) fn end_deploy_span(&self, deployment_id: &str, why: &str) {
        let span = hotswap_client::sync::lock(&self.deploy_spans).remove(deployment_id);
        if let Some(mut span) = span {
            span.fail(why);
            span.end();
        }
        self.tracer.forget(deployment_id);
    }

    /// Where a running deployment's spans hang (its `config.deploy`).
    pub(crate) fn deploy_parent(
        &self,
        deployment_id: &str,
    ) -> Option<crate::observability::traces::SpanParent> {
        if !self.tracer.enabled() {
            return None;
        }
        hotswap_client::sync::lock(&self.deploy_spans)
            .get(deployment_id)
            .map(|span| span.parent())
    }

    /// The hub's state for a Prometheus scrape: the fleet, configs with
    /// an active revision, deployments in flight, frames and acks.
    pub fn scrape(&self, into: &mut crate::observability::meters::Scrape) {
        let fleet = self.registry.fleet();
        into.servers_registered = fleet.known;
        into.servers_connected = fleet.connected;
        into.servers_healthy = fleet.healthy;
        into.players_online = fleet.players;
        {
            let serving = self.serving_read();
            into.configs_active = serving
                .values()
                .filter(|s| s.layers().active.is_some())
                .count() as u64;
            into.deployments_in_progress =
                serving.values().filter(|s| s.live().is_some()).count() as u64;
        }
        let stats = &self.stats;
        into.frames_sent = stats
            .frames_pushed
            .load(std::sync::atomic::Ordering::Relaxed);
        into.acks = stats.acks.load(std::sync::atomic::Ordering::Relaxed);
        into.metric_frames = stats
            .metrics_frames
            .load(std::sync::atomic::Ordering::Relaxed);
        into.slow_consumers = stats
            .slow_consumers
            .load(std::sync::atomic::Ordering::Relaxed);
        into.document_loads = self.document_loads();
        (into.store_connections_idle, into.store_connections_in_use) = self.store.pool_usage();
        if let Some((refused, dropped)) = self.cluster_counts() {
            (into.cluster_refused, into.cluster_dropped) = (refused, dropped);
        }
    }

    /// Version documents read from the store for game servers so far.
    pub fn document_loads(&self) -> u64 {
        self.documents.loads()
    }

    /// The config's active revision (what servers outside every narrowed
    /// layer and deployment run).
    pub fn active_revision(&self, config: &str) -> Option<i64> {
        self.serving_read().get(config)?.layers().active
    }

    /// The deployment of `config` in flight, if any.
    pub fn in_flight_deployment(&self, config: &str) -> Option<String> {
        self.serving_read()
            .get(config)?
            .live()
            .map(|live| live.deployment_id.to_string())
    }

    /// A deployment's state name (`Completed`, `RolledBack`...), from
    /// memory when this hub drives it, else from the store.
    pub async fn deployment_state(&self, id: &str) -> Result<String, DeploymentError> {
        Ok(self.deployment_row(id).await?.status)
    }

    /// A deployment's config and state.
    pub async fn deployment_config_state(
        &self,
        id: &str,
    ) -> Result<(String, String), DeploymentError> {
        let row = self.deployment_row(id).await?;
        Ok((row.config_name, row.status))
    }
}
