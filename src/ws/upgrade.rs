//! The upgrade lane: every `Upgrade: websocket` request (and `CONNECT`)
//! reaches this service from actix-http's HTTP/1 dispatcher together with
//! the connection itself. The request goes through the same App as any
//! other (middleware, admission, routing, problem+json), then:
//!
//! - a `101` carrying a [`Takeover`] (the game-server socket): the hub
//!   writes the 101 and takes the stream. The dispatcher, its two 8 KiB
//!   buffers and its frame copying are gone; the session reads and writes
//!   the socket itself (`hotswap_actors::socket`).
//! - any other `101` (the dashboards' feed): its body is written to the
//!   stream and what the client sends feeds the request's payload, as the
//!   dispatcher did.
//! - anything else (a refusal, a 404): written, then the connection closes
//!   (what the client still sends is read and dropped for up to 2 s, so
//!   the answer is not lost to a reset).
//!
//! A request that is not a GET is answered 400 here, without the App: its
//! body would reach a handler as a stream that never ends.
//!
//! Only a request that came this way can be taken: a handler checks
//! [`UpgradeLane`] in the request's extensions before it answers 101.

use actix_codec::Framed;
use actix_http::{
    ConnectionType, HttpMessage, Payload, Request, Response, StatusCode,
    body::{BodySize, BoxBody, MessageBody},
    error::PayloadError,
    h1,
};
use actix_service::{Service, ServiceFactory};
use actix_web::{
    Error,
    dev::{AppConfig, ServiceResponse},
};
use bytes::{Bytes, BytesMut};
use futures_util::{
    SinkExt,
    future::{Either, LocalBoxFuture, select},
};
use hotswap_actors::socket::{CLOSE_GRACE, SocketIo};
use std::{pin::pin, rc::Rc, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// In a request's extensions: it came on the upgrade lane, so its
/// connection can be taken.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeLane;

/// In a `101`'s extensions: what to do with the connection once the 101
/// is written (the stream, and what the client sent past its request).
pub struct Takeover(Box<dyn FnOnce(Box<dyn SocketIo>, BytesMut)>);

impl Takeover {
    pub fn new(start: impl FnOnce(Box<dyn SocketIo>, BytesMut) + 'static) -> Self {
        Self(Box::new(start))
    }
}

/// How long one write of a passed-through body may wait on a client that
/// does not read before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the App may take to answer an upgrade request before the
/// connection is dropped.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read per read from a passed-through connection.
const READ_CHUNK: usize = 4096;

/// Makes the upgrade service of a worker: its own instance of the App.
pub struct UpgradeFactory<A> {
    app: A,
    config: AppConfig,
}

impl<A> UpgradeFactory<A> {
    pub fn new(app: A, config: AppConfig) -> Self {
        Self { app, config }
    }
}

impl<T, A, B> ServiceFactory<(Request, Framed<T, h1::Codec>)> for UpgradeFactory<A>
where
    T: SocketIo,
    A: ServiceFactory<
            Request,
            Config = AppConfig,
            Response = ServiceResponse<B>,
            Error = Error,
            InitError = (),
        >,
    A::Service: 'static,
    A::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = Error;
    type Config = ();
    type Service = Upgrades<A::Service>;
    type InitError = ();
    type Future = LocalBoxFuture<'static, Result<Self::Service, ()>>;

    fn new_service(&self, _: ()) -> Self::Future {
        let app = self.app.new_service(self.config.clone());
        Box::pin(async move {
            Ok(Upgrades {
                app: Rc::new(app.await?),
            })
        })
    }
}

/// A worker's upgrade service.
pub struct Upgrades<S> {
    app: Rc<S>,
}

impl<T, S, B> Service<(Request, Framed<T, h1::Codec>)> for Upgrades<S>
where
    T: SocketIo,
    S: Service<Request, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<(), Error>>;

    actix_service::always_ready!();

    fn call(&self, (request, framed): (Request, Framed<T, h1::Codec>)) -> Self::Future {
        let app = self.app.clone();
        Box::pin(async move {
            if request.method() != actix_http::Method::GET {
                // Only a GET upgrades (RFC 6455 §4.1); a body here would
                // reach the App as an endless stream.
                let refusal = actix_web::ResponseError::error_response(
                    &crate::http::problem::ApiError::BadUpgrade(
                        "a WebSocket upgrade is a GET".into(),
                    ),
                );
                let _ = tokio::time::timeout(WRITE_TIMEOUT, refuse(framed, refusal.into())).await;
                return Ok(());
            }
            request.extensions_mut().insert(UpgradeLane);
            // What the client sends after its request, for a handler that
            // reads it (the feed); the game-server socket's is taken instead.
            let (sender, receiver) = tokio::sync::mpsc::channel(4);
            let (request, _) = request.replace_payload(payload(receiver));
            // Nothing feeds the payload before a 101: a handler waiting for
            // a body here would wait for ever, so the answer has a deadline.
            let response = match tokio::time::timeout(ANSWER_TIMEOUT, app.call(request)).await {
                Ok(Ok(response)) => response.into_parts().1.map_into_boxed_body(),
                Ok(Err(error)) => actix_web::HttpResponse::from_error(error),
                Err(_) => return Ok(()),
            };
            let mut response: Response<BoxBody> = response.into();
            let takeover = response.extensions_mut().remove::<Takeover>();
            if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                // Refused or not a socket: answered, and the connection ends.
                let _ = tokio::time::timeout(WRITE_TIMEOUT, refuse(framed, response)).await;
                return Ok(());
            }
            let (head, body) = response.into_parts();
            let mut framed = framed;
            let sent = framed.send(h1::Message::Item((head, BodySize::None)));
            match tokio::time::timeout(WRITE_TIMEOUT, sent).await {
                Ok(Ok(())) => {}
                // A client that does not read its 101 is let go.
                Ok(Err(_)) | Err(_) => return Ok(()),
            }
            let parts = framed.into_parts();
            match takeover {
                Some(Takeover(start)) => {
                    drop(sender);
                    start(Box::new(parts.io), parts.read_buf);
                }
                None => pass_through(parts.io, parts.read_buf, body, sender).await,
            }
            Ok(())
        })
    }
}

/// Bytes of an answer that is not a `101` (a refusal's problem+json), at most.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Writes an answer that is not a `101`, then closes the connection.
async fn refuse<T: SocketIo>(mut framed: Framed<T, h1::Codec>, mut response: Response<BoxBody>) {
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    let (head, body) = response.into_parts();
    let Ok(body) = actix_http::body::to_bytes_limited(body, MAX_ANSWER_BYTES).await else {
        return;
    };
    let Ok(body) = body else { return };
    let length = BodySize::Sized(body.len() as u64);
    let sent = async {
        framed.feed(h1::Message::Item((head, length))).await?;
        if !body.is_empty() {
            framed.feed(h1::Message::Chunk(Some(body))).await?;
        }
        framed.feed(h1::Message::Chunk(None)).await?;
        SinkExt::<h1::Message<(Response<()>, BodySize)>>::flush(&mut framed).await
    };
    if sent.await.is_err() {
        return;
    }
    let mut io = framed.into_parts().io;
    if io.shutdown().await.is_err() {
        return;
    }
    // What the client sent past its request is read and dropped until it
    // closes (or the grace ends): a socket closed with unread bytes is
    // reset, and a reset can take the answer with it.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let mut buf = [0u8; READ_CHUNK];
        while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

type Sent = Result<Bytes, PayloadError>;

fn payload(mut receiver: tokio::sync::mpsc::Receiver<Sent>) -> Payload {
    let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    Payload::Stream {
        payload: Box::pin(stream),
    }
}

/// Serves a `101` the App answers itself: its body goes to the client,
/// the client's bytes to the request's payload, until the body ends.
async fn pass_through<T: SocketIo>(
    io: T,
    read: BytesMut,
    body: BoxBody,
    payload: tokio::sync::mpsc::Sender<Sent>,
) {
    let (mut reader, mut writer) = tokio::io::split(io);
    let inbound = async move {
        if !read.is_empty() && payload.send(Ok(read.freeze())).await.is_err() {
            return;
        }
        let mut buf = vec![0; READ_CHUNK];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if payload
                        .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let outbound = async move {
        let mut body = pin!(body);
        while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
            let Ok(chunk) = chunk else { break };
            match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&chunk)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, writer.shutdown()).await;
    };
    // The body ending ends the connection; the client going away ends the
    // payload, which ends the body.
    match select(pin!(outbound), pin!(inbound)).await {
        Either::Left(_) => {}
        Either::Right(((), outbound)) => outbound.await,
    }
}
