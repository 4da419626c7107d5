//! What the hub needs from the catalog to serve game servers: documents
//! with their secrets opened (the only place they are), and the facts a
//! deployment checks.

use super::{Catalog, CatalogError, CatalogResult};
use crate::{domain::names::Slug, store::versions};
use serde_json::Value;

/// A version as game servers receive it.
#[derive(Debug, Clone)]
pub struct ServedVersion {
    pub config: String,
    pub revision: i64,
    pub version: String,
    /// The document with secrets in clear: it goes into frames, nowhere else.
    pub document: Value,
    pub checksum: String,
    pub signature: Option<String>,
}

/// What a deployment needs to know about its target.
#[derive(Debug, Clone)]
pub struct DeploymentTarget {
    pub config_id: String,
    pub config: String,
    pub environment: String,
    pub revision: i64,
    pub version: String,
    pub breaking: bool,
    pub approved: bool,
}

impl Catalog {
    /// A live config's row and one of its stored versions, by revision.
    async fn stored_version(
        &self,
        config: &str,
        revision: i64,
    ) -> CatalogResult<
        Option<(
            crate::store::configs::ConfigRow,
            versions::VersionWithContent,
        )>,
    > {
        if Slug::parse(config).is_err() {
            return Ok(None);
        }
        let mut conn = self.store.conn().await?;
        let Some(row) = crate::store::configs::by_name(&mut conn, config).await? else {
            return Ok(None);
        };
        Ok(versions::by_revision(&mut conn, &row.id, revision)
            .await?
            .map(|stored| (row, stored)))
    }

    /// A version of a live config by revision, secrets opened; `None` when
    /// the config or revision does not exist.
    pub async fn served_version(
        &self,
        config: &str,
        revision: i64,
    ) -> CatalogResult<Option<ServedVersion>> {
        let Some((row, stored)) = self.stored_version(config, revision).await? else {
            return Ok(None);
        };
        let mut document: Value = serde_json::from_str(&stored.content).map_err(|e| {
            CatalogError::Unexpected(anyhow::Error::new(e).context("stored document is not JSON"))
        })?;
        self.keys
            .keyring
            .open_all(&mut document)
            .map_err(CatalogError::Secrets)?;
        Ok(Some(ServedVersion {
            config: row.name,
            revision,
            version: stored.meta.version,
            document,
            checksum: stored.meta.checksum,
            signature: stored.meta.signature,
        }))
    }

    /// A version's document as players may see it (secrets masked), by
    /// revision; `None` when the config or revision does not exist.
    pub async fn player_document(
        &self,
        config: &str,
        revision: i64,
    ) -> CatalogResult<Option<Value>> {
        let Some((_, stored)) = self.stored_version(config, revision).await? else {
            return Ok(None);
        };
        super::configs::masked_stored(&stored.content).map(Some)
    }

    /// The version a deployment would roll out.
    pub async fn deployment_target(
        &self,
        config: &str,
        label: &str,
    ) -> CatalogResult<DeploymentTarget> {
        let mut conn = self.store.conn().await?;
        let row = self.config(&mut conn, config).await?;
        let version = self.version(&mut conn, &row, label).await?;
        Ok(DeploymentTarget {
            config_id: row.id,
            config: row.name,
            environment: row.environment,
            revision: version.meta.revision,
            version: version.meta.version,
            breaking: version.meta.breaking != 0,
            approved: version.meta.approved_by.is_some(),
        })
    }
}
