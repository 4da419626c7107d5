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
//! - anything else (a refusal, a 404): written, then the connection closes.
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
            request.extensions_mut().insert(UpgradeLane);
            // What the client sends after its request, for a handler that
            // reads it (the feed); the game-server socket's is taken instead.
            let (sender, receiver) = tokio::sync::mpsc::channel(4);
            let (request, _) = request.replace_payload(payload(receiver));
            let response = match app.call(request).await {
                Ok(response) => response.into_parts().1.map_into_boxed_body(),
                Err(error) => actix_web::HttpResponse::from_error(error),
            };
            let mut response: Response<BoxBody> = response.into();
            let takeover = response.extensions_mut().remove::<Takeover>();
            if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                // Refused or not a socket: answered, and the connection ends.
                response
                    .head_mut()
                    .set_connection_type(ConnectionType::Close);
                let _ = tokio::time::timeout(WRITE_TIMEOUT, refuse(framed, response)).await;
                return Ok(());
            }
            let (head, body) = response.into_parts();
            let mut framed = framed;
            framed
                .send(h1::Message::Item((head, BodySize::None)))
                .await
                .map_err(actix_web::error::ErrorInternalServerError)?;
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
async fn refuse<T: SocketIo>(mut framed: Framed<T, h1::Codec>, response: Response<BoxBody>) {
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
    if sent.await.is_ok() {
        let _ = framed.into_parts().io.shutdown().await;
    }
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
