//! Leases of a cluster's nodes (`leases`): which node drives a deployment,
//! under which fencing epoch, until when. Times are read on PostgreSQL's
//! clock, the one clock every node shares (a node's own may drift); a
//! cluster runs on PostgreSQL only (`startup` refuses SQLite with Redis).

use super::{Conn, StoreResult, Tx, hub::DeploymentRow};

/// The database's clock in Unix milliseconds.
const NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// The lease resource of deployment `id`.
pub fn deployment_resource(id: &str) -> String {
    format!("deployment:{id}")
}

/// The lease resource of live event `id`.
pub fn event_resource(id: &str) -> String {
    format!("event:{id}")
}

/// The lease resource of experiment `id` (its watcher: end time, guardrails).
pub fn experiment_resource(id: &str) -> String {
    format!("experiment:{id}")
}

/// Takes `resource` for `owner` for `ttl_ms`: a new lease at epoch 1, or
/// one that lapsed at its epoch + 1. `None` while another node holds it.
/// In a transaction (a new deployment's row and its lease commit together)
/// or on its own.
pub async fn take(
    conn: &mut sqlx::AnyConnection,
    resource: &str,
    owner: &str,
    ttl_ms: i64,
) -> StoreResult<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO leases (resource, owner, epoch, expires_at) VALUES ($1, $2, 1, {NOW_MS} + $3) \
         ON CONFLICT (resource) DO UPDATE SET owner = EXCLUDED.owner, epoch = leases.epoch + 1, \
         expires_at = EXCLUDED.expires_at \
         WHERE leases.expires_at <= {NOW_MS} OR leases.owner = EXCLUDED.owner RETURNING epoch"
    )))
    .bind(resource)
    .bind(owner)
    .bind(ttl_ms)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(epoch,)| epoch))
}

/// Extends a lease `owner` holds under `epoch` and that has not lapsed;
/// false when it lapsed or another node took it (fencing: a write that
/// calls this in its transaction and gets false must roll back).
pub async fn extend(
    conn: &mut sqlx::AnyConnection,
    resource: &str,
    owner: &str,
    epoch: i64,
    ttl_ms: i64,
) -> StoreResult<bool> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE leases SET expires_at = {NOW_MS} + $4 \
         WHERE resource = $1 AND owner = $2 AND epoch = $3 AND expires_at > {NOW_MS}"
    )))
    .bind(resource)
    .bind(owner)
    .bind(epoch)
    .bind(ttl_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `extend` inside a write's transaction.
pub async fn fence(
    tx: &mut Tx,
    resource: &str,
    owner: &str,
    epoch: i64,
    ttl_ms: i64,
) -> StoreResult<bool> {
    extend(tx, resource, owner, epoch, ttl_ms).await
}

/// Gives a lease up (a finished deployment, a stopping node): another
/// node may take it at once.
pub async fn release(conn: &mut Conn, resource: &str, owner: &str, epoch: i64) -> StoreResult<()> {
    sqlx::query("DELETE FROM leases WHERE resource = $1 AND owner = $2 AND epoch = $3")
        .bind(resource)
        .bind(owner)
        .bind(epoch)
        .execute(&mut **conn)
        .await?;
    Ok(())
}

/// What every config's servers should run, read in one snapshot (a
/// repeatable-read, read-only transaction): active revisions (name,
/// environment, revision), standing layers (newest first) and unfinished
/// deployments, never a mix of before and after one commit.
pub async fn serving_snapshot(
    conn: &mut Conn,
) -> StoreResult<(
    Vec<(String, String, i64)>,
    Vec<DeploymentRow>,
    Vec<DeploymentRow>,
)> {
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut **conn)
        .await?;
    let read = async {
        Ok::<_, super::StoreError>((
            super::hub::active_revisions(conn).await?,
            super::hub::standing_layers(conn).await?,
            super::hub::unfinished_deployments(conn).await?,
        ))
    }
    .await;
    let end = if read.is_ok() { "COMMIT" } else { "ROLLBACK" };
    if let Err(error) = sqlx::query(end).execute(&mut **conn).await {
        // Never back to the pool inside a transaction.
        conn.close_on_drop();
        return Err(error.into());
    }
    read
}

/// Unfinished deployments no node holds a live lease on.
pub async fn orphaned_deployments(conn: &mut Conn) -> StoreResult<Vec<DeploymentRow>> {
    Ok(
        sqlx::query_as::<_, DeploymentRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {cols} FROM deployments d WHERE status IN \
             ('Pending', 'AwaitingApproval', 'InProgress', 'Paused', 'RollingBack') \
             AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.resource = 'deployment:' || d.id \
             AND l.expires_at > {NOW_MS}) ORDER BY id",
            cols = super::hub::DEPLOYMENT_COLUMNS
        )))
        .fetch_all(&mut **conn)
        .await?,
    )
}
