//! The schema registry: versions with a compatibility mode, breaking-change
//! checks, and a cache of compiled validators.

use super::{
    Actor, Catalog, CatalogError, CatalogResult, PageRequest,
    builtin::BUILTIN_SCHEMAS,
    views::{Page, SchemaSummary, SchemaView},
};
use crate::{
    domain::{
        compat,
        kinds::Compatibility,
        names::Slug,
        secrets,
        validation::{self, CompiledRules, SchemaRef, ValidationReport},
    },
    store::{
        Conn, StoreError, audit, now_ms,
        schemas::{self, NewSchema, SchemaRow},
    },
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSchemaRequest {
    /// Slug naming the schema; a known id gets a new version.
    pub id: String,
    /// Semver, greater than the schema's latest version.
    pub version: String,
    /// Default: the previous version's mode, or `backward` for a new schema.
    pub compatibility: Option<Compatibility>,
    /// A JSON Schema document (draft 2020-12 unless `$schema` says otherwise).
    #[schema(value_type = Value)]
    pub schema: Value,
    pub description: Option<String>,
    /// Accept changes the compatibility mode forbids; recorded with the approver.
    #[serde(default)]
    pub approve_breaking: bool,
}

/// Compiled validators by (schema id, seq). Schema versions are immutable, so
/// an entry never goes stale.
#[derive(Debug, Default, Clone)]
pub(super) struct ValidatorCache(Arc<RwLock<HashMap<SchemaKey, Arc<CompiledSchema>>>>);

/// One schema version, compiled, with what it says about secrets.
#[derive(Debug)]
pub(super) struct CompiledSchema {
    pub rules: CompiledRules,
    pub document: Value,
    /// Whether any subschema marks `x-secret` (most schemas do not: skip the walk).
    pub has_secrets: bool,
}

impl CompiledSchema {
    /// The secret values `document` holds under this schema.
    pub fn secret_paths(&self, document: &Value) -> Vec<String> {
        if self.has_secrets {
            secrets::secret_paths(&self.document, document)
        } else {
            Vec::new()
        }
    }

    /// A validation against this schema, and what to seal: the values the
    /// schema marks secret and those at pointers `ever_sealed` (a config's
    /// values once secret stay sealed).
    pub fn validate(
        &self,
        row: &SchemaRow,
        document: &Value,
        previous: Option<&Value>,
        ever_sealed: &[String],
    ) -> CatalogResult<(ValidationReport, Vec<String>)> {
        let secret_paths =
            secrets::paths_to_seal(&self.secret_paths(document), ever_sealed, document);
        let report = validation::validate(
            Some(SchemaRef {
                id: &row.schema_id,
                version: &row.version,
                rules: &self.rules,
            }),
            document,
            previous,
            &secret_paths,
        )
        .map_err(|too_costly| CatalogError::ValidationTooCostly {
            budget: too_costly.budget,
        })?;
        Ok((report, secret_paths))
    }
}

/// (schema id, seq): one immutable schema version.
type SchemaKey = (String, i64);

impl ValidatorCache {
    fn get_or_compile(&self, row: &SchemaRow) -> CatalogResult<Arc<CompiledSchema>> {
        let key = (row.schema_id.clone(), row.seq);
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        if let Some(found) = hotswap_client::sync::read(&self.0).get(&key) {
            return Ok(found.clone());
        }
        let document: Value = serde_json::from_str(&row.document).map_err(|e| {
            CatalogError::Unexpected(anyhow::Error::new(e).context("stored schema is not JSON"))
        })?;
        let rules = validation::compile(&document).map_err(CatalogError::InvalidSchema)?;
        let compiled = Arc::new(CompiledSchema {
            rules,
            has_secrets: secrets::schema_has_secrets(&document),
            document,
        });
        hotswap_client::sync::write(&self.0).insert(key, compiled.clone());
        Ok(compiled)
    }
}

fn schema_resource(id: &str, version: &str) -> String {
    format!("schemas/{id}/versions/{version}")
}

impl Catalog {
    /// The latest version of a schema and its compiled validator.
    pub(super) async fn validator_for(
        &self,
        conn: &mut Conn,
        schema_id: &str,
    ) -> CatalogResult<(SchemaRow, Arc<CompiledSchema>)> {
        if Slug::parse(schema_id).is_err() {
            return Err(CatalogError::SchemaNotFound(schema_id.to_owned()));
        }
        let row = schemas::latest(conn, schema_id)
            .await?
            .ok_or_else(|| CatalogError::SchemaNotFound(schema_id.to_owned()))?;
        let compiled = self.validators.get_or_compile(&row)?;
        Ok((row, compiled))
    }

    pub async fn register_schema(
        &self,
        actor: &Actor,
        request: NewSchemaRequest,
    ) -> CatalogResult<SchemaView> {
        let description = request.description.as_deref().unwrap_or_default();
        if description.chars().count() > 2000 || description.contains('\0') {
            return Err(CatalogError::InvalidField {
                path: "/description".into(),
                message: "must be at most 2000 characters, without NUL".into(),
            });
        }
        let id = Slug::parse(&request.id).map_err(|why| CatalogError::InvalidField {
            path: "/id".into(),
            message: format!("id {why}"),
        })?;
        let version =
            semver::Version::parse(&request.version).map_err(|e| CatalogError::InvalidField {
                path: "/version".into(),
                message: format!("{:?} is not a semantic version: {e}", request.version),
            })?;
        validation::compile(&request.schema).map_err(|mut invalid| {
            invalid.path = format!("/schema{}", invalid.path);
            CatalogError::InvalidSchema(invalid)
        })?;
        let mut conn = self.store.conn().await?;
        let latest = schemas::latest(&mut conn, id.as_str()).await?;
        drop(conn);
        let (seq, mode, approved_by) = match &latest {
            None => (
                1,
                request.compatibility.unwrap_or(Compatibility::Backward),
                None,
            ),
            Some(latest) => {
                if latest.version == version.to_string() {
                    return Err(CatalogError::VersionExists {
                        version: version.to_string(),
                        latest: latest.version.clone(),
                    });
                }
                let latest_version = semver::Version::parse(&latest.version)
                    .map_err(|e| CatalogError::Unexpected(e.into()))?;
                if version.cmp_precedence(&latest_version) != std::cmp::Ordering::Greater {
                    return Err(CatalogError::VersionNotGreater {
                        version: version.to_string(),
                        latest: latest.version.clone(),
                    });
                }
                let old_mode: Compatibility = latest
                    .compatibility
                    .parse()
                    .map_err(|e: String| CatalogError::Unexpected(anyhow::anyhow!(e)))?;
                let mode = request.compatibility.unwrap_or(old_mode);
                let old: Value = serde_json::from_str(&latest.document)
                    .map_err(|e| CatalogError::Unexpected(e.into()))?;
                let breaking =
                    compat::breaking_schema_changes(&old, &request.schema, old_mode, mode);
                let approved_by = match (breaking.is_empty(), request.approve_breaking) {
                    (true, _) => None,
                    (false, true) => Some(actor.subject.clone()),
                    (false, false) => {
                        return Err(CatalogError::BreakingSchemaChange {
                            mode: mode.to_string(),
                            changes: breaking,
                        });
                    }
                };
                (latest.seq + 1, mode, approved_by)
            }
        };
        let document = request.schema.to_string();
        let version_text = version.to_string();
        let mut tx = self.store.begin().await?;
        schemas::insert(
            &mut tx,
            &NewSchema {
                schema_id: id.as_str(),
                seq,
                version: &version_text,
                compatibility: mode.as_str(),
                document: &document,
                description: request.description.as_deref(),
                builtin: false,
                created_by: &actor.subject,
                created_at: now_ms(),
                breaking_approved_by: approved_by.as_deref(),
            },
        )
        .await?;
        audit::record(
            &mut tx,
            actor.audit_entry("schema.register", schema_resource(id.as_str(), &version_text), json!({ "compatibility": mode, "breakingApprovedBy": approved_by, "previous": latest.as_ref().map(|l| &l.version) })),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.get_schema(id.as_str(), Some(&version_text)).await
    }

    pub async fn get_schema(&self, id: &str, version: Option<&str>) -> CatalogResult<SchemaView> {
        if Slug::parse(id).is_err() {
            return Err(CatalogError::SchemaNotFound(id.to_owned()));
        }
        let mut conn = self.store.conn().await?;
        let all = schemas::versions(&mut conn, id).await?;
        let row = match version {
            None => all.first(),
            Some(version) => all.iter().find(|row| row.version == version),
        }
        .ok_or_else(|| {
            CatalogError::SchemaNotFound(match version {
                Some(version) => format!("{id}@{version}"),
                None => id.to_owned(),
            })
        })?;
        Ok(SchemaView {
            summary: SchemaSummary::from(row),
            schema: serde_json::from_str(&row.document)
                .map_err(|e| CatalogError::Unexpected(e.into()))?,
            versions: all.iter().map(|row| row.version.clone()).collect(),
        })
    }

    pub async fn list_schemas(&self, page: &PageRequest) -> CatalogResult<Page<SchemaSummary>> {
        let after = page.position()?;
        let mut conn = self.store.conn().await?;
        let rows = schemas::list_latest(&mut conn, after.as_deref(), page.fetch_limit()).await?;
        Ok(page.page(
            rows,
            |row| row.schema_id.clone(),
            |row| SchemaSummary::from(&row),
        ))
    }

    /// Validates any document against a schema's latest (or given) version.
    pub async fn validate_with_schema(
        &self,
        id: &str,
        version: Option<&str>,
        document: Value,
    ) -> CatalogResult<ValidationReport> {
        let known_shape =
            Slug::parse(id).is_ok() && version.is_none_or(|v| semver::Version::parse(v).is_ok());
        if !known_shape {
            return Err(CatalogError::SchemaNotFound(id.to_owned()));
        }
        let mut conn = self.store.conn().await?;
        let row = match version {
            None => schemas::latest(&mut conn, id).await?,
            Some(version) => schemas::by_version(&mut conn, id, version).await?,
        }
        .ok_or_else(|| CatalogError::SchemaNotFound(id.to_owned()))?;
        drop(conn);
        let compiled = self.validators.get_or_compile(&row)?;
        self.off_thread(move || Ok(compiled.validate(&row, &document, None, &[])?.0))
            .await
    }

    /// Registers each built-in schema version the store does not have yet.
    /// Idempotent; safe when several hub nodes start at once.
    pub async fn install_builtin_schemas(&self) -> anyhow::Result<()> {
        let actor = Actor::system();
        for builtin in BUILTIN_SCHEMAS {
            let document: Value = serde_json::from_str(builtin.document)
                .map_err(|e| anyhow::anyhow!("built-in schema {} is not JSON: {e}", builtin.id))?;
            validation::compile(&document).map_err(|e| {
                anyhow::anyhow!("built-in schema {} does not compile: {e}", builtin.id)
            })?;
            let mut conn = self.store.conn().await?;
            let latest = schemas::latest(&mut conn, builtin.id).await?;
            drop(conn);
            let seq = match &latest {
                Some(latest) => {
                    let stored = semver::Version::parse(&latest.version)?;
                    if stored >= semver::Version::parse(builtin.version)? {
                        continue;
                    }
                    latest.seq + 1
                }
                None => 1,
            };
            let mut tx = self.store.begin().await?;
            let inserted = schemas::insert(
                &mut tx,
                &NewSchema {
                    schema_id: builtin.id,
                    seq,
                    version: builtin.version,
                    compatibility: Compatibility::Backward.as_str(),
                    document: &document.to_string(),
                    description: Some(builtin.description),
                    builtin: true,
                    created_by: &actor.subject,
                    created_at: now_ms(),
                    breaking_approved_by: None,
                },
            )
            .await;
            match inserted {
                // Another node installed it first.
                Err(StoreError::Conflict) => continue,
                other => other?,
            }
            audit::record(
                &mut tx,
                actor.audit_entry(
                    "schema.install-builtin",
                    schema_resource(builtin.id, builtin.version),
                    json!({ "builtin": true }),
                ),
            )
            .await?;
            tx.commit().await?;
            tracing::info!(
                schema = builtin.id,
                version = builtin.version,
                "installed built-in schema"
            );
        }
        Ok(())
    }
}
