//! `/api/v1/segments`, `/api/v1/live-events`, and what players see:
//! `/api/v1/events/active`, `/api/v1/players/{id}/config`,
//! `/api/v1/players/resolve`.

use super::{
    auth::{Authorized, Operator, PlayerCaller, Viewer},
    extract::Body,
    method_not_allowed,
    problem::{ApiError, Problem},
};
use crate::{
    domain::event_progress::{Control, EventState},
    liveops::{
        LiveOps, MembersRequest, PlayerRequest, ResolveRequest, SegmentRequest,
        views::{
            ActiveEventsView, EngagementView, LiveEventList, LiveEventView, PlayerConfigView,
            ResolvedPlayers, SegmentList, SegmentView, TimelineView,
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
        resource("/segments")
            .route(web::post().to(create_segment))
            .route(web::get().to(list_segments)),
    )
    .service(
        resource("/segments/{name}")
            .route(web::get().to(get_segment))
            .route(web::put().to(update_segment))
            .route(web::delete().to(delete_segment)),
    )
    .service(resource("/segments/{name}/members").route(web::post().to(segment_members)))
    .service(
        resource("/live-events")
            .route(web::post().to(create_event))
            .route(web::get().to(list_events)),
    )
    .service(resource("/live-events/timeline").route(web::get().to(timeline)))
    .service(
        resource("/live-events/{name}")
            .route(web::get().to(get_event))
            .route(web::put().to(update_event))
            .route(web::delete().to(delete_event)),
    )
    .service(resource("/live-events/{name}/activate").route(web::post().to(activate_event)))
    .service(resource("/live-events/{name}/pause").route(web::post().to(pause_event)))
    .service(resource("/live-events/{name}/resume").route(web::post().to(resume_event)))
    .service(resource("/live-events/{name}/end").route(web::post().to(end_event)))
    .service(resource("/live-events/{name}/cancel").route(web::post().to(cancel_event)))
    .service(resource("/live-events/{name}/metrics").route(web::get().to(event_metrics)));
}

/// What players see. Registered first in `/api/v1`: actix tries a
/// scope's routes in order, each with a path parameter through a regex,
/// and these are the routes a fleet of game servers and clients calls
/// most (the regexes of the routes ahead of them were a fifth of the CPU
/// of a lookup).
pub fn configure_players(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(resource("/players/{id}/config").route(web::get().to(player_config)))
        .service(resource("/players/resolve").route(web::post().to(resolve_players)))
        .service(resource("/events/active").route(web::get().to(active_events)));
}

fn instant(name: &str, text: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::InvalidQuery(format!(
                "{name}: an RFC 3339 time like 2026-12-24T18:00:00Z"
            ))
        })
}

/// Define a segment: a rule over player attributes, or a list of ids.
#[utoipa::path(post, path = "/api/v1/segments", tag = "live ops", request_body = SegmentRequest, responses(
    (status = 201, body = SegmentView),
    (status = 409, description = "the name is taken", body = Problem),
    (status = 422, description = "the rule is invalid, names an unknown segment, closes a cycle or chains too deep; too many members", body = Problem),
))]
pub async fn create_segment(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    Body(request): Body<SegmentRequest>,
) -> Result<HttpResponse, ApiError> {
    let segment = liveops.create_segment(&caller.actor, request).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/segments/{}", segment.name)))
        .json(segment))
}

/// Every segment, the built-in ones first.
#[utoipa::path(get, path = "/api/v1/segments", tag = "live ops", responses((status = 200, body = SegmentList)))]
pub async fn list_segments(
    _caller: Authorized<Viewer>,
    liveops: web::Data<Arc<LiveOps>>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(SegmentList {
        items: liveops.segments(),
    }))
}

#[utoipa::path(get, path = "/api/v1/segments/{name}", tag = "live ops", responses(
    (status = 200, body = SegmentView),
    (status = 404, body = Problem),
))]
pub async fn get_segment(
    _caller: Authorized<Viewer>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(liveops.segment(&name)?))
}

/// Replace a segment's description and rule (or its whole list).
#[utoipa::path(put, path = "/api/v1/segments/{name}", tag = "live ops", request_body = SegmentRequest, responses(
    (status = 200, body = SegmentView),
    (status = 404, body = Problem),
    (status = 422, body = Problem),
))]
pub async fn update_segment(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
    Body(request): Body<SegmentRequest>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        liveops
            .update_segment(&caller.actor, &name, request)
            .await?,
    ))
}

/// Delete a segment no live event and no other segment names.
#[utoipa::path(delete, path = "/api/v1/segments/{name}", tag = "live ops", responses(
    (status = 204),
    (status = 404, body = Problem),
    (status = 409, description = "a live event or a segment names it", body = Problem),
))]
pub async fn delete_segment(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    liveops.delete_segment(&caller.actor, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Add and remove player ids of a list segment (at most 100,000 in all).
#[utoipa::path(post, path = "/api/v1/segments/{name}/members", tag = "live ops", request_body = MembersRequest, responses(
    (status = 200, body = SegmentView),
    (status = 404, body = Problem),
    (status = 422, body = Problem),
))]
pub async fn segment_members(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
    Body(request): Body<MembersRequest>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        liveops
            .change_members(&caller.actor, &name, request)
            .await?,
    ))
}

/// Create a live event (see `LIVEOPS.md` for its fields).
#[utoipa::path(post, path = "/api/v1/live-events", tag = "live ops", request_body = Object, responses(
    (status = 201, body = LiveEventView),
    (status = 409, description = "the name is taken, or it changes a config path another event changes at the same time (send allowOverlap)", body = Problem),
    (status = 422, description = "a field is invalid: schedule, time zone, patch breaking its config, unknown segment, too many events", body = Problem),
))]
pub async fn create_event(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    Body(body): Body<Value>,
) -> Result<HttpResponse, ApiError> {
    let event = liveops.get_ref().create_event(&caller.actor, body).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/live-events/{}", event.name)))
        .json(event))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// `Scheduled`, `Active`, `Paused`, `Ended`, `Cancelled`, `RolledBack`.
    pub state: Option<String>,
    pub region: Option<String>,
    /// RFC 3339: with `to`, events with an occurrence in `[from, to)`.
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Live events by name.
#[utoipa::path(get, path = "/api/v1/live-events", tag = "live ops", params(EventQuery), responses(
    (status = 200, body = LiveEventList),
    (status = 400, body = Problem),
))]
pub async fn list_events(
    _caller: Authorized<Viewer>,
    liveops: web::Data<Arc<LiveOps>>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, ApiError> {
    let state = query
        .state
        .as_deref()
        .map(|s| {
            EventState::parse(s)
                .ok_or_else(|| ApiError::InvalidQuery(format!("state: no state {s:?}")))
        })
        .transpose()?;
    let window = match (&query.from, &query.to) {
        (None, None) => None,
        (Some(from), Some(to)) => Some((instant("from", from)?, instant("to", to)?)),
        _ => return Err(ApiError::InvalidQuery("from and to go together".into())),
    };
    Ok(HttpResponse::Ok().json(LiveEventList {
        items: liveops.events(state, query.region.as_deref(), window),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// RFC 3339; default now.
    pub from: Option<String>,
    /// RFC 3339; default 30 days after `from`; at most 400 days after it.
    pub to: Option<String>,
    pub region: Option<String>,
}

/// Every occurrence in a window, with the events overriding the same
/// config path at the same time in a shared region.
#[utoipa::path(get, path = "/api/v1/live-events/timeline", tag = "live ops", params(TimelineQuery), responses(
    (status = 200, body = TimelineView),
    (status = 400, body = Problem),
    (status = 422, body = Problem),
))]
pub async fn timeline(
    _caller: Authorized<Viewer>,
    liveops: web::Data<Arc<LiveOps>>,
    query: web::Query<TimelineQuery>,
) -> Result<HttpResponse, ApiError> {
    let from = match &query.from {
        Some(from) => instant("from", from)?,
        None => liveops.now_ms(),
    };
    let to = match &query.to {
        Some(to) => instant("to", to)?,
        None => from.saturating_add(30 * 86_400_000),
    };
    Ok(HttpResponse::Ok().json(liveops.timeline(from, to, query.region.as_deref())?))
}

#[utoipa::path(get, path = "/api/v1/live-events/{name}", tag = "live ops", responses(
    (status = 200, body = LiveEventView),
    (status = 404, body = Problem),
))]
pub async fn get_event(
    _caller: Authorized<Viewer>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(liveops.event(&name)?))
}

/// A new revision of the event's definition (an active event's change
/// takes effect at once).
#[utoipa::path(put, path = "/api/v1/live-events/{name}", tag = "live ops", request_body = Object, responses(
    (status = 200, body = LiveEventView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
    (status = 422, body = Problem),
))]
pub async fn update_event(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
    Body(body): Body<Value>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        liveops
            .get_ref()
            .update_event(&caller.actor, &name, body)
            .await?,
    ))
}

/// Delete an event that is not active or paused (its name stays taken).
#[utoipa::path(delete, path = "/api/v1/live-events/{name}", tag = "live ops", responses(
    (status = 204),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
))]
pub async fn delete_event(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    liveops.get_ref().delete_event(&caller.actor, &name).await?;
    Ok(HttpResponse::NoContent().finish())
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
            .control_event(&caller.actor, &name, control)
            .await?,
    ))
}

/// Start now: the occurrence under way or the next one, until its scheduled end.
#[utoipa::path(post, path = "/api/v1/live-events/{name}/activate", tag = "live ops", responses(
    (status = 200, body = LiveEventView),
    (status = 404, body = Problem),
    (status = 409, description = "not in a state that allows it", body = Problem),
))]
pub async fn activate_event(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(caller, liveops, name, Control::Activate).await
}

/// Hold the event: nothing of it applies until it is resumed.
#[utoipa::path(post, path = "/api/v1/live-events/{name}/pause", tag = "live ops", responses(
    (status = 200, body = LiveEventView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
))]
pub async fn pause_event(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(caller, liveops, name, Control::Pause).await
}

#[utoipa::path(post, path = "/api/v1/live-events/{name}/resume", tag = "live ops", responses(
    (status = 200, body = LiveEventView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
))]
pub async fn resume_event(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(caller, liveops, name, Control::Resume).await
}

/// End the occurrence in force (a recurring event goes on with its next one).
#[utoipa::path(post, path = "/api/v1/live-events/{name}/end", tag = "live ops", responses(
    (status = 200, body = LiveEventView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
))]
pub async fn end_event(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(caller, liveops, name, Control::End).await
}

/// Cancel the event for good.
#[utoipa::path(post, path = "/api/v1/live-events/{name}/cancel", tag = "live ops", responses(
    (status = 200, body = LiveEventView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
))]
pub async fn cancel_event(
    caller: Authorized<Operator>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(caller, liveops, name, Control::Cancel).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EngagementQuery {
    pub region: Option<String>,
    /// RFC 3339: one occurrence, by its scheduled start.
    pub occurrence: Option<String>,
}

/// Engagement per occurrence and region, from the covered servers'
/// metrics (custom counters `event.<name>.participants` and
/// `event.<name>.conversions`, purchases, sessions started).
#[utoipa::path(get, path = "/api/v1/live-events/{name}/metrics", tag = "live ops", params(EngagementQuery), responses(
    (status = 200, body = EngagementView),
    (status = 400, body = Problem),
    (status = 404, body = Problem),
))]
pub async fn event_metrics(
    _caller: Authorized<Viewer>,
    liveops: web::Data<Arc<LiveOps>>,
    name: web::Path<String>,
    query: web::Query<EngagementQuery>,
) -> Result<HttpResponse, ApiError> {
    let occurrence = query
        .occurrence
        .as_deref()
        .map(|o| instant("occurrence", o))
        .transpose()?;
    Ok(HttpResponse::Ok().json(
        liveops
            .engagement(&name, query.region.as_deref(), occurrence)
            .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ActiveQuery {
    pub player_id: Option<String>,
    pub region: Option<String>,
    pub platform: Option<String>,
    pub client_version: Option<String>,
}

/// What applies now, in the studios' shape: for a player (its segments and
/// the events' percentages applied), or for a region.
#[utoipa::path(get, path = "/api/v1/events/active", tag = "players", params(ActiveQuery), responses(
    (status = 200, body = ActiveEventsView),
    (status = 422, body = Problem),
))]
pub async fn active_events(
    caller: PlayerCaller,
    liveops: web::Data<Arc<LiveOps>>,
    query: web::Query<ActiveQuery>,
) -> Result<HttpResponse, ApiError> {
    // A player's token asks for its own player, named or not.
    let player = match query.player_id.as_ref().or(caller.player.as_ref()) {
        Some(id) => {
            let mut attributes = Map::new();
            for (key, value) in [
                ("region", &query.region),
                ("platform", &query.platform),
                ("clientVersion", &query.client_version),
            ] {
                if let Some(value) = value {
                    attributes.insert(key.into(), Value::String(value.clone()));
                }
            }
            caller.settle(&mut attributes);
            let player = PlayerRequest {
                player_id: id.clone(),
                attributes,
            };
            player.check("/query")?;
            caller.may_read(id)?;
            Some(player)
        }
        None => None,
    };
    let _timed = liveops.meters().resolution();
    Ok(HttpResponse::Ok().json(liveops.active_events(player.as_ref(), query.region.as_deref())))
}

/// One player's resolved configs. Query: `configs` (comma-separated,
/// required), `at` (RFC 3339, a preview), `explain`, and any other
/// parameter as a player attribute (`region`, `platform`, `level`...).
#[utoipa::path(get, path = "/api/v1/players/{id}/config", tag = "players", params(
    ("configs" = String, Query, description = "config names, comma-separated"),
    ("at" = Option<String>, Query, description = "RFC 3339: resolve for this instant"),
    ("explain" = Option<bool>, Query, description = "say which layer set each path"),
), responses(
    (status = 200, body = PlayerConfigView),
    (status = 400, body = Problem),
    (status = 404, description = "a config is unknown", body = Problem),
    (status = 422, body = Problem),
))]
pub async fn player_config(
    caller: PlayerCaller,
    liveops: web::Data<Arc<LiveOps>>,
    id: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let mut configs = Vec::new();
    let mut at = None;
    let mut explain = false;
    let mut attributes = Map::new();
    for (key, value) in query.into_inner() {
        match key.as_str() {
            "configs" => configs.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
            ),
            "at" => at = Some(instant("at", &value)?),
            "explain" => {
                explain = value
                    .parse()
                    .map_err(|_| ApiError::InvalidQuery("explain: true or false".into()))?;
            }
            _ => {
                attributes.insert(key, crate::liveops::attribute_value(&value));
            }
        }
    }
    caller.settle(&mut attributes);
    let player = PlayerRequest {
        player_id: id.into_inner(),
        attributes,
    };
    player.check("/query")?;
    caller.may_read(&player.player_id)?;
    caller.may_preview(at.is_some(), explain)?;
    let _timed = liveops.meters().resolution();
    let answers = liveops
        .resolve_players(std::slice::from_ref(&player), &configs, at, explain)
        .await?;
    let mut body = String::with_capacity(2048);
    if let Some(answer) = answers.first() {
        answer.write_json(&mut body);
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// A roster's resolved configs (at most 100 players), e.g. a match's.
#[utoipa::path(post, path = "/api/v1/players/resolve", tag = "players", request_body = ResolveRequest, responses(
    (status = 200, body = ResolvedPlayers),
    (status = 404, description = "a config is unknown", body = Problem),
    (status = 422, body = Problem),
))]
pub async fn resolve_players(
    caller: PlayerCaller,
    liveops: web::Data<Arc<LiveOps>>,
    Body(mut request): Body<ResolveRequest>,
) -> Result<HttpResponse, ApiError> {
    if request.players.is_empty() || request.players.len() > crate::liveops::MAX_PLAYERS {
        return Err(ApiError::InvalidBody {
            path: "/players".into(),
            message: format!("1 to {} players", crate::liveops::MAX_PLAYERS),
        });
    }
    for (index, player) in request.players.iter_mut().enumerate() {
        caller.settle(&mut player.attributes);
        player.check(&format!("/players/{index}"))?;
        caller.may_read(&player.player_id)?;
    }
    let at = request
        .at
        .as_deref()
        .map(|at| {
            chrono::DateTime::parse_from_rfc3339(at)
                .map(|t| t.timestamp_millis())
                .map_err(|_| ApiError::InvalidBody {
                    path: "/at".into(),
                    message: "an RFC 3339 time".into(),
                })
        })
        .transpose()?;
    caller.may_preview(at.is_some(), request.explain)?;
    let _timed = liveops.meters().resolution();
    let players = liveops
        .resolve_players(&request.players, &request.configs, at, request.explain)
        .await?;
    // The `ResolvedPlayers` shape, each config's resolution written as kept.
    let mut body = String::from("{\"players\":[");
    for (index, answer) in players.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        answer.write_json(&mut body);
    }
    body.push_str("]}");
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}
