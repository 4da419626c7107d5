//! Serving deployments other nodes drive: the desired state read back
//! from the store.

use crate::{
    domain::{
        kinds::Strategy,
        plan::Plan,
        rollout::{Assignment, DeploymentState},
    },
    hub::{
        Hub,
        deployments::RunRecord,
        engine::{LiveRun, Serving},
    },
    store::hub as store_hub,
};
use hotswap_client::sync::lock;
use std::{collections::HashMap, sync::Arc};

/// What a config's servers should run, as the store says.
struct Desired {
    environment: String,
    active: Option<i64>,
    standing: Vec<Arc<Assignment>>,
    in_flight: Option<store_hub::DeploymentRow>,
}

/// A completed deployment's layer, or the deployment in flight's, from its row.
fn assignment_of(row: &store_hub::DeploymentRow, full: bool) -> Option<(Arc<Assignment>, Plan)> {
    let plan: Plan = serde_json::from_str(&row.spec).ok()?;
    let strategy: Strategy = row.strategy.parse().ok()?;
    let cover = if full {
        plan.full_cover(strategy)
    } else {
        plan.cover(
            strategy,
            DeploymentState::from_stored(&row.status, row.phase),
            row.cover_bucket,
        )
    };
    Some((
        Arc::new(Assignment {
            deployment_id: row.id.clone(),
            revision: row.revision,
            scope: plan.scope.clone(),
            cover,
        }),
        plan,
    ))
}

/// What a config's serving state amounts to, to tell whether a read
/// changed it.
fn fingerprint(serving: &Serving) -> String {
    let layers = serving.layers();
    let in_flight = serving.live().map(|l| {
        let row = lock(&l.record.row);
        (
            row.id.clone(),
            row.status.clone(),
            row.phase,
            row.cover_bucket,
            row.updated_at,
            l.mirror,
        )
    });
    format!(
        "{:?}|{:?}|{:?}",
        layers.active,
        layers.newest_standing().map(|l| l.deployment_id.clone()),
        in_flight
    )
}
impl Hub {
    /// Reads what every config's servers should run back from the store
    /// and serves it, but for the deployments this node drives (its memory
    /// is their truth); reconciles this node's servers of each config whose
    /// state changed.
    pub(in crate::hub) async fn refresh_from_store(self: &Arc<Self>) -> anyhow::Result<()> {
        let Some(node) = &self.cluster else {
            return Ok(());
        };
        // One refresh at a time: a read is never applied after a newer one.
        let _one = node.refreshing.lock().await;
        let generations = node.generations();
        let mut conn = self.store.conn().await?;
        let (active, standing, unfinished) =
            crate::store::cluster::serving_snapshot(&mut conn).await?;
        drop(conn);
        let mut desired: HashMap<String, Desired> = HashMap::new();
        let blank = |environment: &str| Desired {
            environment: environment.to_owned(),
            active: None,
            standing: Vec::new(),
            in_flight: None,
        };
        for (name, environment, revision) in active {
            desired
                .entry(name)
                .or_insert_with(|| blank(&environment))
                .active = Some(revision);
        }
        // Newest first, as the query returns them.
        for row in standing {
            if let Some((layer, _)) = assignment_of(&row, true) {
                desired
                    .entry(row.config_name.clone())
                    .or_insert_with(|| blank(&row.environment))
                    .standing
                    .push(layer);
            }
        }
        for row in unfinished {
            let entry = desired
                .entry(row.config_name.clone())
                .or_insert_with(|| blank(&row.environment));
            // The newest, should two ever be found.
            if entry.in_flight.as_ref().is_none_or(|r| r.id < row.id) {
                entry.in_flight = Some(row);
            }
        }
        let mut changed = Vec::new();
        {
            let now_generations = node.generations();
            let mut serving = self.serving_write();
            for (config, want) in desired {
                // This node changed it since the read began: the read is old.
                if generations.get(&config) != now_generations.get(&config) {
                    continue;
                }
                // A deployment this node drives (or just finished driving).
                if want
                    .in_flight
                    .as_ref()
                    .is_some_and(|row| self.lease_held(&row.id))
                {
                    continue;
                }
                let entry = serving
                    .entry(config.clone())
                    .or_insert_with(|| Serving::new(&want.environment));
                if entry.live().is_some_and(|l| !l.mirror) {
                    continue;
                }
                let before = fingerprint(entry);
                entry.layers_mut().active = want.active;
                entry.layers_mut().restore_standing(want.standing);
                match want
                    .in_flight
                    .and_then(|row| assignment_of(&row, false).map(|(a, p)| (row, a, p)))
                {
                    Some((row, assignment, plan)) => {
                        let record = match entry.live().filter(|l| *l.deployment_id == *row.id) {
                            Some(live) => {
                                live.record.set_row(row.clone());
                                live.record.clone()
                            }
                            None => RunRecord::new(row.clone()),
                        };
                        entry.fly(
                            assignment,
                            LiveRun {
                                deployment_id: Arc::from(row.id.as_str()),
                                record,
                                handle: None,
                                variant_names: plan
                                    .variants
                                    .iter()
                                    .map(|v| Arc::from(v.name.as_str()))
                                    .collect(),
                                mirror: true,
                            },
                        );
                    }
                    None => {
                        if let Some(id) = entry.live().map(|l| l.deployment_id.clone()) {
                            entry.land(&id);
                        }
                    }
                }
                if fingerprint(entry) != before {
                    changed.push(config);
                }
            }
        }
        for config in changed {
            self.reconcile(&config).await;
        }
        // Each mirror's servers are now brought to the state read (tell
        // the owner, which waits for every node up to have served it).
        let mirrors: Vec<Arc<RunRecord>> = self
            .serving_read()
            .values()
            .filter_map(|s| s.live())
            .filter(|l| l.mirror)
            .map(|l| l.record.clone())
            .collect();
        for record in mirrors {
            record.set_served(lock(&record.row).updated_at.unwrap_or(1).max(1));
        }
        Ok(())
    }
}
