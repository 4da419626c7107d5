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

/// Rows per statement when persisting servers: one round trip to the
/// database thread per 50 servers rather than per server (16 parameters a
/// row stays far below both backends' parameter limits).
const SERVERS_PER_STATEMENT: usize = 50;

/// `(p, p, ...)` for the `row`th row of `width` parameters. SQLite gets
/// anonymous `?`: its named parameters (`$n`) are found by a linear search
/// on every bind, which made an 800-parameter statement quadratic.
pub(super) fn row_placeholders(conn: &sqlx::AnyConnection, row: usize, width: usize) -> String {
    let params: Vec<String> = if conn.backend_name() == "SQLite" {
        vec!["?".to_owned(); width]
    } else {
        (1..=width)
            .map(|p| format!("${}", row * width + p))
            .collect()
    };
    format!("({})", params.join(", "))
}

/// Inserts or updates game servers, many rows per statement. A stored
/// server's operator tags are left as they are: [`set_operator_tags`]
/// alone changes them (a node's memory of them may be older).
pub async fn upsert_game_servers(tx: &mut Tx, rows: &[GameServerRow]) -> StoreResult<()> {
    for chunk in rows.chunks(SERVERS_PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| row_placeholders(tx, i, 16))
            .collect();
        let sql = format!(
            "INSERT INTO game_servers (server_id, key_id, region, environment, tags, operator_tags, capacity, \
             players, hostname, address, build, sdk, subscriptions, applied, first_seen, last_seen) \
             VALUES {} \
             ON CONFLICT (server_id) DO UPDATE SET key_id = excluded.key_id, region = excluded.region, \
             environment = excluded.environment, tags = excluded.tags, \
             capacity = excluded.capacity, players = excluded.players, hostname = excluded.hostname, \
             address = excluded.address, build = excluded.build, sdk = excluded.sdk, \
             subscriptions = excluded.subscriptions, applied = excluded.applied, last_seen = excluded.last_seen",
            values.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            query = query
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
                .bind(row.last_seen);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// What changes of a known server while it runs (heartbeats, acks): written
/// without rewriting the rest of its row.
#[derive(Debug, Clone)]
pub struct GameServerProgress {
    pub server_id: String,
    pub players: i64,
    /// JSON map config -> revision, as text.
    pub applied: String,
    pub last_seen: i64,
}

/// Updates the running state of known servers, many rows per statement
/// (a server without a row yet is left to its next full upsert).
pub async fn update_game_server_progress(
    tx: &mut Tx,
    rows: &[GameServerProgress],
) -> StoreResult<()> {
    for chunk in rows.chunks(SERVERS_PER_STATEMENT * 4) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| row_placeholders(tx, i, 4))
            .collect();
        // VALUES columns are column1.. on both backends; the casts type
        // PostgreSQL's otherwise untyped parameters. On SQLite, `OR FAIL`:
        // with the default (`ABORT`) a statement changing many rows inside
        // a transaction keeps a statement journal to undo itself, which
        // past 64 KiB goes to a temporary file a page at a time: about
        // half the statement's CPU (`scripts/bench-flush.py`: OR FAIL
        // 0.45–0.51× of ABORT). Nothing is lost by it: a failed statement
        // fails the flush, whose transaction is rolled back whole.
        let verb = if tx.backend_name() == "SQLite" {
            "UPDATE OR FAIL"
        } else {
            "UPDATE"
        };
        let sql = format!(
            "{verb} game_servers SET players = CAST(v.column2 AS BIGINT), applied = v.column3, \
             last_seen = CAST(v.column4 AS BIGINT) \
             FROM (VALUES {}) AS v WHERE game_servers.server_id = v.column1",
            values.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            query = query
                .bind(&row.server_id)
                .bind(row.players)
                .bind(&row.applied)
                .bind(row.last_seen);
        }
        query.execute(&mut **tx).await?;
    }
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

/// Forgets servers; whether any was stored.
pub async fn delete_game_servers(tx: &mut Tx, ids: &[String]) -> StoreResult<bool> {
    let mut deleted = 0;
    for id in ids {
        deleted += sqlx::query("DELETE FROM game_servers WHERE server_id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    Ok(deleted > 0)
}

/// One stored server.
pub async fn game_server(conn: &mut Conn, server_id: &str) -> StoreResult<Option<GameServerRow>> {
    Ok(sqlx::query_as::<_, GameServerRow>(
        "SELECT server_id, key_id, region, environment, tags, operator_tags, capacity, players, hostname, \
         address, build, sdk, subscriptions, applied, first_seen, last_seen FROM game_servers \
         WHERE server_id = $1",
    )
    .bind(server_id)
    .fetch_optional(&mut **conn)
    .await?)
}

/// Sets a stored server's operator tags (a JSON array); whether it is stored.
pub async fn set_operator_tags(conn: &mut Conn, server_id: &str, tags: &str) -> StoreResult<bool> {
    Ok(
        sqlx::query("UPDATE game_servers SET operator_tags = $1 WHERE server_id = $2")
            .bind(tags)
            .bind(server_id)
            .execute(&mut **conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Known servers counted by (region, environment).
pub async fn server_counts(conn: &mut Conn) -> StoreResult<Vec<(String, String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT region, environment, COUNT(*) FROM game_servers GROUP BY region, environment",
    )
    .fetch_all(&mut **conn)
    .await?)
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
    /// The plan, JSON.
    pub spec: String,
    pub phase: i64,
    pub phase_started_at: Option<i64>,
    pub cover_bucket: Option<i64>,
    pub approved_by: Option<String>,
    /// The rollback record, JSON.
    pub rollback: Option<String>,
    pub updated_at: Option<i64>,
    pub scoped: i64,
}

pub(super) const DEPLOYMENT_COLUMNS: &str = "id, config_id, config_name, version, revision, previous_revision, strategy, \
     environment, status, created_by, created_at, completed_at, target_count, acked_count, failed_count, \
     spec, phase, phase_started_at, cover_bucket, approved_by, rollback, updated_at, scoped";

pub async fn insert_deployment(tx: &mut Tx, row: &DeploymentRow) -> StoreResult<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
         $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)"
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
    .bind(&row.spec)
    .bind(row.phase)
    .bind(row.phase_started_at)
    .bind(row.cover_bucket)
    .bind(&row.approved_by)
    .bind(&row.rollback)
    .bind(row.updated_at)
    .bind(row.scoped)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes everything about a deployment that can change.
pub async fn save_deployment(tx: &mut Tx, row: &DeploymentRow) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deployments SET status = $1, target_count = $2, acked_count = $3, failed_count = $4, \
         completed_at = $5, spec = $6, phase = $7, phase_started_at = $8, cover_bucket = $9, \
         approved_by = $10, rollback = $11, updated_at = $12 WHERE id = $13",
    )
    .bind(&row.status)
    .bind(row.target_count)
    .bind(row.acked_count)
    .bind(row.failed_count)
    .bind(row.completed_at)
    .bind(&row.spec)
    .bind(row.phase)
    .bind(row.phase_started_at)
    .bind(row.cover_bucket)
    .bind(&row.approved_by)
    .bind(&row.rollback)
    .bind(row.updated_at)
    .bind(&row.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records counts only (the flusher; never moves the status).
pub async fn update_counts(tx: &mut Tx, id: &str, counts: (i64, i64, i64)) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deployments SET target_count = $1, acked_count = $2, failed_count = $3 WHERE id = $4",
    )
    .bind(counts.0)
    .bind(counts.1)
    .bind(counts.2)
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

/// Deployments not finished: a restarted hub resumes them.
pub async fn unfinished_deployments(conn: &mut Conn) -> StoreResult<Vec<DeploymentRow>> {
    Ok(
        sqlx::query_as::<_, DeploymentRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE status IN \
             ('Pending', 'AwaitingApproval', 'InProgress', 'Paused', 'RollingBack') ORDER BY id"
        )))
        .fetch_all(&mut **conn)
        .await?,
    )
}

/// Completed scoped deployments still in force: newer than the last
/// completed unscoped deployment of their config, newest first.
pub async fn standing_layers(conn: &mut Conn) -> StoreResult<Vec<DeploymentRow>> {
    Ok(
        sqlx::query_as::<_, DeploymentRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d WHERE status = 'Completed' AND scoped = 1 \
             AND completed_at > COALESCE((SELECT MAX(u.completed_at) FROM deployments u \
             WHERE u.config_id = d.config_id AND u.status = 'Completed' AND u.scoped = 0), -1) \
             ORDER BY completed_at DESC"
        )))
        .fetch_all(&mut **conn)
        .await?,
    )
}

/// One minute of player metrics for one (region, deployment, cohort).
#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct MetricMinuteRow {
    pub minute: i64,
    pub region: String,
    pub deployment_id: String,
    pub cohort: String,
    pub reports: i64,
    pub players: i64,
    pub sessions_started: i64,
    pub sessions_ended: i64,
    pub churned: i64,
    pub crashes: i64,
    pub errors: i64,
    pub requests: i64,
    pub complaints: i64,
    pub purchases: i64,
    pub latency_ms: String,
    pub session_secs: String,
    pub fps: String,
}

const MINUTE_COLUMNS: &str = "minute, region, deployment_id, cohort, reports, players, sessions_started, \
     sessions_ended, churned, crashes, errors, requests, complaints, purchases, latency_ms, session_secs, fps";

pub async fn insert_metric_minute(tx: &mut Tx, row: &MetricMinuteRow) -> StoreResult<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO metric_minutes ({MINUTE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
         $11, $12, $13, $14, $15, $16, $17)"
    )))
    .bind(row.minute)
    .bind(&row.region)
    .bind(&row.deployment_id)
    .bind(&row.cohort)
    .bind(row.reports)
    .bind(row.players)
    .bind(row.sessions_started)
    .bind(row.sessions_ended)
    .bind(row.churned)
    .bind(row.crashes)
    .bind(row.errors)
    .bind(row.requests)
    .bind(row.complaints)
    .bind(row.purchases)
    .bind(&row.latency_ms)
    .bind(&row.session_secs)
    .bind(&row.fps)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Minutes from `since` on, optionally of one region and one deployment
/// (`''` is the all-servers row).
pub async fn metric_minutes(
    conn: &mut Conn,
    since: i64,
    region: Option<&str>,
    deployment_id: &str,
) -> StoreResult<Vec<MetricMinuteRow>> {
    Ok(sqlx::query_as::<_, MetricMinuteRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {MINUTE_COLUMNS} FROM metric_minutes WHERE minute >= $1 AND ($2 IS NULL OR region = $2) \
         AND deployment_id = $3 ORDER BY minute"
    )))
    .bind(since)
    .bind(region)
    .bind(deployment_id)
    .fetch_all(&mut **conn)
    .await?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FeedbackRow {
    pub id: String,
    pub received_at: i64,
    pub server_id: Option<String>,
    pub region: Option<String>,
    pub deployment_id: Option<String>,
    pub player_id: Option<String>,
    pub kind: String,
    pub rating: Option<i64>,
    pub category: Option<String>,
    pub message: Option<String>,
    pub submitted_by: String,
}

pub async fn insert_feedback(tx: &mut Tx, row: &FeedbackRow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO player_feedback (id, received_at, server_id, region, deployment_id, player_id, kind, \
         rating, category, message, submitted_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&row.id)
    .bind(row.received_at)
    .bind(&row.server_id)
    .bind(&row.region)
    .bind(&row.deployment_id)
    .bind(&row.player_id)
    .bind(&row.kind)
    .bind(row.rating)
    .bind(&row.category)
    .bind(&row.message)
    .bind(&row.submitted_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Drops metric minutes and feedback older than `before` (ms); returns rows removed.
pub async fn expire_metrics(tx: &mut Tx, before: i64) -> StoreResult<u64> {
    let minutes = sqlx::query("DELETE FROM metric_minutes WHERE minute < $1")
        .bind(before)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    let feedback = sqlx::query("DELETE FROM player_feedback WHERE received_at < $1")
        .bind(before)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok(minutes + feedback)
}

/// Records the servers a rollback moves back (a JSON array of ids), with
/// the move to `RollingBack`.
pub async fn set_rollback_targets(
    tx: &mut Tx,
    deployment_id: &str,
    server_ids: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO rollback_targets (deployment_id, server_ids) VALUES ($1, $2) \
         ON CONFLICT (deployment_id) DO UPDATE SET server_ids = excluded.server_ids",
    )
    .bind(deployment_id)
    .bind(server_ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The servers a rollback moves back, as recorded.
pub async fn rollback_targets(conn: &mut Conn, deployment_id: &str) -> StoreResult<Vec<String>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT server_ids FROM rollback_targets WHERE deployment_id = $1")
            .bind(deployment_id)
            .fetch_optional(&mut **conn)
            .await?;
    Ok(row
        .and_then(|(text,)| serde_json::from_str(&text).ok())
        .unwrap_or_default())
}
