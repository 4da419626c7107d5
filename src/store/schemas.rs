//! Schema versions (immutable rows).

use super::{Conn, StoreResult, Tx, flag};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SchemaRow {
    pub schema_id: String,
    pub seq: i64,
    pub version: String,
    pub compatibility: String,
    pub document: String,
    pub description: Option<String>,
    pub builtin: i64,
    pub created_by: String,
    pub created_at: i64,
    pub breaking_approved_by: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewSchema<'a> {
    pub schema_id: &'a str,
    pub seq: i64,
    pub version: &'a str,
    pub compatibility: &'a str,
    pub document: &'a str,
    pub description: Option<&'a str>,
    pub builtin: bool,
    pub created_by: &'a str,
    pub created_at: i64,
    pub breaking_approved_by: Option<&'a str>,
}

macro_rules! schema_select {
    () => {
        "SELECT schema_id, seq, version, compatibility, document, description, builtin, \
         created_by, created_at, breaking_approved_by FROM schemas "
    };
}

pub async fn insert(tx: &mut Tx, schema: &NewSchema<'_>) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO schemas (schema_id, seq, version, compatibility, document, description, \
         builtin, created_by, created_at, breaking_approved_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(schema.schema_id)
    .bind(schema.seq)
    .bind(schema.version)
    .bind(schema.compatibility)
    .bind(schema.document)
    .bind(schema.description)
    .bind(flag(schema.builtin))
    .bind(schema.created_by)
    .bind(schema.created_at)
    .bind(schema.breaking_approved_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn latest(conn: &mut Conn, schema_id: &str) -> StoreResult<Option<SchemaRow>> {
    Ok(sqlx::query_as::<_, SchemaRow>(concat!(
        schema_select!(),
        "WHERE schema_id = $1 ORDER BY seq DESC LIMIT 1"
    ))
    .bind(schema_id)
    .fetch_optional(&mut **conn)
    .await?)
}

pub async fn by_version(
    conn: &mut Conn,
    schema_id: &str,
    version: &str,
) -> StoreResult<Option<SchemaRow>> {
    Ok(sqlx::query_as::<_, SchemaRow>(concat!(
        schema_select!(),
        "WHERE schema_id = $1 AND version = $2"
    ))
    .bind(schema_id)
    .bind(version)
    .fetch_optional(&mut **conn)
    .await?)
}

/// All versions of one schema, newest first.
pub async fn versions(conn: &mut Conn, schema_id: &str) -> StoreResult<Vec<SchemaRow>> {
    Ok(sqlx::query_as::<_, SchemaRow>(concat!(
        schema_select!(),
        "WHERE schema_id = $1 ORDER BY seq DESC"
    ))
    .bind(schema_id)
    .fetch_all(&mut **conn)
    .await?)
}

/// The latest version of each schema, by id, after `after_id` when paging.
pub async fn list_latest(
    conn: &mut Conn,
    after_id: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<SchemaRow>> {
    Ok(sqlx::query_as::<_, SchemaRow>(concat!(
        schema_select!(),
        "s WHERE seq = (SELECT MAX(seq) FROM schemas WHERE schema_id = s.schema_id) \
         AND ($1 IS NULL OR schema_id > $1) ORDER BY schema_id LIMIT $2"
    ))
    .bind(after_id)
    .bind(limit)
    .fetch_all(&mut **conn)
    .await?)
}
