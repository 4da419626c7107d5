//! The audit trail: one append-only row per mutation, written in the
//! transaction of the change it records.

use super::{Conn, StoreResult, Tx, now_ms};
use serde_json::Value;
use sqlx::Row;

/// What happened, by whom; `summary` describes the change (never a secret).
#[derive(Debug, Clone)]
pub struct NewAuditEntry<'a> {
    pub actor: &'a str,
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
    pub action: String,
    pub resource: String,
    pub summary: String,
    pub request_id: Option<String>,
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

pub async fn record(tx: &mut Tx, entry: NewAuditEntry<'_>) -> StoreResult<i64> {
    let row = sqlx::query(
        "INSERT INTO audit_log (id, at, actor, action, resource, summary, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(now_ms())
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.resource)
    .bind(entry.summary.to_string())
    .bind(entry.request_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get(0)?)
}

/// Newest first.
pub async fn list(conn: &mut Conn, filter: &AuditFilter, limit: i64) -> StoreResult<Vec<AuditRow>> {
    let resource_prefix = filter.resource.as_ref().map(|r| format!("{r}/"));
    let prefix_len = resource_prefix.as_ref().map(|p| p.len() as i64);
    let rows = sqlx::query_as::<_, AuditRow>(
        "SELECT seq, id, at, actor, action, resource, summary, request_id FROM audit_log \
         WHERE ($1 IS NULL OR actor = $1) \
           AND ($2 IS NULL OR resource = $2 OR substr(resource, 1, CAST($3 AS INTEGER)) = $4) \
           AND ($5 IS NULL OR at >= $5) \
           AND ($6 IS NULL OR seq < $6) \
         ORDER BY seq DESC LIMIT $7",
    )
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
