//! `/api/v1/api-keys` (game-server keys), `/api/v1/signing-key`, and
//! `/api/v1/server/whoami` (a game server checking its key).

use super::{
    auth::{Admin, Authorized, ServerKey, Viewer},
    extract::{Body, PageQuery},
    method_not_allowed,
    problem::{ApiError, Problem},
};
use crate::catalog::{
    Catalog, NewApiKeyRequest,
    views::{ApiKeyView, CreatedApiKeyView, Page, ServerIdentity, SigningKeyView},
};
use actix_web::{HttpResponse, web};

pub fn configure(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(
        resource("/api-keys")
            .route(web::post().to(create_api_key))
            .route(web::get().to(list_api_keys)),
    )
    .service(resource("/api-keys/{id}").route(web::delete().to(revoke_api_key)))
    .service(resource("/signing-key").route(web::get().to(signing_key)))
    .service(resource("/server/whoami").route(web::get().to(server_whoami)));
}

/// Create a game-server API key; the secret is in this response only.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "security", request_body = NewApiKeyRequest, responses(
    (status = 201, body = CreatedApiKeyView),
    (status = 403, body = Problem),
    (status = 422, body = Problem),
))]
pub async fn create_api_key(
    caller: Authorized<Admin>,
    catalog: web::Data<Catalog>,
    Body(request): Body<NewApiKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let created = catalog.create_api_key(&caller.actor, request).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            "Location",
            format!("/api/v1/api-keys/{}", created.api_key.id),
        ))
        .insert_header(("Cache-Control", "no-store"))
        .json(created))
}

/// API keys, newest first, without their secrets.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "security", params(PageQuery), responses(
    (status = 200, body = Page<ApiKeyView>),
    (status = 403, body = Problem),
))]
pub async fn list_api_keys(
    _caller: Authorized<Admin>,
    catalog: web::Data<Catalog>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(catalog.list_api_keys(&query.to_request()?).await?))
}

/// Revoke a key: it stops authenticating at once, and live sessions using it are closed.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "security", responses(
    (status = 200, body = ApiKeyView),
    (status = 404, body = Problem),
))]
pub async fn revoke_api_key(
    caller: Authorized<Admin>,
    catalog: web::Data<Catalog>,
    hub: web::Data<std::sync::Arc<crate::hub::Hub>>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let revoked = catalog.revoke_api_key(&caller.actor, &id).await?;
    let closed = hub.close_sessions_of_key(&revoked.id);
    tracing::info!(key = %revoked.id, sessions = closed, "API key revoked");
    Ok(HttpResponse::Ok().json(revoked))
}

/// The public key that verifies config signatures.
#[utoipa::path(get, path = "/api/v1/signing-key", tag = "security", responses(
    (status = 200, body = SigningKeyView),
))]
pub async fn signing_key(_caller: Authorized<Viewer>, catalog: web::Data<Catalog>) -> HttpResponse {
    HttpResponse::Ok().json(catalog.signing_key())
}

/// Which key a game server presents (`Authorization: Bearer <API key>` or `?token=`).
#[utoipa::path(get, path = "/api/v1/server/whoami", tag = "security", security(("apiKey" = [])), responses(
    (status = 200, body = ServerIdentity),
    (status = 401, body = Problem),
))]
pub async fn server_whoami(ServerKey(identity): ServerKey) -> HttpResponse {
    HttpResponse::Ok().json(identity)
}
