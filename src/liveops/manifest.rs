//! `GET /manifest`: the content manifest a client of one platform and
//! build reads at launch, from the `ContentManifest` config as a server in
//! the client's region runs it (so a geographic or canary rollout of a new
//! manifest reaches regions in turn, and its rollback flips them back).

use super::{LiveOps, LiveOpsResult, invalid};
use crate::{
    catalog::{CatalogError, views::rfc3339},
    domain::manifest::{for_platform, parse_platform, parse_version, update_required},
};
use serde::Serialize;
use utoipa::ToSchema;

/// What a client asks.
#[derive(Debug, Clone, Default)]
pub struct ManifestQuery {
    /// The manifest config (default `liveops.manifest_config`).
    pub config: Option<String>,
    pub platform: Option<String>,
    pub client_version: Option<String>,
    pub region: Option<String>,
}

/// The answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestView {
    pub config: String,
    /// The config revision the answer was read from.
    pub revision: i64,
    pub platform: Option<String>,
    pub active_version: String,
    /// `sha256:<hex>` of the content archive.
    pub content_hash: String,
    pub min_supported_client_version: String,
    /// The client's build comes before `minSupportedClientVersion`.
    pub update_required: bool,
    pub server_time: String,
}

impl LiveOps {
    pub async fn manifest(&self, query: ManifestQuery) -> LiveOpsResult<ManifestView> {
        let config = query
            .config
            .unwrap_or_else(|| self.settings.manifest_config.clone());
        crate::domain::names::Slug::parse(&config)
            .map_err(|e| invalid("/query/config", e.to_string()))?;
        let platform = query
            .platform
            .map(|p| parse_platform(&p))
            .transpose()
            .map_err(|e| invalid("/query/platform", e))?;
        let client = query
            .client_version
            .ok_or_else(|| {
                invalid(
                    "/query/clientVersion",
                    "required: the client's build, 1.4.2",
                )
            })
            .and_then(|v| parse_version(&v).map_err(|e| invalid("/query/clientVersion", e)))?;
        let region = query.region.unwrap_or_default();
        if region.chars().count() > 64 {
            return Err(invalid("/query/region", "at most 64 characters"));
        }
        let revision = self
            .hub
            .player_base(&config, &region)
            .ok_or_else(|| CatalogError::ConfigNotFound(config.clone()))?;
        let document = self.base_document(&config, revision).await?;
        let manifest = for_platform(&document, platform.as_deref())
            .map_err(|e| invalid("/query/config", e))?;
        Ok(ManifestView {
            config,
            revision,
            platform,
            update_required: update_required(&client, &manifest.min_supported_client_version),
            active_version: manifest.active_version.to_string(),
            content_hash: manifest.content_hash,
            min_supported_client_version: manifest.min_supported_client_version.to_string(),
            server_time: rfc3339(self.now_ms()),
        })
    }
}
