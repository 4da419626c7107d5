//! The OpenAPI document generated from the handlers, and the API explorer
//! (Swagger UI, vendored into the binary: no CDN).

use super::auth::DocsViewer;
use actix_web::{HttpResponse, middleware, web};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_swagger_ui::{Config, SwaggerUi};

#[derive(OpenApi)]
#[openapi(
    info(title = "HotSwap", description = "Real-time configuration and live-ops hub for online games"),
    paths(
        super::health::health,
        super::health::ready,
        super::configs::create_config,
        super::configs::list_configs,
        super::configs::get_config,
        super::configs::delete_config,
        super::configs::create_version,
        super::configs::list_versions,
        super::configs::get_version,
        super::configs::diff_versions,
        super::configs::set_tags,
        super::configs::validate_version,
        super::configs::validation_report,
        super::configs::approve_version,
        super::configs::rollback,
        super::schemas::register_schema,
        super::schemas::list_schemas,
        super::schemas::get_schema,
        super::schemas::validate_document,
        super::audit::list_audit,
        super::audit::verify_audit,
        super::security::create_api_key,
        super::security::list_api_keys,
        super::security::revoke_api_key,
        super::security::signing_key,
        super::security::server_whoami,
        super::game_servers::list_servers,
        super::game_servers::get_server,
        super::game_servers::update_server,
        super::game_servers::deregister_server,
        super::deployments::create_deployment,
        super::deployments::list_deployments,
        super::deployments::get_deployment,
        super::deployments::pause,
        super::deployments::resume,
        super::deployments::promote,
        super::deployments::cancel,
        super::deployments::approve,
        super::deployments::rollback,
        super::deployments::rollback_status,
        super::deployments::rollback_thresholds,
        super::deployments::deployment_servers,
        super::deployments::deployment_metrics,
        super::deployments::aggregated_metrics,
        super::deployments::player_feedback,
        crate::ws::servers::server_socket,
    ),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    tags(
        (name = "configs", description = "Config profiles"),
        (name = "versions", description = "Immutable, validated config versions"),
        (name = "schemas", description = "JSON Schemas with game rules"),
        (name = "audit", description = "Who changed what, hash-chained"),
        (name = "security", description = "Game-server API keys and the config signing key"),
        (name = "game servers", description = "The registry, and the game-server socket"),
        (name = "deployments", description = "Rolling a version out to game servers"),
        (name = "metrics", description = "Player metrics across servers, and player feedback"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

/// Adds the bearer scheme every `/api/v1` operation requires, and the API
/// key game servers present (also as a bearer token).
#[derive(Debug)]
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("hsk_ API key")
                    .build(),
            ),
        );
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/openapi.json", web::get().to(openapi_document))
        .service(
            web::scope("/docs")
                .wrap(middleware::from_fn(super::auth::docs_guard))
                .service(SwaggerUi::new("/{_:.*}").config(Config::from("/api/v1/openapi.json"))),
        );
}

/// The OpenAPI document (viewer token, or the explorer's cookie).
pub async fn openapi_document(_viewer: DocsViewer) -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
