//! `GET /api/v1/stream`: the feed as a WebSocket of JSON text frames, for
//! any staff token (a bearer header; checked at the upgrade). The
//! snapshot first, then each change; a socket that falls behind is closed
//! with 4008 and a reason (it reconnects and gets a snapshot), one that
//! takes no frame for [`SEND_TIMEOUT`] is dropped, a ping goes out every
//! [`PING_EVERY`], and the hub's stop closes it with 1001. What the socket
//! stands on is looked at again every [`RECHECK_EVERY`]: once its token
//! expires (or no longer holds a staff role) or its dashboard session
//! ends, it is closed with 1008.

use super::Feed;
use crate::{
    http::{
        auth::{Authorized, Recheck, Viewer},
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
/// A frame the client does not take within this long drops it.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How often the hub pings an idle dashboard.
pub const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(20);
/// How often a socket's token or session is looked at again.
pub const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

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
    let recheck = Recheck::of(&request, crate::auth::Role::Viewer)
        .ok_or_else(|| ApiError::Internal("the feed's caller has no credentials".into()))?;
    let (response, mut session, incoming) =
        actix_ws::handle(&request, body).map_err(|e| ApiError::BadUpgrade(e.to_string()))?;
    let (mut changes, snapshot) = feed.join(&hub, &liveops).await;
    let mut closing = feed.closing();
    let mut incoming = incoming.max_frame_size(4096);
    actix_web::rt::spawn(async move {
        let in_time = |result: Result<
            Result<(), actix_ws::Closed>,
            tokio::time::error::Elapsed,
        >| { matches!(result, Ok(Ok(()))) };
        if !in_time(tokio::time::timeout(SEND_TIMEOUT, session.text(snapshot)).await) {
            return;
        }
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut again = tokio::time::interval(RECHECK_EVERY);
        again.tick().await;
        loop {
            tokio::select! {
                _ = closing.changed() => {
                    let bye = CloseReason {
                        code: CloseCode::Away,
                        description: Some("the hub is stopping".into()),
                    };
                    let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(Some(bye))).await;
                    return;
                }
                _ = again.tick() => {
                    if !recheck.holds() {
                        let bye = CloseReason {
                            code: CloseCode::Policy,
                            description: Some("the token expired or the session ended: sign in again".into()),
                        };
                        let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(Some(bye))).await;
                        return;
                    }
                }
                _ = ping.tick() => {
                    if !in_time(tokio::time::timeout(SEND_TIMEOUT, session.ping(b"")).await) {
                        return;
                    }
                }
                change = changes.recv() => match change {
                    Ok(text) => {
                        // A shared buffer: no copy per socket.
                        let frame = session.text(text);
                        if !in_time(tokio::time::timeout(SEND_TIMEOUT, frame).await) {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        let bye = CloseReason {
                            code: CloseCode::Other(TOO_SLOW),
                            description: Some(format!(
                                "too slow: {missed} changes behind; reconnect for a snapshot"
                            )),
                        };
                        let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(Some(bye))).await;
                        return;
                    }
                    Err(RecvError::Closed) => {
                        let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(None)).await;
                        return;
                    }
                },
                message = incoming.next() => match message {
                    Some(Ok(Message::Ping(bytes))) => {
                        if !in_time(tokio::time::timeout(SEND_TIMEOUT, session.pong(&bytes)).await) {
                            return;
                        }
                    }
                    // The feed is one way: anything else but a close is ignored.
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(None)).await;
                        return;
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    });
    Ok(response)
}
