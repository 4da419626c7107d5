//! `GET /ws/v1/servers`: a game server's socket (`docs/PROTOCOL.md`). The
//! socket is admitted before the upgrade (per-address upgrade limit, a live
//! API key, room on the hub and for the key: 429, 401 or 503 otherwise);
//! then the hub takes the connection from the HTTP server (`upgrade.rs`)
//! and the session's task reads it, its writer writes it.

use crate::{
    http::{auth::AdmittedSocket, problem::ApiError},
    hub::Hub,
    ws::upgrade::{Takeover, UpgradeLane},
};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use hotswap_actors::{CloseReason, KeyScope, ServerSession, SessionSettings};
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
    AdmittedSocket { identity, permit }: AdmittedSocket,
    hub: web::Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    if request.extensions().get::<UpgradeLane>().is_none() {
        // Not an HTTP/1.1 upgrade (HTTP/2 has none): no connection to take.
        return Err(ApiError::BadUpgrade(
            "a game server's socket is an HTTP/1.1 WebSocket upgrade".into(),
        ));
    }
    let handshake = actix_http::ws::handshake(request.head())
        .map_err(|e| ApiError::BadUpgrade(e.to_string()))?
        .finish();
    let mut response = HttpResponse::from(handshake).map_into_boxed_body();
    let settings = hub.settings();
    let limit = settings.max_frame_bytes;
    let queue = settings.session_queue;
    let session = SessionSettings {
        heartbeat: Duration::from_millis(settings.heartbeat_interval_ms()),
        hello_timeout: Duration::from_millis(settings.hello_timeout_ms.max(50)),
        queue_capacity: queue,
        max_frame_bytes: limit,
        metrics_interval: Duration::from_millis(settings.metrics_ms.max(10)),
    };
    let host = hub.host();
    let open = hub.sockets.clone();
    let key = KeyScope {
        key_id: identity.key_id,
        environments: identity.environments,
        regions: identity.regions,
    };
    // Runs on this worker once the 101 is written: the session lives here.
    let takeover = Takeover::new(move |io, read| {
        let (outbox, reader) = match hotswap_actors::socket::serve(io, read, queue, limit, &open) {
            Ok(served) => served,
            Err(error) => {
                // The connection is dropped (the client sees it close
                // after the 101); its place at the gate goes with `permit`.
                return tracing::warn!(%error, "could not serve a game server's socket");
            }
        };
        // A revocation between the admission and now closes it at once.
        permit.attach(
            &outbox,
            &CloseReason::new(close_code::KEY_REVOKED, "the API key was revoked"),
        );
        ServerSession::start(
            uuid::Uuid::now_v7().to_string(),
            key,
            permit,
            outbox,
            reader,
            host,
            session,
        );
    });
    response.extensions_mut().insert(takeover);
    Ok(response)
}
