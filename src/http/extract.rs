//! Request extractors: bodies in JSON or YAML with limits and precise error
//! paths, the caller, the request id, and list paging.

use super::problem::ApiError;
use crate::catalog::PageRequest;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::StreamExt;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;
use std::{future::Future, pin::Pin};

/// Limits the extractors and middleware enforce, from settings.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub max_header_bytes: usize,
}

/// A request body in JSON (`application/json`) or YAML
/// (`application/yaml`), read within [`BodyLimits`] and deserialized with
/// the JSON Pointer of any field that does not fit.
#[derive(Debug)]
pub struct Body<T>(pub T);

#[derive(Clone, Copy)]
enum Format {
    Json,
    Yaml,
}

fn body_format(request: &HttpRequest) -> Result<Format, ApiError> {
    let Some(header) = request.headers().get(actix_web::http::header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("(none)".into()));
    };
    let text = header.to_str().unwrap_or_default();
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Format::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(Format::Yaml),
        _ if essence.ends_with("+json") => Ok(Format::Json),
        _ => Err(ApiError::UnsupportedMediaType(text.to_owned())),
    }
}

/// Parses bytes to a JSON value; serde_json and the YAML parser both refuse
/// nesting past 128 levels with an error rather than a stack overflow.
fn parse(format: Format, bytes: &[u8]) -> Result<Value, ApiError> {
    match format {
        Format::Json => serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedBody {
            format: "JSON",
            detail: e.to_string(),
        }),
        // Aliases may expand a YAML body past its size: bounded while it is
        // built, at a value per 2 bytes of the body and 4 times its text.
        Format::Yaml => super::yaml::from_slice(
            bytes,
            super::yaml::Budget {
                values: bytes.len() / 2 + 1024,
                text_bytes: bytes.len().saturating_mul(4) + 1024,
            },
        )
        .map_err(|e| ApiError::MalformedBody {
            format: "YAML",
            detail: e.to_string(),
        }),
    }
}

/// Converts serde_path_to_error's `a.b[0].c` into `/a/b/0/c`.
fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.replace('~', "~0").replace('/', "~1")),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .fold(String::new(), |mut out, segment| {
            out.push('/');
            out.push_str(&segment);
            out
        })
}

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limits = request
            .app_data::<web::Data<BodyLimits>>()
            .map(|data| *data.get_ref())
            .unwrap_or(BodyLimits {
                max_bytes: 2 * 1024 * 1024,
                max_header_bytes: 16 * 1024,
            });
        let format = body_format(request);
        let declared = request
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            let format = format?;
            if declared.is_some_and(|length| length > limits.max_bytes) {
                return Err(ApiError::BodyTooLarge {
                    limit: limits.max_bytes,
                });
            }
            let mut bytes = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| ApiError::MalformedBody {
                    format: "HTTP",
                    detail: e.to_string(),
                })?;
                if bytes.len() + chunk.len() > limits.max_bytes {
                    return Err(ApiError::BodyTooLarge {
                        limit: limits.max_bytes,
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            if bytes.is_empty() {
                return Err(ApiError::MalformedBody {
                    format: "JSON",
                    detail: "the body is empty".into(),
                });
            }
            let value = parse(format, &bytes)?;
            serde_path_to_error::deserialize::<_, T>(value)
                .map(Body)
                .map_err(|error| ApiError::InvalidBody {
                    path: pointer_of(error.path()),
                    message: error.inner().to_string(),
                })
        })
    }
}

/// The request id: the caller's `X-Request-Id` when it is sane, else a new
/// UUIDv7. Set by the middleware in `http/mod.rs`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// `?limit=&cursor=` on every list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn to_request(&self) -> Result<PageRequest, ApiError> {
        let limit = self.limit.unwrap_or(PageRequest::DEFAULT_LIMIT);
        if !(1..=PageRequest::MAX_LIMIT).contains(&limit) {
            return Err(ApiError::InvalidQuery(format!(
                "limit must be between 1 and {}",
                PageRequest::MAX_LIMIT
            )));
        }
        Ok(PageRequest {
            limit,
            cursor: self.cursor.clone(),
        })
    }
}

/// Turns query-string errors into problem+json.
pub fn query_error(
    error: actix_web::error::QueryPayloadError,
    _: &HttpRequest,
) -> actix_web::Error {
    ApiError::InvalidQuery(error.to_string()).into()
}

/// Turns path errors into problem+json.
pub fn path_error(error: actix_web::error::PathError, request: &HttpRequest) -> actix_web::Error {
    let _ = error;
    ApiError::RouteNotFound {
        method: request.method().to_string(),
        path: request.path().to_owned(),
    }
    .into()
}

/// A body that may be absent: no `Content-Type` and no bytes, or a JSON
/// `null`, means `None`; anything else is read like [`Body`], errors
/// included.
#[derive(Debug)]
pub struct MaybeBody<T>(pub Option<T>);

impl<T: DeserializeOwned + 'static> FromRequest for MaybeBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let headers = request.headers();
        let empty = !headers.contains_key(actix_web::http::header::CONTENT_TYPE)
            && headers
                .get(actix_web::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .is_none_or(|v| v.trim() == "0");
        if empty {
            return Box::pin(async { Ok(MaybeBody(None)) });
        }
        let body = Body::<Option<T>>::from_request(request, payload);
        Box::pin(async move { Ok(MaybeBody(body.await?.0)) })
    }
}
