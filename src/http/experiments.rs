//! `/api/v1/experiments`: player experiments, their controls, results and
//! promotion; `/api/v1/experiments/assignments`: a player's variants.

use super::{
    auth::{Authorized, Operator, PlayerCaller, Viewer},
    extract::Body,
    method_not_allowed,
    problem::{ApiError, Problem},
};
use crate::{
    domain::experiments::spec::Control,
    liveops::{
        LiveOps, PlayerRequest,
        experiments::{
            PromoteRequest,
            views::{AssignmentsView, ExperimentList, PromotionView, ResultsView},
        },
    },
};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(
        resource("/experiments")
            .route(web::post().to(create_experiment))
            .route(web::get().to(list_experiments)),
    )
    .service(
        resource("/experiments/{name}")
            .route(web::get().to(get_experiment))
            .route(web::put().to(update_experiment)),
    )
    .service(resource("/experiments/{name}/start").route(web::post().to(start_experiment)))
    .service(resource("/experiments/{name}/pause").route(web::post().to(pause_experiment)))
    .service(resource("/experiments/{name}/resume").route(web::post().to(resume_experiment)))
    .service(resource("/experiments/{name}/finish").route(web::post().to(finish_experiment)))
    .service(resource("/experiments/{name}/promote").route(web::post().to(promote_experiment)))
    .service(resource("/experiments/{name}/results").route(web::get().to(experiment_results)));
}

/// What players call: registered ahead of `/experiments/{name}`.
pub fn configure_players(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/experiments/assignments")
            .default_service(web::to(method_not_allowed))
            .route(web::get().to(assignments)),
    );
}

/// Create an experiment (a draft; `start` runs it). See `LIVEOPS.md`.
#[utoipa::path(post, path = "/api/v1/experiments", tag = "experiments", request_body = Object, responses(
    (status = 201, description = "the experiment, status Draft", body = Object),
    (status = 409, description = "the name is taken", body = Problem),
    (status = 422, description = "a field is invalid: variants, weights, a patch breaking the config, an unknown segment or event type", body = Problem),
))]
pub async fn create_experiment(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    Body(body): Body<Value>,
) -> Result<HttpResponse, ApiError> {
    let view = liveops
        .get_ref()
        .create_experiment(&caller.actor, body)
        .await?;
    let name = view["name"].as_str().unwrap_or_default().to_owned();
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/experiments/{name}")))
        .json(view))
}

#[utoipa::path(get, path = "/api/v1/experiments", tag = "experiments", responses((status = 200, body = ExperimentList)))]
pub async fn list_experiments(
    _caller: Authorized<Viewer>,
    liveops: web::Data<Arc<LiveOps>>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(liveops.experiments()))
}

#[utoipa::path(get, path = "/api/v1/experiments/{name}", tag = "experiments", responses(
    (status = 200, body = Object),
    (status = 404, body = Problem),
))]
pub async fn get_experiment(
    _caller: Authorized<Viewer>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(liveops.experiment(&name)?))
}

/// Replace a definition: all of a draft; of a started experiment only its
/// description, weights (units already assigned keep their variant),
/// endTime, metrics and guardrails.
#[utoipa::path(put, path = "/api/v1/experiments/{name}", tag = "experiments", request_body = Object, responses(
    (status = 200, body = Object),
    (status = 404, body = Problem),
    (status = 409, description = "finished, or the weights would move more assigned units than may be pinned", body = Problem),
    (status = 422, body = Problem),
))]
pub async fn update_experiment(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
    Body(body): Body<Value>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        liveops
            .get_ref()
            .update_experiment(&caller.actor, &name, body)
            .await?,
    ))
}

async fn control(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
    control: Control,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        liveops
            .get_ref()
            .control_experiment(&caller.actor, &name, control, None)
            .await?,
    ))
}

/// Draft → Running: players in its audience get a variant from now on.
#[utoipa::path(post, path = "/api/v1/experiments/{name}/start", tag = "experiments", responses(
    (status = 200, body = Object),
    (status = 409, description = "not a draft, or another experiment runs on the config", body = Problem),
))]
pub async fn start_experiment(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(caller, liveops, name, Control::Start).await
}

/// Running → Paused: players see the config without a variant; their
/// assignments are kept.
#[utoipa::path(post, path = "/api/v1/experiments/{name}/pause", tag = "experiments", responses(
    (status = 200, body = Object),
    (status = 409, body = Problem),
))]
pub async fn pause_experiment(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(caller, liveops, name, Control::Pause).await
}

#[utoipa::path(post, path = "/api/v1/experiments/{name}/resume", tag = "experiments", responses(
    (status = 200, body = Object),
    (status = 409, body = Problem),
))]
pub async fn resume_experiment(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(caller, liveops, name, Control::Resume).await
}

#[utoipa::path(post, path = "/api/v1/experiments/{name}/finish", tag = "experiments", responses(
    (status = 200, body = Object),
    (status = 409, body = Problem),
))]
pub async fn finish_experiment(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(caller, liveops, name, Control::Finish).await
}

/// Promote a variant: a new config version (the active revision plus the
/// variant's patch, validated and audited) and, with `deploy`, a
/// deployment of it (Canary by default). The experiment finishes.
#[utoipa::path(post, path = "/api/v1/experiments/{name}/promote", tag = "experiments", request_body = PromoteRequest, responses(
    (status = 200, body = PromotionView),
    (status = 409, description = "a draft, or promoted already, or the deployment was refused", body = Problem),
    (status = 422, description = "unknown variant, or the new version is invalid", body = Problem),
))]
pub async fn promote_experiment(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
    Body(request): Body<PromoteRequest>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        liveops
            .get_ref()
            .promote_experiment(&caller.actor, &name, request)
            .await?,
    ))
}

/// Per metric and variant: units, the mean or rate with a 95 % interval,
/// the difference to control with its p-value and always-valid sequential
/// p-value; the sample-ratio-mismatch check.
#[utoipa::path(get, path = "/api/v1/experiments/{name}/results", tag = "experiments", responses(
    (status = 200, body = ResultsView),
    (status = 404, body = Problem),
))]
pub async fn experiment_results(
    _caller: Authorized<Viewer>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(liveops.experiment_results(&name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssignmentQuery {
    player_id: Option<String>,
}

/// The studios' `experiments/assignments`: the running experiments the
/// player is in, with the variant and its parameters. Query: `playerId`
/// (a player's token may leave it out) and the player's attributes
/// (`region`, `platform`, a unit attribute such as `guild`...).
#[utoipa::path(get, path = "/api/v1/experiments/assignments", tag = "players", params(
    ("playerId" = Option<String>, Query, description = "required unless a player's token calls"),
), responses(
    (status = 200, body = AssignmentsView),
    (status = 403, description = "a player's token asking about another player", body = Problem),
    (status = 422, body = Problem),
))]
pub async fn assignments(
    caller: PlayerCaller,
    liveops: web::Data<Arc<LiveOps>>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let mut attributes = Map::new();
    let mut named = AssignmentQuery { player_id: None };
    for (key, value) in query.into_inner() {
        if key == "playerId" {
            named.player_id = Some(value);
        } else {
            attributes.insert(key, crate::liveops::attribute_value(&value));
        }
    }
    let player_id = match (named.player_id, &caller.player) {
        (Some(id), _) => id,
        (None, Some(own)) => own.clone(),
        (None, None) => return Err(ApiError::InvalidQuery("playerId: required".into())),
    };
    caller.settle(&mut attributes);
    let player = PlayerRequest {
        player_id,
        attributes,
    };
    player.check("/query")?;
    caller.may_read(&player.player_id)?;
    let _timed = liveops.meters().resolution();
    Ok(HttpResponse::Ok().json(AssignmentsView {
        assignments: liveops.assignments_for(&player),
        player_id: player.player_id,
    }))
}
