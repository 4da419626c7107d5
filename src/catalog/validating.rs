//! Validating a config's documents: the size and depth checks, what the
//! schema needs from the store, validation off the request threads; a
//! version's approval, revalidation and stored report.

use super::configs::{check_text, invalid, masked_stored, version_resource};
use super::{
    Actor, Catalog, CatalogError, CatalogResult,
    schemas::CompiledSchema,
    views::{StoredReportView, VersionView, rfc3339},
};
use crate::{
    crypto::keyring,
    domain::{
        document, secrets,
        validation::{self, ValidationReport},
    },
    store::{
        Conn, audit,
        configs::{self, ConfigRow},
        now_ms,
        schemas::SchemaRow,
        versions::{self},
    },
};
use serde_json::{Value, json};
use std::sync::Arc;
/// What validating a config's document needs from the store.
pub(super) struct ValidationInputs {
    pub(super) ever_sealed: Vec<String>,
    pub(super) schema: Option<(SchemaRow, Arc<CompiledSchema>)>,
}

/// A validation's outcome, with the documents it was given.
pub(super) struct Validated {
    pub(super) report: ValidationReport,
    pub(super) secret_paths: Vec<String>,
    pub(super) content: Value,
    pub(super) previous: Option<Value>,
}

impl Catalog {
    /// Checks size, depth and reserved strings, and returns the canonical text of `content`.
    pub(super) fn check_document(&self, content: &Value) -> CatalogResult<String> {
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
    pub(super) async fn validation_inputs(
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
    pub(super) async fn validate_for(
        &self,
        inputs: ValidationInputs,
        content: Value,
        previous: Option<Value>,
    ) -> CatalogResult<Validated> {
        let started = std::time::Instant::now();
        let mut span = self
            .tracer
            .start("config.validate", crate::observability::traces::current());
        let validated = self
            .off_thread(move || {
                let ValidationInputs {
                    ever_sealed,
                    schema,
                } = inputs;
                let (report, secret_paths) = match schema {
                    None => {
                        let to_seal = secrets::paths_to_seal(&[], &ever_sealed, &content);
                        let report =
                            validation::validate(None, &content, previous.as_ref(), &to_seal)
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
            .await;
        let meters = &self.meters;
        meters
            .validation_seconds
            .observe(started.elapsed().as_secs_f64());
        match &validated {
            Ok(v) if !v.report.valid => {
                meters.validation_failures.inc();
                span.fail(format!("{} problems", v.report.errors.len()));
            }
            Ok(_) => {}
            Err(error) => span.fail(error.to_string()),
        }
        span.end();
        validated
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
}

/// What a merge patch does to a config's current document.
#[derive(Debug)]
pub enum PatchCheck {
    /// With the pointers that hold secret values in the patched document.
    Valid { secret_paths: Vec<String> },
    /// The patched document fails the config's schema.
    Invalid(Box<ValidationReport>),
}

impl Catalog {
    /// Applies `patch` (RFC 7396) to `config`'s latest version and
    /// validates the result with the config's schema, off the request
    /// threads: a live event's override must not break the config. A
    /// config without versions takes the patch as its document.
    pub async fn check_patch(&self, config: &str, patch: &Value) -> CatalogResult<PatchCheck> {
        let mut conn = self.store.conn().await?;
        let row = self.config(&mut conn, config).await?;
        let mut document = match versions::latest(&mut conn, &row.id).await? {
            Some(latest) => {
                let mut document = super::configs::parse_stored(&latest.content)?;
                self.keys
                    .keyring
                    .open_all(&mut document)
                    .map_err(CatalogError::Secrets)?;
                document
            }
            None => Value::Object(Default::default()),
        };
        crate::domain::resolution::merge_patch(&mut document, patch, "", "", None);
        self.check_document(&document)?;
        let inputs = self.validation_inputs(&mut conn, &row).await?;
        drop(conn);
        let validated = self.validate_for(inputs, document, None).await?;
        Ok(if validated.report.valid {
            PatchCheck::Valid {
                secret_paths: validated.secret_paths,
            }
        } else {
            PatchCheck::Invalid(Box::new(validated.report))
        })
    }
}
