//! The catalog: configs, their versions and the schemas that validate them.
//! Each operation checks its input with `domain/`, reads and writes through
//! `store/`, and records an audit row in the same transaction as the change.
//!
//! # Layout
//! - `mod.rs`: [`Catalog`], [`Actor`], [`CatalogError`], paging.
//! - `configs.rs`: config profiles and the lookups the others share.
//! - `versions.rs`: versions: create, history, diff, tags, rollback.
//! - `validating.rs`: validation (bounded, off the request threads),
//!   approval, revalidation, stored reports.
//! - `serving.rs`: documents with their secrets opened, for the hub.
//! - `schemas.rs`: the schema registry and the compiled-validator cache.
//! - `builtin.rs`: the built-in game schemas from `config/schemas/`.
//! - `views.rs`: what the operations answer (the REST bodies).

mod api_keys;
mod audit_chain;
mod builtin;
mod configs;
mod key_upkeep;
mod schemas;
mod serving;
mod validating;
mod versions;
pub mod views;

pub use api_keys::NewApiKeyRequest;
pub use builtin::BUILTIN_SCHEMAS;
pub use configs::{NewConfigRequest, NewVersionRequest, RollbackRequest};
pub use schemas::NewSchemaRequest;
pub use serving::{DeploymentTarget, ServedVersion};
pub use validating::PatchCheck;

use crate::{
    auth::Role,
    crypto::KeyMaterial,
    domain::{compat::SchemaChange, validation::InvalidSchema, validation::ValidationReport},
    settings::LimitSettings,
    store::{Store, StoreError, audit},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use schemas::ValidatorCache;
use std::sync::Arc;
use tokio::sync::Semaphore;
use views::{AuditEntryView, Page};

/// Who asks for a change, from where, and in which request (for the audit trail).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Actor {
    pub subject: String,
    /// `None` for the hub itself.
    pub role: Option<Role>,
    /// The caller's address.
    pub source: Option<String>,
    pub request_id: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Self {
            subject: "system".into(),
            role: None,
            source: None,
            request_id: None,
        }
    }

    /// The audit row of a change this actor makes.
    pub fn audit_entry(
        &self,
        action: &'static str,
        resource: String,
        summary: serde_json::Value,
    ) -> audit::NewAuditEntry<'_> {
        audit::NewAuditEntry {
            actor: &self.subject,
            actor_role: self.role.map(Role::as_str),
            source: self.source.as_deref(),
            action,
            resource,
            summary,
            request_id: self.request_id.as_deref(),
        }
    }
}

/// Why a catalog operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("config {0:?} does not exist")]
    ConfigNotFound(String),
    #[error("config {config:?} has no version {version:?}")]
    VersionNotFound { config: String, version: String },
    #[error("schema {0:?} does not exist")]
    SchemaNotFound(String),
    #[error("a config named {0:?} exists or existed; names are never reused")]
    ConfigExists(String),
    #[error("version {version} already exists (latest is {latest})")]
    VersionExists { version: String, latest: String },
    #[error("version {version} is not greater than the latest version {latest}")]
    VersionNotGreater { version: String, latest: String },
    #[error("{message}")]
    InvalidField { path: String, message: String },
    #[error("the cursor is not one this API gave out")]
    InvalidCursor,
    #[error("API key {0:?} does not exist or is already revoked")]
    ApiKeyNotFound(String),
    #[error(transparent)]
    Secrets(crate::crypto::keyring::KeyringError),
    #[error("the document is {size} bytes; the limit is {max}")]
    DocumentTooLarge { size: usize, max: usize },
    #[error("the document nests {depth} levels deep; the limit is {max}")]
    DocumentTooDeep { depth: usize, max: usize },
    #[error("the document does not pass validation ({} errors)", .0.errors.len())]
    ValidationFailed(Box<ValidationReport>),
    #[error("the schema cannot be used: {0}")]
    InvalidSchema(InvalidSchema),
    #[error(
        "validating this document against its schema could take more than {budget} checks; \
         make the document smaller or the schema simpler (fewer anyOf/oneOf branches, \
         shorter enums)"
    )]
    ValidationTooCostly { budget: u64 },
    #[error("the schema change breaks {mode} compatibility ({} changes)", .changes.len())]
    BreakingSchemaChange {
        mode: String,
        changes: Vec<SchemaChange>,
    },
    #[error("another change to the same resource happened at the same time; retry")]
    Conflict,
    #[error("the store is unavailable")]
    Unavailable(#[source] StoreError),
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl From<StoreError> for CatalogError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict => CatalogError::Conflict,
            StoreError::Unavailable(_) => CatalogError::Unavailable(error),
            StoreError::Unexpected(inner) => CatalogError::Unexpected(inner),
        }
    }
}

pub type CatalogResult<T> = Result<T, CatalogError>;

/// Paging of a list: `limit` (1..=1000) and an opaque cursor from the last page.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: usize = 100;
    pub const MAX_LIMIT: usize = 1000;

    /// The decoded cursor position: the key of the last item of the
    /// previous page. The one cursor codec of every list; a cursor that is
    /// not base64url of text without NUL (which PostgreSQL refuses in
    /// TEXT) is `invalid_cursor`.
    pub fn position(&self) -> CatalogResult<Option<String>> {
        self.cursor
            .as_deref()
            .map(|cursor| {
                URL_SAFE_NO_PAD
                    .decode(cursor)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .filter(|position| !position.contains('\0'))
                    .ok_or(CatalogError::InvalidCursor)
            })
            .transpose()
    }

    /// The cursor of the page after the item whose key is `key`.
    pub fn cursor_after(key: &str) -> String {
        URL_SAFE_NO_PAD.encode(key)
    }

    /// Rows to fetch: one more than the page, to know whether another follows.
    fn fetch_limit(&self) -> i64 {
        self.limit as i64 + 1
    }

    /// Cuts `rows` to the page and makes the next cursor from the last item kept.
    fn page<R, T>(
        &self,
        mut rows: Vec<R>,
        key: impl Fn(&R) -> String,
        view: impl FnMut(R) -> T,
    ) -> Page<T> {
        let next_cursor = (rows.len() > self.limit).then(|| {
            rows.truncate(self.limit);
            Self::cursor_after(&key(rows.last().expect("a full page has a last row")))
        });
        Page {
            items: rows.into_iter().map(view).collect(),
            next_cursor,
        }
    }
}

/// The catalog service; cheap to clone (the store is a pool, the cache shared).
#[derive(Debug, Clone)]
pub struct Catalog {
    store: Store,
    limits: LimitSettings,
    validators: ValidatorCache,
    keys: Arc<KeyMaterial>,
    /// Validations running at once (see [`Catalog::off_thread`]).
    validation_slots: Arc<Semaphore>,
    /// The hub's Prometheus metrics (shared by every component).
    meters: Arc<crate::observability::meters::Meters>,
    /// The hub's traces (shared by every component; records nothing
    /// without `otel.endpoint`).
    tracer: Arc<crate::observability::traces::Tracer>,
}

impl Catalog {
    pub fn new(store: Store, limits: LimitSettings, keys: Arc<KeyMaterial>) -> Self {
        Self {
            store,
            limits,
            validators: ValidatorCache::default(),
            keys,
            validation_slots: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            meters: Default::default(),
            tracer: crate::observability::traces::Tracer::disabled(),
        }
    }

    /// Records spans into `tracer` (the hub's).
    pub fn with_tracer(mut self, tracer: Arc<crate::observability::traces::Tracer>) -> Self {
        self.tracer = tracer;
        self
    }

    /// The hub's traces.
    pub fn tracer(&self) -> &Arc<crate::observability::traces::Tracer> {
        &self.tracer
    }

    /// Counts into `meters` (the hub's; a catalog alone has its own).
    pub fn with_meters(mut self, meters: Arc<crate::observability::meters::Meters>) -> Self {
        self.meters = meters;
        self
    }

    /// The hub's Prometheus metrics.
    pub fn meters(&self) -> &Arc<crate::observability::meters::Meters> {
        &self.meters
    }

    /// Runs `work` (a validation) on the blocking pool, one per core at a
    /// time: a large document against a large schema may take a second of
    /// CPU, which must not hold up the HTTP workers or the hub's tasks.
    pub(super) async fn off_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> CatalogResult<T> + Send + 'static,
    ) -> CatalogResult<T> {
        let _slot = self
            .validation_slots
            .acquire()
            .await
            .map_err(|e| CatalogError::Unexpected(e.into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| CatalogError::Unexpected(anyhow::anyhow!("a validation failed: {e}")))?
    }

    /// The public half of the signing key.
    pub fn signing_key(&self) -> views::SigningKeyView {
        views::SigningKeyView {
            algorithm: "Ed25519",
            key_id: self.keys.signer.key_id().to_owned(),
            public_key: self.keys.signer.public_key(),
            message_format: "hotswap-config-v1\n{config}\n{revision}\n{checksum}",
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The audit trail, newest first.
    pub async fn audit_log(
        &self,
        mut filter: audit::AuditFilter,
        page: &PageRequest,
    ) -> CatalogResult<Page<AuditEntryView>> {
        if let Some(position) = page.position()? {
            filter.before_seq = Some(position.parse().map_err(|_| CatalogError::InvalidCursor)?);
        }
        let mut conn = self.store.conn().await?;
        let rows = audit::list(&mut conn, &filter, page.fetch_limit()).await?;
        Ok(page.page(rows, |row| row.seq.to_string(), AuditEntryView::from))
    }
}
