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

pub type Conn = PoolConnection<Any>;

/// A write transaction: a connection to run statements on (`&mut **tx`),
/// then [`Tx::commit`]; dropped without it, it rolls back. On SQLite it
/// holds the store's writer turn (see [`Store::begin`]) until it has
/// ended, a dropped one until its rollback has run (else the next writer
/// found the lock still taken and fell into SQLite's sleeping wait).
pub struct Tx {
    /// `None` once committed or rolled back.
    inner: Option<sqlx::Transaction<'static, Any>>,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("open", &self.inner.is_some())
            .field("turn", &self.turn.is_some())
            .finish()
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.end(true).await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.end(false).await
    }

    /// Commits or rolls back. Holding the turn, on a task of its own: it
    /// runs to its end (and only then passes the turn on) even when the
    /// caller stops waiting for it.
    async fn end(mut self, commit: bool) -> Result<(), sqlx::Error> {
        let inner = self.inner.take().expect("open until now");
        match self.turn.take() {
            Some(turn) => tokio::spawn(finish(inner, commit, Some(turn)))
                .await
                .unwrap_or_else(|error| {
                    Err(sqlx::Error::Protocol(format!(
                        "ending a transaction: {error}"
                    )))
                }),
            None => finish(inner, commit, None).await,
        }
    }
}

/// Commits (or rolls back) `inner`, then passes `turn` on.
async fn finish(
    inner: sqlx::Transaction<'static, Any>,
    commit: bool,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
) -> Result<(), sqlx::Error> {
    let ended = if commit {
        inner.commit().await
    } else {
        inner.rollback().await
    };
    drop(turn);
    ended
}

impl Drop for Tx {
    fn drop(&mut self) {
        // Dropped open (an error, a `?`): roll back, then pass the turn on.
        let (Some(inner), Some(turn)) = (self.inner.take(), self.turn.take()) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(finish(inner, false, Some(turn)))),
            // No runtime (it is shutting down): dropped here, sqlx's own
            // drop queues the rollback as it can.
            Err(_) => drop((inner, turn)),
        }
    }
}

const OPEN: &str = "a transaction is open until commit or rollback, which take it";

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &Self::Target {
        self.inner.as_ref().expect(OPEN)
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.inner.as_mut().expect(OPEN)
    }
}

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
    /// SQLite: whose turn it is to write (see [`Store::begin`]).
    writers: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// How long a write waits for its turn ([`WRITER_WAIT`]).
    writer_wait: Duration,
}

/// How long a write waits for its turn (SQLite's own busy timeout, which
/// sqlx sets to 5 s, is the same): a write never waits forever, even
/// behind a bug that holds a transaction open.
const WRITER_WAIT: Duration = Duration::from_secs(5);

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
        Ok(Self {
            pool,
            backend,
            writers: Default::default(),
            writer_wait: WRITER_WAIT,
        })
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
    /// (`BEGIN IMMEDIATE`), so two writers queue instead of one failing
    /// when it upgrades a read lock; and they queue here, first come first
    /// served, each starting the moment the one before ends. Left to
    /// SQLite, a writer finding the lock taken sleeps 1, 2, 5, 10, 15,
    /// 20, 25 ms… between tries: a kill switch arriving while the flusher
    /// writes 10,000 servers waited up to tens of milliseconds past the
    /// flusher's end. (Writes made outside a transaction, and other
    /// processes on the same file, still wait SQLite's way.)
    pub async fn begin(&self) -> StoreResult<Tx> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let turn =
                    tokio::time::timeout(self.writer_wait, self.writers.clone().lock_owned())
                        .await
                        .map_err(|_| {
                            StoreError::Unavailable(sqlx::Error::Io(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "timed out waiting for the other writers",
                            )))
                        })?;
                Tx {
                    inner: Some(self.pool.begin_with("BEGIN IMMEDIATE").await?),
                    turn: Some(turn),
                }
            }
            Backend::Postgres => Tx {
                inner: Some(self.pool.begin().await?),
                turn: None,
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::SecretString;
    use std::sync::{Arc, Mutex};

    async fn sqlite(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}/hub.db", dir.path().display());
        let store = Store::connect(&DatabaseSettings {
            url: SecretString::new(url),
            max_connections: 4,
            acquire_timeout_secs: 5,
        })
        .await
        .unwrap();
        sqlx::query("CREATE TABLE t (n BIGINT NOT NULL)")
            .execute(&store.pool)
            .await
            .unwrap();
        store
    }

    #[tokio::test]
    async fn sqlite_writers_take_turns_first_come_first_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        let first = store.begin().await.unwrap();
        assert!(
            store.writers.try_lock().is_err(),
            "an open write transaction holds the turn"
        );
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for n in 1..=3i64 {
            let (writer, order) = (store.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let mut tx = writer.begin().await.unwrap();
                sqlx::query("INSERT INTO t (n) VALUES ($1)")
                    .bind(n)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                order.lock().unwrap().push(n);
                tx.commit().await.unwrap();
            }));
            // Each asks before the next: the turn is shared by the store,
            // the first's guard, and per writer its store and its place
            // in the queue.
            while Arc::strong_count(&store.writers) < 2 + 2 * n as usize {
                tokio::task::yield_now().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(order.lock().unwrap().is_empty(), "all wait for the first");
        // Dropped without commit: rolled back, and the turn passes on.
        drop(first);
        for task in waiting {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [1, 2, 3]);
        assert!(
            store.writers.try_lock().is_ok(),
            "every turn was given back"
        );
        let rows: Vec<(i64,)> = sqlx::query_as("SELECT n FROM t ORDER BY rowid")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(rows, [(1,), (2,), (3,)]);
    }

    #[tokio::test]
    async fn a_writer_kept_waiting_past_its_bound_is_told_the_store_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = sqlite(&dir).await;
        store.writer_wait = Duration::from_millis(100);
        let _held = store.writers.clone().lock_owned().await;
        let waited = store.begin().await;
        assert!(
            matches!(&waited, Err(StoreError::Unavailable(_))),
            "{:?}",
            waited.err()
        );
    }
}
