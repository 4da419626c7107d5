//! Promoting an experiment's winner: a new version of the config (the
//! active revision's document with the variant's patch, validated, signed
//! and audited like any upload), then, if asked, a deployment of it.

use super::views::PromotionView;
use crate::{
    catalog::{Actor, CatalogError, NewVersionRequest},
    domain::experiments::spec::Status,
    hub::NewDeploymentRequest,
    liveops::{LiveOps, LiveOpsError, LiveOpsResult, invalid},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// `POST /experiments/{name}/promote`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromoteRequest {
    /// The winning variant.
    pub variant: String,
    /// The new version's label (default: the latest version's next patch).
    pub version: Option<String>,
    /// Deploy the new version: a deployment request's fields (`strategy`,
    /// `phases`, `thresholds`...) without `config` and `version`; the
    /// strategy defaults to `Canary`.
    #[schema(value_type = Option<Object>)]
    pub deploy: Option<Value>,
}

impl LiveOps {
    /// Promotes a variant: a new version of the config (the active
    /// revision's document with the variant's patch, validated, signed and
    /// audited like any upload), then, if asked, a deployment of it
    /// (Canary unless told otherwise: the winner goes out through the same
    /// safety net). The experiment finishes with the variant as winner.
    pub async fn promote_experiment(
        self: &Arc<Self>,
        actor: &Actor,
        name: &str,
        request: PromoteRequest,
    ) -> LiveOpsResult<PromotionView> {
        let _promoting = self.promotions.lock().await;
        let entry = self.experiment_entry(name)?;
        if entry.status == Status::Draft {
            return Err(LiveOpsError::InvalidTransition {
                state: entry.status.name(),
                reason: "a draft has no results to promote; start it first".into(),
            });
        }
        if let Some(winner) = &entry.winner {
            return Err(LiveOpsError::InvalidTransition {
                state: entry.status.name(),
                reason: format!("variant {winner} was promoted already"),
            });
        }
        let variant = entry
            .spec
            .variants
            .iter()
            .find(|v| v.id == request.variant)
            .ok_or_else(|| {
                invalid(
                    "/variant",
                    format!(
                        "not one of the experiment's variants ({})",
                        entry
                            .spec
                            .variants
                            .iter()
                            .map(|v| v.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
        let config = entry.spec.config.as_str();
        let deployment_request = request
            .deploy
            .as_ref()
            .map(|deploy| -> LiveOpsResult<Map<String, Value>> {
                let Some(fields) = deploy.as_object() else {
                    return Err(invalid(
                        "/deploy",
                        "an object: a deployment request's fields",
                    ));
                };
                if let Some(key) = ["config", "version", "variants"]
                    .into_iter()
                    .find(|k| fields.contains_key(*k))
                {
                    return Err(invalid(
                        &format!("/deploy/{key}"),
                        "set by the promotion: leave it out",
                    ));
                }
                Ok(fields.clone())
            })
            .transpose()?;
        let base = self.hub.active_revision(config).ok_or_else(|| {
            invalid(
                "/variant",
                format!("config {config:?} has no active revision"),
            )
        })?;
        let (served_label, document) = self.patched_revision(config, base, &variant.patch).await?;
        let label = match request.version {
            Some(label) => label,
            None => self.catalog.next_patch_label(config).await?,
        };
        let version = self
            .catalog
            .create_version(
                actor,
                config,
                NewVersionRequest {
                    version: label,
                    content: document,
                    message: Some(format!(
                        "experiment {name}: variant {} promoted over {}",
                        variant.id, served_label
                    )),
                    tags: vec!["experiment".into()],
                },
            )
            .await
            .map_err(|error| match error {
                CatalogError::InvalidField { path, message } if path == "/version" => {
                    invalid("/version", message)
                }
                other => other.into(),
            })?;
        let deployment = match deployment_request {
            None => None,
            Some(mut fields) => {
                fields.insert("config".into(), json!(config));
                fields.insert("version".into(), json!(version.summary.version));
                fields.entry("strategy").or_insert_with(|| json!("Canary"));
                let request: NewDeploymentRequest =
                    serde_json::from_value(Value::Object(fields))
                        .map_err(|e| invalid("/deploy", e.to_string()))?;
                let started = self
                    .hub
                    .deploy(actor, request)
                    .await
                    .map_err(|e| LiveOpsError::Effect(e.to_string()))?;
                Some(started.id)
            }
        };
        // The experiment ends with its winner.
        let writing = self.writes.lock().await;
        let current = self.experiment_entry(name)?;
        let mut next = (*current).clone();
        next.revision += 1;
        next.winner = Some(variant.id.clone());
        next.updated_at = crate::store::now_ms();
        if next.status != Status::Finished {
            next.status = Status::Finished;
            next.finished_at = Some(next.updated_at);
            next.status_reason = Some(format!("variant {} promoted", variant.id));
        }
        self.write_experiment(
            actor,
            &current,
            &next,
            "experiment.promote",
            json!({"variant": variant.id, "version": version.summary.version, "deployment": deployment}),
        )
        .await?;
        self.publish_experiment(next);
        drop(writing);
        self.assignments.flush().await;
        Ok(PromotionView {
            experiment: name.to_owned(),
            variant: variant.id.clone(),
            config: config.to_owned(),
            version: version.summary.version,
            deployment,
        })
    }
}
