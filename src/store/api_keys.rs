//! Game-server API keys (hashes only).

use super::{Conn, StoreResult, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub hint: String,
    /// JSON array; empty means every environment.
    pub environments: String,
    /// JSON array; empty means every region.
    pub regions: String,
    pub created_by: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub key_hash: &'a str,
    pub hint: &'a str,
    pub environments: &'a str,
    pub regions: &'a str,
    pub created_by: &'a str,
    pub created_at: i64,
}

const COLUMNS: &str =
    "id, name, hint, environments, regions, created_by, created_at, revoked_at, revoked_by";

pub async fn insert(tx: &mut Tx, key: &NewApiKey<'_>) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, name, key_hash, hint, environments, regions, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(key.id)
    .bind(key.name)
    .bind(key.key_hash)
    .bind(key.hint)
    .bind(key.environments)
    .bind(key.regions)
    .bind(key.created_by)
    .bind(key.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A live (not revoked) key by the hash of its secret.
pub async fn live_by_hash(conn: &mut Conn, key_hash: &str) -> StoreResult<Option<ApiKeyRow>> {
    Ok(sqlx::query_as::<_, ApiKeyRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
    )))
    .bind(key_hash)
    .fetch_optional(&mut **conn)
    .await?)
}

/// Ids of revoked keys.
pub async fn revoked_ids(conn: &mut Conn) -> StoreResult<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM api_keys WHERE revoked_at IS NOT NULL")
            .fetch_all(&mut **conn)
            .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

pub async fn by_id(conn: &mut Conn, id: &str) -> StoreResult<Option<ApiKeyRow>> {
    Ok(sqlx::query_as::<_, ApiKeyRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut **conn)
    .await?)
}

/// Newest first, after the `before_id` cursor (ids are UUIDv7, so time-ordered).
pub async fn list(
    conn: &mut Conn,
    before_id: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<ApiKeyRow>> {
    Ok(sqlx::query_as::<_, ApiKeyRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
    )))
    .bind(before_id)
    .bind(limit)
    .fetch_all(&mut **conn)
    .await?)
}

/// Revokes a live key; false when it was already revoked or unknown.
pub async fn revoke(tx: &mut Tx, id: &str, by: &str, at: i64) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1, revoked_by = $2 WHERE id = $3 AND revoked_at IS NULL",
    )
    .bind(at)
    .bind(by)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
