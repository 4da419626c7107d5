//! Liveness and readiness.

use super::problem::ApiError;
use crate::catalog::Catalog;
use actix_web::{HttpResponse, web};
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready));
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "health", security(()), responses((status = 200, description = "alive")))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The store answers, and Redis when one is configured.
#[utoipa::path(get, path = "/ready", tag = "health", security(()), responses(
    (status = 200, description = "ready"),
    (status = 503, description = "a dependency is down", body = super::problem::Problem)
))]
pub async fn ready(
    catalog: web::Data<Catalog>,
    redis: Option<web::Data<crate::cluster::Redis>>,
) -> Result<HttpResponse, ApiError> {
    if let Err(error) = catalog.store().ping().await {
        tracing::warn!(%error, "readiness check failed: the store");
        return Err(ApiError::NotReady);
    }
    let Some(redis) = redis else {
        return Ok(HttpResponse::Ok().json(json!({ "status": "ready", "store": "ok" })));
    };
    match redis.ping().await {
        Ok(()) => {
            Ok(HttpResponse::Ok().json(json!({ "status": "ready", "store": "ok", "redis": "ok" })))
        }
        Err(error) => {
            tracing::warn!(%error, "readiness check failed: Redis");
            Err(ApiError::NotReady)
        }
    }
}
