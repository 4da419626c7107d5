//! The OpenAPI document generated from the handlers, and the API explorer
//! (Swagger UI, vendored into the binary: no CDN).

use actix_web::{HttpResponse, web};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

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
    ),
    tags(
        (name = "configs", description = "Config profiles"),
        (name = "versions", description = "Immutable, validated config versions"),
        (name = "schemas", description = "JSON Schemas with game rules"),
        (name = "audit", description = "Who changed what"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(SwaggerUi::new("/docs/{_:.*}").url("/api/v1/openapi.json", ApiDoc::openapi()))
        .route(
            "/docs",
            web::get().to(|| async {
                HttpResponse::PermanentRedirect()
                    .insert_header(("Location", "/docs/"))
                    .finish()
            }),
        );
}
