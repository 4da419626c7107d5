//! Config profiles: create, read, list, delete, and the lookups of a
//! config and a version the other use cases share. Versions are
//! `versions.rs`; validating, approving and revalidating them
//! `validating.rs`.

use super::{
    Actor, Catalog, CatalogError, CatalogResult, PageRequest,
    views::{ConfigView, Page, VersionSummary, VersionView},
};
use crate::{
    crypto::keyring,
    domain::{
        kinds::{ConfigType, Environment, Strategy},
        names::{Slug, Tag},
    },
    store::{
        Conn, audit,
        configs::{self, ConfigFilter, ConfigRow, NewConfig},
        now_ms,
        versions::{self, VersionWithContent},
    },
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;
/// Longest description or message, in characters.
const MAX_TEXT_CHARS: usize = 2000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewConfigRequest {
    /// Slug: `[a-z0-9][a-z0-9._-]{0,127}`.
    pub name: String,
    pub config_type: ConfigType,
    pub environment: Environment,
    /// A registered schema id; defaults to the built-in schema of `configType`.
    pub schema_id: Option<String>,
    pub default_strategy: Option<Strategy>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewVersionRequest {
    /// Semver, greater than the config's latest version.
    pub version: String,
    /// The document.
    #[schema(value_type = Value)]
    pub content: Value,
    pub message: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version whose content comes back.
    pub to_version: String,
    /// The new version's label; default: the latest version's next patch number.
    pub version: Option<String>,
    pub message: Option<String>,
}

pub(super) fn invalid(path: &str, message: impl Into<String>) -> CatalogError {
    CatalogError::InvalidField {
        path: path.into(),
        message: message.into(),
    }
}

pub(super) fn check_text(path: &str, text: Option<&str>) -> CatalogResult<()> {
    match text {
        Some(text) if text.chars().count() > MAX_TEXT_CHARS => Err(invalid(
            path,
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        )),
        // PostgreSQL cannot store NUL in TEXT; refuse it here for both stores.
        Some(text) if text.contains('\0') => Err(invalid(path, "must not contain NUL characters")),
        _ => Ok(()),
    }
}

/// Whether `label` can name a stored version: `latest` or a semver label.
/// Anything else cannot exist, so it is "not found" without a query.
pub(super) fn is_version_label(label: &str) -> bool {
    label == "latest" || semver::Version::parse(label).is_ok()
}

pub(super) fn parse_semver(path: &str, text: &str) -> CatalogResult<semver::Version> {
    semver::Version::parse(text).map_err(|error| {
        invalid(
            path,
            format!("{text:?} is not a semantic version (MAJOR.MINOR.PATCH): {error}"),
        )
    })
}

pub(super) fn parse_tags(tags: &[String]) -> CatalogResult<Vec<String>> {
    if tags.len() > Tag::MAX_PER_VERSION {
        return Err(invalid(
            "/tags",
            format!("at most {} tags per version", Tag::MAX_PER_VERSION),
        ));
    }
    let mut unique = BTreeSet::new();
    for (index, tag) in tags.iter().enumerate() {
        let tag = Tag::parse(tag)
            .map_err(|why| invalid(&format!("/tags/{index}"), format!("tag {tag:?} {why}")))?;
        unique.insert(tag.as_str().to_owned());
    }
    Ok(unique.into_iter().collect())
}

pub(super) fn config_resource(name: &str) -> String {
    format!("configs/{name}")
}

pub(super) fn version_resource(name: &str, version: &str) -> String {
    format!("configs/{name}/versions/{version}")
}

impl Catalog {
    pub(super) async fn config(&self, conn: &mut Conn, name: &str) -> CatalogResult<ConfigRow> {
        if Slug::parse(name).is_err() {
            return Err(CatalogError::ConfigNotFound(name.to_owned()));
        }
        configs::by_name(conn, name)
            .await?
            .ok_or_else(|| CatalogError::ConfigNotFound(name.to_owned()))
    }

    /// A version by label, or `latest`.
    pub(super) async fn version(
        &self,
        conn: &mut Conn,
        config: &ConfigRow,
        label: &str,
    ) -> CatalogResult<VersionWithContent> {
        if !is_version_label(label) {
            return Err(CatalogError::VersionNotFound {
                config: config.name.clone(),
                version: label.to_owned(),
            });
        }
        let found = if label == "latest" {
            versions::latest(conn, &config.id).await?
        } else {
            versions::by_label(conn, &config.id, label).await?
        };
        found.ok_or_else(|| CatalogError::VersionNotFound {
            config: config.name.clone(),
            version: label.to_owned(),
        })
    }

    pub(super) async fn summary(
        &self,
        conn: &mut Conn,
        config: &ConfigRow,
        version: versions::VersionRow,
    ) -> CatalogResult<VersionSummary> {
        let tags = versions::tags(conn, &config.id, &[version.revision]).await?;
        Ok(VersionSummary::new(
            config,
            version,
            tags.into_iter().map(|(_, tag)| tag).collect(),
        ))
    }

    pub(super) async fn view(
        &self,
        conn: &mut Conn,
        config: &ConfigRow,
        version: VersionWithContent,
    ) -> CatalogResult<VersionView> {
        let content = masked_stored(&version.content)?;
        Ok(VersionView {
            summary: self.summary(conn, config, version.meta).await?,
            content,
        })
    }

    pub async fn create_config(
        &self,
        actor: &Actor,
        request: NewConfigRequest,
    ) -> CatalogResult<ConfigView> {
        let mut span = self
            .tracer
            .start("config.create", crate::observability::traces::current());
        span.set(
            "config",
            crate::observability::traces::AttrValue::Text(request.name.chars().take(64).collect()),
        );
        let created = self.create_config_traced(actor, request).await;
        if let Err(error) = &created {
            span.fail(error.to_string());
        }
        created
    }

    async fn create_config_traced(
        &self,
        actor: &Actor,
        request: NewConfigRequest,
    ) -> CatalogResult<ConfigView> {
        let name =
            Slug::parse(&request.name).map_err(|why| invalid("/name", format!("name {why}")))?;
        check_text("/description", request.description.as_deref())?;
        let schema_id = match request.schema_id.as_deref() {
            Some(id) => {
                let mut conn = self.store.conn().await?;
                let registered = Slug::parse(id).is_ok()
                    && crate::store::schemas::latest(&mut conn, id)
                        .await?
                        .is_some();
                if !registered {
                    return Err(invalid(
                        "/schemaId",
                        format!("no schema {id:?} is registered"),
                    ));
                }
                Some(id.to_owned())
            }
            None => request.config_type.builtin_schema_id().map(str::to_owned),
        };
        let mut conn = self.store.conn().await?;
        if configs::name_taken(&mut conn, name.as_str()).await? {
            return Err(CatalogError::ConfigExists(name.to_string()));
        }
        drop(conn);
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        configs::insert(
            &mut tx,
            &NewConfig {
                id: &id,
                name: name.as_str(),
                config_type: request.config_type.as_str(),
                environment: request.environment.as_str(),
                schema_id: schema_id.as_deref(),
                default_strategy: request.default_strategy.map(Strategy::as_str),
                description: request.description.as_deref(),
                created_by: &actor.subject,
                created_at: now,
            },
        )
        .await
        .map_err(|error| match error {
            crate::store::StoreError::Conflict => CatalogError::ConfigExists(name.to_string()),
            other => other.into(),
        })?;
        audit::record(
            &mut tx,
            actor.audit_entry(
                "config.create",
                config_resource(name.as_str()),
                json!({
                    "configType": request.config_type,
                    "environment": request.environment,
                    "schemaId": schema_id,
                }),
            ),
        )
        .await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        self.meters.configs_created.inc();
        self.get_config(name.as_str()).await
    }

    pub async fn get_config(&self, name: &str) -> CatalogResult<ConfigView> {
        let mut conn = self.store.conn().await?;
        Ok(self.config(&mut conn, name).await?.into())
    }

    pub async fn list_configs(
        &self,
        mut filter: ConfigFilter,
        page: &PageRequest,
    ) -> CatalogResult<Page<ConfigView>> {
        filter.after_name = page.position()?;
        let mut conn = self.store.conn().await?;
        let rows = configs::list(&mut conn, &filter, page.fetch_limit()).await?;
        Ok(page.page(rows, |row| row.name.clone(), ConfigView::from))
    }

    /// Retires a config: it disappears from the API, its history and audit
    /// rows stay, and its name is never given to another config.
    pub async fn delete_config(&self, actor: &Actor, name: &str) -> CatalogResult<()> {
        let mut conn = self.store.conn().await?;
        let config = self.config(&mut conn, name).await?;
        drop(conn);
        let mut tx = self.store.begin().await?;
        if !configs::mark_deleted(&mut tx, &config.id, &actor.subject, now_ms()).await? {
            return Err(CatalogError::ConfigNotFound(name.to_owned()));
        }
        audit::record(
            &mut tx,
            actor.audit_entry(
                "config.delete",
                config_resource(name),
                json!({ "latestVersion": config.latest_version }),
            ),
        )
        .await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        Ok(())
    }
}

/// A stored document with its secrets masked: what the API shows.
pub(super) fn masked_stored(text: &str) -> CatalogResult<Value> {
    let mut document = parse_stored(text)?;
    keyring::mask(&mut document);
    Ok(document)
}

pub(super) fn parse_stored(text: &str) -> CatalogResult<Value> {
    serde_json::from_str(text).map_err(|e| {
        CatalogError::Unexpected(anyhow::Error::new(e).context("stored document is not JSON"))
    })
}

pub(super) fn parse_stored_semver(text: &str) -> CatalogResult<semver::Version> {
    semver::Version::parse(text).map_err(|e| {
        CatalogError::Unexpected(anyhow::Error::new(e).context("stored version is not semver"))
    })
}
