//! `GET /dashboard`: the live dashboard, served by the hub from assets
//! embedded in the binary (plain ES modules and the vendored uPlot chart
//! library: no Node.js, CDN or second server). The page signs in with a
//! token posted once (`POST /dashboard/session`), which becomes the
//! HttpOnly, SameSite=Strict session cookie (`http::session`); it then
//! reads `GET /dashboard/session` for who it is and its CSRF token, opens
//! the feed (`/api/v1/stream`) with the cookie, and acts through the same
//! REST API as everyone else, where each action's role is checked.

mod assets;

use crate::{
    auth::Role,
    http::{
        auth::{authorize, authorize_session},
        problem::ApiError,
        session::{self, MAX_TOKEN_CHARS},
    },
};
use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    http::{StatusCode, header},
    web,
};

/// What the dashboard's pages may load: their own scripts, styles and
/// sockets only, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(to_dashboard))
        .route("/dashboard/", web::get().to(page))
        .route("/dashboard/session", web::post().to(sign_in))
        .route("/dashboard/session", web::get().to(whoami))
        .route("/dashboard/session/end", web::post().to(sign_out))
        .route("/dashboard/assets/{name}", web::get().to(asset));
}

/// The dashboard's security headers. `Referrer-Policy` is `same-origin`,
/// not `no-referrer`: under the latter a browser sends `Origin: null` on
/// the page's own form posts, which the origin check must refuse.
fn guarded(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder
        .insert_header(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .insert_header(("X-Frame-Options", "DENY"));
    builder
}

/// [`guarded`], with HSTS when the hub is reached over HTTPS.
fn guarded_for(
    request: &HttpRequest,
    builder: actix_web::HttpResponseBuilder,
) -> actix_web::HttpResponseBuilder {
    let mut builder = guarded(builder);
    if session::secure(request) {
        builder.insert_header(("Strict-Transport-Security", "max-age=31536000"));
    }
    builder
}

async fn to_dashboard() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/dashboard/"))
        .finish()
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The sign-in page, with why the last token was refused.
fn sign_in_page(status: StatusCode, refused: Option<&str>) -> HttpResponse {
    let notice = refused
        .map(|why| {
            format!(
                "<p class=\"refused\" role=\"alert\">That token was not accepted: {}</p>",
                escape_html(why)
            )
        })
        .unwrap_or_default();
    let page = assets::SIGN_IN_PAGE.replace("<!--notice-->", &notice);
    guarded(HttpResponse::build(status))
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page)
}

/// The session's principal and CSRF token, if the request carries a
/// live session cookie (whose token still verifies).
fn signed_in(request: &HttpRequest) -> Result<(String, Role, String), ApiError> {
    let session = session::presented(request)?
        .ok_or(ApiError::Unauthorized(crate::auth::AuthError::Missing))?;
    let (actor, role) = authorize_session(request, &session.token, Role::Viewer)?;
    Ok((actor.subject, role, session.csrf))
}

/// The dashboard itself once signed in; the sign-in page before.
async fn page(request: HttpRequest) -> HttpResponse {
    match signed_in(&request) {
        Ok(_) => guarded_for(&request, HttpResponse::Ok())
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(assets::INDEX_PAGE),
        // An expired or revoked session: sign in again.
        Err(ApiError::Unauthorized(_)) => sign_in_page(StatusCode::OK, None),
        // Signed in, but over the session's read budget: no form (a new
        // session would not help), just when to come back.
        Err(ApiError::RateLimited { retry_after_secs }) => guarded(HttpResponse::TooManyRequests())
            .content_type("text/plain; charset=utf-8")
            .insert_header((header::RETRY_AFTER, retry_after_secs.to_string()))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(format!(
                "Too many requests from this session: reload in {retry_after_secs} s."
            )),
        Err(ApiError::Forbidden(why)) => {
            sign_in_page(StatusCode::FORBIDDEN, Some(&why.to_string()))
        }
        Err(other) => sign_in_page(other.status_code(), Some(&other.to_string())),
    }
}

#[derive(Debug, serde::Deserialize)]
struct SignIn {
    token: String,
}

/// Checks a token (a viewer's or higher) posted from the sign-in form and
/// keeps it in the session cookie.
async fn sign_in(request: HttpRequest, form: web::Form<SignIn>) -> HttpResponse {
    if let Err(error) = session::check_origin(&request) {
        return sign_in_page(StatusCode::FORBIDDEN, Some(&error.to_string()));
    }
    let token = form.into_inner().token.trim().to_owned();
    if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
        return sign_in_page(
            StatusCode::BAD_REQUEST,
            Some(&format!("a token is 1 to {MAX_TOKEN_CHARS} characters")),
        );
    }
    match authorize(&request, Some(&token), Role::Viewer) {
        Ok((actor, role)) => {
            // Debug-quoted: a subject is the token's word, newlines and all.
            tracing::info!(subject = ?actor.subject, %role, source = ?actor.source, "dashboard sign-in");
            match session::open(&request, token, &actor.subject) {
                Ok(cookie) => HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, "/dashboard/"))
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .cookie(cookie)
                    .finish(),
                Err(error) => sign_in_page(error.status_code(), Some(&error.to_string())),
            }
        }
        Err(ApiError::RateLimited { retry_after_secs }) => {
            let mut page = sign_in_page(
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "too many attempts: try again in {retry_after_secs} s"
                )),
            );
            if let Ok(value) = header::HeaderValue::from_str(&retry_after_secs.to_string()) {
                page.headers_mut().insert(header::RETRY_AFTER, value);
            }
            page
        }
        Err(error) => sign_in_page(error.status_code(), Some(&error.to_string())),
    }
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Whoami {
    subject: String,
    role: Role,
    csrf_token: String,
}

/// Who the session is, and the CSRF token its writes carry.
async fn whoami(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let (subject, role, csrf_token) = signed_in(&request)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Whoami {
            subject,
            role,
            csrf_token,
        }))
}

/// Ends the session and forgets its cookie (the same checks as any write
/// with it).
async fn sign_out(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    session::presented(&request)?;
    Ok(HttpResponse::NoContent()
        .cookie(session::close(&request))
        .finish())
}

/// An embedded asset, revalidated by its ETag.
async fn asset(request: HttpRequest, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let Some(file) = assets::find(&name) else {
        return Err(ApiError::RouteNotFound {
            method: "GET".into(),
            path: request.path().to_owned(),
        });
    };
    let tag = file.etag();
    let fresh = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut builder = guarded(if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    });
    builder
        .insert_header((header::ETAG, tag.to_owned()))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if fresh {
        return Ok(builder.finish());
    }
    Ok(builder.content_type(file.content_type).body(file.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_shown_on_the_sign_in_page_is_escaped() {
        assert_eq!(
            escape_html(r#"<script>"x" & 'y'</script>"#),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
