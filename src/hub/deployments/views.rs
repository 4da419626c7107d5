//! What the API shows of a deployment.

use crate::{
    catalog::views::rfc3339,
    domain::judgement::{Judgement, Metric, Rule},
    store::hub as store_hub,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Where one server stands in a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    Pushed,
    Acked,
    Failed,
}

/// Why and when a deployment rolled back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRecord {
    /// `automatic` (a critical breach) or `manual`.
    pub trigger: String,
    pub reason: String,
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// The canary's value and the baseline's when a rule decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The region rolled back alone (geographic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The revision the servers went back to (absent: the config had none).
    pub to_revision: Option<i64>,
    pub detected_at: String,
    pub rollback_started_at: String,
    pub rollback_completed_at: Option<String>,
    /// Milliseconds from detection to the last ack.
    pub duration_ms: Option<i64>,
    /// Servers that had not acked the previous revision when the rollback was closed.
    #[serde(default)]
    pub unacked: Vec<String>,
}

/// One cohort's numbers in a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CohortSummary {
    pub reports: u64,
    /// Sum of `players` over the reports (player-intervals).
    pub players: u64,
    pub sessions_started: u64,
    pub sessions_ended: u64,
    pub churned: u64,
    pub crashes: u64,
    pub errors: u64,
    pub requests: u64,
    pub complaints: u64,
    pub purchases: u64,
    pub churn_rate: Option<f64>,
    pub crash_rate: Option<f64>,
    pub complaint_rate: Option<f64>,
    pub error_rate: Option<f64>,
    pub health_check_failure_rate: Option<f64>,
    pub latency_ms: Option<Percentiles>,
    pub session_secs: Option<Percentiles>,
    pub fps: Option<Percentiles>,
    pub custom: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl CohortSummary {
    pub fn of(w: &crate::domain::judgement::CohortWindow) -> Self {
        let rate = |events: u64, n: u64| (n > 0).then(|| events as f64 / n as f64);
        let percentiles = |h: &crate::domain::stats::SparseHistogram| {
            Some(Percentiles {
                count: h.count(),
                mean: h.mean()?,
                p50: h.quantile(0.5)?,
                p90: h.quantile(0.9)?,
                p99: h.quantile(0.99)?,
                max: h.buckets().last()?.0,
            })
        };
        Self {
            reports: w.reports,
            players: w.players,
            sessions_started: w.sessions_started,
            sessions_ended: w.sessions_ended,
            churned: w.churned,
            crashes: w.crashes,
            errors: w.errors,
            requests: w.requests,
            complaints: w.complaints,
            purchases: w.purchases,
            churn_rate: rate(w.churned, w.players),
            crash_rate: rate(w.crashes, w.players),
            complaint_rate: rate(w.complaints, w.players),
            error_rate: rate(w.errors, w.requests),
            health_check_failure_rate: rate(w.health_failures, w.health_checks),
            latency_ms: percentiles(&w.latency_ms),
            session_secs: percentiles(&w.session_secs),
            fps: percentiles(&w.fps),
            custom: w
                .custom
                .iter()
                .filter(|(_, (_, n))| *n > 0)
                .map(|(k, (sum, n))| (k.clone(), sum / *n as f64))
                .collect(),
        }
    }
}

/// A cohort: which servers, how many, and their numbers over both windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CohortView {
    /// `baseline`, `canary`, or a variant's name.
    pub cohort: String,
    pub servers: usize,
    pub window: CohortSummary,
    pub fast_window: CohortSummary,
    /// The long window per region.
    pub regions: BTreeMap<String, CohortSummary>,
}

/// What a deployment's actor last published.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveStatus {
    pub cohorts: Vec<CohortView>,
    /// The last evaluation of the canary against the baseline.
    pub judgement: Option<Judgement>,
    pub evaluated_at: Option<String>,
    /// A warning holding auto-promotion, if any.
    pub warning: Option<String>,
    /// Metric events dropped because the actor's mailbox was full.
    pub dropped_metric_events: u64,
    pub window_ms: u64,
    pub fast_window_ms: u64,
}

/// What a deployment looks like through the API.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    pub id: String,
    pub config: String,
    pub version: String,
    pub revision: i64,
    pub previous_revision: Option<i64>,
    pub strategy: String,
    pub environment: String,
    /// `Pending`, `AwaitingApproval`, `InProgress`, `Paused`, `Completed`,
    /// `RollingBack`, `RolledBack`, `Cancelled` or `Failed`.
    pub status: String,
    /// Canary step, rolling batch, region index or blue-green step (0 = green, 1 = switched).
    pub phase: i64,
    pub phase_started_at: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub approved_by: Option<String>,
    pub completed_at: Option<String>,
    pub updated_at: Option<String>,
    /// The plan the engine follows (strategy options, scope, rollback rules).
    #[schema(value_type = Object)]
    pub plan: Value,
    pub rollback: Option<RollbackRecord>,
    pub targets: i64,
    pub pushed: i64,
    pub acked: i64,
    pub failed: i64,
    /// The first 100 servers by id, while this hub tracks the deployment;
    /// `GET /deployments/{id}/servers` pages through all of them.
    pub servers: Vec<ServerProgressView>,
    /// Cohorts, their metrics and the last judgement, while this hub drives it.
    pub live: Option<LiveStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerProgressView {
    pub server_id: String,
    /// The revision sent to this server (the previous one during a rollback).
    pub revision: i64,
    pub state: ServerState,
    pub error: Option<String>,
    pub apply_micros: Option<u64>,
    pub updated_at: String,
}

pub(in crate::hub) fn view(row: &store_hub::DeploymentRow) -> DeploymentView {
    DeploymentView {
        id: row.id.clone(),
        config: row.config_name.clone(),
        version: row.version.clone(),
        revision: row.revision,
        previous_revision: row.previous_revision,
        strategy: row.strategy.clone(),
        environment: row.environment.clone(),
        status: row.status.clone(),
        phase: row.phase,
        phase_started_at: row.phase_started_at.map(rfc3339),
        created_by: row.created_by.clone(),
        created_at: rfc3339(row.created_at),
        approved_by: row.approved_by.clone(),
        completed_at: row.completed_at.map(rfc3339),
        updated_at: row.updated_at.map(rfc3339),
        plan: serde_json::from_str(&row.spec).unwrap_or(Value::Null),
        rollback: row
            .rollback
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok()),
        targets: row.target_count,
        pushed: 0,
        acked: row.acked_count,
        failed: row.failed_count,
        servers: Vec::new(),
        live: None,
    }
}

/// `GET /deployments/{id}/rollback-status`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatusView {
    pub deployment_id: String,
    pub status: String,
    /// Whether a critical breach rolls this deployment back by itself.
    pub automatic: bool,
    pub rollback: Option<RollbackRecord>,
    /// Servers yet to ack the previous revision (during a rollback).
    pub waiting_for: Vec<String>,
    pub rules: Vec<Rule>,
    pub judgement: Option<Judgement>,
}
