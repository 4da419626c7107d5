//! What a live event does to game servers.
//!
//! - **Server-wide overrides** (an event with overrides and no player
//!   audience) go out as deployments: for each overridden config, a version
//!   derived from what the covered servers run (that revision's document,
//!   then the event's merge patch; validated, signed and audited like any
//!   version, labelled `<next patch>-event.<n>`) is deployed to the
//!   occurrence's regions with the event's `rollout` (Direct by default)
//!   and `guardrails` as the deployment's rollback rules. Servers get the
//!   change as a delta and ack it; when the occurrence ends (or the event
//!   is paused, ended, cancelled) the deployment is rolled back, which
//!   brings every covered server back. A guardrail breach rolls the
//!   deployment back by itself, and the event ends `RolledBack`.
//! - **`event` frames**: each phase change of an occurrence (`preview`,
//!   `started`, `endingSoon`, `ended`) is announced to the connected
//!   servers it covers.

use super::{EventEntry, LiveOps, LiveOpsError, LiveOpsResult, invalid};
use crate::{
    catalog::{Actor, CatalogError, NewVersionRequest},
    domain::{
        event_progress::{Phase, Slot},
        live_event::Override,
        resolution::merge_patch,
    },
    hub::NewDeploymentRequest,
};
use bytes::Bytes;
use hotswap_client::protocol::{self, HubMessage};
use hotswap_client::sync::lock;
use serde_json::{Map, Value, json};

/// Strategies an event's `rollout` may name.
const ROLLOUTS: [&str; 3] = ["Direct", "Geographic", "Canary"];

/// Whether the event's overrides change servers' documents (no player
/// audience), rather than reaching players through resolution.
pub(super) fn is_server_wide(entry: &EventEntry) -> bool {
    !entry.spec.overrides.is_empty()
        && entry.spec.audience.segments.is_empty()
        && entry.spec.audience.percentage.is_none()
}

/// The deployment request of one override, from the event's `rollout` and
/// `guardrails` (checked at creation with placeholder names).
pub(super) fn deployment_request(
    body: &Value,
    config: &str,
    version: &str,
    regions: &[String],
) -> LiveOpsResult<NewDeploymentRequest> {
    let mut request = Map::new();
    request.insert("config".into(), json!(config));
    request.insert("version".into(), json!(version));
    request.insert("strategy".into(), json!("Direct"));
    if let Some(rollout) = body.get("rollout").filter(|r| !r.is_null()) {
        let Some(rollout) = rollout.as_object() else {
            return Err(invalid(
                "/rollout",
                "an object {strategy, phases, phaseInterval}",
            ));
        };
        for (key, value) in rollout {
            match key.as_str() {
                "strategy" => {
                    if !value.as_str().is_some_and(|s| ROLLOUTS.contains(&s)) {
                        return Err(invalid(
                            "/rollout/strategy",
                            format!("one of {}", ROLLOUTS.join(", ")),
                        ));
                    }
                }
                "phases" | "phaseInterval" | "autoPromote" | "canaryPercentage" => {}
                _ => return Err(invalid(&format!("/rollout/{key}"), "unknown field")),
            }
            request.insert(key.clone(), value.clone());
        }
    }
    if !regions.is_empty() {
        request.insert("regions".into(), json!(regions));
    }
    if let Some(guardrails) = body.get("guardrails").filter(|g| !g.is_null()) {
        request.insert("thresholds".into(), guardrails.clone());
    }
    let request: NewDeploymentRequest =
        serde_json::from_value(Value::Object(request)).map_err(|e| {
            let path = if e.to_string().contains("threshold") || e.to_string().contains("metric") {
                "/guardrails"
            } else {
                "/rollout"
            };
            invalid(path, format!("{e}"))
        })?;
    // The guardrails as the deployment will read them (levels in order...).
    if let Some(changes) = &request.thresholds {
        let mut rules = crate::domain::judgement::default_rules();
        crate::hub::deployments::merge_rules(&mut rules, changes)
            .map_err(|e| invalid("/guardrails", e.to_string()))?;
    }
    Ok(request)
}

/// The regions an occurrence covers (none: every region).
fn regions_of(entry: &EventEntry, slot: &Slot) -> Vec<String> {
    match &slot.region {
        Some(region) => vec![region.clone()],
        None => entry.spec.regions.clone(),
    }
}

/// How an occurrence's deployments stand (`LiveOps::effect_standing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Standing {
    Fine,
    Breach,
    Withdrawn(String),
}

impl LiveOps {
    /// A stored revision of `config` (its version label) and its document
    /// under an RFC 7396 merge patch: what a derived version carries.
    pub(super) async fn patched_revision(
        &self,
        config: &str,
        revision: i64,
        patch: &serde_json::Value,
    ) -> LiveOpsResult<(String, serde_json::Value)> {
        let served = self
            .catalog
            .served_version(config, revision)
            .await?
            .ok_or_else(|| CatalogError::ConfigNotFound(config.to_owned()))?;
        let mut document = served.document.clone();
        merge_patch(&mut document, patch, "", "", None);
        Ok((served.version.clone(), document))
    }

    /// Deploys each server-wide override of the event for `slot` under
    /// its id in `ids` (one per override, recorded before), skipping
    /// those already started (a retry, or a hub that stopped between
    /// recording them and starting them). The first failure stops it; the
    /// caller tries the rest again later. `Ok(false)`: the ids do not fit
    /// the overrides (their number, or a started one of another config):
    /// they are from another revision and must be undone.
    pub(super) async fn carry_out(
        &self,
        entry: &EventEntry,
        slot: &Slot,
        ids: &[String],
    ) -> LiveOpsResult<bool> {
        if ids.len() != entry.spec.overrides.len() {
            return Ok(false);
        }
        for (change, id) in entry.spec.overrides.iter().zip(ids) {
            match self.hub.deployment_config_state(id).await {
                Ok((config, _)) if config == change.config.as_str() => continue,
                Ok(_) => return Ok(false),
                Err(crate::hub::deployments::DeploymentError::NotFound(_)) => {}
                Err(error) => return Err(LiveOpsError::Effect(error.to_string())),
            }
            self.deploy_override(entry, slot, change, id).await?;
        }
        Ok(true)
    }

    async fn deploy_override(
        &self,
        entry: &EventEntry,
        slot: &Slot,
        change: &Override,
        id: &str,
    ) -> LiveOpsResult<()> {
        let config = change.config.as_str();
        // A config takes one deployment at a time: wait for it rather than
        // store a version that could not go out yet.
        if let Some(busy) = self.hub.in_flight_deployment(config) {
            return Err(LiveOpsError::Effect(format!(
                "deployment {busy} of {config} is in progress; the event's override waits for it"
            )));
        }
        let regions = regions_of(entry, slot);
        let base = match regions.as_slice() {
            [one] => self.hub.player_base(config, one),
            _ => self.hub.active_revision(config),
        }
        .ok_or_else(|| {
            invalid(
                "/overrides",
                format!("config {config:?} has no deployed revision to change"),
            )
        })?;
        let (served_label, document) = self.patched_revision(config, base, &change.patch).await?;
        // Checked before a version is stored: a request that cannot start
        // now stores none (the actor retries every second).
        self.hub
            .check_plan(&deployment_request(&entry.body, config, "1.0.0", &regions)?)
            .map_err(|e| LiveOpsError::Effect(e.to_string()))?;
        if !self.hub.deployment_room() {
            return Err(LiveOpsError::Effect(
                "the hub runs as many deployments as it may; the event's override waits".into(),
            ));
        }
        let kept = lock(&self.derived)
            .get(id)
            .filter(|(from, _)| *from == base)
            .map(|(_, label)| label.clone());
        let label = match kept {
            Some(label) => label,
            None => {
                let label = self.catalog.event_version_label(config).await?;
                let system = Actor::system();
                self.catalog
                    .create_version(
                        &system,
                        config,
                        NewVersionRequest {
                            version: label.clone(),
                            content: document,
                            message: Some(format!(
                                "live event {}: its overrides on {} (revision {base})",
                                entry.name(),
                                served_label
                            )),
                            tags: Vec::new(),
                        },
                    )
                    .await?;
                let mut derived = lock(&self.derived);
                if derived.len() >= 1024 {
                    derived.clear();
                }
                derived.insert(id.to_owned(), (base, label.clone()));
                label
            }
        };
        let request = deployment_request(&entry.body, config, &label, &regions)?;
        let system = Actor::system();
        let deployment = self
            .hub
            .deploy_for_event(&system, request, id)
            .await
            .map_err(|e| LiveOpsError::Effect(e.to_string()))?;
        lock(&self.derived).remove(id);
        tracing::info!(event = %entry.name(), config, deployment = %deployment.id, version = %label, "a live event's override is deploying");
        Ok(())
    }

    /// Rolls a live event's deployment back (done when it already is, or
    /// when a later deployment of the config took its place).
    /// An id recorded for a deployment that never started is done too.
    pub(super) async fn undo(&self, id: &str) -> Result<(), String> {
        let state = match self.hub.deployment_state(id).await {
            Ok(state) => state,
            Err(crate::hub::deployments::DeploymentError::NotFound(_)) => return Ok(()),
            Err(error) => return Err(error.to_string()),
        };
        if matches!(state.as_str(), "RolledBack" | "Cancelled" | "Failed") {
            return Ok(());
        }
        match self.hub.end_event_deployment(id, &Actor::system()).await {
            Ok(()) => Ok(()),
            Err(crate::hub::deployments::DeploymentError::Conflict(why)) => {
                // A later deployment of the config replaced the event's.
                tracing::warn!(deployment = %id, %why, "a live event's deployment was replaced before it ended");
                Ok(())
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// How an occurrence's started deployments stand: `Breach` when one
    /// was rolled back (a guardrail, or the kill switch) or failed, so the
    /// event ends `RolledBack`; `Withdrawn` when an operator cancelled one
    /// (or replaced it), so the event says its override is off servers.
    pub(super) async fn effect_standing(&self, ids: &[String]) -> Standing {
        for id in ids {
            match self.hub.deployment_state(id).await.as_deref() {
                Ok("RollingBack" | "RolledBack" | "Failed") => return Standing::Breach,
                Ok("Cancelled") => return Standing::Withdrawn(id.clone()),
                _ => {}
            }
        }
        Standing::Fine
    }

    /// Announces an occurrence's phase to the connected servers it covers.
    pub(super) fn announce(&self, entry: &EventEntry, slot: &Slot, phase: Phase) -> usize {
        let frame = Bytes::from(protocol::encode(&HubMessage::Event {
            name: entry.name().to_owned(),
            phase: phase.name().to_owned(),
            occurrence: slot.start_ms,
            region: slot.region.clone(),
            rules: entry.spec.rules.clone(),
            ends_at_ms: slot.end_ms,
            sent_at_ms: self.now_ms(),
        }));
        let regions = regions_of(entry, slot);
        // In a cluster the other nodes' servers get it too.
        self.hub.announce_event(frame, &regions)
    }
}
