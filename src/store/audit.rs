//! The audit trail: one append-only row per mutation, written in the
//! transaction of the change it records, each row chained to the one before
//! by a SHA-256 hash so an edit or a deletion behind the hub's back shows.

use super::{Conn, Store, StoreResult, Tx, now_ms};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, by whom; `summary` describes the change (never a secret).
#[derive(Debug, Clone)]
pub struct NewAuditEntry<'a> {
    pub actor: &'a str,
    pub actor_role: Option<&'a str>,
    /// The caller's address.
    pub source: Option<&'a str>,
    pub action: &'a str,
    /// A path-like name: `configs/weapon-balance/versions/1.2.0`.
    pub resource: String,
    pub summary: Value,
    pub request_id: Option<&'a str>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub id: String,
    pub at: i64,
    pub actor: String,
    pub actor_role: Option<String>,
    pub source: Option<String>,
    pub action: String,
    pub resource: String,
    pub summary: String,
    pub request_id: Option<String>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

impl AuditRow {
    /// The hash this row must carry, given the previous row's.
    pub fn expected_hash(&self, prev_hash: &str) -> String {
        row_hash(
            prev_hash,
            &json!([
                self.id,
                self.at,
                self.actor,
                self.actor_role,
                self.source,
                self.action,
                self.resource,
                self.summary,
                self.request_id
            ]),
        )
    }
}

fn row_hash(prev_hash: &str, fields: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(hotswap_client::canonical_json(fields));
    hex::encode(hasher.finalize())
}

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// Matches the resource itself and everything below it.
    pub resource: Option<String>,
    pub since_ms: Option<i64>,
    /// Rows older than this `seq` (the paging cursor).
    pub before_seq: Option<i64>,
}

const COLUMNS: &str = "seq, id, at, actor, actor_role, source, action, resource, summary, \
                       request_id, prev_hash, hash";

/// Locks the chain's head (the row lock serializes writers on PostgreSQL;
/// SQLite write transactions are already serial) and returns it.
async fn lock_head(tx: &mut Tx) -> StoreResult<(i64, String)> {
    Ok(sqlx::query_as(
        "UPDATE audit_head SET last_seq = last_seq WHERE id = 1 RETURNING last_seq, last_hash",
    )
    .fetch_one(&mut **tx)
    .await?)
}

async fn move_head(tx: &mut Tx, seq: i64, hash: &str) -> StoreResult<()> {
    sqlx::query("UPDATE audit_head SET last_seq = $1, last_hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(hash)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn record(tx: &mut Tx, entry: NewAuditEntry<'_>) -> StoreResult<i64> {
    let (_, prev_hash) = lock_head(tx).await?;
    let row = AuditRow {
        seq: 0,
        id: uuid::Uuid::now_v7().to_string(),
        at: now_ms(),
        actor: entry.actor.to_owned(),
        actor_role: entry.actor_role.map(str::to_owned),
        source: entry.source.map(str::to_owned),
        action: entry.action.to_owned(),
        resource: entry.resource,
        summary: entry.summary.to_string(),
        request_id: entry.request_id.map(str::to_owned),
        prev_hash: None,
        hash: None,
    };
    let hash = row.expected_hash(&prev_hash);
    let inserted = sqlx::query(
        "INSERT INTO audit_log (id, at, actor, actor_role, source, action, resource, summary, \
         request_id, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING seq",
    )
    .bind(&row.id)
    .bind(row.at)
    .bind(&row.actor)
    .bind(&row.actor_role)
    .bind(&row.source)
    .bind(&row.action)
    .bind(&row.resource)
    .bind(&row.summary)
    .bind(&row.request_id)
    .bind(&prev_hash)
    .bind(&hash)
    .fetch_one(&mut **tx)
    .await?;
    let seq: i64 = inserted.try_get(0)?;
    move_head(tx, seq, &hash).await?;
    Ok(seq)
}

/// Chains rows written before the chain existed (once, at start).
pub async fn seal_unchained(store: &Store) -> StoreResult<usize> {
    let mut tx = store.begin().await?;
    let (_, mut prev_hash) = lock_head(&mut tx).await?;
    let rows = sqlx::query_as::<_, AuditRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_log WHERE hash IS NULL ORDER BY seq"
    )))
    .fetch_all(&mut *tx)
    .await?;
    let mut last_seq = None;
    for row in &rows {
        let hash = row.expected_hash(&prev_hash);
        sqlx::query("UPDATE audit_log SET prev_hash = $1, hash = $2 WHERE seq = $3")
            .bind(&prev_hash)
            .bind(&hash)
            .bind(row.seq)
            .execute(&mut *tx)
            .await?;
        prev_hash = hash;
        last_seq = Some(row.seq);
    }
    if let Some(seq) = last_seq {
        move_head(&mut tx, seq, &prev_hash).await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// Rows in chain order, after `after_seq`.
pub async fn chain_page(conn: &mut Conn, after_seq: i64, limit: i64) -> StoreResult<Vec<AuditRow>> {
    Ok(sqlx::query_as::<_, AuditRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
    )))
    .bind(after_seq)
    .bind(limit)
    .fetch_all(&mut **conn)
    .await?)
}

/// The chain's head: the last row's seq and hash.
pub async fn head(conn: &mut Conn) -> StoreResult<(i64, String)> {
    Ok(
        sqlx::query_as("SELECT last_seq, last_hash FROM audit_head WHERE id = 1")
            .fetch_one(&mut **conn)
            .await?,
    )
}

/// Newest first.
pub async fn list(conn: &mut Conn, filter: &AuditFilter, limit: i64) -> StoreResult<Vec<AuditRow>> {
    let resource_prefix = filter.resource.as_ref().map(|r| format!("{r}/"));
    let prefix_len = resource_prefix.as_ref().map(|p| p.len() as i64);
    let rows = sqlx::query_as::<_, AuditRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_log \
         WHERE ($1 IS NULL OR actor = $1) \
           AND ($2 IS NULL OR resource = $2 OR substr(resource, 1, CAST($3 AS INTEGER)) = $4) \
           AND ($5 IS NULL OR at >= $5) \
           AND ($6 IS NULL OR seq < $6) \
         ORDER BY seq DESC LIMIT $7"
    )))
    .bind(filter.actor.as_deref())
    .bind(filter.resource.as_deref())
    .bind(prefix_len)
    .bind(resource_prefix)
    .bind(filter.since_ms)
    .bind(filter.before_seq)
    .bind(limit)
    .fetch_all(&mut **conn)
    .await?;
    Ok(rows)
}
