//! Deployments as their owners show them, on every node: the owner says
//! the view of each deployment it drives (every second, and whenever its
//! dashboards' feed sends it), and the other nodes answer the API and feed
//! their dashboards from it while it is fresh, and from the store after.

use crate::{
    cluster::Message,
    hub::{Hub, deployments::DeploymentView},
};
use hotswap_client::sync::lock;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// How long another node's view is shown (its owner says it every second).
const FRESH: Duration = Duration::from_secs(3);
/// A view is said at most this often, but for a finished deployment's.
const AT_MOST_EVERY: Duration = Duration::from_millis(250);
/// Views kept from other nodes, at most (the oldest go).
const MAX_VIEWS: usize = 256;

fn finished(view: &DeploymentView) -> bool {
    matches!(
        view.status.as_str(),
        "Completed" | "RolledBack" | "Cancelled" | "Failed"
    )
}

impl Hub {
    /// The owner's view of deployment `id`, which another node drives, if
    /// one came lately.
    pub(in crate::hub) fn remote_view(&self, id: &str) -> Option<DeploymentView> {
        let node = self.cluster.as_ref()?;
        let views = lock(&node.views);
        let (view, at) = views.get(id)?;
        (at.elapsed() < FRESH).then(|| (**view).clone())
    }

    /// Drops the owner's view of deployment `id` kept here.
    pub(super) fn forget_view(&self, id: &str) {
        if let Some(node) = &self.cluster {
            lock(&node.views).remove(id);
        }
    }

    /// Says the view of a deployment this node drives to the others (no
    /// more often than every 250 ms, but a finished one's at once).
    pub(crate) fn share_view(&self, view: &DeploymentView) {
        let Some(node) = &self.cluster else {
            return;
        };
        if !self.lease_held(&view.id) && !finished(view) {
            return;
        }
        if self.runs.get(&view.id).is_none() {
            // Not this node's run: nothing of its own to say.
            return;
        }
        {
            let mut sent = lock(&node.views_sent);
            let now = Instant::now();
            if !finished(view)
                && sent
                    .get(&view.id)
                    .is_some_and(|at| now.duration_since(*at) < AT_MOST_EVERY)
            {
                return;
            }
            sent.retain(|_, at| now.duration_since(*at) < FRESH);
            sent.insert(view.id.clone(), now);
        }
        let Ok(value) = serde_json::to_value(view) else {
            return;
        };
        node.cluster.send(Message::View {
            deployment: view.id.clone(),
            view: value,
        });
    }

    /// Every second: the views of the deployments this node drives.
    pub(super) fn share_views(&self) {
        for record in self.runs.unfinished() {
            self.share_view(&record.view());
        }
    }

    /// Another node's view of a deployment it drives: kept, and this
    /// node's dashboards told.
    pub(super) fn on_view(&self, deployment: String, view: serde_json::Value) {
        let Some(node) = &self.cluster else {
            return;
        };
        if self.lease_held(&deployment) {
            return;
        }
        // Read into the view's own types (the message is bounded whole),
        // and no longer than the API shows one.
        let view = match serde_json::from_value::<DeploymentView>(view) {
            Ok(view) if view.servers.len() <= crate::hub::deployments::VIEW_SERVERS => view,
            Ok(_) => {
                tracing::warn!("refused a deployment view listing too many servers");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "refused a deployment view from another node");
                return;
            }
        };
        {
            let mut views = lock(&node.views);
            if views.len() >= MAX_VIEWS && !views.contains_key(&deployment) {
                let oldest = views
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(id, _)| id.clone());
                if let Some(oldest) = oldest {
                    views.remove(&oldest);
                }
            }
            views.insert(deployment.clone(), (Arc::new(view), Instant::now()));
        }
        self.feed.deployment_changed(&deployment);
    }
}
