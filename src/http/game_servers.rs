//! `/api/v1/game-servers`: the registry of game servers.

use super::{
    auth::{Admin, Authorized, Operator, Viewer},
    extract::Body,
    method_not_allowed,
    problem::{ApiError, Problem},
};
use crate::{
    catalog::views::rfc3339,
    hub::{Hub, KnownServer},
};
use actix_web::{HttpResponse, web};
use hotswap_actors::{ServerFilter, ServerRecord};
use hotswap_client::protocol::Health;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, sync::Arc};

pub fn configure(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(resource("/game-servers").route(web::get().to(list_servers)))
        .service(
            resource("/game-servers/{id}")
                .route(web::get().to(get_server))
                .route(web::put().to(update_server))
                .route(web::delete().to(deregister_server)),
        );
}

/// A game server as the registry knows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GameServerView {
    pub server_id: String,
    pub region: String,
    pub environment: String,
    pub tags: Vec<String>,
    pub operator_tags: Vec<String>,
    /// `healthy`, `degraded`, `unhealthy` (from heartbeats), `stale` (closed
    /// for silence) or `disconnected`.
    pub status: String,
    pub connected: bool,
    pub players: u32,
    pub capacity: u32,
    pub load: Option<f64>,
    pub hostname: Option<String>,
    pub address: Option<String>,
    pub build: Option<String>,
    pub sdk: Option<String>,
    pub subscriptions: Vec<String>,
    /// Config → revision the server acked.
    pub applied: BTreeMap<String, i64>,
    pub connected_since: Option<String>,
    pub last_heartbeat: String,
    pub metrics_frames: u64,
    /// Why the hub closed the last session (`4003: ...`), when it did.
    pub disconnect_reason: Option<String>,
    /// On a cluster, the node the server is connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl From<KnownServer> for GameServerView {
    fn from(known: KnownServer) -> Self {
        GameServerView {
            node: known.node,
            ..GameServerView::from(known.record)
        }
    }
}

impl From<ServerRecord> for GameServerView {
    fn from(record: ServerRecord) -> Self {
        let status = match (record.connected, record.stale, record.status) {
            (false, true, _) => "stale",
            (false, false, _) => "disconnected",
            (true, _, Health::Healthy) => "healthy",
            (true, _, Health::Degraded) => "degraded",
            (true, _, Health::Unhealthy) => "unhealthy",
        };
        Self {
            status: status.into(),
            connected: record.connected,
            server_id: record.server_id,
            region: record.region,
            environment: record.environment,
            tags: record.tags,
            operator_tags: record.operator_tags,
            players: record.players,
            capacity: record.capacity,
            load: record.load,
            hostname: record.hostname,
            address: record.address,
            build: record.build,
            sdk: record.sdk,
            subscriptions: record.subscriptions,
            applied: record.applied,
            connected_since: record
                .connected_since_ms
                .filter(|_| record.connected)
                .map(rfc3339),
            last_heartbeat: rfc3339(record.last_seen_ms),
            metrics_frames: record.metrics_frames,
            disconnect_reason: record.disconnect_reason,
            node: None,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GameServerList {
    pub items: Vec<GameServerView>,
    /// Connected servers (on a cluster, to any node).
    pub connected: usize,
    /// On a cluster: another node's servers could not be read (Redis did
    /// not answer), so the list holds what this node and the store know.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServerQuery {
    pub region: Option<String>,
    pub environment: Option<String>,
    pub tag: Option<String>,
    /// Connected and reporting healthy.
    pub healthy: Option<bool>,
    pub connected: Option<bool>,
    /// Subscribed to this config.
    pub config: Option<String>,
    /// With `config`: acked this revision of it.
    pub revision: Option<i64>,
}

/// Game servers matching the filters, by id.
#[utoipa::path(get, path = "/api/v1/game-servers", tag = "game servers", params(ServerQuery), responses(
    (status = 200, body = GameServerList),
))]
pub async fn list_servers(
    _caller: Authorized<Viewer>,
    hub: web::Data<Arc<Hub>>,
    query: web::Query<ServerQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    if query.revision.is_some() && query.config.is_none() {
        return Err(ApiError::InvalidQuery("revision needs config".into()));
    }
    let filter = ServerFilter {
        region: query.region,
        environment: query.environment,
        tag: query.tag,
        healthy: query.healthy,
        config: query.config,
        revision: query.revision,
        connected: query.connected,
    };
    let list = hub.list_servers(&filter).await?;
    Ok(HttpResponse::Ok().json(GameServerList {
        items: list.items.into_iter().map(GameServerView::from).collect(),
        connected: list.connected,
        partial: list.partial,
    }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        what: "game server",
        id: id.chars().take(128).filter(|c| !c.is_control()).collect(),
    }
}

/// A path's server id, or 404 for what cannot be one (before any lookup:
/// a NUL byte reaches no database).
fn server_id(id: &str) -> Result<&str, ApiError> {
    if crate::domain::server_hello::is_server_id(id) {
        Ok(id)
    } else {
        Err(not_found(id))
    }
}

/// One game server.
#[utoipa::path(get, path = "/api/v1/game-servers/{id}", tag = "game servers", responses(
    (status = 200, body = GameServerView),
    (status = 404, body = Problem),
))]
pub async fn get_server(
    _caller: Authorized<Viewer>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = server_id(&id)?;
    let known = hub.game_server(id).await?.ok_or_else(|| not_found(id))?;
    Ok(HttpResponse::Ok().json(GameServerView::from(known)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerUpdate {
    /// Replaces the operator tags (kept across reconnects).
    pub operator_tags: Vec<String>,
}

/// Set a server's operator tags.
#[utoipa::path(put, path = "/api/v1/game-servers/{id}", tag = "game servers", request_body = ServerUpdate, responses(
    (status = 200, body = GameServerView),
    (status = 404, body = Problem),
    (status = 422, body = Problem),
))]
pub async fn update_server(
    _caller: Authorized<Operator>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
    Body(update): Body<ServerUpdate>,
) -> Result<HttpResponse, ApiError> {
    let id = server_id(&id)?;
    let mut tags = Vec::with_capacity(update.operator_tags.len());
    for (index, tag) in update.operator_tags.iter().enumerate() {
        let tag = crate::domain::names::Tag::parse(tag).map_err(|why| ApiError::InvalidBody {
            path: format!("/operatorTags/{index}"),
            message: format!("tag {why}"),
        })?;
        tags.push(tag.as_str().to_owned());
    }
    if tags.len() > crate::domain::names::Tag::MAX_PER_VERSION {
        return Err(ApiError::InvalidBody {
            path: "/operatorTags".into(),
            message: "at most 32 tags".into(),
        });
    }
    tags.sort();
    tags.dedup();
    let known = hub
        .set_operator_tags(id, tags)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(HttpResponse::Ok().json(GameServerView::from(known)))
}

/// Deregister a server and release its id (admin): its session is closed
/// (4005) and the id no longer belongs to its API key, so any key may
/// register it next. Audited.
#[utoipa::path(delete, path = "/api/v1/game-servers/{id}", tag = "game servers", responses(
    (status = 204),
    (status = 403, body = Problem),
    (status = 404, body = Problem),
))]
pub async fn deregister_server(
    caller: Authorized<Admin>,
    hub: web::Data<Arc<Hub>>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = server_id(&id)?;
    if !hub
        .deregister(&caller.actor, id)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    {
        return Err(not_found(id));
    }
    Ok(HttpResponse::NoContent().finish())
}
