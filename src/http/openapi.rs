//! The OpenAPI document generated from the handlers, and the API explorer
//! (Swagger UI, vendored into the binary: no CDN).

use super::auth::DocsViewer;
use actix_web::{HttpResponse, middleware, web};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        ContentBuilder, Ref, RefOr, Response, ResponseBuilder,
        path::ParameterIn,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_swagger_ui::{Config, SwaggerUi};

#[derive(OpenApi)]
#[openapi(
    info(title = "HotSwap", description = "Real-time configuration and live-ops hub for online games"),
    paths(
        super::health::health,
        super::health::ready,
        super::prometheus::metrics,
        crate::feed::socket::stream,
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
        super::live_ops::create_segment,
        super::live_ops::list_segments,
        super::live_ops::get_segment,
        super::live_ops::update_segment,
        super::live_ops::delete_segment,
        super::live_ops::segment_members,
        super::live_ops::create_event,
        super::live_ops::list_events,
        super::live_ops::timeline,
        super::live_ops::get_event,
        super::live_ops::update_event,
        super::live_ops::delete_event,
        super::live_ops::activate_event,
        super::live_ops::pause_event,
        super::live_ops::resume_event,
        super::live_ops::end_event,
        super::live_ops::cancel_event,
        super::live_ops::event_metrics,
        super::live_ops::active_events,
        super::live_ops::player_config,
        super::live_ops::resolve_players,
        super::experiments::create_experiment,
        super::experiments::list_experiments,
        super::experiments::get_experiment,
        super::experiments::update_experiment,
        super::experiments::start_experiment,
        super::experiments::pause_experiment,
        super::experiments::resume_experiment,
        super::experiments::finish_experiment,
        super::experiments::promote_experiment,
        super::experiments::experiment_results,
        super::experiments::assignments,
        super::telemetry::batch,
        super::telemetry::put_event_type,
        super::telemetry::list_event_types,
        super::telemetry::get_event_type,
        super::manifest::manifest,
        super::telemetry::kpi,
        crate::ws::servers::server_socket,
    ),
    modifiers(&BearerScheme, &ProblemResponses),
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
        (name = "live ops", description = "Segments and live events"),
        (name = "players", description = "What a player sees: resolved configs, active events, experiment assignments; telemetry in"),
        (name = "experiments", description = "Player experiments (A/B/n): lifecycle, results, promotion"),
        (name = "telemetry", description = "The telemetry event taxonomy"),
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

/// Every operation's error answers as the hub gives them: problem+json
/// bodies (RFC 9457), and the statuses any route of its kind answers: 401,
/// 403 (user routes), 429 and 503 everywhere under `/api/v1`; 400, 413,
/// 415 and 422 where a body is read; 400 where a query is read; 404 where
/// a path names something.
#[derive(Debug)]
struct ProblemResponses;

fn problem(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
        .into()
}

const PROBLEM_JSON: &str = "application/problem+json";

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, response) in operation.responses.responses.iter_mut() {
                    if let (true, RefOr::T(response)) = (status.as_str() >= "400", response)
                        && let Some(content) = response.content.shift_remove("application/json")
                    {
                        response.content.insert(PROBLEM_JSON.to_owned(), content);
                    }
                }
                if !path.starts_with("/api/v1/") {
                    continue;
                }
                let reads_query = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query));
                let names_something = path.contains('{');
                let body = operation.request_body.is_some();
                let user_route = path != "/api/v1/server/whoami";
                let mut expected = vec![
                    (
                        "401",
                        "no credentials, or credentials that are not valid here",
                    ),
                    ("429", "rate limited (`Retry-After`)"),
                    (
                        "503",
                        "a dependency (the store) is unavailable (`Retry-After`)",
                    ),
                ];
                if user_route {
                    expected.push(("403", "the caller's role may not do this"));
                }
                if body {
                    expected.extend([
                        ("400", "the body is not JSON (or YAML) at all"),
                        ("413", "the body is too large"),
                        ("415", "the content type is not JSON (or YAML)"),
                        ("422", "the body does not fit the request's shape or rules"),
                    ]);
                }
                if reads_query {
                    expected.push(("400", "a query parameter cannot be read"));
                }
                if names_something {
                    expected.push(("404", "nothing by that name or id"));
                }
                for (status, description) in expected {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem(description));
                }
            }
        }
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
