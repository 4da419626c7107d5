//! `/api/v1/telemetry`: batches of events from game servers and clients,
//! and the event-type taxonomy.

use super::{
    auth::{Authorized, Operator, PlayerCaller, Viewer},
    extract::Body,
    method_not_allowed,
    problem::{ApiError, Problem},
};
use crate::{
    auth::AuthError,
    telemetry::{BatchAnswer, EventTypeList, EventTypeRequest, EventTypeView, Sender, Telemetry},
};
use actix_web::{HttpResponse, web};
use serde_json::Value;
use std::sync::Arc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(resource("/telemetry/batch").route(web::post().to(batch)))
        .service(
            resource("/telemetry/event-types")
                .route(web::post().to(put_event_type))
                .route(web::get().to(list_event_types)),
        )
        .service(resource("/telemetry/event-types/{name}").route(web::get().to(get_event_type)))
        .service(resource("/kpis/{name}").route(web::get().to(kpi)));
}

/// A KPI over stored telemetry: `dau`, `retention-d1`, `retention-d7`,
/// `win-rate` (per tier), `pick-rate` (per content id, with its win
/// contribution), `challenge-participation`, `session-length`. Query:
/// `from`/`to` (RFC 3339 or a date; the last 7 days by default, at most
/// 92), `groupBy` (`day`, `platform`, `tier`, `variant`, `none`, as the KPI
/// allows), `event` (only that live event's participants), `experiment`
/// (with `groupBy=variant`).
#[utoipa::path(get, path = "/api/v1/kpis/{name}", tag = "telemetry", responses(
    (status = 200, description = "the KPI's rows", body = Object),
    (status = 422, description = "an unknown KPI, grouping or parameter, or a bad window", body = Problem),
))]
pub async fn kpi(
    _caller: Authorized<Viewer>,
    telemetry: web::Data<Arc<Telemetry>>,
    name: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(telemetry.kpi(&name, &query).await?))
}

/// A batch of a player's events (LIVEOPS.md). Sent with a game server's
/// API key (`playerId` in the body) or the player's token. Each event is
/// checked on its own: the answer lists those refused, by index; the
/// others are stored before the answer. `eventId` makes a retry safe.
#[utoipa::path(post, path = "/api/v1/telemetry/batch", tag = "players", request_body = Object, responses(
    (status = 200, description = "stored, with the events refused", body = BatchAnswer),
    (status = 403, description = "a staff token, or a player's token naming another player", body = Problem),
    (status = 422, description = "the envelope is invalid (no events, too many, a bad playerId)", body = Problem),
    (status = 503, description = "the queue is full (Retry-After), or the store failed: retry", body = Problem),
))]
pub async fn batch(
    caller: PlayerCaller,
    telemetry: web::Data<Arc<Telemetry>>,
    catalog: web::Data<crate::catalog::Catalog>,
    Body(body): Body<Value>,
) -> Result<HttpResponse, ApiError> {
    let sender = match (caller.server, caller.player) {
        (true, _) => Sender::Server,
        (false, Some(player)) => Sender::Player(player, caller.vouched),
        (false, None) => {
            return Err(ApiError::Forbidden(AuthError::Denied(
                "telemetry comes from a game server's API key or a player's token".into(),
            )));
        }
    };
    let answer = telemetry.ingest(sender, body).await?;
    let meters = catalog.meters();
    meters.telemetry_accepted.inc_by(answer.accepted as u64);
    meters
        .telemetry_rejected
        .inc_by(answer.rejected.len() as u64);
    Ok(HttpResponse::Ok().json(answer))
}

/// Register an event type, or replace one's schema (events stored are kept).
#[utoipa::path(post, path = "/api/v1/telemetry/event-types", tag = "telemetry", request_body = EventTypeRequest, responses(
    (status = 201, description = "registered", body = EventTypeView),
    (status = 200, description = "replaced", body = EventTypeView),
    (status = 422, description = "the name or schema is invalid", body = Problem),
))]
pub async fn put_event_type(
    caller: Authorized<Operator>,
    telemetry: web::Data<Arc<Telemetry>>,
    Body(request): Body<EventTypeRequest>,
) -> Result<HttpResponse, ApiError> {
    let (view, created) = telemetry.put_event_type(&caller.actor, request).await?;
    Ok(if created {
        HttpResponse::Created()
            .insert_header((
                "Location",
                format!("/api/v1/telemetry/event-types/{}", view.name),
            ))
            .json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

#[utoipa::path(get, path = "/api/v1/telemetry/event-types", tag = "telemetry", responses((status = 200, body = EventTypeList)))]
pub async fn list_event_types(
    _caller: Authorized<Viewer>,
    telemetry: web::Data<Arc<Telemetry>>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(telemetry.event_types()))
}

#[utoipa::path(get, path = "/api/v1/telemetry/event-types/{name}", tag = "telemetry", responses(
    (status = 200, body = EventTypeView),
    (status = 404, body = Problem),
))]
pub async fn get_event_type(
    _caller: Authorized<Viewer>,
    telemetry: web::Data<Arc<Telemetry>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(telemetry.event_type(&name)?))
}
