//! `GET /api/v1/manifest`: the content manifest a client reads at launch.

use super::{
    auth::PlayerCaller,
    method_not_allowed,
    problem::{ApiError, Problem},
};
use crate::liveops::{LiveOps, ManifestQuery, ManifestView};
use actix_web::{HttpResponse, web};
use std::sync::Arc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/manifest")
            .default_service(web::to(method_not_allowed))
            .route(web::get().to(manifest)),
    );
}

/// The content version live for the client's platform (and region), its
/// hash, the oldest client build allowed and whether this one must
/// update (semver precedence: `1.4.0-rc.1` comes before `1.4.0`).
/// Query: `clientVersion` (required), `platform`, `region`, `config`
/// (default `liveops.manifest_config`).
#[utoipa::path(get, path = "/api/v1/manifest", tag = "players", params(
    ("clientVersion" = String, Query, description = "the client's build, a semantic version"),
    ("platform" = Option<String>, Query, description = "ios, android, pc...: the manifest's `platforms` entry applies"),
    ("region" = Option<String>, Query, description = "the client's region: a manifest rolled out by region"),
    ("config" = Option<String>, Query, description = "a ContentManifest config other than the default"),
), responses(
    (status = 200, body = ManifestView),
    (status = 404, description = "no such config", body = Problem),
    (status = 422, description = "a query parameter is invalid, or the config is no manifest", body = Problem),
))]
pub async fn manifest(
    caller: PlayerCaller,
    liveops: web::Data<Arc<LiveOps>>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let mut read = ManifestQuery::default();
    for (key, value) in query.into_inner() {
        let slot = match key.as_str() {
            "config" => &mut read.config,
            "platform" => &mut read.platform,
            "clientVersion" => &mut read.client_version,
            "region" => &mut read.region,
            other => {
                return Err(ApiError::InvalidQuery(format!(
                    "{:?}: unknown parameter (clientVersion, platform, region, config)",
                    other.chars().take(64).collect::<String>()
                )));
            }
        };
        if slot.replace(value).is_some() {
            return Err(ApiError::InvalidQuery(format!("{key}: given twice")));
        }
    }
    if read.config.is_some() && caller.player.is_some() {
        // Players read the studio's manifest; naming configs would tell
        // them which exist.
        return Err(ApiError::Forbidden(crate::auth::AuthError::Denied(
            "a player's token reads the default manifest: `config` is for staff and game servers"
                .into(),
        )));
    }
    // A region or platform the player's token vouches for wins.
    if let Some(vouched) = caller
        .vouched
        .as_deref()
        .filter(|_| caller.player.is_some())
    {
        for (key, slot) in [
            ("region", &mut read.region),
            ("platform", &mut read.platform),
        ] {
            if let Some(value) = vouched.get(key).and_then(serde_json::Value::as_str) {
                *slot = Some(value.to_owned());
            }
        }
    }
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(liveops.manifest(read).await?))
}
