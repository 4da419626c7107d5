//! What catalog operations answer: the JSON bodies of the REST API.

use crate::{
    domain::{
        diff::Change,
        policy::{policy, stored_environment},
        validation::ValidationReport,
    },
    store::{audit::AuditRow, configs::ConfigRow, schemas::SchemaRow, versions::VersionRow},
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// RFC 3339 UTC with milliseconds, the API's time format.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigView {
    pub id: String,
    pub name: String,
    pub config_type: String,
    pub environment: String,
    pub schema_id: Option<String>,
    pub default_strategy: Option<String>,
    pub description: Option<String>,
    pub created_by: String,
    pub created_at: String,
    /// Semver label of the newest version, if any.
    pub latest_version: Option<String>,
    pub latest_revision: Option<i64>,
}

impl From<ConfigRow> for ConfigView {
    fn from(row: ConfigRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            config_type: row.config_type,
            environment: row.environment,
            schema_id: row.schema_id,
            default_strategy: row.default_strategy,
            description: row.description,
            created_by: row.created_by,
            created_at: rfc3339(row.created_at),
            latest_version: row.latest_version,
            latest_revision: row.latest_revision,
        }
    }
}

/// A version without its document (history listings).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionSummary {
    pub config: String,
    pub version: String,
    /// Per-config counter: 1, 2, 3... in creation order.
    pub revision: i64,
    /// Lowercase hex SHA-256 of the document as compact JSON with sorted keys.
    pub checksum: String,
    pub size_bytes: i64,
    pub author: String,
    pub message: Option<String>,
    pub created_at: String,
    pub tags: Vec<String>,
    /// The version whose content this one restores, for rollbacks.
    pub rollback_of: Option<String>,
    /// Removed keys or changed types against the previous version.
    pub breaking_changes: bool,
    /// A production deployment of this version must wait for an approval.
    pub requires_approval: bool,
    pub approved_by: Option<String>,
    pub approved_at: Option<String>,
    /// Base64 Ed25519 signature over `hotswap-config-v1\n{config}\n{revision}\n{checksum}`
    /// (see `GET /api/v1/signing-key`).
    pub signature: Option<String>,
    pub signing_key_id: Option<String>,
}

impl VersionSummary {
    pub fn new(config: &ConfigRow, row: VersionRow, tags: Vec<String>) -> Self {
        let breaking = row.breaking != 0;
        Self {
            config: config.name.clone(),
            // The rule for breaking versions does not depend on the
            // settings' approval environments.
            requires_approval: breaking
                && policy(stored_environment(&config.environment), &[]).breaking_needs_approval
                && row.approved_by.is_none(),
            version: row.version,
            revision: row.revision,
            checksum: row.checksum,
            size_bytes: row.size_bytes,
            author: row.author,
            message: row.message,
            created_at: rfc3339(row.created_at),
            tags,
            rollback_of: row.rollback_of,
            breaking_changes: breaking,
            approved_by: row.approved_by,
            approved_at: row.approved_at.map(rfc3339),
            signature: row.signature,
            signing_key_id: row.signing_key_id,
        }
    }
}

/// A version with its document.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionView {
    #[serde(flatten)]
    pub summary: VersionSummary,
    #[schema(value_type = Value)]
    pub content: Value,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionRefView {
    pub version: String,
    pub revision: i64,
    pub checksum: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiffView {
    pub config: String,
    pub from: VersionRefView,
    pub to: VersionRefView,
    /// RFC 6902 operations turning `from` into `to`.
    #[schema(value_type = Vec<Object>)]
    pub patch: Value,
    pub changes: Vec<Change>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredReportView {
    pub config: String,
    pub version: String,
    pub revision: i64,
    pub checked_at: String,
    pub checked_by: String,
    #[serde(flatten)]
    pub report: ValidationReport,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaSummary {
    pub id: String,
    pub version: String,
    pub compatibility: String,
    pub description: Option<String>,
    /// Shipped with the hub (`config/schemas/`).
    pub builtin: bool,
    pub created_by: String,
    pub created_at: String,
    /// Who approved the breaking changes this version made, if it made any.
    pub breaking_approved_by: Option<String>,
}

impl From<&SchemaRow> for SchemaSummary {
    fn from(row: &SchemaRow) -> Self {
        Self {
            id: row.schema_id.clone(),
            version: row.version.clone(),
            compatibility: row.compatibility.clone(),
            description: row.description.clone(),
            builtin: row.builtin != 0,
            created_by: row.created_by.clone(),
            created_at: rfc3339(row.created_at),
            breaking_approved_by: row.breaking_approved_by.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaView {
    #[serde(flatten)]
    pub summary: SchemaSummary,
    /// The JSON Schema document.
    #[schema(value_type = Value)]
    pub schema: Value,
    /// Every version of this schema id, newest first.
    pub versions: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryView {
    pub id: String,
    /// Position in the trail; grows with every row.
    pub seq: i64,
    pub at: String,
    pub actor: String,
    /// The actor's role when it acted; absent for the hub itself.
    pub actor_role: Option<String>,
    /// The address the change came from.
    pub source: Option<String>,
    pub action: String,
    pub resource: String,
    #[schema(value_type = Object)]
    pub summary: Value,
    pub request_id: Option<String>,
    /// SHA-256 chaining this row to the one before (`prevHash`).
    pub hash: Option<String>,
    pub prev_hash: Option<String>,
}

impl From<AuditRow> for AuditEntryView {
    fn from(row: AuditRow) -> Self {
        Self {
            summary: serde_json::from_str(&row.summary).unwrap_or(Value::String(row.summary)),
            id: row.id,
            seq: row.seq,
            at: rfc3339(row.at),
            actor: row.actor,
            actor_role: row.actor_role,
            source: row.source,
            action: row.action,
            resource: row.resource,
            request_id: row.request_id,
            hash: row.hash,
            prev_hash: row.prev_hash,
        }
    }
}

/// A game-server API key as listed (never its secret).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub hint: String,
    /// Empty means every environment.
    pub environments: Vec<String>,
    /// Empty means every region.
    pub regions: Vec<String>,
    pub created_by: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
}

impl From<crate::store::api_keys::ApiKeyRow> for ApiKeyView {
    fn from(row: crate::store::api_keys::ApiKeyRow) -> Self {
        Self {
            environments: serde_json::from_str(&row.environments).unwrap_or_default(),
            regions: serde_json::from_str(&row.regions).unwrap_or_default(),
            id: row.id,
            name: row.name,
            hint: row.hint,
            created_by: row.created_by,
            created_at: rfc3339(row.created_at),
            revoked_at: row.revoked_at.map(rfc3339),
            revoked_by: row.revoked_by,
        }
    }
}

/// A key just created: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKeyView {
    /// The secret. Store it now: it cannot be shown again.
    pub key: String,
    #[serde(flatten)]
    pub api_key: ApiKeyView,
}

/// Who a game server is, by its key.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerIdentity {
    pub key_id: String,
    pub name: String,
    pub environments: Vec<String>,
    pub regions: Vec<String>,
}

impl From<crate::store::api_keys::ApiKeyRow> for ServerIdentity {
    fn from(row: crate::store::api_keys::ApiKeyRow) -> Self {
        Self {
            environments: serde_json::from_str(&row.environments).unwrap_or_default(),
            regions: serde_json::from_str(&row.regions).unwrap_or_default(),
            key_id: row.id,
            name: row.name,
        }
    }
}

/// The result of walking the audit chain.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditVerificationView {
    pub valid: bool,
    /// Rows checked.
    pub checked: u64,
    /// The first row whose link is broken.
    pub first_broken_seq: Option<i64>,
    pub reason: Option<String>,
}

/// The public half of the key that signs config versions.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeyView {
    pub algorithm: &'static str,
    pub key_id: String,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// What is signed: `hotswap-config-v1\n{config}\n{revision}\n{checksum}`.
    pub message_format: &'static str,
}
