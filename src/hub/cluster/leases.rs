//! Leases: one node drives each deployment and each live event
//! (`store/cluster.rs`). This node's leases are kept by resource
//! (`deployment:<id>`, `event:<id>`) with the epoch it holds them under.

use super::Held;
use crate::{
    hub::{
        Hub,
        deployments::{DeploymentError, RunRecord},
    },
    store::{StoreError, StoreResult, Tx, cluster as leases, hub as store_hub},
};
use hotswap_client::sync::lock;
use std::{collections::HashMap, sync::Arc, time::Instant};

fn driven_elsewhere(id: &str) -> DeploymentError {
    DeploymentError::Conflict(format!("deployment {id} is driven by another node"))
}

impl Hub {
    /// Whether this hub is one node of several.
    pub(crate) fn in_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The epoch under which this node holds `resource`'s lease (`Some(0)`
    /// alone: a single node holds everything).
    pub(crate) fn held_epoch(&self, resource: &str) -> Option<i64> {
        match &self.cluster {
            None => Some(0),
            Some(node) => lock(&node.held).get(resource).map(|h| h.epoch),
        }
    }

    /// Takes `resource`'s lease for this node (new, or lapsed: its epoch
    /// moves on); `None` while another node holds it. On `conn`, which
    /// may be a transaction's. Alone: `Some(0)`.
    pub(crate) async fn take_lease(
        &self,
        conn: &mut sqlx::AnyConnection,
        resource: &str,
    ) -> StoreResult<Option<i64>> {
        let Some(node) = &self.cluster else {
            return Ok(Some(0));
        };
        let since = Instant::now();
        let epoch = leases::take(conn, resource, &node.cluster.node, node.ttl_ms()).await?;
        if let Some(epoch) = epoch {
            node.hold(resource, epoch, since);
        }
        Ok(epoch)
    }

    /// In a write's transaction: this node still holds `resource` under
    /// `epoch` (renewed by the write); false when it does not, and the
    /// write must not happen. Alone: true.
    pub(crate) async fn fence_lease(
        &self,
        tx: &mut Tx,
        resource: &str,
        epoch: Option<i64>,
    ) -> StoreResult<bool> {
        let Some(node) = &self.cluster else {
            return Ok(true);
        };
        let Some(epoch) = epoch.filter(|e| self.held_epoch(resource) == Some(*e)) else {
            return Ok(false);
        };
        let since = Instant::now();
        if leases::fence(tx, resource, &node.cluster.node, epoch, node.ttl_ms()).await? {
            node.hold(resource, epoch, since);
            return Ok(true);
        }
        let mut held = lock(&node.held);
        if held.get(resource).is_some_and(|h| h.epoch == epoch) {
            held.remove(resource);
        }
        drop(held);
        tracing::warn!(%resource, "this node's lease lapsed or was taken: the write is refused");
        Ok(false)
    }

    /// Gives `resource`'s lease up (what it covers finished).
    pub(crate) fn give_up_lease(&self, resource: &str) {
        let Some(node) = &self.cluster else {
            return;
        };
        let Some(held) = lock(&node.held).remove(resource) else {
            return;
        };
        let (store, owner, resource) = (
            self.store.clone(),
            node.cluster.node.clone(),
            resource.to_owned(),
        );
        actix_web::rt::spawn(async move {
            if let Ok(mut conn) = store.conn().await {
                let _ = leases::release(&mut conn, &resource, &owner, held.epoch).await;
            }
        });
    }

    /// Whether this node may act under `resource`'s lease now: it holds
    /// it and renewed it lately enough (always, alone).
    pub(crate) fn lease_is_current(&self, resource: &str) -> bool {
        self.cluster.as_ref().is_none_or(|n| {
            lock(&n.held)
                .get(resource)
                .is_some_and(|h| h.valid_until > Instant::now())
        })
    }

    /// Takes a new deployment's lease in the transaction that stores it;
    /// held by this node only once that commits ([`Hub::lease_committed`]):
    /// until then no other connection sees it, and a renewal would find
    /// it missing.
    pub(in crate::hub) async fn lease_new(
        &self,
        tx: &mut Tx,
        id: &str,
    ) -> StoreResult<Option<(i64, Instant)>> {
        let Some(node) = &self.cluster else {
            return Ok(None);
        };
        let since = Instant::now();
        leases::take(
            tx,
            &leases::deployment_resource(id),
            &node.cluster.node,
            node.ttl_ms(),
        )
        .await?
        .map(|epoch| Some((epoch, since)))
        .ok_or(StoreError::Conflict)
    }

    /// The transaction holding a new deployment's lease committed.
    pub(in crate::hub) fn lease_committed(&self, id: &str, lease: Option<(i64, Instant)>) {
        if let (Some(node), Some((epoch, since))) = (&self.cluster, lease) {
            node.hold(&leases::deployment_resource(id), epoch, since);
        }
    }

    /// Takes the lease of an existing deployment (the kill switch of a
    /// completed one); a conflict while another node holds it.
    pub(in crate::hub) async fn lease_take(&self, id: &str) -> Result<(), DeploymentError> {
        if !self.in_cluster() {
            return Ok(());
        }
        let mut conn = self.store.conn().await?;
        match self
            .take_lease(&mut conn, &leases::deployment_resource(id))
            .await?
        {
            Some(_) => Ok(()),
            None => Err(driven_elsewhere(id)),
        }
    }

    /// In a deployment write's transaction: this node still holds its
    /// lease under the run's `epoch`, or the write is refused.
    pub(in crate::hub) async fn fence(
        &self,
        tx: &mut Tx,
        id: &str,
        config: &str,
        epoch: Option<i64>,
    ) -> Result<(), DeploymentError> {
        let Some(node) = &self.cluster else {
            return Ok(());
        };
        if self
            .fence_lease(tx, &leases::deployment_resource(id), epoch)
            .await?
        {
            node.bump(config);
            Ok(())
        } else {
            Err(driven_elsewhere(id))
        }
    }

    /// A deployment finished: its lease is given up.
    pub(in crate::hub) fn lease_done(&self, id: &str) {
        self.give_up_lease(&leases::deployment_resource(id));
    }

    /// The epoch under which this node holds the deployment's lease
    /// (`Some(0)` alone: a single node holds everything).
    pub(in crate::hub) fn lease_epoch(&self, id: &str) -> Option<i64> {
        self.held_epoch(&leases::deployment_resource(id))
    }

    /// Whether this node holds the deployment's lease (always, alone).
    pub(in crate::hub) fn lease_held(&self, id: &str) -> bool {
        self.lease_epoch(id).is_some()
    }

    /// Whether this node may act on the deployment now (always, alone).
    pub(in crate::hub) fn lease_current(&self, id: &str) -> bool {
        self.lease_is_current(&leases::deployment_resource(id))
    }

    /// Renews every lease this node holds; one another node took (or that
    /// lapsed) is dropped, and what it drove stops at its next turn.
    pub(super) async fn renew_leases(&self) {
        let Some(node) = &self.cluster else {
            return;
        };
        let held: Vec<(String, Held)> = lock(&node.held)
            .iter()
            .map(|(resource, h)| (resource.clone(), *h))
            .collect();
        if held.is_empty() {
            return;
        }
        let Ok(mut conn) = self.store.conn().await else {
            tracing::warn!("cannot renew leases: the store is unavailable");
            return;
        };
        for (resource, was) in held {
            let since = Instant::now();
            match leases::extend(
                &mut conn,
                &resource,
                &node.cluster.node,
                was.epoch,
                node.ttl_ms(),
            )
            .await
            {
                Ok(true) => {
                    let mut map = lock(&node.held);
                    // Unless it finished or was lost meanwhile.
                    if map.get(&resource).is_some_and(|h| h.epoch == was.epoch) {
                        map.insert(
                            resource,
                            Held {
                                epoch: was.epoch,
                                valid_until: since + node.trusted_for(),
                            },
                        );
                    }
                }
                Ok(false) => {
                    tracing::warn!(%resource, "this node's lease lapsed or was taken");
                    let mut map = lock(&node.held);
                    if map.get(&resource).is_some_and(|h| h.epoch == was.epoch) {
                        map.remove(&resource);
                    }
                }
                Err(error) => {
                    tracing::warn!(%resource, error = %error, "cannot renew a lease");
                }
            }
        }
    }

    /// Of the unfinished deployments read at start-up, those this node
    /// takes the lease of (all of them, alone).
    pub(in crate::hub) async fn lease_to_resume(
        &self,
        rows: Vec<store_hub::DeploymentRow>,
    ) -> anyhow::Result<Vec<store_hub::DeploymentRow>> {
        if !self.in_cluster() {
            return Ok(rows);
        }
        let mut conn = self.store.conn().await?;
        let mut mine = Vec::new();
        for row in rows {
            if self
                .take_lease(&mut conn, &leases::deployment_resource(&row.id))
                .await?
                .is_some()
            {
                mine.push(row);
            }
        }
        Ok(mine)
    }

    /// Unfinished deployments whose lease lapsed (their node died or
    /// stopped): this node takes each it can and resumes it from the store,
    /// its own servers' part as it mirrored them carried on.
    pub(super) async fn take_over_lapsed(self: &Arc<Self>) -> anyhow::Result<()> {
        let Some(node) = &self.cluster else {
            return Ok(());
        };
        let mut conn = self.store.conn().await?;
        let orphans = leases::orphaned_deployments(&mut conn).await?;
        let mut taken = Vec::new();
        for row in orphans {
            if let Some(epoch) = self
                .take_lease(&mut conn, &leases::deployment_resource(&row.id))
                .await?
            {
                tracing::warn!(deployment = %row.id, config = %row.config_name, epoch, "took over a deployment whose lease lapsed");
                node.bump(&row.config_name);
                taken.push(row);
            }
        }
        drop(conn);
        if taken.is_empty() {
            return Ok(());
        }
        let records: HashMap<String, Arc<RunRecord>> = self
            .serving_read()
            .values()
            .filter_map(|s| s.live())
            .filter(|l| l.mirror)
            .map(|l| (l.deployment_id.to_string(), l.record.clone()))
            .collect();
        self.resume(taken, Some(&records)).await
    }

    /// Gives up every lease this node holds (it is stopping): another node
    /// takes over at once rather than after they lapse.
    pub(in crate::hub) async fn release_leases(&self) {
        let Some(node) = &self.cluster else {
            return;
        };
        node.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let held: Vec<(String, Held)> = lock(&node.held).drain().collect();
        let Ok(mut conn) = self.store.conn().await else {
            return;
        };
        for (resource, held) in held {
            let _ = leases::release(&mut conn, &resource, &node.cluster.node, held.epoch).await;
        }
    }
}
