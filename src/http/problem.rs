//! Every error the REST API answers, as RFC 9457 `application/problem+json`
//! with a stable machine-readable `code`. The status of each error is chosen
//! here and nowhere else.

use crate::{
    auth::AuthError, catalog::CatalogError, crypto::keyring::KeyringError,
    hub::deployments::DeploymentError, liveops::LiveOpsError, telemetry::TelemetryError,
};
use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// One entry of a problem's `errors` list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemItem {
    /// JSON Pointer into the request body (or `/query/name` for a query parameter).
    pub path: String,
    pub message: String,
    /// The rule broken, when there is one (`maximum`, `x-sum`, `removed-property`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: &'static str,
    pub errors: Vec<ProblemItem>,
    /// Extension members: e.g. `latest` for version conflicts, `report` for validation failures.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: serde_json::Map<String, Value>,
}

/// Errors of the HTTP layer; catalog errors pass through.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the request body is not valid {format}: {detail}")]
    MalformedBody {
        format: &'static str,
        detail: String,
    },
    #[error("{message}")]
    InvalidBody { path: String, message: String },
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("content type {0:?} is not accepted here; send application/json or application/yaml")]
    UnsupportedMediaType(String),
    #[error("invalid query parameter: {0}")]
    InvalidQuery(String),
    #[error("no route matches {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("the store is unreachable")]
    NotReady,
    #[error("the request headers take {size} bytes; the limit is {limit}")]
    HeadersTooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Unauthorized(AuthError),
    #[error("{0}")]
    Forbidden(AuthError),
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("this hub holds {limit} game-server sockets, the most it takes; retry later")]
    SocketsFull { limit: usize },
    #[error("this API key holds {limit} game-server sockets, the most one key may; retry later")]
    KeySocketsFull { limit: usize },
    #[error("{0}")]
    Internal(String),
    #[error("not a WebSocket upgrade: {0}")]
    BadUpgrade(String),
    #[error("{what} {id:?} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error(transparent)]
    Deployment(DeploymentError),
    #[error(transparent)]
    LiveOps(LiveOpsError),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
}

impl From<LiveOpsError> for ApiError {
    fn from(error: LiveOpsError) -> Self {
        match error {
            LiveOpsError::Catalog(inner) => ApiError::Catalog(inner),
            other => ApiError::LiveOps(other),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        ApiError::Catalog(error.into())
    }
}

impl From<DeploymentError> for ApiError {
    fn from(error: DeploymentError) -> Self {
        match error {
            DeploymentError::Catalog(inner) => ApiError::Catalog(inner),
            other => ApiError::Deployment(other),
        }
    }
}

impl ApiError {
    /// `(status, code)` for every variant: the API's one status table.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use CatalogError as C;
        match self {
            ApiError::Catalog(error) => match error {
                C::ConfigNotFound(_) => (StatusCode::NOT_FOUND, "config_not_found"),
                C::VersionNotFound { .. } => (StatusCode::NOT_FOUND, "version_not_found"),
                C::SchemaNotFound(_) => (StatusCode::NOT_FOUND, "schema_not_found"),
                C::ConfigExists(_) => (StatusCode::CONFLICT, "config_exists"),
                C::VersionExists { .. } => (StatusCode::CONFLICT, "version_exists"),
                C::VersionNotGreater { .. } => (StatusCode::CONFLICT, "version_not_greater"),
                C::BreakingSchemaChange { .. } => (StatusCode::CONFLICT, "breaking_schema_change"),
                C::Conflict => (StatusCode::CONFLICT, "concurrent_change"),
                C::InvalidField { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
                C::InvalidCursor => (StatusCode::BAD_REQUEST, "invalid_cursor"),
                C::ApiKeyNotFound(_) => (StatusCode::NOT_FOUND, "api_key_not_found"),
                C::Secrets(KeyringError::NoKey) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "secrets_key_missing")
                }
                C::Secrets(KeyringError::UnknownKey { .. }) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "secrets_key_unknown")
                }
                C::Secrets(KeyringError::Corrupt { .. }) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "secret_corrupt")
                }
                C::ValidationFailed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
                C::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema"),
                C::ValidationTooCostly { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "validation_too_costly")
                }
                C::DocumentTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "document_too_large"),
                C::DocumentTooDeep { .. } => (StatusCode::BAD_REQUEST, "document_too_deep"),
                C::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
                C::Unexpected(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            },
            ApiError::MalformedBody { .. } => (StatusCode::BAD_REQUEST, "malformed_body"),
            ApiError::InvalidBody { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            ApiError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            ApiError::RouteNotFound { .. } => (StatusCode::NOT_FOUND, "route_not_found"),
            ApiError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            ApiError::Unauthorized(AuthError::Missing) => {
                (StatusCode::UNAUTHORIZED, "unauthenticated")
            }
            ApiError::Unauthorized(AuthError::Expired) => {
                (StatusCode::UNAUTHORIZED, "token_expired")
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::SocketsFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "too_many_sockets"),
            ApiError::KeySocketsFull { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_sockets_for_key")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            ApiError::BadUpgrade(_) => (StatusCode::BAD_REQUEST, "bad_upgrade"),
            ApiError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Deployment(error) => match error {
                DeploymentError::Catalog(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
                }
                DeploymentError::Invalid(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_deployment")
                }
                DeploymentError::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
                DeploymentError::TooMany(_) => (StatusCode::CONFLICT, "too_many_deployments"),
                DeploymentError::Conflict(_) => (StatusCode::CONFLICT, "invalid_transition"),
                DeploymentError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
                DeploymentError::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
                DeploymentError::OwnerUnreachable(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "owner_unreachable")
                }
                DeploymentError::ApprovalRequired { .. } => {
                    (StatusCode::CONFLICT, "approval_required")
                }
                DeploymentError::InProgress(_) => (StatusCode::CONFLICT, "deployment_in_progress"),
                DeploymentError::NotFound(_) => (StatusCode::NOT_FOUND, "deployment_not_found"),
            },
            ApiError::LiveOps(error) => match error {
                LiveOpsError::Catalog(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
                LiveOpsError::EventNotFound(_) => (StatusCode::NOT_FOUND, "live_event_not_found"),
                LiveOpsError::SegmentNotFound(_) => (StatusCode::NOT_FOUND, "segment_not_found"),
                LiveOpsError::EventExists(_) => (StatusCode::CONFLICT, "live_event_exists"),
                LiveOpsError::SegmentExists(_) => (StatusCode::CONFLICT, "segment_exists"),
                LiveOpsError::Overlap { .. } => (StatusCode::CONFLICT, "event_overlap"),
                LiveOpsError::InvalidTransition { .. } => {
                    (StatusCode::CONFLICT, "invalid_transition")
                }
                LiveOpsError::SegmentInUse { .. } => (StatusCode::CONFLICT, "segment_in_use"),
                LiveOpsError::PatchInvalid { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
                }
                LiveOpsError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
                LiveOpsError::Elsewhere(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "owner_unreachable")
                }
                LiveOpsError::Effect(_) => (StatusCode::CONFLICT, "event_effect_failed"),
                LiveOpsError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
                LiveOpsError::ExperimentNotFound(_) => {
                    (StatusCode::NOT_FOUND, "experiment_not_found")
                }
                LiveOpsError::ExperimentExists(_) => (StatusCode::CONFLICT, "experiment_exists"),
                LiveOpsError::ExperimentClash { .. } => {
                    (StatusCode::CONFLICT, "experiment_conflict")
                }
            },
            ApiError::Telemetry(error) => match error {
                TelemetryError::Invalid { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field")
                }
                TelemetryError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "telemetry_busy"),
                TelemetryError::NotStored(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
                }
                TelemetryError::TypeNotFound(_) => (StatusCode::NOT_FOUND, "event_type_not_found"),
                TelemetryError::Conflict => (StatusCode::CONFLICT, "concurrent_change"),
                TelemetryError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
                TelemetryError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            },
        }
    }

    fn items_and_extensions(&self) -> (Vec<ProblemItem>, serde_json::Map<String, Value>) {
        let mut extensions = serde_json::Map::new();
        let item = |path: &str, message: String, rule: Option<&str>| ProblemItem {
            path: path.to_owned(),
            message,
            rule: rule.map(str::to_owned),
        };
        let items = match self {
            ApiError::Catalog(CatalogError::InvalidField { path, message })
            | ApiError::InvalidBody { path, message } => vec![item(path, message.clone(), None)],
            ApiError::Catalog(CatalogError::VersionExists { latest, .. })
            | ApiError::Catalog(CatalogError::VersionNotGreater { latest, .. }) => {
                extensions.insert("latest".into(), Value::String(latest.clone()));
                vec![item("/version", self.to_string(), None)]
            }
            ApiError::Catalog(CatalogError::ValidationFailed(report)) => {
                extensions.insert(
                    "report".into(),
                    serde_json::to_value(report).unwrap_or_default(),
                );
                report
                    .errors
                    .iter()
                    .map(|issue| {
                        item(
                            &format!("/content{}", issue.path),
                            issue.message.clone(),
                            Some(&issue.rule),
                        )
                    })
                    .collect()
            }
            ApiError::Catalog(CatalogError::InvalidSchema(invalid)) => {
                vec![item(&invalid.path, invalid.message.clone(), None)]
            }
            ApiError::Catalog(CatalogError::BreakingSchemaChange { changes, .. }) => changes
                .iter()
                .map(|change| {
                    item(
                        &format!("/schema{}", change.path),
                        change.message.clone(),
                        Some(change.kind),
                    )
                })
                .collect(),
            ApiError::Catalog(CatalogError::DocumentTooLarge { .. })
            | ApiError::Catalog(CatalogError::DocumentTooDeep { .. })
            | ApiError::Catalog(CatalogError::ValidationTooCostly { .. }) => {
                vec![item("/content", self.to_string(), None)]
            }
            ApiError::LiveOps(LiveOpsError::PatchInvalid { index, report, .. }) => {
                extensions.insert(
                    "report".into(),
                    serde_json::to_value(report).unwrap_or_default(),
                );
                report
                    .errors
                    .iter()
                    .map(|issue| {
                        item(
                            &format!("/overrides/{index}/patch{}", issue.path),
                            issue.message.clone(),
                            Some(&issue.rule),
                        )
                    })
                    .collect()
            }
            ApiError::LiveOps(LiveOpsError::Overlap {
                other,
                config,
                path,
                at,
            }) => {
                extensions.insert(
                    "overlap".into(),
                    serde_json::json!({ "event": other, "config": config, "path": path, "at": at }),
                );
                vec![item("/overrides", self.to_string(), None)]
            }
            ApiError::Telemetry(TelemetryError::Invalid { path, message }) => {
                vec![item(path, message.clone(), None)]
            }
            ApiError::LiveOps(LiveOpsError::SegmentInUse { events, .. }) => {
                extensions.insert("usedBy".into(), serde_json::json!(events));
                Vec::new()
            }
            _ => Vec::new(),
        };
        (items, extensions)
    }

    pub fn problem(&self) -> Problem {
        let (status, code) = self.status_and_code();
        let (errors, extensions) = self.items_and_extensions();
        let detail = if status == StatusCode::INTERNAL_SERVER_ERROR {
            // The cause goes to the log, never to the client.
            "the hub hit an unexpected error; it was logged".to_owned()
        } else {
            self.to_string()
        };
        Problem {
            kind: format!("urn:hotswap:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code,
            errors,
            extensions,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        let problem = self.problem();
        if problem.status >= 500 {
            tracing::error!(error = ?anyhow_chain(self), code = problem.code, "request failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        response.content_type("application/problem+json");
        match self {
            ApiError::RateLimited { retry_after_secs } => {
                response.insert_header(("Retry-After", retry_after_secs.to_string()));
            }
            ApiError::KeySocketsFull { .. } => {
                response.insert_header(("Retry-After", "5"));
            }
            ApiError::Telemetry(TelemetryError::Busy { retry_after_secs }) => {
                response.insert_header(("Retry-After", retry_after_secs.to_string()));
            }
            ApiError::Unauthorized(_) => {
                response.insert_header(("WWW-Authenticate", "Bearer realm=\"hotswap\""));
            }
            _ if problem.status == 503 => {
                response.insert_header(("Retry-After", "5"));
            }
            _ => {}
        }
        response.json(problem)
    }
}

/// The whole cause chain, for the log.
fn anyhow_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let error = ApiError::Catalog(CatalogError::Unexpected(anyhow::anyhow!(
            "password=hunter2"
        )));
        let problem = error.problem();
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("hunter2"));
    }

    #[test]
    fn version_conflicts_name_the_latest_version() {
        let error = ApiError::Catalog(CatalogError::VersionNotGreater {
            version: "1.0.0".into(),
            latest: "1.2.0".into(),
        });
        let problem = error.problem();
        assert_eq!((problem.status, problem.code), (409, "version_not_greater"));
        assert_eq!(problem.extensions["latest"], "1.2.0");
    }
}
