//! Telemetry: the event-type taxonomy, events written in batches (one
//! statement per batch, its rows as one JSON parameter), daily partitions
//! on PostgreSQL (one table on SQLite) and their retention, and what
//! telemetry keeps of each player.

use super::{Backend, Conn, StoreResult, Tx};
use serde::Serialize;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventTypeRow {
    pub name: String,
    pub description: String,
    pub schema: String,
    pub builtin: i64,
    pub revision: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn event_types(conn: &mut Conn) -> StoreResult<Vec<EventTypeRow>> {
    Ok(sqlx::query_as(
        "SELECT name, description, schema, builtin, revision, created_by, created_at, updated_at \
         FROM telemetry_event_types ORDER BY name",
    )
    .fetch_all(&mut **conn)
    .await?)
}

/// Inserts or replaces an event type (`revision` is the new one; a
/// replacement happens only from `revision - 1`). False when it changed
/// meanwhile.
pub async fn put_event_type(tx: &mut Tx, row: &EventTypeRow) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO telemetry_event_types (name, description, schema, builtin, revision, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (name) DO UPDATE SET description = excluded.description, schema = excluded.schema, \
         builtin = excluded.builtin, revision = excluded.revision, updated_at = excluded.updated_at \
         WHERE telemetry_event_types.revision = excluded.revision - 1",
    )
    .bind(&row.name)
    .bind(&row.description)
    .bind(&row.schema)
    .bind(row.builtin)
    .bind(row.revision)
    .bind(&row.created_by)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One event as stored (the names are short: the batch travels as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    /// Days since 1970-01-01 of `tm` (UTC).
    pub d: i64,
    /// Player id.
    pub p: String,
    /// Event id.
    pub i: String,
    /// Event type.
    pub ty: String,
    /// Event time (ms).
    pub tm: i64,
    /// Received at (ms).
    pub r: i64,
    pub s: Option<String>,
    pub cv: Option<String>,
    pub ctv: Option<String>,
    pub pf: Option<String>,
    /// The payload as JSON text.
    pub pl: String,
}

pub const DAY_MS: i64 = 86_400_000;

/// The UTC day of an instant.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

const COLUMNS: &str = "event_day, player_id, event_id, event_type, event_time, received_at, \
    session_id, client_version, content_version, platform, payload";

/// Creates the partition of each day (PostgreSQL; nothing on SQLite).
pub async fn ensure_days(conn: &mut Conn, backend: Backend, days: &[i64]) -> StoreResult<()> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    for day in days {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS telemetry_events_d{day} PARTITION OF telemetry_events \
             FOR VALUES FROM ({day}) TO ({})",
            day + 1
        );
        match sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut **conn)
            .await
        {
            Ok(_) => {}
            // Another writer created it meanwhile (the name, or the
            // catalog row's unique key, taken first).
            Err(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("42P07" | "23505")) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Stores a batch (rows already stored — a retry — are kept as they are)
/// and folds the rows written into the players' kept attributes, in one
/// transaction; those players' kept attributes as they now stand.
pub async fn insert_events(
    tx: &mut Tx,
    backend: Backend,
    rows: &[EventRow],
) -> StoreResult<Vec<PlayerRow>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let json = serde_json::to_string(rows).map_err(|e| anyhow::anyhow!(e))?;
    match backend {
        Backend::Postgres => {
            sqlx::query_as::<_, PlayerRow>(sqlx::AssertSqlSafe(format!(
                "WITH written AS ( \
                   INSERT INTO telemetry_events ({COLUMNS}) \
                   SELECT d, p, i, ty, tm, r, s, cv, ctv, pf, pl FROM json_to_recordset($1::json) \
                     AS x(d bigint, p text, i text, ty text, tm bigint, r bigint, s text, cv text, ctv text, pf text, pl text) \
                   ON CONFLICT DO NOTHING \
                   RETURNING player_id, event_type, event_time) \
                 INSERT INTO players (player_id, first_seen, last_seen, sessions, purchases) \
                 SELECT player_id, MIN(event_time), MAX(event_time), \
                   COUNT(*) FILTER (WHERE event_type = 'session_start'), \
                   COUNT(*) FILTER (WHERE event_type = 'purchase') \
                 FROM written GROUP BY player_id \
                 ON CONFLICT (player_id) DO UPDATE SET \
                   first_seen = LEAST(players.first_seen, excluded.first_seen), \
                   last_seen = GREATEST(players.last_seen, excluded.last_seen), \
                   sessions = players.sessions + excluded.sessions, \
                   purchases = players.purchases + excluded.purchases \
                 RETURNING player_id, first_seen, last_seen, sessions, purchases"
            )))
            .bind(json)
            .fetch_all(&mut **tx)
            .await
            .map_err(Into::into)
        }
        Backend::Sqlite => {
            let written: Vec<(String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "INSERT INTO telemetry_events ({COLUMNS}) \
                 SELECT json_extract(value, '$.d'), json_extract(value, '$.p'), json_extract(value, '$.i'), \
                   json_extract(value, '$.ty'), json_extract(value, '$.tm'), json_extract(value, '$.r'), \
                   json_extract(value, '$.s'), json_extract(value, '$.cv'), json_extract(value, '$.ctv'), \
                   json_extract(value, '$.pf'), json_extract(value, '$.pl') \
                 FROM json_each($1) WHERE true \
                 ON CONFLICT DO NOTHING \
                 RETURNING player_id, event_type, event_time"
            )))
            .bind(json)
            .fetch_all(&mut **tx)
            .await?;
            let mut players: std::collections::BTreeMap<&str, (i64, i64, i64, i64)> =
                Default::default();
            for (player, kind, at) in &written {
                let kept = players.entry(player).or_insert((*at, *at, 0, 0));
                kept.0 = kept.0.min(*at);
                kept.1 = kept.1.max(*at);
                kept.2 += i64::from(kind == "session_start");
                kept.3 += i64::from(kind == "purchase");
            }
            let mut kept = Vec::with_capacity(players.len());
            for (player, (first, last, sessions, purchases)) in players {
                let row = sqlx::query_as::<_, PlayerRow>(
                    "INSERT INTO players (player_id, first_seen, last_seen, sessions, purchases) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (player_id) DO UPDATE SET \
                     first_seen = MIN(players.first_seen, excluded.first_seen), \
                     last_seen = MAX(players.last_seen, excluded.last_seen), \
                     sessions = players.sessions + excluded.sessions, \
                     purchases = players.purchases + excluded.purchases \
                     RETURNING player_id, first_seen, last_seen, sessions, purchases",
                )
                .bind(player)
                .bind(first)
                .bind(last)
                .bind(sessions)
                .bind(purchases)
                .fetch_one(&mut **tx)
                .await?;
                kept.push(row);
            }
            Ok(kept)
        }
    }
}

/// The `limit` players seen last (start-up: the kept attributes lookups read).
pub async fn recent_players(conn: &mut Conn, limit: usize) -> StoreResult<Vec<PlayerRow>> {
    Ok(sqlx::query_as(
        "SELECT player_id, first_seen, last_seen, sessions, purchases FROM players \
         ORDER BY last_seen DESC LIMIT $1",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut **conn)
    .await?)
}

/// What telemetry keeps of a player.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PlayerRow {
    pub player_id: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub sessions: i64,
    pub purchases: i64,
}

pub async fn player(conn: &mut Conn, player_id: &str) -> StoreResult<Option<PlayerRow>> {
    Ok(sqlx::query_as(
        "SELECT player_id, first_seen, last_seen, sessions, purchases FROM players WHERE player_id = $1",
    )
    .bind(player_id)
    .fetch_optional(&mut **conn)
    .await?)
}

/// Removes the days before `first_kept_day`: whole partitions on
/// PostgreSQL, rows on SQLite. Answers how many days (PostgreSQL) or rows
/// (SQLite) went.
pub async fn expire(conn: &mut Conn, backend: Backend, first_kept_day: i64) -> StoreResult<u64> {
    match backend {
        Backend::Sqlite => Ok(
            sqlx::query("DELETE FROM telemetry_events WHERE event_day < $1")
                .bind(first_kept_day)
                .execute(&mut **conn)
                .await?
                .rows_affected(),
        ),
        Backend::Postgres => {
            let parts: Vec<(String,)> = sqlx::query_as(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = 'telemetry_events'::regclass",
            )
            .fetch_all(&mut **conn)
            .await?;
            let mut dropped = 0;
            for (name,) in parts {
                let day = name
                    .strip_prefix("telemetry_events_d")
                    .and_then(|d| d.parse::<i64>().ok());
                if day.is_some_and(|d| d < first_kept_day) {
                    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {name}")))
                        .execute(&mut **conn)
                        .await?;
                    dropped += 1;
                }
            }
            Ok(dropped)
        }
    }
}
