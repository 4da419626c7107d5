//! Authorization at the edge. Each handler names the role it needs in its
//! signature (`Authorized<Developer>`); game servers present an API key
//! (`ServerKey`); the API explorer takes a viewer token once and keeps it in
//! an HttpOnly cookie; the dashboard's session cookie stands for a bearer
//! token wherever a role is asked (`session`).

use super::{client_address::TrustedProxies, extract::RequestId, problem::ApiError};
use crate::{
    auth::{AuthError, Principal, Role, jwt::Authenticator, rate_limit::RateLimits},
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
use std::{future::Future, marker::PhantomData, pin::Pin, sync::Arc};

/// Name of the cookie holding the explorer's token.
pub const DOCS_COOKIE: &str = "hotswap_docs";

/// What checks callers: token verification, rate limits, address policy.
#[derive(Debug)]
pub struct AccessControl {
    pub authenticator: Authenticator,
    pub rate_limits: RateLimits,
    pub proxies: TrustedProxies,
    /// On a cluster: the per-principal budget every node spends together.
    pub shared_limits: Option<crate::cluster::rate::SharedLimits>,
}

impl AccessControl {
    /// The caller's address: the socket peer, or, when that peer is a
    /// proxy the hub trusts, the nearest untrusted hop of
    /// `X-Forwarded-For` (read from the right).
    pub fn source(&self, request: &HttpRequest) -> Option<String> {
        let peer = request.peer_addr()?.ip();
        // Every line, in order: a proxy may add its own line rather than
        // append to the client's (HAProxy does), and the first line is the
        // client's own words. Bytes that are not text (a client may send
        // any, and a proxy appends to them) spoil only their own entry: the
        // entries the proxies added, to the right, still read.
        let lines: Vec<String> = request
            .headers()
            .get_all("x-forwarded-for")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let forwarded = (!lines.is_empty()).then(|| lines.join(","));
        Some(self.proxies.client(peer, forwarded.as_deref()).to_string())
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

/// Which rate-limit bucket a request spends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    /// The principal's own.
    Principal,
    /// A dashboard session's reads: a bucket of their own, so a page
    /// polling never spends what its operator's actions need.
    SessionReads,
}

/// Verifies `token` for at least `need`, and spends one of the
/// principal's tokens.
fn check_token(
    control: &AccessControl,
    token: Option<&str>,
    need: Role,
) -> Result<Principal, ApiError> {
    check_token_in(control, token, need, Bucket::Principal)
}

fn check_token_in(
    control: &AccessControl,
    token: Option<&str>,
    need: Role,
    bucket: Bucket,
) -> Result<Principal, ApiError> {
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
    let key = match bucket {
        Bucket::Principal => std::borrow::Cow::Borrowed(principal.subject.as_str()),
        Bucket::SessionReads => format!("{}\u{0}dashboard-reads", principal.subject).into(),
    };
    control
        .rate_limits
        .check_principal(&key)
        .map_err(rate_limited)?;
    Ok(principal)
}

/// [`check_token`], and the actor the request acts as.
pub(crate) fn authorize(
    request: &HttpRequest,
    token: Option<&str>,
    need: Role,
) -> Result<(Actor, Role), ApiError> {
    authorize_in(request, token, need, Bucket::Principal)
}

/// [`authorize`] for a dashboard session's token: its reads spend from a
/// bucket of their own.
pub(crate) fn authorize_session(
    request: &HttpRequest,
    token: &str,
    need: Role,
) -> Result<(Actor, Role), ApiError> {
    let bucket = if super::session::is_read(request) {
        Bucket::SessionReads
    } else {
        Bucket::Principal
    };
    authorize_in(request, Some(token), need, bucket)
}

fn authorize_in(
    request: &HttpRequest,
    token: Option<&str>,
    need: Role,
    bucket: Bucket,
) -> Result<(Actor, Role), ApiError> {
    let control = access(request)?;
    let principal = check_token_in(control, token, need, bucket)?;
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
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        // A bearer token, or the dashboard's session cookie (which must
        // pass its origin and CSRF checks).
        let mut session_reads = false;
        let checked = match bearer(request) {
            Some(token) => authorize(request, Some(token), P::ROLE),
            None => match super::session::presented(request) {
                Ok(Some(session)) => {
                    session_reads = super::session::is_read(request);
                    authorize_session(request, &session.token, P::ROLE)
                }
                Ok(None) => authorize(request, None, P::ROLE),
                Err(refused) => Err(refused),
            },
        };
        // On a cluster, the principal's budget is the cluster's too.
        let shared = request
            .app_data::<web::Data<AccessControl>>()
            .and_then(|c| c.shared_limits.clone());
        Box::pin(async move {
            let (actor, role) = checked?;
            if let Some(shared) = shared {
                let bucket = if session_reads {
                    format!("{}\u{0}dashboard-reads", actor.subject)
                } else {
                    actor.subject.clone()
                };
                shared.check(&bucket).await.map_err(rate_limited)?;
            }
            Ok(Authorized {
                actor,
                role,
                _permission: PhantomData,
            })
        })
    }
}

/// What a long-lived connection (the dashboards' feed) stands on, looked
/// at again while it lasts: a bearer token expires, a dashboard session
/// ends at sign-out.
pub struct Recheck {
    control: web::Data<AccessControl>,
    sessions: Option<web::Data<super::session::Sessions>>,
    standing: Standing,
    need: Role,
}

enum Standing {
    Bearer(String),
    Session(String),
}

impl Recheck {
    /// What the request presented (checked already by its extractor).
    pub fn of(request: &HttpRequest, need: Role) -> Option<Recheck> {
        let standing = match bearer(request) {
            Some(token) => Standing::Bearer(token.to_owned()),
            None => Standing::Session(super::session::session_id(request)?),
        };
        Some(Recheck {
            control: request.app_data::<web::Data<AccessControl>>()?.clone(),
            sessions: request
                .app_data::<web::Data<super::session::Sessions>>()
                .cloned(),
            standing,
            need,
        })
    }

    /// Whether the token still verifies with the role, and the session is
    /// still open. No rate limit is spent.
    pub fn holds(&self) -> bool {
        let token = match &self.standing {
            Standing::Bearer(token) => Some(token.clone()),
            Standing::Session(id) => self.sessions.as_ref().and_then(|s| s.token_of(id)),
        };
        token.is_some_and(|token| {
            self.control
                .authenticator
                .verify(&token)
                .is_ok_and(|principal| principal.role >= self.need)
        })
    }
}

/// A viewer of the API description: a bearer token, or the explorer's cookie.
#[derive(Debug)]
pub struct DocsViewer;

fn docs_token(request: &HttpRequest) -> Option<String> {
    bearer(request).map(str::to_owned).or_else(|| {
        let id = super::session::cookie_id(request, DOCS_COOKIE)?;
        request
            .app_data::<web::Data<super::session::DocsSessions>>()?
            .0
            .token_of(&id)
    })
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

/// The explorer's sign-in page: a token is pasted into a form and POSTed,
/// so it never sits in a URL (browser history, proxy logs, `Referer`).
const SIGN_IN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>HotSwap API explorer: sign in</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem}
textarea{width:100%;height:8rem;font-family:monospace}</style></head>
<body><h1>HotSwap API explorer</h1>
<p>Paste a token (viewer or higher). It is kept in an HttpOnly cookie for 8 hours and opens
this explorer and the OpenAPI document only.</p>
<form method="post" action="/docs/login"><textarea name="token" required autofocus></textarea>
<p><button type="submit">Sign in</button></p></form></body></html>"#;

fn sign_in_page(status: actix_web::http::StatusCode) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("WWW-Authenticate", "Bearer realm=\"hotswap\""))
        .insert_header(("Cache-Control", "no-store"))
        .body(SIGN_IN_PAGE)
}

/// The explorer's cookie naming a session of `token` (the token stays in
/// the node's memory): HttpOnly, SameSite=Strict, and `Secure` when the
/// hub is reached over HTTPS.
fn docs_cookie(
    request: &HttpRequest,
    token: String,
    subject: &str,
) -> Result<actix_web::cookie::Cookie<'static>, ApiError> {
    let sessions = request
        .app_data::<web::Data<super::session::DocsSessions>>()
        .ok_or_else(|| ApiError::Internal("no session store".into()))?;
    let id = sessions.0.open(token, subject)?;
    Ok(actix_web::cookie::Cookie::build(DOCS_COOKIE, id)
        .path("/")
        .http_only(true)
        .secure(super::session::secure(request))
        .same_site(actix_web::cookie::SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::hours(8))
        .finish())
}

#[derive(Debug, serde::Deserialize)]
struct SignIn {
    token: String,
}

/// Guards `/docs`: without a token the explorer answers 401 with a sign-in
/// page whose form POSTs the token to `/docs/login`, which checks it (a
/// viewer token) and keeps it in an HttpOnly cookie; after that the cookie
/// (or a bearer header) lets the explorer and the OpenAPI document through.
/// `?token=` is still taken (and moved into the cookie) for scripts.
pub async fn docs_guard(
    mut request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let signed_in = |request: ServiceRequest, token: String, subject: String| {
        let cookie = docs_cookie(request.request(), token, &subject)?;
        let response = HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/docs/"))
            .cookie(cookie)
            .finish();
        Ok::<_, ApiError>(request.into_response(response))
    };
    if request.path() == "/docs/login" {
        if request.method() != actix_web::http::Method::POST {
            let page = sign_in_page(actix_web::http::StatusCode::OK);
            return Ok(request.into_response(page));
        }
        let form = request
            .extract::<web::Form<SignIn>>()
            .await
            .map_err(|e| ApiError::InvalidQuery(format!("the sign-in form: {e}")))?;
        let token = form.into_inner().token.trim().to_owned();
        let (actor, _) = authorize(request.request(), Some(&token), Role::Viewer)?;
        return Ok(signed_in(request, token, actor.subject)?);
    }
    let query_token =
        web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
            .ok()
            .and_then(|q| q.get("token").cloned());
    if let Some(token) = query_token {
        let (actor, _) = authorize(request.request(), Some(&token), Role::Viewer)?;
        return Ok(signed_in(request, token, actor.subject)?);
    }
    if request.path() == "/docs" {
        let response = HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, "/docs/"))
            .finish();
        return Ok(request.into_response(response));
    }
    let token = docs_token(request.request());
    if token.is_none() && request.path() == "/docs/" {
        let page = sign_in_page(actix_web::http::StatusCode::UNAUTHORIZED);
        return Ok(request.into_response(page));
    }
    authorize(request.request(), token.as_deref(), Role::Viewer)?;
    Ok(next.call(request).await?.map_into_boxed_body())
}

/// Spends one token of the caller's address on every API, explorer and
/// metrics request (`/metrics` is open, and costs a pass over the fleet).
pub fn check_address(request: &HttpRequest) -> Result<(), ApiError> {
    let path = request.path();
    if !(path.starts_with("/api/")
        || path.starts_with("/docs")
        || path.starts_with("/dashboard")
        || path == "/metrics")
    {
        return Ok(());
    }
    let Ok(control) = access(request) else {
        return Ok(());
    };
    match control.source(request) {
        Some(source) => control
            .rate_limits
            .check_address(&source)
            .map_err(rate_limited),
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
            allowed.map_err(rate_limited)?;
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

/// Who may send player feedback: a token of at least `developer`, or a
/// game server's API key as a bearer token (its own players' complaints).
#[derive(Debug)]
pub enum FeedbackCaller {
    User { actor: Actor, role: Role },
    Server { actor: Actor, key_id: String },
}

impl FromRequest for FeedbackCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        key_or_token(request, Role::Developer)
    }
}

/// Who may ask what a player sees: a game server's API key (for its
/// players), a token of at least `viewer` (an operator previewing), or a
/// player's token (`player` role), which reads only its own player's
/// answers: `player` is then the token's `sub`.
#[derive(Debug)]
pub struct PlayerCaller {
    pub player: Option<String>,
    /// A game server's key sent the request.
    pub server: bool,
    /// What a player's token vouches for (its `attrs` claim).
    pub vouched: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

impl PlayerCaller {
    /// A player's own request says who it is only as far as the hub cannot
    /// know better: the attributes its token vouches for replace what the
    /// request says, and the ones telemetry keeps (`firstSeen`,
    /// `lastSeen`, `sessions`, `purchases`) are the hub's record, never the
    /// player's word. Staff and game servers are taken at their word.
    pub fn settle(&self, attributes: &mut serde_json::Map<String, serde_json::Value>) {
        if self.player.is_none() {
            return;
        }
        if let Some(vouched) = &self.vouched {
            for (key, value) in vouched.iter() {
                attributes.insert(key.clone(), value.clone());
            }
        }
        for kept in crate::liveops::KEPT_ATTRIBUTES {
            attributes.remove(kept);
        }
    }

    /// Refuses a player's token a staff view: a preview of another instant
    /// (unannounced events) or which layer set each path.
    pub fn may_preview(&self, at: bool, explain: bool) -> Result<(), ApiError> {
        if self.player.is_some() && (at || explain) {
            return Err(ApiError::Forbidden(AuthError::Denied(
                "a player's token reads what applies now: `at` and `explain` are for staff and game servers".into(),
            )));
        }
        Ok(())
    }

    /// Refuses a player's token asking about another player.
    pub fn may_read(&self, player_id: &str) -> Result<(), ApiError> {
        match &self.player {
            Some(own) if own != player_id => Err(ApiError::Forbidden(AuthError::Denied(
                "a player's token reads only its own player's answers".into(),
            ))),
            _ => Ok(()),
        }
    }
}

impl FromRequest for PlayerCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        // A token is checked here and now: player lookups are the hub's
        // hottest route, and this caller acts on nothing.
        let token = bearer(request);
        if !token.is_some_and(|t| t.starts_with(crate::auth::api_keys::PREFIX)) {
            let checked = access(request)
                .and_then(|control| check_token(control, token, Role::Player))
                .and_then(|principal| {
                    // A player token's subject is a player id, bounded as
                    // every player id the hub reads.
                    if principal.role == Role::Player
                        && !crate::domain::telemetry::valid_id(
                            &principal.subject,
                            crate::domain::telemetry::MAX_ID_CHARS,
                        )
                    {
                        return Err(ApiError::Forbidden(AuthError::Denied(
                            "a player token's subject must be a player id (1-128 characters, no control characters)".into(),
                        )));
                    }
                    Ok(principal)
                });
            return Box::pin(std::future::ready(checked.map(|principal| {
                let player = principal.role == Role::Player;
                PlayerCaller {
                    player: player.then_some(principal.subject),
                    server: false,
                    vouched: principal.attributes.filter(|_| player),
                }
            })));
        }
        let caller = key_or_token(request, Role::Viewer);
        Box::pin(async move {
            caller.await.map(|_| PlayerCaller {
                player: None,
                server: true,
                vouched: None,
            })
        })
    }
}

/// A game server's API key as a bearer token, or a token of at least `need`.
fn key_or_token(
    request: &HttpRequest,
    need: Role,
) -> Pin<Box<dyn Future<Output = Result<FeedbackCaller, ApiError>>>> {
    let token = bearer(request).map(str::to_owned);
    let Some(key) = token.filter(|t| t.starts_with(crate::auth::api_keys::PREFIX)) else {
        let user = authorize(request, bearer(request), need)
            .map(|(actor, role)| FeedbackCaller::User { actor, role });
        return Box::pin(std::future::ready(user));
    };
    let catalog = request.app_data::<web::Data<Catalog>>().cloned();
    let control = access(request).map(|control| {
        (
            control.source(request),
            request
                .extensions()
                .get::<RequestId>()
                .map(|id| id.0.clone()),
        )
    });
    let limits = request.app_data::<web::Data<AccessControl>>().cloned();
    Box::pin(async move {
        let (source, request_id) = control?;
        let (Some(catalog), Some(limits)) = (catalog, limits) else {
            return Err(ApiError::Internal("no catalog".into()));
        };
        let identity = catalog
            .authenticate_server_key(&key)
            .await?
            .ok_or_else(|| {
                ApiError::Unauthorized(AuthError::Invalid("unknown or revoked API key".into()))
            })?;
        let subject = format!("api-key:{}", identity.key_id);
        limits
            .rate_limits
            .check_principal(&subject)
            .map_err(rate_limited)?;
        if let Some(shared) = &limits.shared_limits {
            shared.check(&subject).await.map_err(rate_limited)?;
        }
        Ok(FeedbackCaller::Server {
            actor: Actor {
                subject,
                role: None,
                source,
                request_id,
            },
            key_id: identity.key_id,
        })
    })
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

/// A spent budget (this node's or the cluster's), answered 429 with the
/// seconds to wait, rounded up.
fn rate_limited(wait: std::time::Duration) -> ApiError {
    ApiError::RateLimited {
        retry_after_secs: wait.as_secs() + 1,
    }
}
