//! Config profiles and their versions: create, read, history, diff, tags,
//! approval, revalidation and rollback.

use super::{
    Actor, Catalog, CatalogError, CatalogResult, PageRequest,
    schemas::CompiledSchema,
    views::{
        ConfigView, DiffView, Page, StoredReportView, VersionRefView, VersionSummary, VersionView,
        rfc3339,
    },
};
use crate::{
    crypto::keyring,
    domain::{
        diff, document,
        kinds::{ConfigType, Environment, Strategy},
        names::{Slug, Tag},
        secrets,
        validation::{self, ValidationReport},
    },
    store::{
        Conn, audit,
        configs::{self, ConfigFilter, ConfigRow, NewConfig},
        now_ms,
        schemas::SchemaRow,
        versions::{self, NewVersion, VersionWithContent},
    },
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::{collections::BTreeSet, sync::Arc};

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

fn invalid(path: &str, message: impl Into<String>) -> CatalogError {
    CatalogError::InvalidField {
        path: path.into(),
        message: message.into(),
    }
}

fn check_text(path: &str, text: Option<&str>) -> CatalogResult<()> {
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
fn is_version_label(label: &str) -> bool {
    label == "latest" || semver::Version::parse(label).is_ok()
}

fn parse_semver(path: &str, text: &str) -> CatalogResult<semver::Version> {
    semver::Version::parse(text).map_err(|error| {
        invalid(
            path,
            format!("{text:?} is not a semantic version (MAJOR.MINOR.PATCH): {error}"),
        )
    })
}

fn parse_tags(tags: &[String]) -> CatalogResult<Vec<String>> {
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

fn config_resource(name: &str) -> String {
    format!("configs/{name}")
}

fn version_resource(name: &str, version: &str) -> String {
    format!("configs/{name}/versions/{version}")
}

/// What validating a config's document needs from the store.
struct ValidationInputs {
    ever_sealed: Vec<String>,
    schema: Option<(SchemaRow, Arc<CompiledSchema>)>,
}

/// A validation's outcome, with the documents it was given.
struct Validated {
    report: ValidationReport,
    secret_paths: Vec<String>,
    content: Value,
    previous: Option<Value>,
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

    async fn summary(
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

    async fn view(
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

    /// Checks size, depth and reserved strings, and returns the canonical text of `content`.
    fn check_document(&self, content: &Value) -> CatalogResult<String> {
        if let Some(path) = keyring::envelope_paths(content).first() {
            return Err(invalid(
                &format!("/content{path}"),
                format!(
                    "strings starting with {:?} are reserved for encrypted secrets",
                    keyring::ENVELOPE_PREFIX
                ),
            ));
        }
        let depth = document::depth(content);
        if depth > self.limits.max_json_depth {
            return Err(CatalogError::DocumentTooDeep {
                depth,
                max: self.limits.max_json_depth,
            });
        }
        let canonical = hotswap_client::canonical_json(content);
        if canonical.len() > self.limits.max_document_bytes {
            return Err(CatalogError::DocumentTooLarge {
                size: canonical.len(),
                max: self.limits.max_document_bytes,
            });
        }
        String::from_utf8(canonical).map_err(|e| CatalogError::Unexpected(e.into()))
    }

    /// What validating a document of `config` needs from the store: every
    /// pointer the config ever sealed, and its schema.
    async fn validation_inputs(
        &self,
        conn: &mut Conn,
        config: &ConfigRow,
    ) -> CatalogResult<ValidationInputs> {
        let ever_sealed = configs::sealed_paths(conn, &config.id).await?;
        let schema = match config.schema_id.as_deref() {
            Some(schema_id) => Some(self.validator_for(conn, schema_id).await?),
            None => None,
        };
        Ok(ValidationInputs {
            ever_sealed,
            schema,
        })
    }

    /// Validates `content` against the config's schema (if any) and compares
    /// it with `previous` for breaking changes, off the async workers (see
    /// [`Catalog::off_thread`]). Also says what to seal: what the schema
    /// marks secret, and every pointer the config ever sealed (a value once
    /// secret stays sealed). Gives the documents back.
    async fn validate_for(
        &self,
        inputs: ValidationInputs,
        content: Value,
        previous: Option<Value>,
    ) -> CatalogResult<Validated> {
        self.off_thread(move || {
            let ValidationInputs {
                ever_sealed,
                schema,
            } = inputs;
            let (report, secret_paths) = match schema {
                None => {
                    let to_seal = secrets::paths_to_seal(&[], &ever_sealed, &content);
                    let report = validation::validate(None, &content, previous.as_ref(), &to_seal)
                        .map_err(|too_costly| CatalogError::ValidationTooCostly {
                            budget: too_costly.budget,
                        })?;
                    (report, to_seal)
                }
                Some((row, compiled)) => {
                    compiled.validate(&row, &content, previous.as_ref(), &ever_sealed)?
                }
            };
            Ok(Validated {
                report,
                secret_paths,
                content,
                previous,
            })
        })
        .await
    }

    pub async fn create_version(
        &self,
        actor: &Actor,
        name: &str,
        request: NewVersionRequest,
    ) -> CatalogResult<VersionView> {
        let label = parse_semver("/version", &request.version)?;
        check_text("/message", request.message.as_deref())?;
        let tags = parse_tags(&request.tags)?;
        self.add_version(
            actor,
            name,
            label,
            request.content,
            request.message,
            tags,
            None,
        )
        .await
    }

    /// Shared by uploads and rollbacks: checks, validates, and writes the
    /// version, its tags, its report and the audit row in one transaction.
    async fn add_version(
        &self,
        actor: &Actor,
        name: &str,
        label: semver::Version,
        content: Value,
        message: Option<String>,
        tags: Vec<String>,
        rollback_of: Option<String>,
    ) -> CatalogResult<VersionView> {
        let canonical = self.check_document(&content)?;
        let mut conn = self.store.conn().await?;
        let config = self.config(&mut conn, name).await?;
        let latest = versions::latest(&mut conn, &config.id).await?;
        let previous = match &latest {
            Some(latest) => {
                let latest_label = parse_stored_semver(&latest.meta.version)?;
                if versions::by_label(&mut conn, &config.id, &label.to_string())
                    .await?
                    .is_some()
                {
                    return Err(CatalogError::VersionExists {
                        version: label.to_string(),
                        latest: latest.meta.version.clone(),
                    });
                }
                if label.cmp_precedence(&latest_label) != std::cmp::Ordering::Greater {
                    return Err(CatalogError::VersionNotGreater {
                        version: label.to_string(),
                        latest: latest.meta.version.clone(),
                    });
                }
                Some(masked_stored(&latest.content)?)
            }
            None => None,
        };
        let inputs = self.validation_inputs(&mut conn, &config).await?;
        drop(conn);
        let Validated {
            report,
            secret_paths,
            content,
            previous,
        } = self.validate_for(inputs, content, previous).await?;
        if !report.valid {
            return Err(CatalogError::ValidationFailed(Box::new(report)));
        }
        let change_count = previous
            .as_ref()
            .map(|p| diff::changes(p, &secrets::masked(&content, &secret_paths)).len());
        let revision = latest.as_ref().map_or(1, |l| l.meta.revision + 1);
        let version_text = label.to_string();
        // The checksum is of the document servers receive: secrets in clear.
        let checksum = hotswap_client::document_checksum(&content);
        let signature = self.keys.signer.sign(&config.name, revision, &checksum);
        let stored_text = if secret_paths.is_empty() {
            canonical
        } else {
            let mut sealed = content;
            self.keys
                .keyring
                .seal_paths(&mut sealed, &secret_paths)
                .map_err(CatalogError::Secrets)?;
            String::from_utf8(hotswap_client::canonical_json(&sealed))
                .map_err(|e| CatalogError::Unexpected(e.into()))?
        };
        let now = now_ms();
        let report_json =
            serde_json::to_string(&report).map_err(|e| CatalogError::Unexpected(e.into()))?;

        let mut tx = self.store.begin().await?;
        versions::insert(
            &mut tx,
            &NewVersion {
                id: &uuid::Uuid::now_v7().to_string(),
                config_id: &config.id,
                revision,
                version: &version_text,
                content: &stored_text,
                checksum: &checksum,
                size_bytes: stored_text.len() as i64,
                author: &actor.subject,
                message: message.as_deref(),
                rollback_of: rollback_of.as_deref(),
                breaking: report.has_breaking_changes(),
                created_at: now,
                signature: &signature,
                signing_key_id: self.keys.signer.key_id(),
            },
        )
        .await?;
        configs::add_sealed_paths(&mut tx, &config.id, &secret_paths).await?;
        versions::replace_tags(&mut tx, &config.id, revision, &tags, &actor.subject, now).await?;
        versions::insert_report(
            &mut tx,
            &config.id,
            revision,
            report.valid,
            &report_json,
            &actor.subject,
            now,
        )
        .await?;
        audit::record(
            &mut tx,
            actor.audit_entry(
                if rollback_of.is_some() {
                    "config.rollback"
                } else {
                    "version.create"
                },
                version_resource(name, &version_text),
                json!({
                    "revision": revision,
                    "checksum": checksum,
                    "sizeBytes": stored_text.len(),
                    "secretFields": secret_paths.len(),
                    "changes": change_count,
                    "breakingChanges": report.warnings.len(),
                    "rollbackOf": rollback_of,
                    "tags": tags,
                }),
            ),
        )
        .await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;

        let mut conn = self.store.conn().await?;
        let stored = self.version(&mut conn, &config, &version_text).await?;
        self.view(&mut conn, &config, stored).await
    }

    pub async fn list_versions(
        &self,
        name: &str,
        page: &PageRequest,
    ) -> CatalogResult<Page<VersionSummary>> {
        let before = page
            .position()?
            .map(|p| p.parse::<i64>().map_err(|_| CatalogError::InvalidCursor))
            .transpose()?;
        let mut conn = self.store.conn().await?;
        let config = self.config(&mut conn, name).await?;
        let rows = versions::list(&mut conn, &config.id, before, page.fetch_limit()).await?;
        let revisions: Vec<i64> = rows.iter().map(|r| r.revision).collect();
        let mut tags = versions::tags(&mut conn, &config.id, &revisions).await?;
        Ok(page.page(
            rows,
            |row| row.revision.to_string(),
            |row| {
                let mine = tags
                    .iter()
                    .filter(|(revision, _)| *revision == row.revision)
                    .map(|(_, tag)| tag.clone())
                    .collect();
                tags.retain(|(revision, _)| *revision != row.revision);
                VersionSummary::new(&config, row, mine)
            },
        ))
    }

    pub async fn get_version(&self, name: &str, label: &str) -> CatalogResult<VersionView> {
        let mut conn = self.store.conn().await?;
        let config = self.config(&mut conn, name).await?;
        let version = self.version(&mut conn, &config, label).await?;
        self.view(&mut conn, &config, version).await
    }

    pub async fn diff(&self, name: &str, from: &str, to: &str) -> CatalogResult<DiffView> {
        let mut conn = self.store.conn().await?;
        let config = self.config(&mut conn, name).await?;
        let from = self.version(&mut conn, &config, from).await?;
        let to = self.version(&mut conn, &config, to).await?;
        let (mut old, mut new) = (parse_stored(&from.content)?, parse_stored(&to.content)?);
        let changed_secrets = self.changed_secrets(&old, &new);
        keyring::mask(&mut old);
        keyring::mask(&mut new);
        let mut patch = diff::patch(&old, &new);
        let mut changes = diff::changes(&old, &new);
        // Masked, a changed secret looks unchanged: name it without its value.
        for path in changed_secrets {
            if !changes.iter().any(|c| c.path == path) {
                let mask = Value::String(keyring::MASK.into());
                changes.push(diff::Change {
                    path: path.clone(),
                    kind: diff::ChangeKind::Modified,
                    from: Some(mask.clone()),
                    to: Some(mask.clone()),
                });
                let replace: json_patch::PatchOperation =
                    serde_json::from_value(json!({"op": "replace", "path": path, "value": mask}))
                        .map_err(|e| CatalogError::Unexpected(e.into()))?;
                patch.0.push(replace);
            }
        }
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        let patch = serde_json::to_value(patch).map_err(|e| CatalogError::Unexpected(e.into()))?;
        let reference = |v: &VersionWithContent| VersionRefView {
            version: v.meta.version.clone(),
            revision: v.meta.revision,
            checksum: v.meta.checksum.clone(),
        };
        Ok(DiffView {
            config: config.name.clone(),
            from: reference(&from),
            to: reference(&to),
            patch,
            changes,
        })
    }

    /// Paths holding a secret in both documents whose value differs (or
    /// cannot be compared because a key is missing).
    fn changed_secrets(&self, old: &Value, new: &Value) -> Vec<String> {
        let keyring = &self.keys.keyring;
        keyring::envelope_paths(new)
            .into_iter()
            .filter(|path| {
                let (Some(Value::String(a)), Some(Value::String(b))) =
                    (old.pointer(path), new.pointer(path))
                else {
                    return false;
                };
                if !a.starts_with(keyring::ENVELOPE_PREFIX) {
                    return false;
                }
                match (keyring.open(path, a), keyring.open(path, b)) {
                    (Ok((x, _)), Ok((y, _))) => x != y,
                    _ => a != b,
                }
            })
            .collect()
    }

    /// A stored document with its secrets in clear, for re-validation and rollback.
    pub(super) fn opened_stored(&self, text: &str) -> CatalogResult<Value> {
        let mut document = parse_stored(text)?;
        self.keys
            .keyring
            .open_all(&mut document)
            .map_err(CatalogError::Secrets)?;
        Ok(document)
    }

    pub async fn set_tags(
        &self,
        actor: &Actor,
        name: &str,
        label: &str,
        tags: &[String],
    ) -> CatalogResult<VersionView> {
        let tags = parse_tags(tags)?;
        let mut conn = self.store.conn().await?;
        let config = self.config(&mut conn, name).await?;
        let version = self.version(&mut conn, &config, label).await?;
        drop(conn);
        let mut tx = self.store.begin().await?;
        versions::replace_tags(
            &mut tx,
            &config.id,
            version.meta.revision,
            &tags,
            &actor.subject,
            now_ms(),
        )
        .await?;
        audit::record(
            &mut tx,
            actor.audit_entry(
                "version.tag",
                version_resource(name, &version.meta.version),
                json!({ "tags": tags }),
            ),
        )
        .await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        let mut conn = self.store.conn().await?;
        self.view(&mut conn, &config, version).await
    }

    /// Records who approved a version; approving twice keeps the first approval.
    pub async fn approve(
        &self,
        actor: &Actor,
        name: &str,
        label: &str,
        comment: Option<String>,
    ) -> CatalogResult<VersionView> {
        check_text("/comment", comment.as_deref())?;
        let mut conn = self.store.conn().await?;
        let config = self.config(&mut conn, name).await?;
        let version = self.version(&mut conn, &config, label).await?;
        drop(conn);
        if version.meta.approved_by.is_none() {
            let mut tx = self.store.begin().await?;
            let approved = versions::approve(
                &mut tx,
                &config.id,
                version.meta.revision,
                &actor.subject,
                now_ms(),
                comment.as_deref(),
            )
            .await;
            match approved {
                // Someone approved it between our read and our write: theirs stands.
                Err(crate::store::StoreError::Conflict) => {}
                Err(other) => return Err(other.into()),
                Ok(()) => {
                    audit::record(
                        &mut tx,
                        actor.audit_entry("version.approve", version_resource(name, &version.meta.version), json!({ "revision": version.meta.revision, "comment": comment, "breakingChanges": version.meta.breaking != 0 })),
                    )
                    .await?;
                    tx.commit().await.map_err(crate::store::StoreError::from)?;
                }
            }
        }
        let mut conn = self.store.conn().await?;
        let version = self.version(&mut conn, &config, label).await?;
        self.view(&mut conn, &config, version).await
    }

    /// Validates a stored version again, against the schema as it is now,
    /// and stores the new report.
    pub async fn revalidate(
        &self,
        actor: &Actor,
        name: &str,
        label: &str,
    ) -> CatalogResult<StoredReportView> {
        let mut conn = self.store.conn().await?;
        let config = self.config(&mut conn, name).await?;
        let version = self.version(&mut conn, &config, label).await?;
        let content = self.opened_stored(&version.content)?;
        let previous = match version.meta.revision {
            1 => None,
            revision => versions::list(&mut conn, &config.id, Some(revision), 1)
                .await?
                .into_iter()
                .next(),
        };
        let previous = match previous {
            Some(row) => Some(masked_stored(
                &self
                    .version(&mut conn, &config, &row.version)
                    .await?
                    .content,
            )?),
            None => None,
        };
        let inputs = self.validation_inputs(&mut conn, &config).await?;
        drop(conn);
        let report = self.validate_for(inputs, content, previous).await?.report;
        let now = now_ms();
        let report_json =
            serde_json::to_string(&report).map_err(|e| CatalogError::Unexpected(e.into()))?;
        let mut tx = self.store.begin().await?;
        versions::insert_report(
            &mut tx,
            &config.id,
            version.meta.revision,
            report.valid,
            &report_json,
            &actor.subject,
            now,
        )
        .await?;
        audit::record(
            &mut tx,
            actor.audit_entry("version.validate", version_resource(name, &version.meta.version), json!({ "valid": report.valid, "errors": report.errors.len(), "warnings": report.warnings.len(), "schemaVersion": report.schema_version })),
        )
        .await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        Ok(StoredReportView {
            config: config.name,
            version: version.meta.version,
            revision: version.meta.revision,
            checked_at: rfc3339(now),
            checked_by: actor.subject.clone(),
            report,
        })
    }

    pub async fn validation_report(
        &self,
        name: &str,
        label: &str,
    ) -> CatalogResult<StoredReportView> {
        let mut conn = self.store.conn().await?;
        let config = self.config(&mut conn, name).await?;
        let version = self.version(&mut conn, &config, label).await?;
        let row = versions::latest_report(&mut conn, &config.id, version.meta.revision)
            .await?
            .ok_or_else(|| {
                CatalogError::Unexpected(anyhow::anyhow!(
                    "version {label} of {name} has no stored report"
                ))
            })?;
        let report =
            serde_json::from_str(&row.report).map_err(|e| CatalogError::Unexpected(e.into()))?;
        Ok(StoredReportView {
            config: config.name,
            version: version.meta.version,
            revision: row.revision,
            checked_at: rfc3339(row.created_at),
            checked_by: row.created_by,
            report,
        })
    }

    /// A new version carrying the content of an older one.
    pub async fn rollback(
        &self,
        actor: &Actor,
        name: &str,
        request: RollbackRequest,
    ) -> CatalogResult<VersionView> {
        check_text("/message", request.message.as_deref())?;
        let mut conn = self.store.conn().await?;
        let config = self.config(&mut conn, name).await?;
        let target = self
            .version(&mut conn, &config, &request.to_version)
            .await?;
        let latest = versions::latest(&mut conn, &config.id)
            .await?
            .expect("a config with a version has a latest version");
        drop(conn);
        let label = match request.version.as_deref() {
            Some(text) => parse_semver("/version", text)?,
            None => {
                let latest = parse_stored_semver(&latest.meta.version)?;
                semver::Version::new(latest.major, latest.minor, latest.patch + 1)
            }
        };
        let message = request
            .message
            .unwrap_or_else(|| format!("rollback to {}", target.meta.version));
        let content = self.opened_stored(&target.content)?;
        self.add_version(
            actor,
            name,
            label,
            content,
            Some(message),
            vec!["rollback".into()],
            Some(target.meta.version),
        )
        .await
    }
}

/// A stored document with its secrets masked: what the API shows.
fn masked_stored(text: &str) -> CatalogResult<Value> {
    let mut document = parse_stored(text)?;
    keyring::mask(&mut document);
    Ok(document)
}

fn parse_stored(text: &str) -> CatalogResult<Value> {
    serde_json::from_str(text).map_err(|e| {
        CatalogError::Unexpected(anyhow::Error::new(e).context("stored document is not JSON"))
    })
}

fn parse_stored_semver(text: &str) -> CatalogResult<semver::Version> {
    semver::Version::parse(text).map_err(|e| {
        CatalogError::Unexpected(anyhow::Error::new(e).context("stored version is not semver"))
    })
}
