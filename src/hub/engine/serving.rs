//! How the hub serves one config: the domain's [`Layers`] (what each
//! server runs) and the deployment in flight's handle and progress record
//! (where its acks and metrics go).

use super::RunHandle;
use crate::{
    domain::{
        layers::{Cohort, Layers, Resolved, Who},
        rollout::Assignment,
    },
    hub::{Hub, deployments::RunRecord},
};
use hotswap_actors::ServerRecord;
use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, RwLockReadGuard, RwLockWriteGuard},
};

/// The deployment in flight of a config, as the hot paths see it.
#[derive(Debug, Clone)]
pub(in crate::hub) struct LiveRun {
    pub deployment_id: Arc<str>,
    pub record: Arc<RunRecord>,
    /// `None` until its actor runs (a deployment being created).
    pub handle: Option<RunHandle>,
    /// Cohort names: variants (A/B) by index.
    pub variant_names: Arc<[Arc<str>]>,
    /// Driven by another node: this node serves its state as stored,
    /// tracks its own servers' part in `record` and sends it to the owner
    /// (`hub/cluster.rs`).
    pub mirror: bool,
}

/// How the hub serves one config. The in-flight layer and [`LiveRun`]
/// change together (one deployment, one id), through [`Serving::fly`]
/// and [`Serving::land`].
#[derive(Debug, Clone)]
pub struct Serving {
    pub(in crate::hub) environment: String,
    layers: Layers,
    live: Option<LiveRun>,
}

/// The servers' view of a config's record for [`Who`].
pub(in crate::hub) fn who(record: &ServerRecord) -> Who<'_> {
    Who {
        server_id: &record.server_id,
        region: &record.region,
        tags: &record.tags,
        operator_tags: &record.operator_tags,
    }
}

pub(in crate::hub) const BASELINE: &str = "baseline";
pub(in crate::hub) const CANARY: &str = "canary";

/// Shared, so counting a fleet's cohorts is a reference count per server.
fn cohort_name(name: &'static str) -> Arc<str> {
    static BASELINE_NAME: OnceLock<Arc<str>> = OnceLock::new();
    static CANARY_NAME: OnceLock<Arc<str>> = OnceLock::new();
    let cell = if name == BASELINE {
        &BASELINE_NAME
    } else {
        &CANARY_NAME
    };
    cell.get_or_init(|| Arc::from(name)).clone()
}

impl Serving {
    pub(in crate::hub) fn new(environment: &str) -> Self {
        Self {
            environment: environment.to_owned(),
            layers: Layers::default(),
            live: None,
        }
    }

    pub(in crate::hub) fn layers(&self) -> &Layers {
        &self.layers
    }

    pub(in crate::hub) fn layers_mut(&mut self) -> &mut Layers {
        &mut self.layers
    }

    pub(in crate::hub) fn live(&self) -> Option<&LiveRun> {
        self.live.as_ref()
    }

    pub(in crate::hub) fn live_mut(&mut self) -> Option<&mut LiveRun> {
        self.live.as_mut()
    }

    /// What the server should run, and which layer says so.
    pub(in crate::hub) fn desired(&self, record: &ServerRecord) -> Option<Resolved> {
        self.layers.resolve(&who(record))
    }

    /// The deployment in flight is now `assignment`, run as `live`.
    pub(in crate::hub) fn fly(&mut self, assignment: Arc<Assignment>, live: LiveRun) {
        debug_assert_eq!(*live.deployment_id, *assignment.deployment_id);
        self.layers.fly(assignment);
        self.live = Some(live);
    }

    /// `deployment_id` is no longer in flight (if it was).
    pub(in crate::hub) fn land(&mut self, deployment_id: &str) {
        if self
            .live
            .as_ref()
            .is_some_and(|l| *l.deployment_id == *deployment_id)
        {
            self.live = None;
        }
        self.layers.land(deployment_id);
    }

    /// The actor of `deployment_id`, if it is the one in flight, is `handle`.
    pub(in crate::hub) fn set_handle(&mut self, deployment_id: &str, handle: RunHandle) {
        if let Some(live) = self
            .live
            .as_mut()
            .filter(|l| *l.deployment_id == *deployment_id)
        {
            live.handle = Some(handle);
        }
    }

    /// The server's cohort in the deployment in flight, by name.
    pub(in crate::hub) fn cohort_of(
        &self,
        record: &ServerRecord,
        applied: Option<i64>,
    ) -> Option<Arc<str>> {
        let live = self.live.as_ref()?;
        Some(match self.layers.cohort(&who(record), applied)? {
            Cohort::Baseline => cohort_name(BASELINE),
            Cohort::Canary => cohort_name(CANARY),
            Cohort::Variant(index) => live.variant_names.get(index)?.clone(),
        })
    }
}

impl Hub {
    pub(in crate::hub) fn serving_read(&self) -> RwLockReadGuard<'_, crate::hub::ServingMap> {
        hotswap_client::sync::read(&self.serving)
    }

    pub(in crate::hub) fn serving_write(&self) -> RwLockWriteGuard<'_, crate::hub::ServingMap> {
        hotswap_client::sync::write(&self.serving)
    }

    /// Servers per cohort of the config's deployment in flight.
    pub(super) fn cohort_sizes(&self, config: &str, environment: &str) -> HashMap<Arc<str>, usize> {
        // Without a run in flight nobody is in a cohort: no walk.
        let Some(serving) = self
            .serving_read()
            .get(config)
            .filter(|s| s.live.is_some())
            .cloned()
        else {
            return HashMap::new();
        };
        let mut sizes = HashMap::new();
        self.registry.for_each_connected(config, |record| {
            if record.environment != environment {
                return;
            }
            if let Some(cohort) = serving.cohort_of(record, record.applied.get(config).copied()) {
                *sizes.entry(cohort).or_insert(0) += 1;
            }
        });
        sizes
    }
}
