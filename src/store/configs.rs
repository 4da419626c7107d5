//! Config profiles.

use super::{Conn, StoreResult, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConfigRow {
    pub id: String,
    pub name: String,
    pub config_type: String,
    pub environment: String,
    pub schema_id: Option<String>,
    pub default_strategy: Option<String>,
    pub description: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    /// Latest version's label and revision, filled by the queries that list.
    pub latest_version: Option<String>,
    pub latest_revision: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewConfig<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub config_type: &'a str,
    pub environment: &'a str,
    pub schema_id: Option<&'a str>,
    pub default_strategy: Option<&'a str>,
    pub description: Option<&'a str>,
    pub created_by: &'a str,
    pub created_at: i64,
}

#[derive(Debug, Default, Clone)]
pub struct ConfigFilter {
    pub environment: Option<String>,
    pub config_type: Option<String>,
    /// Names after this one (the paging cursor).
    pub after_name: Option<String>,
}

macro_rules! config_select {
    () => {
        "SELECT c.id, c.name, c.config_type, c.environment, c.schema_id, c.default_strategy, \
         c.description, c.created_by, c.created_at, v.version AS latest_version, \
         v.revision AS latest_revision \
         FROM configs c LEFT JOIN config_versions v ON v.config_id = c.id AND v.revision = \
         (SELECT MAX(revision) FROM config_versions WHERE config_id = c.id) "
    };
}

pub async fn insert(tx: &mut Tx, config: &NewConfig<'_>) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO configs (id, name, config_type, environment, schema_id, default_strategy, \
         description, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(config.id)
    .bind(config.name)
    .bind(config.config_type)
    .bind(config.environment)
    .bind(config.schema_id)
    .bind(config.default_strategy)
    .bind(config.description)
    .bind(config.created_by)
    .bind(config.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A live (not deleted) config by name.
pub async fn by_name(conn: &mut Conn, name: &str) -> StoreResult<Option<ConfigRow>> {
    Ok(sqlx::query_as::<_, ConfigRow>(concat!(
        config_select!(),
        "WHERE c.name = $1 AND c.deleted_at IS NULL"
    ))
    .bind(name)
    .fetch_optional(&mut **conn)
    .await?)
}

/// Whether any config, deleted or not, holds `name`: names are never reused,
/// so an old audit row or deployment never points at a different config.
pub async fn name_taken(conn: &mut Conn, name: &str) -> StoreResult<bool> {
    let found: Option<(String,)> = sqlx::query_as("SELECT id FROM configs WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **conn)
        .await?;
    Ok(found.is_some())
}

/// Live configs by name, in name order.
pub async fn list(
    conn: &mut Conn,
    filter: &ConfigFilter,
    limit: i64,
) -> StoreResult<Vec<ConfigRow>> {
    Ok(sqlx::query_as::<_, ConfigRow>(concat!(
        config_select!(),
        "WHERE c.deleted_at IS NULL AND ($1 IS NULL OR c.environment = $1) \
         AND ($2 IS NULL OR c.config_type = $2) AND ($3 IS NULL OR c.name > $3) \
         ORDER BY c.name LIMIT $4"
    ))
    .bind(filter.environment.as_deref())
    .bind(filter.config_type.as_deref())
    .bind(filter.after_name.as_deref())
    .bind(limit)
    .fetch_all(&mut **conn)
    .await?)
}

/// Marks a config deleted; its versions and audit rows stay.
pub async fn mark_deleted(tx: &mut Tx, id: &str, by: &str, at: i64) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE configs SET deleted_at = $1, deleted_by = $2 WHERE id = $3 AND deleted_at IS NULL",
    )
    .bind(at)
    .bind(by)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Every pointer ever sealed in a version of the config.
pub async fn sealed_paths(conn: &mut Conn, config_id: &str) -> StoreResult<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT path FROM config_sealed_paths WHERE config_id = $1 ORDER BY path")
            .bind(config_id)
            .fetch_all(&mut **conn)
            .await?;
    Ok(rows.into_iter().map(|(path,)| path).collect())
}

/// Remembers pointers sealed in a version of the config (known ones stay).
pub async fn add_sealed_paths(tx: &mut Tx, config_id: &str, paths: &[String]) -> StoreResult<()> {
    for path in paths {
        sqlx::query(
            "INSERT INTO config_sealed_paths (config_id, path) VALUES ($1, $2) \
             ON CONFLICT (config_id, path) DO NOTHING",
        )
        .bind(config_id)
        .bind(path)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
