//! The store: repositories over sqlx's `AnyPool`, on SQLite (embedded
//! default) or PostgreSQL (production), with one migrations folder each.
//!
//! **Architecture invariant:** only this module speaks SQL. Queries are
//! portable (`$n` placeholders, TEXT, BIGINT) so one text serves both.
//!
//! # Layout
//! - `mod.rs`: connecting, migrating, transactions, errors.
//! - `configs.rs`, `versions.rs`, `schemas.rs`, `audit.rs`, `api_keys.rs`,
//!   `hub.rs` (servers, deployments, metrics), `server_bindings.rs` (which
//!   API key owns a server id), `upkeep.rs` (one-off start-up steps), `live_ops.rs` (segments,
//!   live events, their revisions and occurrences): one
//!   repository per table group.

pub mod api_keys;
pub mod audit;
pub mod cluster;
pub mod configs;
pub mod experiments;
pub mod hub;
pub mod kpis;
pub mod live_ops;
pub mod schemas;
pub mod server_bindings;
pub mod telemetry;
pub mod upkeep;
pub mod versions;

use crate::settings::DatabaseSettings;
use anyhow::Context;
use sqlx::{Any, AnyPool, any::AnyPoolOptions, migrate::Migrator, pool::PoolConnection};
use std::{path::Path, str::FromStr, time::Duration};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

pub type Tx = sqlx::Transaction<'static, Any>;
pub type Conn = PoolConnection<Any>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            anyhow::bail!("database url must start with sqlite:// or postgres://")
        }
    }
}

/// Errors a repository call can end in.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule refused the write: someone else got there first.
    #[error("a concurrent change conflicts with this one")]
    Conflict,
    /// The database cannot be reached or has no free connection.
    #[error("the store is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(error),
            _ => StoreError::Unexpected(anyhow::Error::new(error).context("database error")),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects (creating the SQLite file and its folder if needed).
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let url = settings.url.expose();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs.max(1)))
            .connect(&url)
            .await
            .with_context(|| format!("connecting to the {backend:?} store"))?;
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the writer; the setting lives in the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .context("switching SQLite to WAL")?;
        }
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the backend's pending migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .context("applying migrations")
    }

    /// Whether the store answers a trivial query.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The pool's connections: (idle, in use).
    pub fn pool_usage(&self) -> (u64, u64) {
        let size = u64::from(self.pool.size());
        let idle = self.pool.num_idle() as u64;
        (idle, size.saturating_sub(idle))
    }

    pub async fn conn(&self) -> StoreResult<Conn> {
        Ok(self.pool.acquire().await?)
    }

    /// A write transaction. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so two writers queue on the busy timeout instead
    /// of one failing when it upgrades a read lock.
    pub async fn begin(&self) -> StoreResult<Tx> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the folder of a `sqlite://` file and asks SQLite to create the file.
fn prepare_sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or_default();
    anyhow::ensure!(!path.is_empty(), "sqlite url names no file");
    let parent = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent.filter(|_| path != ":memory:") {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating database folder {}", parent.display()))?;
    }
    let mut url = url.to_owned();
    if !url.contains("mode=") {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("mode=rwc");
    }
    // Validates the URL early, with a clear message.
    sqlx::any::AnyConnectOptions::from_str(&url).context("invalid sqlite url")?;
    Ok(url)
}

/// Milliseconds since the Unix epoch, the store's time unit.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `0`/`1` flags, the portable boolean.
pub(crate) fn flag(value: bool) -> i64 {
    i64::from(value)
}
