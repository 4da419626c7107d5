//! Authorization at the edge. Each handler names the role it needs in its
//! signature (`Authorized<Developer>`); game servers present an API key
//! (`ServerKey`); the API explorer takes a viewer token once and keeps it in
//! an HttpOnly cookie.

use super::{extract::RequestId, problem::ApiError};
use crate::{
    auth::{AuthError, Role, jwt::Authenticator, rate_limit::RateLimits},
    catalog::{Actor, Catalog, views::ServerIdentity},
};
use actix_web::{
    FromRequest, HttpMessage, HttpRequest, HttpResponse,
    body::{BoxBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::header,
    middleware::Next,
    web,
};
use std::{future::Future, marker::PhantomData, pin::Pin};

/// Name of the cookie holding the explorer's token.
pub const DOCS_COOKIE: &str = "hotswap_docs";

/// What checks callers: token verification, rate limits, address policy.
#[derive(Debug)]
pub struct AccessControl {
    pub authenticator: Authenticator,
    pub rate_limits: RateLimits,
    pub trust_forwarded_for: bool,
}

impl AccessControl {
    /// The caller's address: the socket peer, or the first `X-Forwarded-For`
    /// hop when the hub is configured to trust its proxy.
    pub fn source(&self, request: &HttpRequest) -> Option<String> {
        if self.trust_forwarded_for {
            let forwarded = request
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty() && v.len() <= 64);
            if forwarded.is_some() {
                return forwarded;
            }
        }
        request.peer_addr().map(|addr| addr.ip().to_string())
    }
}

/// A role a handler requires.
pub trait Permission {
    const ROLE: Role;
}

macro_rules! permission {
    ($($name:ident => $role:expr),+ $(,)?) => {$(
        #[derive(Debug)]
        pub struct $name;
        impl Permission for $name {
            const ROLE: Role = $role;
        }
    )+};
}

permission!(Viewer => Role::Viewer, Developer => Role::Developer, Operator => Role::Operator, Admin => Role::Admin);

/// A caller holding at least `P`'s role; carries the audit actor.
#[derive(Debug)]
pub struct Authorized<P: Permission> {
    pub actor: Actor,
    pub role: Role,
    _permission: PhantomData<P>,
}

fn access(request: &HttpRequest) -> Result<&AccessControl, ApiError> {
    request
        .app_data::<web::Data<AccessControl>>()
        .map(|data| data.get_ref())
        .ok_or_else(|| ApiError::Internal("access control is not configured".into()))
}

fn bearer(request: &HttpRequest) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Verifies `token` for at least `need`, and spends one of the principal's tokens.
fn authorize(
    request: &HttpRequest,
    token: Option<&str>,
    need: Role,
) -> Result<(Actor, Role), ApiError> {
    let control = access(request)?;
    let token = token.ok_or(ApiError::Unauthorized(AuthError::Missing))?;
    let principal = control
        .authenticator
        .verify(token)
        .map_err(|error| match error {
            AuthError::Forbidden { .. } => ApiError::Forbidden(error),
            other => ApiError::Unauthorized(other),
        })?;
    if principal.role < need {
        return Err(ApiError::Forbidden(AuthError::Forbidden {
            have: principal.role.to_string(),
            need,
        }));
    }
    control
        .rate_limits
        .check_principal(&principal.subject)
        .map_err(|wait| ApiError::RateLimited {
            retry_after_secs: wait.as_secs() + 1,
        })?;
    let actor = Actor {
        subject: principal.subject,
        role: Some(principal.role),
        source: control.source(request),
        request_id: request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.0.clone()),
    };
    Ok((actor, principal.role))
}

impl<P: Permission> FromRequest for Authorized<P> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            authorize(request, bearer(request), P::ROLE).map(|(actor, role)| Authorized {
                actor,
                role,
                _permission: PhantomData,
            }),
        )
    }
}

/// A viewer of the API description: a bearer token, or the explorer's cookie.
#[derive(Debug)]
pub struct DocsViewer;

fn docs_token(request: &HttpRequest) -> Option<String> {
    bearer(request)
        .map(str::to_owned)
        .or_else(|| request.cookie(DOCS_COOKIE).map(|c| c.value().to_owned()))
}

impl FromRequest for DocsViewer {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            authorize(request, docs_token(request).as_deref(), Role::Viewer).map(|_| DocsViewer),
        )
    }
}

/// Guards `/docs`: `?token=` (a viewer token) is checked and moved into an
/// HttpOnly cookie; after that the cookie (or a bearer header) lets the
/// explorer and the OpenAPI document through.
pub async fn docs_guard(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let query_token =
        web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
            .ok()
            .and_then(|q| q.get("token").cloned());
    if let Some(token) = query_token {
        authorize(request.request(), Some(&token), Role::Viewer)?;
        let cookie = actix_web::cookie::Cookie::build(DOCS_COOKIE, token)
            .path("/")
            .http_only(true)
            .same_site(actix_web::cookie::SameSite::Strict)
            .max_age(actix_web::cookie::time::Duration::hours(8))
            .finish();
        let response = HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/docs/"))
            .cookie(cookie)
            .finish();
        return Ok(request.into_response(response));
    }
    if request.path() == "/docs" {
        let response = HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, "/docs/"))
            .finish();
        return Ok(request.into_response(response));
    }
    authorize(
        request.request(),
        docs_token(request.request()).as_deref(),
        Role::Viewer,
    )?;
    Ok(next.call(request).await?.map_into_boxed_body())
}

/// Spends one token of the caller's address on every API and explorer request.
pub fn check_address(request: &HttpRequest) -> Result<(), ApiError> {
    let path = request.path();
    if !(path.starts_with("/api/") || path.starts_with("/docs")) {
        return Ok(());
    }
    let Ok(control) = access(request) else {
        return Ok(());
    };
    match control.source(request) {
        Some(source) => {
            control
                .rate_limits
                .check_address(&source)
                .map_err(|wait| ApiError::RateLimited {
                    retry_after_secs: wait.as_secs() + 1,
                })
        }
        None => Ok(()),
    }
}

fn presented_key(request: &HttpRequest) -> Option<String> {
    bearer(request).map(str::to_owned).or_else(|| {
        web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
            .ok()
            .and_then(|q| q.get("token").cloned())
    })
}

/// A game server's socket, admitted before its upgrade: the source
/// address had an upgrade left (a bad key costs two), the API key is live,
/// and the hub and the key had room for one more socket (503 or 429, with
/// `Retry-After`, when they did not). Holds the socket's place until the
/// session ends.
#[derive(Debug)]
pub struct AdmittedSocket {
    pub identity: ServerIdentity,
    pub permit: hotswap_actors::SessionPermit,
}

impl FromRequest for AdmittedSocket {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let presented = presented_key(request);
        let catalog = request.app_data::<web::Data<Catalog>>().cloned();
        let hub = request
            .app_data::<web::Data<std::sync::Arc<crate::hub::Hub>>>()
            .cloned();
        let checked = access(request).map(|control| {
            let source = control.source(request);
            let allowed = source
                .as_deref()
                .map_or(Ok(()), |s| control.rate_limits.check_upgrade(s));
            (source, allowed)
        });
        let control = request.app_data::<web::Data<AccessControl>>().cloned();
        Box::pin(async move {
            let (source, allowed) = checked?;
            allowed.map_err(|wait| ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + 1,
            })?;
            let (Some(catalog), Some(hub), Some(control)) = (catalog, hub, control) else {
                return Err(ApiError::Internal(
                    "the socket endpoint is not configured".into(),
                ));
            };
            // A missing or bad key costs its address a second upgrade.
            let bad_key = |error: AuthError| {
                if let Some(source) = &source {
                    control.rate_limits.charge_upgrade(source);
                }
                ApiError::Unauthorized(error)
            };
            let presented = presented.ok_or_else(|| bad_key(AuthError::Missing))?;
            let identity = catalog
                .authenticate_server_key(&presented)
                .await?
                .ok_or_else(|| bad_key(AuthError::Invalid("unknown or revoked API key".into())))?;
            let permit = hub
                .gate()
                .admit(&identity.key_id)
                .map_err(|refused| match refused {
                    hotswap_actors::Refused::Full { limit } => ApiError::SocketsFull { limit },
                    hotswap_actors::Refused::KeyFull { limit } => {
                        ApiError::KeySocketsFull { limit }
                    }
                    hotswap_actors::Refused::Revoked => ApiError::Unauthorized(AuthError::Invalid(
                        "unknown or revoked API key".into(),
                    )),
                })?;
            Ok(AdmittedSocket { identity, permit })
        })
    }
}

/// A game server authenticated by its API key (`Authorization: Bearer` or `?token=`).
#[derive(Debug)]
pub struct ServerKey(pub ServerIdentity);

impl FromRequest for ServerKey {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let presented = presented_key(request);
        let catalog = request.app_data::<web::Data<Catalog>>().cloned();
        Box::pin(async move {
            let presented = presented.ok_or(ApiError::Unauthorized(AuthError::Missing))?;
            let catalog = catalog.ok_or_else(|| ApiError::Internal("no catalog".into()))?;
            let identity = catalog
                .authenticate_server_key(&presented)
                .await?
                .ok_or_else(|| {
                    ApiError::Unauthorized(AuthError::Invalid("unknown or revoked API key".into()))
                })?;
            Ok(ServerKey(identity))
        })
    }
}
