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

/// The store answers.
#[utoipa::path(get, path = "/ready", tag = "health", security(()), responses(
    (status = 200, description = "ready"),
    (status = 503, description = "a dependency is down", body = super::problem::Problem)
))]
pub async fn ready(catalog: web::Data<Catalog>) -> Result<HttpResponse, ApiError> {
    match catalog.store().ping().await {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({ "status": "ready", "store": "ok" }))),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            Err(ApiError::NotReady)
        }
    }
}
