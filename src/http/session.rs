//! The dashboard's browser session: sign-in with a token sets it in an
//! HttpOnly, SameSite=Strict cookie, and the REST API and the feed take
//! that cookie as they take a bearer token — with two checks a bearer
//! token needs not, because a browser sends cookies by itself:
//!
//! - **Origin.** A request carrying an `Origin` header must come from this
//!   hub's own origin (its `Host`) or one of `http.allowed_origins` (a
//!   proxy that rewrites `Host`). Browsers always send `Origin` on a
//!   WebSocket upgrade and on cross-origin writes, so another site's page
//!   can neither open the feed nor post with the cookie.
//! - **CSRF.** A request that changes something (any method but GET, HEAD
//!   and OPTIONS) must carry `X-CSRF-Token`: a digest of the session's
//!   token, which the page learns from `GET /dashboard/session` (a
//!   same-origin read) and no other site can compute or read.
//!
//! The token is the session: any node holding the hub's verification key
//! checks the cookie, and the session ends when the token expires or the
//! browser signs out.

use super::problem::ApiError;
use crate::auth::AuthError;
use actix_web::{HttpRequest, http::header};
use sha2::{Digest, Sha256};

/// Name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "hotswap_session";
/// Header carrying the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Longest a session cookie lives (the token's own expiry may end it sooner).
pub const SESSION_HOURS: i64 = 8;
/// Longest token the cookie takes (browsers keep cookies under 4 KiB).
pub const MAX_TOKEN_CHARS: usize = 3_500;

/// Origins allowed besides the hub's own, lower-cased, without a trailing
/// slash (`http.allowed_origins`).
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins(pub Vec<String>);

impl AllowedOrigins {
    pub fn new(origins: &[String]) -> Self {
        AllowedOrigins(
            origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
        )
    }
}

/// The CSRF token of a session: SHA-256 of a fixed label and the
/// session's token, in hex.
pub fn csrf_token(session_token: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"hotswap-dashboard-csrf\0");
    digest.update(session_token.as_bytes());
    hex::encode(digest.finalize())
}

/// Whether `origin` (an `Origin` header) names `host` (a `Host` header)
/// or one of `allowed`. `null` and anything unparsable never match.
pub fn origin_allowed(origin: &str, host: Option<&str>, allowed: &AllowedOrigins) -> bool {
    let origin = origin.trim().to_ascii_lowercase();
    if allowed.0.contains(&origin) {
        return true;
    }
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
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
    let allowed = request
        .app_data::<actix_web::web::Data<AllowedOrigins>>()
        .map(|data| data.get_ref().clone())
        .unwrap_or_default();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match origin.to_str() {
        Ok(origin) if origin_allowed(origin, host, &allowed) => Ok(()),
        _ => Err(refused(
            "this request comes from another site's page: the dashboard's session works only from the hub's own origin (or http.allowed_origins)",
        )),
    }
}

/// The session's token, when the request carries the session cookie and
/// passes the origin and CSRF checks; `None` without the cookie.
pub fn session_token(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(cookie) = request.cookie(SESSION_COOKIE) else {
        return Ok(None);
    };
    let token = cookie.value().to_owned();
    if token.is_empty() {
        return Ok(None);
    }
    check_origin(request)?;
    let safe = matches!(request.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    if !safe {
        let expected = csrf_token(&token);
        let presented = request
            .headers()
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same_bytes(presented, expected.as_bytes()) {
            return Err(refused(
                "a change made with the dashboard's session cookie needs its X-CSRF-Token header (from GET /dashboard/session)",
            ));
        }
    }
    Ok(Some(token))
}

/// The session cookie holding `token` (`Max-Age` 0 with an empty token:
/// the browser forgets it): HttpOnly, SameSite=Strict, path `/`, and
/// `Secure` when the hub serves TLS.
pub fn session_cookie(request: &HttpRequest, token: String) -> actix_web::cookie::Cookie<'static> {
    let age = if token.is_empty() {
        actix_web::cookie::time::Duration::ZERO
    } else {
        actix_web::cookie::time::Duration::hours(SESSION_HOURS)
    };
    actix_web::cookie::Cookie::build(SESSION_COOKIE, token)
        .path("/")
        .http_only(true)
        .secure(request.app_config().secure())
        .same_site(actix_web::cookie::SameSite::Strict)
        .max_age(age)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hubs_own_origin_or_an_allowed_one_passes() {
        let none = AllowedOrigins::default();
        assert!(origin_allowed(
            "http://127.0.0.1:8080",
            Some("127.0.0.1:8080"),
            &none
        ));
        assert!(origin_allowed(
            "https://Hub.Example:443",
            Some("hub.example:443"),
            &none
        ));
        for (origin, host) in [
            ("http://evil.example", Some("127.0.0.1:8080")),
            ("http://127.0.0.1:8081", Some("127.0.0.1:8080")),
            ("null", Some("127.0.0.1:8080")),
            ("http://127.0.0.1:8080", None),
            ("ftp://127.0.0.1:8080", Some("127.0.0.1:8080")),
            ("http://a@127.0.0.1:8080", Some("a@127.0.0.1:8080")),
            ("http://", Some("")),
        ] {
            assert!(!origin_allowed(origin, host, &none), "{origin} {host:?}");
        }
        let proxied = AllowedOrigins::new(&["https://ops.studio.example/".into()]);
        assert!(origin_allowed(
            "https://ops.studio.example",
            Some("10.0.0.7:8080"),
            &proxied
        ));
        assert!(!origin_allowed(
            "https://ops.studio.example.evil",
            Some("10.0.0.7:8080"),
            &proxied
        ));
    }

    #[test]
    fn the_csrf_token_is_fixed_per_session_and_differs_between_them() {
        assert_eq!(csrf_token("a"), csrf_token("a"));
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_eq!(csrf_token("a").len(), 64);
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"ab"));
    }
}
