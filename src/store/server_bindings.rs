//! Which API key each game-server id belongs to (`game_server_bindings`).

use super::{StoreResult, Tx};

/// Binds `server_id` to `key_id` unless it is bound already, and returns
/// the key it is bound to now (the caller's, or the earlier holder's).
pub async fn bind(tx: &mut Tx, server_id: &str, key_id: &str, now: i64) -> StoreResult<String> {
    sqlx::query(
        "INSERT INTO game_server_bindings (server_id, key_id, bound_at, last_seen) \
         VALUES ($1, $2, $3, $3) ON CONFLICT (server_id) DO NOTHING",
    )
    .bind(server_id)
    .bind(key_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let (holder,): (String,) =
        sqlx::query_as("SELECT key_id FROM game_server_bindings WHERE server_id = $1")
            .bind(server_id)
            .fetch_one(&mut **tx)
            .await?;
    Ok(holder)
}

/// Moves a binding from `from_key` (a revoked key) to `to_key`; false when
/// it is no longer held by `from_key`.
pub async fn rebind(
    tx: &mut Tx,
    server_id: &str,
    from_key: &str,
    to_key: &str,
    now: i64,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE game_server_bindings SET key_id = $1, bound_at = $2, last_seen = $2 \
         WHERE server_id = $3 AND key_id = $4",
    )
    .bind(to_key)
    .bind(now)
    .bind(server_id)
    .bind(from_key)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Releases a server id (an admin's `DELETE /game-servers/{id}`).
pub async fn release(tx: &mut Tx, server_id: &str) -> StoreResult<bool> {
    let done = sqlx::query("DELETE FROM game_server_bindings WHERE server_id = $1")
        .bind(server_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks when servers were last known (they are being forgotten as stale).
pub async fn touch(tx: &mut Tx, server_ids: &[String], now: i64) -> StoreResult<()> {
    for id in server_ids {
        sqlx::query("UPDATE game_server_bindings SET last_seen = $1 WHERE server_id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Drops the bindings of servers unknown to the registry's table and not
/// seen since `before`; returns how many.
pub async fn expire(tx: &mut Tx, before: i64) -> StoreResult<u64> {
    let done = sqlx::query(
        "DELETE FROM game_server_bindings WHERE last_seen < $1 \
         AND NOT EXISTS (SELECT 1 FROM game_servers g WHERE g.server_id = game_server_bindings.server_id)",
    )
    .bind(before)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}
