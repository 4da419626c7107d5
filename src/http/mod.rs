//! The REST API (actix-web): one module per resource, each exporting
//! `configure`, plus errors, extractors, health and the OpenAPI document.
//!
//! **Architecture invariant:** handlers parse, call the catalog, and shape
//! the answer; they make no decisions and speak no SQL.

pub mod audit;
pub mod auth;
pub mod client_address;
pub mod configs;
pub mod deployments;
pub mod experiments;
pub mod extract;
pub mod game_servers;
pub mod health;
pub mod live_ops;
pub mod manifest;
pub mod openapi;
pub mod problem;
pub mod prometheus;
pub mod schemas;
pub mod security;
pub mod session;
pub mod telemetry;
pub mod yaml;

use crate::{
    domain::trace_context::TraceContext,
    observability::traces::{AttrValue, CURRENT, SpanParent},
};
use actix_web::{
    Error, HttpMessage, HttpRequest, HttpResponse,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
    web,
};
use extract::RequestId;
use problem::ApiError;
use std::time::Instant;
use tracing::Instrument;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// All routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // The OpenAPI route lives under /api/v1 too: it must come before the
    // scope, which would otherwise answer it with its own 404.
    cfg.configure(health::configure)
        .configure(prometheus::configure)
        .configure(crate::ws::servers::configure)
        .configure(openapi::configure)
        .configure(crate::dashboard::configure)
        .service(
            web::scope("/api/v1")
                .configure(live_ops::configure_players)
                .configure(experiments::configure_players)
                .configure(telemetry::configure)
                .configure(manifest::configure)
                .configure(configs::configure)
                .configure(schemas::configure)
                .configure(audit::configure)
                .configure(security::configure)
                .configure(game_servers::configure)
                .configure(deployments::configure)
                .configure(live_ops::configure)
                .configure(experiments::configure)
                .configure(crate::feed::socket::configure),
        );
}

/// Answer for a path that matches no route.
pub async fn route_not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound {
        method: request.method().to_string(),
        path: request.path().to_owned(),
    })
}

/// Answer for a known path with a method it does not take.
pub async fn method_not_allowed(request: HttpRequest) -> HttpResponse {
    let problem = problem::Problem {
        kind: "urn:hotswap:problem:method_not_allowed".into(),
        title: "Method Not Allowed".into(),
        status: 405,
        detail: format!("{} is not allowed on {}", request.method(), request.path()),
        code: "method_not_allowed",
        errors: Vec::new(),
        extensions: Default::default(),
    };
    HttpResponse::MethodNotAllowed()
        .content_type("application/problem+json")
        .json(problem)
}

/// Refuses requests whose headers add up to more than the configured limit.
fn check_header_size(request: &HttpRequest) -> Result<(), ApiError> {
    let limit = request
        .app_data::<web::Data<extract::BodyLimits>>()
        .map_or(16 * 1024, |limits| limits.max_header_bytes);
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > limit {
        return Err(ApiError::HeadersTooLarge { size, limit });
    }
    Ok(())
}

/// Whether a request's own span is exported: operators' API calls, not
/// players' lookups, telemetry or the sockets (hot paths, sampled never).
fn traced_path(path: &str) -> bool {
    path.starts_with("/api/v1/")
        && ![
            "/api/v1/players/",
            "/api/v1/events/active",
            "/api/v1/experiments/assignments",
            "/api/v1/telemetry/batch",
            "/api/v1/manifest",
        ]
        .iter()
        .any(|hot| path.starts_with(hot))
}

fn sane_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    (!text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| text.to_owned())
}

/// Gives every request an id (echoed in `X-Request-Id`), a tracing span, and
/// one log line with its status and duration.
pub async fn request_context(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(sane_request_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    // Every API call spends a token of its address, authenticated or not,
    // so credential guessing is slowed as much as flooding.
    let refused =
        check_header_size(request.request()).and_then(|()| auth::check_address(request.request()));
    if let Err(error) = refused {
        let mut response = request.error_response(error);
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(REQUEST_ID.clone(), value);
        }
        return Ok(response.map_into_right_body());
    }
    // The caller's trace, joined (W3C Trace Context); a new one otherwise.
    let mut random = [0u8; 24];
    let _ = getrandom::fill(&mut random);
    let trace = TraceContext::for_request(
        request
            .headers()
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok()),
        random,
    );
    request.extensions_mut().insert(trace);
    let span = tracing::info_span!("http", method = %request.method(), path = %request.path(),
        request_id = %id, trace_id = %trace.trace_id_hex(), span_id = %trace.span_id_hex());
    // Operators' calls are traced (players' lookups and telemetry, the
    // hot paths, only carry the context).
    let mut exported = request
        .app_data::<web::Data<crate::catalog::Catalog>>()
        .map(|catalog| catalog.tracer().clone())
        .filter(|tracer| tracer.enabled() && traced_path(request.path()))
        .map(|tracer| {
            let mut server = tracer.start_request(&trace);
            server.set(
                "http.request.method",
                AttrValue::Text(request.method().to_string()),
            );
            server.set(
                "url.path",
                AttrValue::Text(request.path().chars().take(256).collect()),
            );
            server.set("request.id", AttrValue::Text(id.clone()));
            server
        });
    let started = Instant::now();
    let mut response = CURRENT
        .scope(
            SpanParent::from(&trace),
            next.call(request).instrument(span.clone()),
        )
        .await?;
    if let Some(server) = exported.as_mut() {
        let status = response.status().as_u16();
        server.set(
            "http.response.status_code",
            AttrValue::Int(i64::from(status)),
        );
        if status >= 500 {
            server.fail(format!("status {status}"));
        }
    }
    drop(exported);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    if let Ok(value) = HeaderValue::from_str(&trace.traceparent()) {
        response.headers_mut().insert(TRACEPARENT.clone(), value);
    }
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "request served"
        )
    });
    Ok(response.map_into_left_body())
}
