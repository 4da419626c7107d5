//! `/api/v1/deployments` and `/api/v1/metrics`.

use super::{
    auth::{Admin, Authorized, Developer, FeedbackCaller, Operator, Viewer},
    extract::{Body, MaybeBody, PageQuery},
    method_not_allowed,
    problem::{ApiError, Problem},
};
use crate::{
    auth::{AuthError, Role},
    catalog::{PageRequest, views::Page},
    domain::feedback::Reporter,
    hub::{
        Action, DeploymentView, Hub, NewDeploymentRequest, ServerProgressView,
        deployments::{
            LiveStatus, RollbackRequest, RollbackStatusView, ServerState, ThresholdsRequest,
        },
        feedback::{AggregatedQuery, AggregatedView, FeedbackReceipt, FeedbackRequest},
    },
};
use actix_web::{HttpResponse, web};
use std::sync::Arc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(
        resource("/deployments")
            .route(web::post().to(create_deployment))
            .route(web::get().to(list_deployments)),
    )
    .service(resource("/deployments/{id}").route(web::get().to(get_deployment)))
    .service(resource("/deployments/{id}/pause").route(web::post().to(pause)))
    .service(resource("/deployments/{id}/resume").route(web::post().to(resume)))
    .service(resource("/deployments/{id}/promote").route(web::post().to(promote)))
    .service(resource("/deployments/{id}/cancel").route(web::post().to(cancel)))
    .service(resource("/deployments/{id}/approve").route(web::post().to(approve)))
    .service(resource("/deployments/{id}/rollback").route(web::post().to(rollback)))
    .service(resource("/deployments/{id}/rollback-status").route(web::get().to(rollback_status)))
    .service(
        resource("/deployments/{id}/rollback-thresholds")
            .route(web::post().to(rollback_thresholds)),
    )
    .service(resource("/deployments/{id}/servers").route(web::get().to(deployment_servers)))
    .service(resource("/deployments/{id}/metrics").route(web::get().to(deployment_metrics)))
    .service(resource("/metrics/aggregated").route(web::get().to(aggregated_metrics)))
    .service(resource("/metrics/player-feedback").route(web::post().to(player_feedback)));
}

/// Deploy a version. Developers may deploy to development and staging; production needs an operator.
#[utoipa::path(post, path = "/api/v1/deployments", tag = "deployments", request_body = NewDeploymentRequest, responses(
    (status = 201, body = DeploymentView),
    (status = 403, body = Problem),
    (status = 404, body = Problem),
    (status = 409, description = "approval required, a deployment of this config is in progress, or too many deployments", body = Problem),
    (status = 422, description = "the request does not make a deployment (phases, durations, variants, thresholds)", body = Problem),
))]
pub async fn create_deployment(
    caller: Authorized<Developer>,
    hub: web::Data<Arc<Hub>>,
    Body(request): Body<NewDeploymentRequest>,
) -> Result<HttpResponse, ApiError> {
    let config = hub.catalog().get_config(&request.config).await?;
    let deployer = hub.policy(&config.environment).deployer;
    if caller.role < deployer {
        return Err(ApiError::Forbidden(AuthError::Forbidden {
            have: caller.role.to_string(),
            need: deployer,
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
    let before = page.position()?;
    let mut items = hub
        .deployments(before.as_deref(), page.limit as i64 + 1)
        .await?;
    let next_cursor = (items.len() > page.limit).then(|| {
        items.truncate(page.limit);
        PageRequest::cursor_after(&items.last().expect("a full page has a last item").id)
    });
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}

/// `?state=&limit=&cursor=` of a deployment's servers.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServersQuery {
    /// Only servers in this state: `pushed`, `acked` or `failed`.
    pub state: Option<ServerState>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// A deployment's servers by id, with what each was sent and how it went
/// (while this hub holds the deployment's per-server detail).
#[utoipa::path(get, path = "/api/v1/deployments/{id}/servers", tag = "deployments", params(ServersQuery), responses(
    (status = 200, body = Page<ServerProgressView>),
    (status = 400, body = Problem),
    (status = 404, body = Problem),
))]
pub async fn deployment_servers(
    _caller: Authorized<Viewer>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
    query: web::Query<ServersQuery>,
) -> Result<HttpResponse, ApiError> {
    let ServersQuery {
        state,
        limit,
        cursor,
    } = query.into_inner();
    let page = PageQuery { limit, cursor }.to_request()?;
    let after = page.position()?;
    let (items, more) = hub
        .deployment_servers(&id, state, after.as_deref(), page.limit)
        .await?;
    let next_cursor = more
        .then(|| {
            items
                .last()
                .map(|s| PageRequest::cursor_after(&s.server_id))
        })
        .flatten();
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

/// Holds auto-promotion; servers keep what they have.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/pause", tag = "deployments", responses(
    (status = 200, body = DeploymentView),
    (status = 404, body = Problem),
    (status = 409, description = "not in a state that can be paused", body = Problem),
))]
pub async fn pause(
    caller: Authorized<Operator>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hub.control(&id, Action::Pause, &caller.actor).await?))
}

/// Resumes a paused deployment.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/resume", tag = "deployments", responses(
    (status = 200, body = DeploymentView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
))]
pub async fn resume(
    caller: Authorized<Operator>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hub.control(&id, Action::Resume, &caller.actor).await?))
}

/// Skips to the next phase now (the last phase completes the deployment).
#[utoipa::path(post, path = "/api/v1/deployments/{id}/promote", tag = "deployments", responses(
    (status = 200, body = DeploymentView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
))]
pub async fn promote(
    caller: Authorized<Operator>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hub.control(&id, Action::Promote, &caller.actor).await?))
}

/// Stops the deployment; servers that got its revision go back to what they ran.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/cancel", tag = "deployments", responses(
    (status = 200, body = DeploymentView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
))]
pub async fn cancel(
    caller: Authorized<Operator>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hub.control(&id, Action::Cancel, &caller.actor).await?))
}

/// Approves a deployment waiting for approval; an admin other than its creator.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/approve", tag = "deployments", responses(
    (status = 200, body = DeploymentView),
    (status = 403, description = "not an admin, or the deployment's creator", body = Problem),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
))]
pub async fn approve(
    caller: Authorized<Admin>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hub.control(&id, Action::Approve, &caller.actor).await?))
}

/// Rolls back: every server that got the new revision gets its previous one.
/// Works on a running deployment and on the config's newest completed one
/// (the kill switch); `region` rolls back one region of a geographic rollout.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/rollback", tag = "deployments", request_body(content = Option<RollbackRequest>), responses(
    (status = 200, body = DeploymentView),
    (status = 404, body = Problem),
    (status = 409, description = "nothing to roll back to, or not the newest completed deployment", body = Problem),
))]
pub async fn rollback(
    caller: Authorized<Operator>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
    MaybeBody(request): MaybeBody<RollbackRequest>,
) -> Result<HttpResponse, ApiError> {
    let action = Action::Rollback(request.unwrap_or_default());
    Ok(HttpResponse::Ok().json(hub.control(&id, action, &caller.actor).await?))
}

/// Whether and why the deployment rolled back, its rules and their last status.
#[utoipa::path(get, path = "/api/v1/deployments/{id}/rollback-status", tag = "deployments", responses(
    (status = 200, body = RollbackStatusView),
    (status = 404, body = Problem),
))]
pub async fn rollback_status(
    _caller: Authorized<Viewer>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hub.rollback_status(&id).await?))
}

/// Changes the rollback rules of a running deployment.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/rollback-thresholds", tag = "deployments", request_body = ThresholdsRequest, responses(
    (status = 200, body = RollbackStatusView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
    (status = 422, body = Problem),
))]
pub async fn rollback_thresholds(
    caller: Authorized<Operator>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
    Body(request): Body<ThresholdsRequest>,
) -> Result<HttpResponse, ApiError> {
    hub.control(&id, Action::Thresholds(request), &caller.actor)
        .await?;
    Ok(HttpResponse::Ok().json(hub.rollback_status(&id).await?))
}

/// The deployment's cohorts: servers, metric windows (long and fast, per
/// region) and the last judgement, while this hub drives it.
#[utoipa::path(get, path = "/api/v1/deployments/{id}/metrics", tag = "deployments", responses(
    (status = 200, body = LiveStatus),
    (status = 404, body = Problem),
))]
pub async fn deployment_metrics(
    _caller: Authorized<Viewer>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = hub.deployment(&id).await?;
    Ok(HttpResponse::Ok().json(view.live.unwrap_or_default()))
}

/// Player metrics summed over servers, per minute from the store plus the
/// current minute: all servers, or one deployment's cohorts.
#[utoipa::path(get, path = "/api/v1/metrics/aggregated", tag = "metrics", params(AggregatedQuery), responses(
    (status = 200, body = AggregatedView),
    (status = 400, body = Problem),
))]
pub async fn aggregated_metrics(
    _caller: Authorized<Viewer>,
    hub: web::Data<Arc<Hub>>,
    query: web::Query<AggregatedQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(hub.aggregated(&query).await?))
}

/// Records a player's complaint or rating, from support tools (a
/// developer's token or higher) or from a game server's own API key.
/// Game servers also count complaints in their `metrics` frames. A
/// complaint counts at once in the cohorts of the server's deployments,
/// in production only when an operator or the server's own key sent it,
/// and at most 30 at once and 60 a minute per server (`counted` says).
#[utoipa::path(post, path = "/api/v1/metrics/player-feedback", tag = "metrics", request_body = FeedbackRequest, security(("bearer" = []), ("apiKey" = [])), responses(
    (status = 201, body = FeedbackReceipt),
    (status = 403, body = Problem),
    (status = 422, body = Problem),
))]
pub async fn player_feedback(
    caller: FeedbackCaller,
    hub: web::Data<Arc<Hub>>,
    Body(request): Body<FeedbackRequest>,
) -> Result<HttpResponse, ApiError> {
    let (actor, reporter) = match &caller {
        FeedbackCaller::User { actor, role } => (
            actor,
            Reporter::User {
                operator: *role >= Role::Operator,
            },
        ),
        FeedbackCaller::Server { actor, key_id } => (actor, Reporter::ServerKey { key_id }),
    };
    Ok(HttpResponse::Created().json(hub.player_feedback(actor, reporter, request).await?))
}
