//! What the hub persists of its live state: each config's active revision,
//! known game servers, deployments.

use super::{Conn, StoreResult, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GameServerRow {
    pub server_id: String,
    pub key_id: String,
    pub region: String,
    pub environment: String,
    /// JSON arrays and maps, as text.
    pub tags: String,
    pub operator_tags: String,
    pub capacity: i64,
    pub players: i64,
    pub hostname: Option<String>,
    pub address: Option<String>,
    pub build: Option<String>,
    pub sdk: Option<String>,
    pub subscriptions: String,
    pub applied: String,
    pub first_seen: i64,
    pub last_seen: i64,
}

pub async fn upsert_game_server(tx: &mut Tx, row: &GameServerRow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO game_servers (server_id, key_id, region, environment, tags, operator_tags, capacity, \
         players, hostname, address, build, sdk, subscriptions, applied, first_seen, last_seen) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (server_id) DO UPDATE SET key_id = excluded.key_id, region = excluded.region, \
         environment = excluded.environment, tags = excluded.tags, operator_tags = excluded.operator_tags, \
         capacity = excluded.capacity, players = excluded.players, hostname = excluded.hostname, \
         address = excluded.address, build = excluded.build, sdk = excluded.sdk, \
         subscriptions = excluded.subscriptions, applied = excluded.applied, last_seen = excluded.last_seen",
    )
    .bind(&row.server_id)
    .bind(&row.key_id)
    .bind(&row.region)
    .bind(&row.environment)
    .bind(&row.tags)
    .bind(&row.operator_tags)
    .bind(row.capacity)
    .bind(row.players)
    .bind(&row.hostname)
    .bind(&row.address)
    .bind(&row.build)
    .bind(&row.sdk)
    .bind(&row.subscriptions)
    .bind(&row.applied)
    .bind(row.first_seen)
    .bind(row.last_seen)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn game_servers(conn: &mut Conn) -> StoreResult<Vec<GameServerRow>> {
    Ok(sqlx::query_as::<_, GameServerRow>(
        "SELECT server_id, key_id, region, environment, tags, operator_tags, capacity, players, hostname, \
         address, build, sdk, subscriptions, applied, first_seen, last_seen FROM game_servers",
    )
    .fetch_all(&mut **conn)
    .await?)
}

pub async fn delete_game_servers(tx: &mut Tx, ids: &[String]) -> StoreResult<()> {
    for id in ids {
        sqlx::query("DELETE FROM game_servers WHERE server_id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// `(config name, environment, active revision)` of every live config that has one.
pub async fn active_revisions(conn: &mut Conn) -> StoreResult<Vec<(String, String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT name, environment, active_revision FROM configs WHERE deleted_at IS NULL AND active_revision IS NOT NULL",
    )
    .fetch_all(&mut **conn)
    .await?)
}

pub async fn set_active_revision(tx: &mut Tx, config_id: &str, revision: i64) -> StoreResult<()> {
    sqlx::query("UPDATE configs SET active_revision = $1 WHERE id = $2")
        .bind(revision)
        .bind(config_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeploymentRow {
    pub id: String,
    pub config_id: String,
    pub config_name: String,
    pub version: String,
    pub revision: i64,
    pub previous_revision: Option<i64>,
    pub strategy: String,
    pub environment: String,
    pub status: String,
    pub created_by: String,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub target_count: i64,
    pub acked_count: i64,
    pub failed_count: i64,
}

const DEPLOYMENT_COLUMNS: &str = "id, config_id, config_name, version, revision, previous_revision, strategy, \
     environment, status, created_by, created_at, completed_at, target_count, acked_count, failed_count";

pub async fn insert_deployment(tx: &mut Tx, row: &DeploymentRow) -> StoreResult<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    )))
    .bind(&row.id)
    .bind(&row.config_id)
    .bind(&row.config_name)
    .bind(&row.version)
    .bind(row.revision)
    .bind(row.previous_revision)
    .bind(&row.strategy)
    .bind(&row.environment)
    .bind(&row.status)
    .bind(&row.created_by)
    .bind(row.created_at)
    .bind(row.completed_at)
    .bind(row.target_count)
    .bind(row.acked_count)
    .bind(row.failed_count)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records progress or the end of a deployment.
pub async fn update_deployment(
    tx: &mut Tx,
    id: &str,
    status: &str,
    counts: (i64, i64, i64),
    completed_at: Option<i64>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deployments SET status = $1, target_count = $2, acked_count = $3, failed_count = $4, \
         completed_at = $5 WHERE id = $6",
    )
    .bind(status)
    .bind(counts.0)
    .bind(counts.1)
    .bind(counts.2)
    .bind(completed_at)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn deployment(conn: &mut Conn, id: &str) -> StoreResult<Option<DeploymentRow>> {
    Ok(
        sqlx::query_as::<_, DeploymentRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut **conn)
        .await?,
    )
}

/// Newest first, before the `before_id` cursor (UUIDv7 ids sort by time).
pub async fn deployments(
    conn: &mut Conn,
    before_id: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<DeploymentRow>> {
    Ok(sqlx::query_as::<_, DeploymentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
    )))
    .bind(before_id)
    .bind(limit)
    .fetch_all(&mut **conn)
    .await?)
}

/// Deployments not finished (a restarted hub closes them out).
pub async fn unfinished_deployments(conn: &mut Conn) -> StoreResult<Vec<DeploymentRow>> {
    Ok(
        sqlx::query_as::<_, DeploymentRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE status = 'InProgress'"
        )))
        .fetch_all(&mut **conn)
        .await?,
    )
}
