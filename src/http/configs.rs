//! `/api/v1/configs`: config profiles and their versions.

use super::{
    auth::{Admin, Authorized, Developer, Viewer},
    extract::{Body, MaybeBody, PageQuery},
    method_not_allowed,
    problem::{ApiError, Problem},
};
use crate::{
    catalog::{
        Catalog, NewConfigRequest, NewVersionRequest, RollbackRequest,
        views::{ConfigView, DiffView, Page, StoredReportView, VersionSummary, VersionView},
    },
    domain::kinds::{ConfigType, Environment},
    store::configs::ConfigFilter,
};
use actix_web::{HttpResponse, web};
use serde::Deserialize;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(
        resource("/configs")
            .route(web::post().to(create_config))
            .route(web::get().to(list_configs)),
    )
    .service(
        resource("/configs/{name}")
            .route(web::get().to(get_config))
            .route(web::delete().to(delete_config)),
    )
    .service(
        resource("/configs/{name}/versions")
            .route(web::post().to(create_version))
            .route(web::get().to(list_versions)),
    )
    .service(resource("/configs/{name}/versions/{version}").route(web::get().to(get_version)))
    .service(
        resource("/configs/{name}/versions/{from}/diff/{to}").route(web::get().to(diff_versions)),
    )
    .service(resource("/configs/{name}/versions/{version}/tags").route(web::put().to(set_tags)))
    .service(
        resource("/configs/{name}/versions/{version}/validate")
            .route(web::post().to(validate_version)),
    )
    .service(
        resource("/configs/{name}/versions/{version}/validation-report")
            .route(web::get().to(validation_report)),
    )
    .service(
        resource("/configs/{name}/versions/{version}/approve")
            .route(web::post().to(approve_version)),
    )
    .service(resource("/configs/{name}/rollback").route(web::post().to(rollback)));
}

fn created<T: serde::Serialize>(location: String, body: &T) -> HttpResponse {
    HttpResponse::Created()
        .insert_header(("Location", location))
        .json(body)
}

/// Create a config profile.
#[utoipa::path(post, path = "/api/v1/configs", tag = "configs", request_body = NewConfigRequest, responses(
    (status = 201, body = ConfigView),
    (status = 409, description = "the name is taken", body = Problem),
    (status = 422, description = "a field is invalid", body = Problem),
))]
pub async fn create_config(
    catalog: web::Data<Catalog>,
    caller: Authorized<Developer>,
    Body(request): Body<NewConfigRequest>,
) -> Result<HttpResponse, ApiError> {
    let config = catalog.create_config(&caller.actor, request).await?;
    Ok(created(format!("/api/v1/configs/{}", config.name), &config))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ConfigListQuery {
    pub environment: Option<Environment>,
    pub config_type: Option<ConfigType>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// List configs by name.
#[utoipa::path(get, path = "/api/v1/configs", tag = "configs", params(ConfigListQuery), responses(
    (status = 200, body = Page<ConfigView>),
))]
pub async fn list_configs(
    _caller: Authorized<Viewer>,
    catalog: web::Data<Catalog>,
    query: web::Query<ConfigListQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .to_request()?;
    let filter = ConfigFilter {
        environment: query.environment.map(|e| e.as_str().to_owned()),
        config_type: query.config_type.map(|t| t.as_str().to_owned()),
        after_name: None,
    };
    Ok(HttpResponse::Ok().json(catalog.list_configs(filter, &page).await?))
}

/// One config with its latest version.
#[utoipa::path(get, path = "/api/v1/configs/{name}", tag = "configs", responses(
    (status = 200, body = ConfigView),
    (status = 404, body = Problem),
))]
pub async fn get_config(
    _caller: Authorized<Viewer>,
    catalog: web::Data<Catalog>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(catalog.get_config(&name).await?))
}

/// Retire a config; its history and audit trail stay, its name is not reused.
#[utoipa::path(delete, path = "/api/v1/configs/{name}", tag = "configs", responses(
    (status = 204),
    (status = 404, body = Problem),
))]
pub async fn delete_config(
    catalog: web::Data<Catalog>,
    caller: Authorized<Admin>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    catalog.delete_config(&caller.actor, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Upload a new immutable version (JSON, or YAML with `Content-Type: application/yaml`).
#[utoipa::path(post, path = "/api/v1/configs/{name}/versions", tag = "versions", request_body(content(
    (NewVersionRequest = "application/json"),
    (NewVersionRequest = "application/yaml"),
)), responses(
    (status = 201, body = VersionView),
    (status = 404, body = Problem),
    (status = 409, description = "the version exists or is not greater than the latest", body = Problem),
    (status = 413, body = Problem),
    (status = 422, description = "the document fails validation; `report` holds the full report", body = Problem),
))]
pub async fn create_version(
    catalog: web::Data<Catalog>,
    caller: Authorized<Developer>,
    name: web::Path<String>,
    Body(request): Body<NewVersionRequest>,
) -> Result<HttpResponse, ApiError> {
    let version = catalog
        .create_version(&caller.actor, &name, request)
        .await?;
    Ok(created(
        format!(
            "/api/v1/configs/{}/versions/{}",
            name, version.summary.version
        ),
        &version,
    ))
}

/// Version history, newest first.
#[utoipa::path(get, path = "/api/v1/configs/{name}/versions", tag = "versions", params(PageQuery), responses(
    (status = 200, body = Page<VersionSummary>),
    (status = 404, body = Problem),
))]
pub async fn list_versions(
    _caller: Authorized<Viewer>,
    catalog: web::Data<Catalog>,
    name: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(catalog.list_versions(&name, &query.to_request()?).await?))
}

/// One version with its document; `latest` names the newest.
#[utoipa::path(get, path = "/api/v1/configs/{name}/versions/{version}", tag = "versions", responses(
    (status = 200, body = VersionView),
    (status = 404, body = Problem),
))]
pub async fn get_version(
    _caller: Authorized<Viewer>,
    catalog: web::Data<Catalog>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (name, version) = path.into_inner();
    Ok(HttpResponse::Ok().json(catalog.get_version(&name, &version).await?))
}

/// What changed between two versions: an RFC 6902 patch and a readable list.
#[utoipa::path(get, path = "/api/v1/configs/{name}/versions/{from}/diff/{to}", tag = "versions", responses(
    (status = 200, body = DiffView),
    (status = 404, body = Problem),
))]
pub async fn diff_versions(
    _caller: Authorized<Viewer>,
    catalog: web::Data<Catalog>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (name, from, to) = path.into_inner();
    Ok(HttpResponse::Ok().json(catalog.diff(&name, &from, &to).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagsRequest {
    /// The complete tag set: `stable`, `beta`, `deprecated`, or free tags.
    pub tags: Vec<String>,
}

/// Replace a version's tags.
#[utoipa::path(put, path = "/api/v1/configs/{name}/versions/{version}/tags", tag = "versions", request_body = TagsRequest, responses(
    (status = 200, body = VersionView),
    (status = 404, body = Problem),
    (status = 422, body = Problem),
))]
pub async fn set_tags(
    catalog: web::Data<Catalog>,
    caller: Authorized<Developer>,
    path: web::Path<(String, String)>,
    Body(request): Body<TagsRequest>,
) -> Result<HttpResponse, ApiError> {
    let (name, version) = path.into_inner();
    Ok(HttpResponse::Ok().json(
        catalog
            .set_tags(&caller.actor, &name, &version, &request.tags)
            .await?,
    ))
}

/// Validate a stored version again, against its schema as it is now; the report is stored.
#[utoipa::path(post, path = "/api/v1/configs/{name}/versions/{version}/validate", tag = "versions", responses(
    (status = 200, body = StoredReportView),
    (status = 404, body = Problem),
))]
pub async fn validate_version(
    catalog: web::Data<Catalog>,
    caller: Authorized<Developer>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (name, version) = path.into_inner();
    Ok(HttpResponse::Ok().json(catalog.revalidate(&caller.actor, &name, &version).await?))
}

/// The latest stored validation report of a version.
#[utoipa::path(get, path = "/api/v1/configs/{name}/versions/{version}/validation-report", tag = "versions", responses(
    (status = 200, body = StoredReportView),
    (status = 404, body = Problem),
))]
pub async fn validation_report(
    _caller: Authorized<Viewer>,
    catalog: web::Data<Catalog>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (name, version) = path.into_inner();
    Ok(HttpResponse::Ok().json(catalog.validation_report(&name, &version).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    pub comment: Option<String>,
}

/// Approve a version (needed before a production deployment of a version with breaking changes).
#[utoipa::path(post, path = "/api/v1/configs/{name}/versions/{version}/approve", tag = "versions", request_body(content = Option<ApproveRequest>), responses(
    (status = 200, body = VersionView),
    (status = 404, body = Problem),
))]
pub async fn approve_version(
    catalog: web::Data<Catalog>,
    caller: Authorized<Admin>,
    path: web::Path<(String, String)>,
    MaybeBody(request): MaybeBody<ApproveRequest>,
) -> Result<HttpResponse, ApiError> {
    let (name, version) = path.into_inner();
    let comment = request.and_then(|r| r.comment);
    Ok(HttpResponse::Ok().json(
        catalog
            .approve(&caller.actor, &name, &version, comment)
            .await?,
    ))
}

/// Create a new version carrying an older version's content.
#[utoipa::path(post, path = "/api/v1/configs/{name}/rollback", tag = "versions", request_body = RollbackRequest, responses(
    (status = 201, body = VersionView),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
))]
pub async fn rollback(
    catalog: web::Data<Catalog>,
    caller: Authorized<Developer>,
    name: web::Path<String>,
    Body(request): Body<RollbackRequest>,
) -> Result<HttpResponse, ApiError> {
    let version = catalog.rollback(&caller.actor, &name, request).await?;
    Ok(created(
        format!(
            "/api/v1/configs/{}/versions/{}",
            name, version.summary.version
        ),
        &version,
    ))
}
