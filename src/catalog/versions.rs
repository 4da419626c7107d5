//! A config's versions: create (validated, sealed, signed, audited in one
//! transaction), history, one version, diff, tags, rollback.

use super::configs::{
    NewVersionRequest, RollbackRequest, check_text, masked_stored, parse_semver, parse_stored,
    parse_stored_semver, parse_tags, version_resource,
};
use super::validating::Validated;
use super::{
    Actor, Catalog, CatalogError, CatalogResult, PageRequest,
    views::{DiffView, Page, VersionRefView, VersionSummary, VersionView},
};
use crate::{
    crypto::keyring,
    domain::{diff, secrets},
    store::{
        audit,
        configs::{self},
        now_ms,
        versions::{self, NewVersion, VersionWithContent},
    },
};
use serde_json::{Value, json};
impl Catalog {
    pub async fn create_version(
        &self,
        actor: &Actor,
        name: &str,
        request: NewVersionRequest,
    ) -> CatalogResult<VersionView> {
        use crate::observability::traces::{AttrValue, CURRENT, current};
        let mut span = self.tracer.start("config.version.upload", current());
        span.set("config", AttrValue::Text(name.chars().take(64).collect()));
        span.set(
            "version",
            AttrValue::Text(request.version.chars().take(64).collect()),
        );
        let added = CURRENT
            .scope(span.parent(), async {
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
            })
            .await;
        match &added {
            Ok(view) => span.set("revision", AttrValue::Int(view.summary.revision)),
            Err(error) => span.fail(error.to_string()),
        }
        added
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
        self.meters.versions_uploaded.inc();

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

impl Catalog {
    /// The latest version's next patch number (`M.m.(p+1)`).
    pub async fn next_patch_label(&self, config: &str) -> CatalogResult<String> {
        let mut conn = self.store.conn().await?;
        let row = self.config(&mut conn, config).await?;
        let Some(latest) = versions::latest(&mut conn, &row.id).await? else {
            return Ok("0.0.1".into());
        };
        let latest = parse_stored_semver(&latest.meta.version)?;
        Ok(format!(
            "{}.{}.{}",
            latest.major,
            latest.minor,
            latest.patch + 1
        ))
    }

    /// The label of the next version a live event derives from `config`:
    /// after `X-event.n`, `X-event.(n+1)`; after any other latest `M.m.p`,
    /// `M.m.(p+1)-event.1`. Greater than the latest, and below the next
    /// release the team uploads (`M.m.(p+1)`).
    pub async fn event_version_label(&self, config: &str) -> CatalogResult<String> {
        let mut conn = self.store.conn().await?;
        let row = self.config(&mut conn, config).await?;
        let Some(latest) = versions::latest(&mut conn, &row.id).await? else {
            return Ok("0.0.1-event.1".into());
        };
        let latest = parse_stored_semver(&latest.meta.version)?;
        let counter = latest
            .pre
            .as_str()
            .strip_prefix("event.")
            .and_then(|n| n.parse::<u64>().ok());
        let next = match counter {
            Some(n) => format!(
                "{}.{}.{}-event.{}",
                latest.major,
                latest.minor,
                latest.patch,
                n + 1
            ),
            None => format!(
                "{}.{}.{}-event.1",
                latest.major,
                latest.minor,
                latest.patch + 1
            ),
        };
        Ok(next)
    }
}
