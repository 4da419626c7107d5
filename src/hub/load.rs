//! Starting the hub from the store: active revisions, standing layers,
//! known servers, revoked keys, and the deployments to resume.

use super::{
    Hub, HubStats, aggregates, bindings, deployments::Runs, documents::DocumentCache,
    engine::Serving, feedback, regions,
};
use crate::{
    catalog::Catalog,
    domain::{plan::Plan, rollout::Assignment},
    settings::{DeploymentSettings, HubSettings},
    store::{Store, hub as store_hub},
};
use hotswap_actors::{GateLimits, Registry, SessionGate};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock, atomic::AtomicBool},
};

impl Hub {
    /// Loads active revisions and known servers from the store.
    pub async fn load(
        catalog: Catalog,
        store: Store,
        settings: HubSettings,
        deployment_settings: DeploymentSettings,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> anyhow::Result<Arc<Self>> {
        let mut conn = store.conn().await?;
        let mut serving = super::ServingMap::default();
        for (name, environment, revision) in store_hub::active_revisions(&mut conn).await? {
            serving
                .entry(name)
                .or_insert_with(|| Serving::new(&environment))
                .layers_mut()
                .active = Some(revision);
        }
        // Newest first, as the query returns them.
        let mut standing: HashMap<String, Vec<Arc<Assignment>>> = HashMap::new();
        for row in store_hub::standing_layers(&mut conn).await? {
            let Ok(plan) = serde_json::from_str::<Plan>(&row.spec) else {
                tracing::warn!(deployment = %row.id, "cannot read a completed deployment's plan; its layer is dropped");
                continue;
            };
            let Ok(strategy) = row.strategy.parse() else {
                continue;
            };
            serving
                .entry(row.config_name.clone())
                .or_insert_with(|| Serving::new(&row.environment));
            standing
                .entry(row.config_name.clone())
                .or_default()
                .push(Arc::new(Assignment {
                    deployment_id: row.id.clone(),
                    revision: row.revision,
                    scope: plan.scope.clone(),
                    cover: plan.full_cover(strategy),
                }));
        }
        for (config, layers) in standing {
            if let Some(entry) = serving.get_mut(&config) {
                entry.layers_mut().restore_standing(layers);
            }
        }
        let rows = store_hub::game_servers(&mut conn).await?;
        let unfinished = store_hub::unfinished_deployments(&mut conn).await?;
        let revoked = crate::store::api_keys::revoked_ids(&mut conn).await?;
        drop(conn);
        let gate = SessionGate::new(GateLimits {
            max_sessions: settings.max_sessions.max(1),
            max_sessions_per_key: settings.max_sessions_per_key.max(1),
        });
        gate.restore_revoked(revoked);
        let registry = Arc::new(Registry::default());
        let mut first_seen = HashMap::new();
        registry.restore(
            rows.into_iter()
                .map(|row| {
                    first_seen.insert(row.server_id.clone(), row.first_seen);
                    super::servers::record_of_row(row)
                })
                .collect(),
        );
        let binder = bindings::BindingWriter::start(
            store.clone(),
            registry.clone(),
            settings.max_server_ids_per_key,
        );
        let catalog_meters = catalog.meters().clone();
        let catalog_tracer = catalog.tracer().clone();
        let hub = Arc::new(Hub {
            catalog,
            store,
            registry,
            gate,
            binder,
            settings,
            deployment_settings,
            serving: RwLock::new(serving),
            documents: DocumentCache::default(),
            runs: Runs::default(),
            aggregates: aggregates::Aggregates::default(),
            regions: regions::RegionNames::default(),
            feedback_rate: feedback::feedback_rate(),
            dirty: Mutex::new(HashMap::default()),
            flushing: Default::default(),
            first_seen: Mutex::new(first_seen),
            stopping: AtomicBool::new(false),
            sent_away_from: std::sync::OnceLock::new(),
            cluster: cluster.map(super::cluster::Node::new),
            liveops_frame: std::sync::RwLock::new(None),
            report_sink: std::sync::OnceLock::new(),
            variant_sink: std::sync::OnceLock::new(),
            stats: HubStats::default(),
            meters: catalog_meters,
            tracer: catalog_tracer,
            deploy_spans: std::sync::Mutex::new(HashMap::new()),
            feed: crate::feed::Feed::new(),
            sockets: Arc::default(),
        });
        // In a cluster, only the deployments whose lease this node takes;
        // the others are served as their owners say (`hub/cluster.rs`).
        let unfinished = hub.lease_to_resume(unfinished).await?;
        hub.resume(unfinished, None).await?;
        if hub.cluster.is_some() {
            hub.refresh_from_store().await?;
        }
        Ok(hub)
    }
}
