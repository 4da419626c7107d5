//! Leases: one node drives each deployment (`store/cluster.rs`).

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

impl Hub {
    /// Takes a new deployment's lease in the transaction that stores it.
    pub(in crate::hub) async fn lease_new(&self, tx: &mut Tx, id: &str) -> StoreResult<()> {
        let Some(node) = &self.cluster else {
            return Ok(());
        };
        let since = Instant::now();
        let epoch = leases::take(
            tx,
            &leases::deployment_resource(id),
            &node.cluster.node,
            node.ttl_ms(),
        )
        .await?
        .ok_or(StoreError::Conflict)?;
        node.hold(id, epoch, since);
        Ok(())
    }

    /// Takes the lease of an existing deployment (the kill switch of a
    /// completed one); a conflict while another node holds it.
    pub(in crate::hub) async fn lease_take(&self, id: &str) -> Result<(), DeploymentError> {
        let Some(node) = &self.cluster else {
            return Ok(());
        };
        let since = Instant::now();
        let mut conn = self.store.conn().await?;
        match leases::take(
            &mut conn,
            &leases::deployment_resource(id),
            &node.cluster.node,
            node.ttl_ms(),
        )
        .await?
        {
            Some(epoch) => {
                node.hold(id, epoch, since);
                Ok(())
            }
            None => Err(DeploymentError::Conflict(format!(
                "deployment {id} is driven by another node"
            ))),
        }
    }

    /// In a write's transaction: this node still holds the deployment's
    /// lease (renewed by the write), or the write is refused.
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
        // The epoch the run was started under, which this node still holds.
        let Some(epoch) = epoch.filter(|e| self.lease_epoch(id) == Some(*e)) else {
            return Err(DeploymentError::Conflict(format!(
                "deployment {id} is driven by another node"
            )));
        };
        let since = Instant::now();
        if leases::fence(
            tx,
            &leases::deployment_resource(id),
            &node.cluster.node,
            epoch,
            node.ttl_ms(),
        )
        .await?
        {
            node.hold(id, epoch, since);
            node.bump(config);
            Ok(())
        } else {
            let mut held = lock(&node.held);
            if held.get(id).is_some_and(|h| h.epoch == epoch) {
                held.remove(id);
            }
            drop(held);
            tracing::warn!(deployment = %id, "this node's lease lapsed or was taken: the write is refused");
            Err(DeploymentError::Conflict(format!(
                "deployment {id} is driven by another node"
            )))
        }
    }

    /// A deployment finished: its lease is given up.
    pub(in crate::hub) fn lease_done(&self, id: &str) {
        let Some(node) = &self.cluster else {
            return;
        };
        let Some(held) = lock(&node.held).remove(id) else {
            return;
        };
        let (store, owner, id) = (self.store.clone(), node.cluster.node.clone(), id.to_owned());
        actix_web::rt::spawn(async move {
            if let Ok(mut conn) = store.conn().await {
                let _ = leases::release(
                    &mut conn,
                    &leases::deployment_resource(&id),
                    &owner,
                    held.epoch,
                )
                .await;
            }
        });
    }

    /// Whether this node holds the deployment's lease (always, alone).
    /// The epoch under which this node holds the deployment's lease
    /// (`Some(0)` alone: a single node holds everything).
    pub(in crate::hub) fn lease_epoch(&self, id: &str) -> Option<i64> {
        match &self.cluster {
            None => Some(0),
            Some(node) => lock(&node.held).get(id).map(|h| h.epoch),
        }
    }

    pub(in crate::hub) fn lease_held(&self, id: &str) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|n| lock(&n.held).contains_key(id))
    }

    /// Whether this node may act on the deployment now: it holds the lease
    /// and renewed it lately enough (always, alone).
    pub(in crate::hub) fn lease_current(&self, id: &str) -> bool {
        self.cluster.as_ref().is_none_or(|n| {
            lock(&n.held)
                .get(id)
                .is_some_and(|h| h.valid_until > Instant::now())
        })
    }

    /// Renews every lease this node holds; one another node took (or that
    /// lapsed) is dropped, and its actor stops at its next turn.
    pub(super) async fn renew_leases(&self) {
        let Some(node) = &self.cluster else {
            return;
        };
        let held: Vec<(String, Held)> = lock(&node.held)
            .iter()
            .map(|(id, h)| (id.clone(), *h))
            .collect();
        if held.is_empty() {
            return;
        }
        let Ok(mut conn) = self.store.conn().await else {
            tracing::warn!("cannot renew leases: the store is unavailable");
            return;
        };
        for (id, was) in held {
            let since = Instant::now();
            match leases::extend(
                &mut conn,
                &leases::deployment_resource(&id),
                &node.cluster.node,
                was.epoch,
                node.ttl_ms(),
            )
            .await
            {
                Ok(true) => {
                    let mut map = lock(&node.held);
                    // Unless it finished or was lost meanwhile.
                    if map.get(&id).is_some_and(|h| h.epoch == was.epoch) {
                        map.insert(
                            id,
                            Held {
                                epoch: was.epoch,
                                valid_until: since + node.trusted_for(),
                            },
                        );
                    }
                }
                Ok(false) => {
                    tracing::warn!(deployment = %id, "this node's lease lapsed or was taken");
                    let mut map = lock(&node.held);
                    if map.get(&id).is_some_and(|h| h.epoch == was.epoch) {
                        map.remove(&id);
                    }
                }
                Err(error) => {
                    tracing::warn!(deployment = %id, error = %error, "cannot renew a lease");
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
        let Some(node) = &self.cluster else {
            return Ok(rows);
        };
        let mut conn = self.store.conn().await?;
        let mut mine = Vec::new();
        for row in rows {
            let since = Instant::now();
            if let Some(epoch) = leases::take(
                &mut conn,
                &leases::deployment_resource(&row.id),
                &node.cluster.node,
                node.ttl_ms(),
            )
            .await?
            {
                node.hold(&row.id, epoch, since);
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
            let since = Instant::now();
            if let Some(epoch) = leases::take(
                &mut conn,
                &leases::deployment_resource(&row.id),
                &node.cluster.node,
                node.ttl_ms(),
            )
            .await?
            {
                tracing::warn!(deployment = %row.id, config = %row.config_name, epoch, "took over a deployment whose lease lapsed");
                node.hold(&row.id, epoch, since);
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
    /// takes its deployments over at once rather than after they lapse.
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
        for (id, held) in held {
            let _ = leases::release(
                &mut conn,
                &leases::deployment_resource(&id),
                &node.cluster.node,
                held.epoch,
            )
            .await;
        }
    }
}
