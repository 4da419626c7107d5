//! `GET /api/v1/stream`: the feed as a WebSocket of JSON text frames, for
//! any staff token (a bearer header, or the dashboard's session cookie).
//! The snapshot first, then each change; a socket that falls behind is
//! closed with 4008 and a reason (it reconnects and gets a snapshot).

use super::Feed;
use crate::{
    http::{
        auth::{Authorized, Viewer},
        problem::ApiError,
    },
    hub::Hub,
    liveops::LiveOps,
};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Message};
use futures_util::StreamExt as _;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// The close code of a socket that fell behind.
pub const TOO_SLOW: u16 = 4008;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/stream", web::get().to(stream));
}

/// The dashboards' feed (WebSocket upgrade).
#[utoipa::path(get, path = "/api/v1/stream", tag = "health", responses(
    (status = 101, description = "a WebSocket of JSON state changes: a snapshot, then deltas"),
    (status = 400, description = "not a WebSocket upgrade", body = crate::http::problem::Problem),
))]
pub async fn stream(
    _caller: Authorized<Viewer>,
    request: HttpRequest,
    body: web::Payload,
    feed: web::Data<Arc<Feed>>,
    hub: web::Data<Arc<Hub>>,
    liveops: web::Data<Arc<LiveOps>>,
) -> Result<HttpResponse, ApiError> {
    let (response, mut session, incoming) =
        actix_ws::handle(&request, body).map_err(|e| ApiError::BadUpgrade(e.to_string()))?;
    let (mut changes, snapshot) = feed.join(&hub, &liveops).await;
    let mut incoming = incoming.max_frame_size(4096);
    actix_web::rt::spawn(async move {
        if session.text(snapshot).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(text) => {
                        if session.text(text.to_string()).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        let _ = session
                            .close(Some(CloseReason {
                                code: CloseCode::Other(TOO_SLOW),
                                description: Some(format!(
                                    "too slow: {missed} changes behind; reconnect for a snapshot"
                                )),
                            }))
                            .await;
                        return;
                    }
                    Err(RecvError::Closed) => {
                        let _ = session.close(None).await;
                        return;
                    }
                },
                message = incoming.next() => match message {
                    Some(Ok(Message::Ping(bytes))) => {
                        if session.pong(&bytes).await.is_err() {
                            return;
                        }
                    }
                    // The feed is one way: anything else but a close is ignored.
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        let _ = session.close(None).await;
                        return;
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    });
    Ok(response)
}
