//! Deployments through the API: requests and errors here; the per-server
//! record of each deployment this hub drives in `record.rs`; what the API
//! shows in `views.rs`. The engine itself is `engine/`.

mod parts;
mod record;
mod views;

pub(in crate::hub) use record::{Numbered, RunRecord, Runs, SentPart, VIEW_SERVERS};
pub(in crate::hub) use views::view;
pub use views::{
    CohortSummary, CohortView, DeploymentView, LiveStatus, RollbackRecord, RollbackStatusView,
    ServerProgressView, ServerState,
};

use crate::{
    catalog::CatalogError,
    domain::{
        judgement::{Comparison, Metric, Rule},
        kinds::Strategy,
    },
    store::StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /api/v1/deployments`. Durations are ISO 8601 (`PT5M`) or seconds.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewDeploymentRequest {
    pub config: String,
    /// The version to deploy (for `ABTest`, give `variants` instead).
    pub version: Option<String>,
    /// Must be the config's environment when given.
    pub environment: Option<String>,
    pub strategy: Strategy,
    /// Canary percentages, increasing, ending at 100 (default 10, 30, 50, 100).
    pub phases: Option<Vec<f64>>,
    /// Sets the first canary phase.
    pub canary_percentage: Option<f64>,
    #[schema(value_type = Option<String>, example = "PT5M")]
    pub phase_interval: Option<Value>,
    /// Advance by itself when a phase stayed healthy for its interval (default true).
    pub auto_promote: Option<bool>,
    pub batch_size: Option<usize>,
    #[schema(value_type = Option<String>, example = "PT2M")]
    pub batch_interval: Option<Value>,
    /// Rolling: a server that fails to apply rolls the deployment back (default true).
    pub stop_on_failure: Option<bool>,
    #[schema(value_type = Option<String>, example = "PT10M")]
    pub verification_period: Option<Value>,
    #[schema(value_type = Option<String>, example = "PT30M")]
    pub keep_blue_duration: Option<Value>,
    /// Blue-green: the green share of the servers, percent.
    pub green_percentage: Option<f64>,
    /// Only servers in these regions; for `Geographic`, the order of the phases.
    pub regions: Option<Vec<String>>,
    /// Only servers carrying every one of these tags.
    pub tags: Option<Vec<String>>,
    pub variants: Option<Vec<VariantRequest>>,
    /// Rollback rules: each replaces the default rule of its metric, or adds one.
    pub thresholds: Option<Vec<RuleRequest>>,
    /// Confidence a difference needs (default from settings, 0.99).
    pub confidence: Option<f64>,
    /// `false` drops the health-check rule.
    pub health_check_enabled: Option<bool>,
    /// Cancel the in-flight deployment of this config and take its place.
    pub supersede: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VariantRequest {
    pub name: Option<String>,
    pub version: String,
    pub weight: f64,
}

/// A rollback rule, or a change to a default one.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleRequest {
    pub metric: Metric,
    pub comparison: Option<Comparison>,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    pub min_sample: Option<u64>,
    /// `false` removes the rule.
    pub enabled: Option<bool>,
}

/// `POST /deployments/{id}/rollback-thresholds`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThresholdsRequest {
    pub thresholds: Vec<RuleRequest>,
    pub confidence: Option<f64>,
}

/// `POST /deployments/{id}/rollback` (body optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = DeploymentRollbackRequest)]
pub struct RollbackRequest {
    /// Geographic: roll back this region only (the deployment pauses).
    pub region: Option<String>,
    pub reason: Option<String>,
}

/// Merges rule requests into `rules`.
pub fn merge_rules(rules: &mut Vec<Rule>, changes: &[RuleRequest]) -> Result<(), DeploymentError> {
    for change in changes {
        let invalid =
            |why: &str| DeploymentError::Invalid(format!("thresholds: {:?}: {why}", change.metric));
        for value in [change.warning, change.critical].into_iter().flatten() {
            if !value.is_finite() || value < 0.0 {
                return Err(invalid(
                    "thresholds are non-negative fractions (0.05 = 5 %)",
                ));
            }
        }
        let position = rules.iter().position(|r| r.metric == change.metric);
        if change.enabled == Some(false) {
            if let Some(position) = position {
                rules.remove(position);
            }
            continue;
        }
        match position {
            Some(position) => {
                let rule = &mut rules[position];
                if let Some(comparison) = change.comparison {
                    rule.comparison = comparison;
                }
                if change.warning.is_some() {
                    rule.warning = change.warning;
                }
                if let Some(critical) = change.critical {
                    rule.critical = critical;
                }
                if let Some(min_sample) = change.min_sample {
                    rule.min_sample = min_sample;
                }
                if rule.warning.is_some_and(|w| w > rule.critical) {
                    return Err(invalid(
                        "the warning level must not be above the critical one",
                    ));
                }
            }
            None => {
                let (Some(comparison), Some(critical)) = (change.comparison, change.critical)
                else {
                    return Err(invalid(
                        "a new rule needs a comparison and a critical level",
                    ));
                };
                if change.warning.is_some_and(|w| w > critical) {
                    return Err(invalid(
                        "the warning level must not be above the critical one",
                    ));
                }
                rules.push(Rule {
                    metric: change.metric.clone(),
                    comparison,
                    warning: change.warning,
                    critical,
                    min_sample: change.min_sample.unwrap_or(100),
                });
            }
        }
    }
    if rules.len() > 64 {
        return Err(DeploymentError::Invalid("at most 64 rollback rules".into()));
    }
    Ok(())
}

/// Why a deployment request or command cannot go through.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Invalid(String),
    /// A query parameter that cannot be read.
    #[error("invalid query parameter: {0}")]
    InvalidQuery(String),
    #[error(
        "version {version} of {config} has breaking changes and needs an admin's approval before a production deployment"
    )]
    ApprovalRequired { config: String, version: String },
    #[error(
        "deployment {0} of this config is still in progress; pass \"supersede\": true to replace it"
    )]
    InProgress(String),
    #[error("{0} deployments are running, the most this hub runs at once")]
    TooMany(usize),
    #[error("deployment {0} does not exist")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the deployment engine is shutting down")]
    Stopping,
    /// In a cluster: the node driving the deployment did not answer.
    #[error("{0}")]
    OwnerUnreachable(String),
}

impl From<StoreError> for DeploymentError {
    fn from(error: StoreError) -> Self {
        DeploymentError::Catalog(error.into())
    }
}
