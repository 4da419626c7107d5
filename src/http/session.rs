//! The dashboard's browser session. Sign-in checks a token once and opens
//! a session: a random id in an HttpOnly, SameSite=Strict cookie
//! (`__Host-` prefixed and `Secure` under TLS or `http.secure_cookies`),
//! the token kept in this node's memory and checked again on every
//! request (its expiry and role still rule). The cookie is not a bearer
//! token: it is worth nothing as an `Authorization` header, nothing after
//! sign-out, and nothing to another node or after a restart (sign in
//! again). The REST API and the feed take it as they take a bearer token,
//! behind two checks a bearer token needs not, because a browser sends
//! cookies by itself:
//!
//! - **Origin.** A request carrying an `Origin` header must come from this
//!   hub's own origin (its scheme and `Host`) or one of
//!   `http.allowed_origins` (a proxy that rewrites `Host`). Browsers always
//!   send `Origin` on a WebSocket upgrade and on cross-origin writes, so
//!   another site's page can neither open the feed nor post with the
//!   cookie.
//! - **CSRF.** A request that changes something (any method but GET, HEAD
//!   and OPTIONS) must carry `X-CSRF-Token`: the session's own random
//!   token, which the page learns from `GET /dashboard/session` (a
//!   same-origin read) and no other site can read.
//!
//! A session's reads are counted in a rate-limit bucket of their own: a
//! dashboard polling never spends the budget its operator's actions (or
//! CLI) need.

use super::problem::ApiError;
use crate::auth::AuthError;
use actix_web::{HttpRequest, http::header};
use hotswap_client::sync::lock;
use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Name of the dashboard's session cookie over plain HTTP.
pub const SESSION_COOKIE: &str = "hotswap_session";
/// Its name when cookies are secure: the browser then refuses it from
/// anything but this host over HTTPS, with `Path=/` and no `Domain`.
pub const SECURE_SESSION_COOKIE: &str = "__Host-hotswap_session";
/// Header carrying the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Longest a session lives (the token's own expiry may end it sooner).
pub const SESSION_HOURS: i64 = 8;
/// Longest token a session takes.
pub const MAX_TOKEN_CHARS: usize = 3_500;
/// Sessions one node keeps; past it the oldest goes.
pub const MAX_SESSIONS: usize = 10_000;
/// Sessions one subject keeps; past it its oldest goes.
pub const MAX_SESSIONS_PER_SUBJECT: usize = 16;
/// A session unused this long ends (an open dashboard uses its session
/// at least every few seconds: its feed is re-checked every 5 s).
pub const IDLE: Duration = Duration::from_secs(30 * 60);

/// What the browser side of the session must respect: origins allowed
/// besides the hub's own (lower-cased, no trailing slash), and whether
/// the hub is reached over HTTPS (TLS here, or `http.secure_cookies`
/// behind a proxy that ends TLS).
#[derive(Debug, Clone, Default)]
pub struct BrowserPolicy {
    pub origins: Vec<String>,
    pub secure: bool,
}

impl BrowserPolicy {
    pub fn new(origins: &[String], secure: bool) -> Self {
        BrowserPolicy {
            origins: origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
            secure,
        }
    }

    /// The origins allowed besides the hub's own (read where they live).
    fn origins(request: &HttpRequest) -> &[String] {
        request
            .app_data::<actix_web::web::Data<BrowserPolicy>>()
            .map_or(&[], |data| data.origins.as_slice())
    }
}

/// Whether the hub is reached over HTTPS: it serves TLS, or
/// `http.secure_cookies` says a proxy ends it.
pub fn secure(request: &HttpRequest) -> bool {
    request.app_config().secure()
        || request
            .app_data::<actix_web::web::Data<BrowserPolicy>>()
            .is_some_and(|data| data.secure)
}

fn cookie_name(request: &HttpRequest) -> &'static str {
    if secure(request) {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// Whether the request only reads (GET, HEAD, OPTIONS): no CSRF token,
/// and a session's own rate-limit bucket.
pub fn is_read(request: &HttpRequest) -> bool {
    matches!(request.method().as_str(), "GET" | "HEAD" | "OPTIONS")
}

/// One signed-in browser.
#[derive(Debug, Clone)]
struct Session {
    token: String,
    subject: String,
    csrf: String,
    expires: Instant,
    opened: Instant,
    used: Instant,
}

/// The sessions this node opened, by the SHA-256 of their id.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

/// The API explorer's sessions (`/docs`): the same kind, kept apart, so
/// its cookie opens the explorer and never the API.
#[derive(Debug, Default)]
pub struct DocsSessions(pub Sessions);

impl Session {
    fn live(&self, now: Instant) -> bool {
        self.expires > now && now.duration_since(self.used) < IDLE
    }
}

fn digest(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

fn random_hex() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("no randomness for a session: {e}")))?;
    Ok(hex::encode(bytes))
}

/// A live session the request presented.
#[derive(Debug, Clone)]
pub struct Presented {
    pub token: String,
    pub csrf: String,
}

impl Sessions {
    /// Opens a session for `token` (already checked) naming `subject`;
    /// its id, for the cookie.
    pub fn open(&self, token: String, subject: &str) -> Result<String, ApiError> {
        self.open_at(token, subject, Instant::now())
    }

    fn open_at(&self, token: String, subject: &str, now: Instant) -> Result<String, ApiError> {
        let id = random_hex()?;
        let session = Session {
            token,
            subject: subject.to_owned(),
            csrf: random_hex()?,
            expires: now + Duration::from_secs(SESSION_HOURS as u64 * 3600),
            opened: now,
            used: now,
        };
        let mut open = lock(&self.open);
        open.retain(|_, s| s.live(now));
        let oldest = |open: &HashMap<String, Session>, of: Option<&str>| {
            open.iter()
                .filter(|(_, s)| of.is_none_or(|subject| s.subject == subject))
                .min_by_key(|(_, s)| s.opened)
                .map(|(key, _)| key.clone())
        };
        if open.values().filter(|s| s.subject == subject).count() >= MAX_SESSIONS_PER_SUBJECT
            && let Some(key) = oldest(&open, Some(subject))
        {
            open.remove(&key);
        }
        if open.len() >= MAX_SESSIONS
            && let Some(key) = oldest(&open, None)
        {
            open.remove(&key);
        }
        open.insert(digest(&id), session);
        Ok(id)
    }

    fn find(&self, id: &str, now: Instant) -> Option<Presented> {
        let key = digest(id);
        let mut open = lock(&self.open);
        match open.get_mut(&key) {
            Some(s) if s.live(now) => {
                s.used = now;
                Some(Presented {
                    token: s.token.clone(),
                    csrf: s.csrf.clone(),
                })
            }
            Some(_) => {
                open.remove(&key);
                None
            }
            None => None,
        }
    }

    /// The token of the live session `id`, if any (the session is used).
    pub fn token_of(&self, id: &str) -> Option<String> {
        self.find(id, Instant::now()).map(|s| s.token)
    }

    /// Ends the session `id`.
    pub fn close(&self, id: &str) {
        lock(&self.open).remove(&digest(id));
    }

    /// Sessions open now.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.open).len()
    }
}

/// Whether `origin` (an `Origin` header) is `scheme://host` (`host` a
/// `Host` header) or one of `allowed`. `null` and anything unparsable
/// never match.
pub fn origin_allowed(origin: &str, scheme: &str, host: Option<&str>, allowed: &[String]) -> bool {
    let origin = origin.trim().to_ascii_lowercase();
    if allowed.contains(&origin) {
        return true;
    }
    let Some(authority) = origin
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix("://"))
    else {
        return false;
    };
    if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
        return false;
    }
    host.is_some_and(|host| host.trim().eq_ignore_ascii_case(authority))
}

/// Constant-time equality of two byte strings.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refused(reason: &str) -> ApiError {
    ApiError::Forbidden(AuthError::Denied(reason.to_owned()))
}

/// Refuses a request whose `Origin` is another site's.
pub fn check_origin(request: &HttpRequest) -> Result<(), ApiError> {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let scheme = if secure(request) { "https" } else { "http" };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match origin.to_str() {
        Ok(origin) if origin_allowed(origin, scheme, host, BrowserPolicy::origins(request)) => {
            Ok(())
        }
        _ => Err(refused(
            "this request comes from another site's page: the dashboard's session works only from the hub's own origin (or http.allowed_origins)",
        )),
    }
}

fn sessions(request: &HttpRequest) -> Option<&Sessions> {
    request
        .app_data::<actix_web::web::Data<Sessions>>()
        .map(|data| data.get_ref())
}

/// The id the request's session cookie names (well-formed, not checked).
pub fn session_id(request: &HttpRequest) -> Option<String> {
    cookie_id(request, cookie_name(request))
}

/// The session id in the cookie `name`: none when the request carries
/// two cookies of that name (one planted by another service on the host
/// under a longer path would otherwise be read first).
pub fn cookie_id(request: &HttpRequest, name: &str) -> Option<String> {
    let cookies = request.cookies().ok()?;
    let mut named = cookies.iter().filter(|c| c.name() == name);
    let id = named.next()?.value().to_owned();
    if named.next().is_some() {
        return None;
    }
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The session the request carries, when it is live and passes the
/// origin and CSRF checks; `None` without a session cookie, or with one
/// this node does not know (ended, expired, another node's): the caller
/// then has no credentials.
pub fn presented(request: &HttpRequest) -> Result<Option<Presented>, ApiError> {
    let Some(id) = session_id(request) else {
        return Ok(None);
    };
    let Some(session) = sessions(request).and_then(|s| s.find(&id, Instant::now())) else {
        return Ok(None);
    };
    check_origin(request)?;
    if !is_read(request) {
        let given = request
            .headers()
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same_bytes(given, session.csrf.as_bytes()) {
            return Err(refused(
                "a change made with the dashboard's session cookie needs its X-CSRF-Token header (from GET /dashboard/session)",
            ));
        }
    }
    Ok(Some(session))
}

/// Opens a session for a checked `token`: the cookie that carries it.
pub fn open(
    request: &HttpRequest,
    token: String,
    subject: &str,
) -> Result<actix_web::cookie::Cookie<'static>, ApiError> {
    let sessions =
        sessions(request).ok_or_else(|| ApiError::Internal("no session store".into()))?;
    let id = sessions.open(token, subject)?;
    Ok(cookie(request, id))
}

/// Ends the request's session (the caller checked it): the cookie that
/// makes the browser forget it.
pub fn close(request: &HttpRequest) -> actix_web::cookie::Cookie<'static> {
    if let (Some(id), Some(sessions)) = (session_id(request), sessions(request)) {
        sessions.close(&id);
    }
    cookie(request, String::new())
}

/// The session cookie holding `id` (`Max-Age` 0 with an empty id: the
/// browser forgets it): HttpOnly, SameSite=Strict, path `/`, and `Secure`
/// (with the `__Host-` name) when the hub is reached over HTTPS.
fn cookie(request: &HttpRequest, id: String) -> actix_web::cookie::Cookie<'static> {
    let age = if id.is_empty() {
        actix_web::cookie::time::Duration::ZERO
    } else {
        actix_web::cookie::time::Duration::hours(SESSION_HOURS)
    };
    actix_web::cookie::Cookie::build(cookie_name(request), id)
        .path("/")
        .http_only(true)
        .secure(secure(request))
        .same_site(actix_web::cookie::SameSite::Strict)
        .max_age(age)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hubs_own_origin_or_an_allowed_one_passes() {
        let none: Vec<String> = Vec::new();
        assert!(origin_allowed(
            "http://127.0.0.1:8080",
            "http",
            Some("127.0.0.1:8080"),
            &none
        ));
        assert!(origin_allowed(
            "https://Hub.Example:443",
            "https",
            Some("hub.example:443"),
            &none
        ));
        for (origin, scheme, host) in [
            ("http://evil.example", "http", Some("127.0.0.1:8080")),
            ("http://127.0.0.1:8081", "http", Some("127.0.0.1:8080")),
            ("https://127.0.0.1:8080", "http", Some("127.0.0.1:8080")),
            ("http://hub.example", "https", Some("hub.example")),
            ("null", "http", Some("127.0.0.1:8080")),
            ("http://127.0.0.1:8080", "http", None),
            ("ftp://127.0.0.1:8080", "http", Some("127.0.0.1:8080")),
            ("http://a@127.0.0.1:8080", "http", Some("a@127.0.0.1:8080")),
            ("http://", "http", Some("")),
        ] {
            assert!(
                !origin_allowed(origin, scheme, host, &none),
                "{origin} {scheme} {host:?}"
            );
        }
        let proxied = BrowserPolicy::new(&["https://ops.studio.example/".into()], true);
        assert!(origin_allowed(
            "https://ops.studio.example",
            "https",
            Some("10.0.0.7:8080"),
            &proxied.origins
        ));
        assert!(!origin_allowed(
            "https://ops.studio.example.evil",
            "https",
            Some("10.0.0.7:8080"),
            &proxied.origins
        ));
    }

    #[test]
    fn a_session_is_found_by_its_id_until_it_ends_or_expires() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let id = sessions.open_at("token-a".into(), "alice", now).unwrap();
        assert_eq!(id.len(), 64);
        let found = sessions.find(&id, now).unwrap();
        assert_eq!(found.token, "token-a");
        assert_eq!(found.csrf.len(), 64);
        let other = sessions.open_at("token-a".into(), "alice", now).unwrap();
        assert_ne!(
            sessions.find(&other, now).unwrap().csrf,
            found.csrf,
            "each session has its own CSRF token"
        );
        assert!(sessions.find(&"0".repeat(64), now).is_none());
        sessions.close(&id);
        assert!(sessions.find(&id, now).is_none(), "signed out");
        let used = now + IDLE / 2;
        assert!(
            sessions.find(&other, used).is_some(),
            "used: the idle clock restarts"
        );
        assert!(
            sessions
                .find(&other, used + IDLE / 2 + Duration::from_secs(1))
                .is_some()
        );
        let idle = sessions.open_at("token-b".into(), "bob", now).unwrap();
        assert!(sessions.find(&idle, now + IDLE).is_none(), "idle too long");
        let later = now + Duration::from_secs(SESSION_HOURS as u64 * 3600 + 1);
        assert!(sessions.find(&other, later).is_none(), "expired");
        assert_eq!(sessions.len(), 0, "an expired session is forgotten");
    }

    #[test]
    fn sessions_are_bounded_per_subject_and_in_all() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let ids: Vec<String> = (0..MAX_SESSIONS_PER_SUBJECT + 1)
            .map(|n| {
                let at = start + Duration::from_millis(n as u64);
                sessions.open_at("t".into(), "bob", at).unwrap()
            })
            .collect();
        assert_eq!(sessions.len(), MAX_SESSIONS_PER_SUBJECT);
        let at = start + Duration::from_secs(1);
        assert!(sessions.find(&ids[0], at).is_none(), "bob's oldest went");
        assert!(sessions.find(&ids[1], at).is_some());
        for n in 0..MAX_SESSIONS {
            sessions
                .open_at(
                    "t".into(),
                    &format!("user-{n}"),
                    at + Duration::from_millis(n as u64),
                )
                .unwrap();
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(
            sessions.find(&ids[1], at).is_none(),
            "the oldest of all went"
        );
    }

    #[test]
    fn csrf_comparison_is_exact() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"ab"));
    }
}
