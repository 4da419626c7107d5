//! `/api/v1/audit`: the audit trail.

use super::{
    auth::{Admin, Authorized},
    extract::PageQuery,
    method_not_allowed,
    problem::{ApiError, Problem},
};
use crate::{
    catalog::{
        Catalog,
        views::{AuditEntryView, AuditVerificationView, Page},
    },
    store::audit::AuditFilter,
};
use actix_web::{HttpResponse, web};
use serde::Deserialize;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/audit")
            .default_service(web::to(method_not_allowed))
            .route(web::get().to(list_audit)),
    )
    .service(
        web::resource("/audit/verify")
            .default_service(web::to(method_not_allowed))
            .route(web::get().to(verify_audit)),
    );
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this actor's changes.
    pub actor: Option<String>,
    /// A resource and everything below it, e.g. `configs/weapon-balance`.
    pub resource: Option<String>,
    /// RFC 3339 time; only rows at or after it.
    pub since: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// Who changed what, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery), responses(
    (status = 200, body = Page<AuditEntryView>),
    (status = 400, body = Problem),
))]
pub async fn list_audit(
    _caller: Authorized<Admin>,
    catalog: web::Data<Catalog>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .to_request()?;
    let has_nul = |text: &Option<String>| text.as_deref().is_some_and(|t| t.contains('\0'));
    if has_nul(&query.actor) || has_nul(&query.resource) {
        return Err(ApiError::InvalidQuery(
            "actor and resource must not contain NUL characters".into(),
        ));
    }
    let since_ms = query
        .since
        .as_deref()
        .map(|since| {
            chrono::DateTime::parse_from_rfc3339(since)
                .map(|t| t.timestamp_millis())
                .map_err(|e| ApiError::InvalidQuery(format!("since must be an RFC 3339 time: {e}")))
        })
        .transpose()?;
    let filter = AuditFilter {
        actor: query.actor.clone(),
        resource: query.resource.clone(),
        since_ms,
        before_seq: None,
    };
    Ok(HttpResponse::Ok().json(catalog.audit_log(filter, &page).await?))
}

/// Walk the hash chain of the audit trail and report the first broken link.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", responses(
    (status = 200, body = AuditVerificationView),
    (status = 401, body = Problem),
    (status = 403, body = Problem),
))]
pub async fn verify_audit(
    _caller: Authorized<Admin>,
    catalog: web::Data<Catalog>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(catalog.verify_audit_chain().await?))
}
