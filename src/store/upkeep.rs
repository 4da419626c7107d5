//! One-off start-up steps (`upkeep`): each runs once, recorded when done.

use super::{Conn, StoreResult, Tx};

pub async fn is_done(conn: &mut Conn, name: &str) -> StoreResult<bool> {
    let row: Option<(String,)> = sqlx::query_as("SELECT name FROM upkeep WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **conn)
        .await?;
    Ok(row.is_some())
}

/// Records a step as done; false when another hub recorded it first.
pub async fn mark_done(tx: &mut Tx, name: &str, at: i64, summary: &str) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO upkeep (name, done_at, summary) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(at)
    .bind(summary)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
