//! Which API key each game-server id belongs to (`game_server_bindings`).

use super::{StoreResult, Tx, hub::row_placeholders};
use std::collections::HashMap;

/// Rows per statement: 4 parameters a row, far below both backends' limits.
const ROWS_PER_STATEMENT: usize = 200;

/// Binds each `(server id, key id)` unless the id is bound already (the
/// first of a batch wins), and returns who holds each id now.
pub async fn bind_many(
    tx: &mut Tx,
    claims: &[(String, String)],
    now: i64,
) -> StoreResult<HashMap<String, String>> {
    for chunk in claims.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| row_placeholders(tx, i, 4))
            .collect();
        let sql = format!(
            "INSERT INTO game_server_bindings (server_id, key_id, bound_at, last_seen) VALUES {} \
             ON CONFLICT (server_id) DO NOTHING",
            values.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (server_id, key_id) in chunk {
            query = query.bind(server_id).bind(key_id).bind(now).bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    let mut holders = HashMap::with_capacity(claims.len());
    for chunk in claims.chunks(ROWS_PER_STATEMENT) {
        let list: Vec<String> = (0..chunk.len())
            .map(|i| row_placeholders(tx, i, 1))
            .collect();
        let sql = format!(
            "SELECT server_id, key_id FROM game_server_bindings WHERE server_id IN ({})",
            list.iter()
                .map(|p| p.trim_matches(|c| c == '(' || c == ')'))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut query = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
        for (server_id, _) in chunk {
            query = query.bind(server_id);
        }
        holders.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(holders)
}

/// Keeps at most `cap` bindings for `key_id`: past it, its least recently
/// seen bindings of servers the hub no longer knows are released — not in
/// `game_servers`, and not `known` (the hub's registry: a server welcomed
/// a moment ago is not flushed to the table yet). Returns how many; fewer
/// than the excess when the rest belong to servers the hub knows.
pub async fn trim(
    tx: &mut Tx,
    key_id: &str,
    cap: usize,
    known: impl Fn(&str) -> bool,
) -> StoreResult<u64> {
    let (held,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM game_server_bindings WHERE key_id = $1")
            .bind(key_id)
            .fetch_one(&mut **tx)
            .await?;
    let excess = held - cap as i64;
    if excess <= 0 {
        return Ok(0);
    }
    // Room for the known ones skipped: at most the servers welcomed since
    // the last flush, a second's worth.
    let candidates: Vec<(String,)> = sqlx::query_as(
        "SELECT b.server_id FROM game_server_bindings b WHERE b.key_id = $1 \
         AND NOT EXISTS (SELECT 1 FROM game_servers g WHERE g.server_id = b.server_id) \
         ORDER BY b.last_seen, b.server_id LIMIT $2",
    )
    .bind(key_id)
    .bind(excess.saturating_add(TRIM_MARGIN))
    .fetch_all(&mut **tx)
    .await?;
    let released: Vec<String> = candidates
        .into_iter()
        .map(|(id,)| id)
        .filter(|id| !known(id))
        .take(usize::try_from(excess).unwrap_or(usize::MAX))
        .collect();
    let mut done = 0;
    for chunk in released.chunks(ROWS_PER_STATEMENT) {
        let list: Vec<String> = (0..chunk.len())
            .map(|i| row_placeholders(tx, i, 1))
            .collect();
        // Chosen for this key within this transaction.
        let sql = format!(
            "DELETE FROM game_server_bindings WHERE server_id IN ({})",
            list.iter()
                .map(|p| p.trim_matches(|c| c == '(' || c == ')'))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id);
        }
        done += query.execute(&mut **tx).await?.rows_affected();
    }
    Ok(done)
}

/// Candidates past the excess [`trim`] reads, for the known ones it skips.
const TRIM_MARGIN: i64 = 16 * 1024;

/// Binds `server_id` to `key_id` unless it is bound already, and returns
/// the key it is bound to now (the caller's, or the earlier holder's).
pub async fn bind(tx: &mut Tx, server_id: &str, key_id: &str, now: i64) -> StoreResult<String> {
    let claim = [(server_id.to_owned(), key_id.to_owned())];
    bind_many(tx, &claim, now)
        .await?
        .remove(server_id)
        .ok_or_else(|| anyhow::anyhow!("a binding just written is gone").into())
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
