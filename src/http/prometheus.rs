//! `GET /metrics`: the hub's metrics in the Prometheus text format
//! (OpenMetrics), open like `/health` (aggregates only: no id of a
//! player, server or config in any label). The state is read at the
//! scrape.

use crate::{liveops::LiveOps, observability::meters::Scrape, telemetry::Telemetry};
use actix_web::{HttpResponse, web};
use std::sync::Arc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
}

/// The OpenMetrics content type Prometheus asks for.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The hub's metrics for Prometheus.
#[utoipa::path(get, path = "/metrics", tag = "health", security(()), responses(
    (status = 200, description = "the metrics, Prometheus text (OpenMetrics)", content_type = "application/openmetrics-text"),
    (status = 429, description = "the address's rate limit (Retry-After)", body = super::problem::Problem),
))]
pub async fn metrics(
    liveops: web::Data<Arc<LiveOps>>,
    telemetry: web::Data<Arc<Telemetry>>,
) -> HttpResponse {
    let mut scrape = Scrape::default();
    liveops.scrape(&mut scrape);
    scrape.telemetry_queue = telemetry.queued() as u64;
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .insert_header(("Cache-Control", "no-store"))
        .body(liveops.meters().render(&scrape))
}
