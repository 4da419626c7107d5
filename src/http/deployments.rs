//! `/api/v1/deployments`.

use super::{
    auth::{Authorized, Developer, Viewer},
    extract::{Body, PageQuery},
    method_not_allowed,
    problem::{ApiError, Problem},
};
use crate::{
    auth::{AuthError, Role},
    catalog::views::Page,
    hub::{DeploymentView, Hub, NewDeploymentRequest},
};
use actix_web::{HttpResponse, web};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use std::sync::Arc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(
        resource("/deployments")
            .route(web::post().to(create_deployment))
            .route(web::get().to(list_deployments)),
    )
    .service(resource("/deployments/{id}").route(web::get().to(get_deployment)));
}

/// Deploy a version. Developers may deploy to development and staging; production needs an operator.
#[utoipa::path(post, path = "/api/v1/deployments", tag = "deployments", request_body = NewDeploymentRequest, responses(
    (status = 201, body = DeploymentView),
    (status = 403, body = Problem),
    (status = 404, body = Problem),
    (status = 409, description = "approval required, or a deployment of this config is in progress", body = Problem),
))]
pub async fn create_deployment(
    caller: Authorized<Developer>,
    hub: web::Data<Arc<Hub>>,
    Body(request): Body<NewDeploymentRequest>,
) -> Result<HttpResponse, ApiError> {
    let config = hub.catalog().get_config(&request.config).await?;
    if config.environment == "production" && caller.role < Role::Operator {
        return Err(ApiError::Forbidden(AuthError::Forbidden {
            have: caller.role.to_string(),
            need: Role::Operator,
        }));
    }
    let deployment = hub.deploy(&caller.actor, request).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/deployments/{}", deployment.id)))
        .json(deployment))
}

/// Deployments, newest first.
#[utoipa::path(get, path = "/api/v1/deployments", tag = "deployments", params(PageQuery), responses(
    (status = 200, body = Page<DeploymentView>),
))]
pub async fn list_deployments(
    _caller: Authorized<Viewer>,
    hub: web::Data<Arc<Hub>>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.to_request()?;
    let before = page
        .cursor
        .as_deref()
        .map(|c| {
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(crate::catalog::CatalogError::InvalidCursor)
        })
        .transpose()?;
    let mut items = hub
        .deployments(before.as_deref(), page.limit as i64 + 1)
        .await?;
    let next_cursor = (items.len() > page.limit).then(|| {
        items.truncate(page.limit);
        URL_SAFE_NO_PAD.encode(&items.last().expect("a full page has a last item").id)
    });
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}

/// A deployment: pushed / acked / failed counts and per-server status.
#[utoipa::path(get, path = "/api/v1/deployments/{id}", tag = "deployments", responses(
    (status = 200, body = DeploymentView),
    (status = 404, body = Problem),
))]
pub async fn get_deployment(
    _caller: Authorized<Viewer>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hub.deployment(&id).await?))
}
