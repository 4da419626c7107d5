//! `/api/v1/schemas`: the schema registry.

use super::{
    auth::{Authorized, Developer, Viewer},
    extract::{Body, PageQuery},
    method_not_allowed,
    problem::{ApiError, Problem},
};
use crate::{
    auth::{AuthError, Role},
    catalog::{
        Catalog, NewSchemaRequest,
        views::{Page, SchemaSummary, SchemaView},
    },
    domain::validation::ValidationReport,
};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::Value;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(
        resource("/schemas")
            .route(web::post().to(register_schema))
            .route(web::get().to(list_schemas)),
    )
    .service(resource("/schemas/{id}").route(web::get().to(get_schema)))
    .service(resource("/schemas/{id}/validate").route(web::post().to(validate_document)));
}

/// Register a schema, or a new version of one (checked against its compatibility mode).
#[utoipa::path(post, path = "/api/v1/schemas", tag = "schemas", request_body = NewSchemaRequest, responses(
    (status = 201, body = SchemaView),
    (status = 409, description = "the version exists, is not greater, or breaks compatibility without approval", body = Problem),
    (status = 422, description = "not a usable JSON Schema", body = Problem),
))]
pub async fn register_schema(
    catalog: web::Data<Catalog>,
    caller: Authorized<Developer>,
    Body(request): Body<NewSchemaRequest>,
) -> Result<HttpResponse, ApiError> {
    if request.approve_breaking && caller.role < Role::Admin {
        return Err(ApiError::Forbidden(AuthError::Forbidden {
            have: caller.role.to_string(),
            need: Role::Admin,
        }));
    }
    let schema = catalog.register_schema(&caller.actor, request).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/schemas/{}", schema.summary.id)))
        .json(schema))
}

/// The latest version of every schema.
#[utoipa::path(get, path = "/api/v1/schemas", tag = "schemas", params(PageQuery), responses(
    (status = 200, body = Page<SchemaSummary>),
))]
pub async fn list_schemas(
    _caller: Authorized<Viewer>,
    catalog: web::Data<Catalog>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(catalog.list_schemas(&query.to_request()?).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SchemaVersionQuery {
    /// A specific version; default the latest.
    pub version: Option<String>,
}

/// One schema document.
#[utoipa::path(get, path = "/api/v1/schemas/{id}", tag = "schemas", params(SchemaVersionQuery), responses(
    (status = 200, body = SchemaView),
    (status = 404, body = Problem),
))]
pub async fn get_schema(
    _caller: Authorized<Viewer>,
    catalog: web::Data<Catalog>,
    id: web::Path<String>,
    query: web::Query<SchemaVersionQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(catalog.get_schema(&id, query.version.as_deref()).await?))
}

/// Validate any document against a schema; answers the report (200 even when invalid).
#[utoipa::path(post, path = "/api/v1/schemas/{id}/validate", tag = "schemas", params(SchemaVersionQuery),
    request_body(content = Object, description = "the document, JSON or YAML"), responses(
    (status = 200, body = ValidationReport),
    (status = 404, body = Problem),
))]
pub async fn validate_document(
    _caller: Authorized<Developer>,
    catalog: web::Data<Catalog>,
    id: web::Path<String>,
    query: web::Query<SchemaVersionQuery>,
    Body(document): Body<Value>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        catalog
            .validate_with_schema(&id, query.version.as_deref(), document)
            .await?,
    ))
}
