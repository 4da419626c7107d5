//! `GET /ws/v1/servers`: a game server's socket (`docs/PROTOCOL.md`). The
//! socket is admitted before the upgrade (per-address upgrade limit, a live
//! API key, room on the hub and for the key: 429, 401 or 503 otherwise);
//! the session actor takes it from there.

use crate::{
    http::{auth::AdmittedSocket, problem::ApiError},
    hub::Hub,
};
use actix_web::{HttpRequest, HttpResponse, web};
use hotswap_actors::{CloseReason, KeyScope, Outbox, ServerSession, SessionSettings};
use hotswap_client::protocol::close_code;
use std::{sync::Arc, time::Duration};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        hotswap_client::protocol::ENDPOINT_PATH,
        web::get().to(server_socket),
    );
}

/// Upgrade to the game-server protocol.
#[utoipa::path(get, path = "/ws/v1/servers", tag = "game servers", security(("apiKey" = [])), responses(
    (status = 101, description = "switching to the WebSocket protocol of docs/PROTOCOL.md"),
    (status = 401, description = "missing, unknown or revoked API key", body = crate::http::problem::Problem),
    (status = 429, description = "too many upgrades from this address, or sockets for this key (Retry-After)", body = crate::http::problem::Problem),
    (status = 503, description = "the hub holds as many sockets as it takes (Retry-After)", body = crate::http::problem::Problem),
))]
pub async fn server_socket(
    request: HttpRequest,
    body: web::Payload,
    AdmittedSocket { identity, permit }: AdmittedSocket,
    hub: web::Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    // actix-ws reads the socket; its `Session` is not used: the outbox
    // becomes the response body and writes the socket itself.
    let (response, _, stream) =
        actix_ws::handle(&request, body).map_err(|e| ApiError::BadUpgrade(e.to_string()))?;
    let settings = hub.settings();
    let limit = settings.max_frame_bytes;
    let stream = stream
        .max_frame_size(limit)
        .aggregate_continuations()
        .max_continuation_size(limit);
    let (outbox, response) = Outbox::attach(response, settings.session_queue);
    // A revocation between the admission and now closes it at once.
    permit.attach(
        &outbox,
        &CloseReason::new(close_code::KEY_REVOKED, "the API key was revoked"),
    );
    ServerSession::start(
        uuid::Uuid::now_v7().to_string(),
        KeyScope {
            key_id: identity.key_id,
            environments: identity.environments,
            regions: identity.regions,
        },
        permit,
        outbox,
        stream,
        hub.host(),
        SessionSettings {
            heartbeat: Duration::from_millis(settings.heartbeat_ms.max(50)),
            hello_timeout: Duration::from_millis(settings.hello_timeout_ms.max(50)),
            queue_capacity: settings.session_queue,
            max_frame_bytes: limit,
            metrics_interval: Duration::from_millis(settings.metrics_ms.max(10)),
        },
    );
    Ok(response)
}
