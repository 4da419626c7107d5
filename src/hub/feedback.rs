//! `GET /metrics/aggregated` and `POST /metrics/player-feedback`.

use super::{
    Hub, Ingest,
    aggregates::{self, from_row},
    deployments::{CohortSummary, DeploymentError},
};
use crate::{
    catalog::{Actor, views::rfc3339},
    domain::{
        feedback::{self, Reporter},
        judgement::CohortWindow,
        kinds::Environment,
        rollout::parse_duration,
    },
    store::now_ms,
    store::{StoreError, audit, hub as store_hub},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AggregatedQuery {
    /// Only servers in this region.
    pub region: Option<String>,
    /// Only this deployment's cohorts (default: all servers).
    pub deployment: Option<String>,
    /// How far back: ISO 8601 (`PT1H`, the default) or seconds; at most 30 days.
    pub window: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregatedView {
    pub from: String,
    pub to: String,
    pub window_ms: u64,
    pub region: Option<String>,
    pub deployment: Option<String>,
    /// Everything matching, summed.
    pub total: CohortSummary,
    /// By cohort (`all` without a deployment; `baseline`, `canary` or variants with one).
    pub cohorts: BTreeMap<String, CohortSummary>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeedbackRequest {
    /// `complaint`, `rating` or `comment`.
    pub kind: String,
    /// The game server the player was on: places the feedback in its region and cohorts.
    pub server_id: Option<String>,
    pub player_id: Option<String>,
    /// 1 to 5, for a rating.
    pub rating: Option<i64>,
    pub category: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackReceipt {
    pub id: String,
    pub received_at: String,
    pub region: Option<String>,
    /// Whether this complaint counted in the cohorts of the server's
    /// deployments (see `POST /metrics/player-feedback`).
    pub counted: bool,
    /// Deployments whose cohorts counted this complaint.
    pub deployments: Vec<String>,
}

fn text(value: &Option<String>, name: &str, max: usize) -> Result<(), DeploymentError> {
    match value {
        Some(v) if v.is_empty() || v.chars().count() > max || v.contains('\0') => Err(
            DeploymentError::Invalid(format!("{name} must be 1-{max} characters")),
        ),
        _ => Ok(()),
    }
}

/// Complaints per server that may count in its cohorts: 30 at once, 60 a
/// minute (more are stored, not counted).
pub(super) fn feedback_rate() -> FeedbackRate {
    governor::RateLimiter::keyed(
        governor::Quota::per_minute(std::num::NonZeroU32::new(60).expect("non-zero"))
            .allow_burst(std::num::NonZeroU32::new(30).expect("non-zero")),
    )
}

pub(super) type FeedbackRate = governor::DefaultKeyedRateLimiter<String>;

impl Hub {
    pub async fn aggregated(
        &self,
        query: &AggregatedQuery,
    ) -> Result<AggregatedView, DeploymentError> {
        let window_ms = match &query.window {
            None => 3_600_000,
            Some(w) => {
                let value = w
                    .parse::<f64>()
                    .map(|n| json!(n))
                    .unwrap_or_else(|_| json!(w));
                parse_duration(&value)
                    .map_err(|e| DeploymentError::InvalidQuery(format!("window: {e}")))?
            }
        }
        .max(60_000);
        text(&query.region, "region", 64)
            .map_err(|e| DeploymentError::InvalidQuery(e.to_string()))?;
        // An empty `deployment=` is no filter.
        let filter = query.deployment.clone().filter(|d| !d.is_empty());
        let deployment = filter.clone().unwrap_or_else(|| aggregates::ALL.to_owned());
        if filter.is_some() && uuid::Uuid::parse_str(&deployment).is_err() {
            return Err(DeploymentError::NotFound(deployment));
        }
        let now = now_ms();
        let since = (now - window_ms as i64).div_euclid(60_000) * 60_000;
        let mut conn = self.store.conn().await?;
        let rows =
            store_hub::metric_minutes(&mut conn, since, query.region.as_deref(), &deployment)
                .await?;
        drop(conn);
        let mut cohorts: BTreeMap<String, CohortWindow> = BTreeMap::new();
        let mut total = CohortWindow::default();
        let pending = self
            .aggregates
            .pending(since, query.region.as_deref(), &deployment);
        let all = rows
            .iter()
            .map(|r| (r.cohort.clone(), from_row(r)))
            .chain(pending);
        for (cohort, window) in all {
            total.add(&window);
            cohorts.entry(cohort).or_default().add(&window);
        }
        Ok(AggregatedView {
            from: rfc3339(since),
            to: rfc3339(now),
            window_ms,
            region: query.region.clone(),
            deployment: filter,
            total: CohortSummary::of(&total),
            cohorts: cohorts
                .iter()
                .map(|(k, w)| (k.clone(), CohortSummary::of(w)))
                .collect(),
        })
    }

    pub async fn player_feedback(
        &self,
        actor: &Actor,
        reporter: Reporter<'_>,
        request: FeedbackRequest,
    ) -> Result<FeedbackReceipt, DeploymentError> {
        if !["complaint", "rating", "comment"].contains(&request.kind.as_str()) {
            return Err(DeploymentError::Invalid(
                "kind must be complaint, rating or comment".into(),
            ));
        }
        match (request.kind.as_str(), request.rating) {
            ("rating", Some(1..=5)) | ("complaint" | "comment", None) => {}
            ("rating", _) => {
                return Err(DeploymentError::Invalid("a rating needs rating 1-5".into()));
            }
            _ => {
                return Err(DeploymentError::Invalid(
                    "rating applies to kind rating".into(),
                ));
            }
        }
        text(&request.server_id, "serverId", 128)?;
        text(&request.player_id, "playerId", 128)?;
        text(&request.category, "category", 64)?;
        text(&request.message, "message", 2000)?;
        let server = request
            .server_id
            .as_deref()
            .and_then(|id| self.registry.get(id));
        if request.server_id.is_some() && server.is_none() {
            return Err(DeploymentError::Invalid(format!(
                "serverId {} is not a server this hub knows",
                request.server_id.as_deref().unwrap_or_default()
            )));
        }
        if let Reporter::ServerKey { key_id } = reporter {
            match &server {
                None => {
                    return Err(DeploymentError::Invalid(
                        "a game server's key sends feedback with its own serverId".into(),
                    ));
                }
                Some(record) if record.key_id != key_id => {
                    return Err(DeploymentError::Forbidden(
                        "this API key may send feedback only about its own servers".into(),
                    ));
                }
                Some(_) => {}
            }
        }
        let counts = request.kind == "complaint"
            && server.as_ref().is_some_and(|record| {
                let environment = record
                    .environment
                    .parse()
                    .unwrap_or(Environment::Production);
                feedback::complaint_counts(environment, reporter, &record.key_id)
                    && self.feedback_rate.check_key(&record.server_id).is_ok()
            });
        let deployments: Vec<String> = server
            .as_ref()
            .map(|record| {
                let serving = self.serving_read();
                record
                    .subscriptions
                    .iter()
                    .filter_map(|config| serving.get(config)?.live())
                    .map(|live| live.deployment_id.to_string())
                    .collect()
            })
            .unwrap_or_default();
        let now = now_ms();
        let row = store_hub::FeedbackRow {
            id: uuid::Uuid::now_v7().to_string(),
            received_at: now,
            server_id: request.server_id.clone(),
            region: server.as_ref().map(|s| s.region.clone()),
            deployment_id: deployments.first().cloned(),
            player_id: request.player_id.clone(),
            kind: request.kind.clone(),
            rating: request.rating,
            category: request.category.clone(),
            message: request.message.clone(),
            submitted_by: actor.subject.clone(),
        };
        let mut tx = self.store.begin().await?;
        store_hub::insert_feedback(&mut tx, &row).await?;
        audit::record(
            &mut tx,
            actor.audit_entry(
                "metrics.player-feedback",
                format!("player-feedback/{}", row.id),
                json!({ "kind": row.kind, "serverId": row.server_id, "rating": row.rating, "category": row.category }),
            ),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        if counts && let Some(record) = &server {
            self.ingest(self.destinations(record, false, now), Ingest::Complaints(1));
        }
        Ok(FeedbackReceipt {
            id: row.id,
            received_at: rfc3339(now),
            region: row.region,
            counted: counts,
            deployments: if counts { deployments } else { Vec::new() },
        })
    }
}
