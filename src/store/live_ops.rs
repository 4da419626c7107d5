//! Live ops: segments (rules and id lists) and live events (definition,
//! revisions, progress, and the occurrences their actors started).

use super::{Conn, StoreResult, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SegmentRow {
    pub name: String,
    /// `rule` or `list`.
    pub kind: String,
    pub description: String,
    /// The rule's JSON (rule segments).
    pub rule: Option<String>,
    pub revision: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const SEGMENT_COLUMNS: &str =
    "name, kind, description, rule, revision, created_by, created_at, updated_at";

pub async fn insert_segment(tx: &mut Tx, row: &SegmentRow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO segments (name, kind, description, rule, revision, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&row.name)
    .bind(&row.kind)
    .bind(&row.description)
    .bind(&row.rule)
    .bind(row.revision)
    .bind(&row.created_by)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Replaces a segment's definition if it is still at `revision`; false when
/// it changed meanwhile (or is gone).
pub async fn update_segment(
    tx: &mut Tx,
    name: &str,
    revision: i64,
    description: &str,
    rule: Option<&str>,
    at: i64,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE segments SET description = $1, rule = $2, revision = revision + 1, updated_at = $3 \
         WHERE name = $4 AND revision = $5",
    )
    .bind(description)
    .bind(rule)
    .bind(at)
    .bind(name)
    .bind(revision)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks a list segment changed (its members moved).
pub async fn touch_segment(tx: &mut Tx, name: &str, at: i64) -> StoreResult<()> {
    sqlx::query("UPDATE segments SET revision = revision + 1, updated_at = $1 WHERE name = $2")
        .bind(at)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn delete_segment(tx: &mut Tx, name: &str) -> StoreResult<bool> {
    sqlx::query("DELETE FROM segment_members WHERE segment = $1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    let done = sqlx::query("DELETE FROM segments WHERE name = $1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Every segment, by name.
pub async fn segments(conn: &mut Conn) -> StoreResult<Vec<SegmentRow>> {
    Ok(sqlx::query_as::<_, SegmentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {SEGMENT_COLUMNS} FROM segments ORDER BY name"
    )))
    .fetch_all(&mut **conn)
    .await?)
}

/// Adds members (those already in are kept); a batch per statement.
pub async fn add_members(tx: &mut Tx, segment: &str, players: &[String]) -> StoreResult<()> {
    for chunk in players.chunks(400) {
        let mut sql = String::from("INSERT INTO segment_members (segment, player_id) VALUES ");
        for index in 0..chunk.len() {
            if index > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("($1, ${})", index + 2));
        }
        sql.push_str(" ON CONFLICT (segment, player_id) DO NOTHING");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(segment);
        for player in chunk {
            query = query.bind(player);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Removes every member of a list (one statement).
pub async fn clear_members(tx: &mut Tx, segment: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM segment_members WHERE segment = $1")
        .bind(segment)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn remove_members(tx: &mut Tx, segment: &str, players: &[String]) -> StoreResult<()> {
    for chunk in players.chunks(400) {
        let mut sql =
            String::from("DELETE FROM segment_members WHERE segment = $1 AND player_id IN (");
        for index in 0..chunk.len() {
            if index > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", index + 2));
        }
        sql.push(')');
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(segment);
        for player in chunk {
            query = query.bind(player);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

pub async fn members(conn: &mut Conn, segment: &str) -> StoreResult<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT player_id FROM segment_members WHERE segment = $1")
            .bind(segment)
            .fetch_all(&mut **conn)
            .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// A live event as stored: its current definition and progress.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveEventRow {
    pub id: String,
    pub name: String,
    pub revision: i64,
    pub spec: String,
    pub state: String,
    pub done_before_ms: i64,
    pub manual_start_ms: Option<i64>,
    pub manual_end_ms: Option<i64>,
    pub paused_at_ms: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const EVENT_COLUMNS: &str = "id, name, revision, spec, state, done_before_ms, manual_start_ms, \
     manual_end_ms, paused_at_ms, created_by, created_at, updated_at";

pub async fn insert_event(tx: &mut Tx, row: &LiveEventRow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO live_events (id, name, revision, spec, state, done_before_ms, manual_start_ms, \
         manual_end_ms, paused_at_ms, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&row.id)
    .bind(&row.name)
    .bind(row.revision)
    .bind(&row.spec)
    .bind(&row.state)
    .bind(row.done_before_ms)
    .bind(row.manual_start_ms)
    .bind(row.manual_end_ms)
    .bind(row.paused_at_ms)
    .bind(&row.created_by)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(&mut **tx)
    .await?;
    insert_revision(
        tx,
        &row.id,
        row.revision,
        &row.spec,
        &row.created_by,
        row.created_at,
    )
    .await
}

async fn insert_revision(
    tx: &mut Tx,
    event_id: &str,
    revision: i64,
    spec: &str,
    by: &str,
    at: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO live_event_revisions (event_id, revision, spec, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event_id)
    .bind(revision)
    .bind(spec)
    .bind(by)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A new revision of the definition, if the event is still at `revision`.
pub async fn revise_event(
    tx: &mut Tx,
    id: &str,
    revision: i64,
    spec: &str,
    by: &str,
    at: i64,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE live_events SET revision = revision + 1, spec = $1, updated_at = $2 \
         WHERE id = $3 AND revision = $4 AND deleted_at IS NULL",
    )
    .bind(spec)
    .bind(at)
    .bind(id)
    .bind(revision)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    insert_revision(tx, id, revision + 1, spec, by, at).await?;
    Ok(true)
}

/// The progress an event's actor commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressRow {
    pub state: String,
    pub done_before_ms: i64,
    pub manual_start_ms: Option<i64>,
    pub manual_end_ms: Option<i64>,
    pub paused_at_ms: Option<i64>,
}

pub async fn save_progress(
    tx: &mut Tx,
    id: &str,
    progress: &ProgressRow,
    at: i64,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE live_events SET state = $1, done_before_ms = $2, manual_start_ms = $3, \
         manual_end_ms = $4, paused_at_ms = $5, updated_at = $6 WHERE id = $7",
    )
    .bind(&progress.state)
    .bind(progress.done_before_ms)
    .bind(progress.manual_start_ms)
    .bind(progress.manual_end_ms)
    .bind(progress.paused_at_ms)
    .bind(at)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn delete_event(tx: &mut Tx, id: &str, at: i64) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE live_events SET deleted_at = $1, updated_at = $1 WHERE id = $2 AND deleted_at IS NULL",
    )
    .bind(at)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An event by name (a deleted one too: names are never reused).
pub async fn event_by_name(conn: &mut Conn, name: &str) -> StoreResult<Option<LiveEventRow>> {
    Ok(
        sqlx::query_as::<_, LiveEventRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM live_events WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&mut **conn)
        .await?,
    )
}

/// Every event not deleted, by name.
pub async fn live_events(conn: &mut Conn) -> StoreResult<Vec<LiveEventRow>> {
    Ok(
        sqlx::query_as::<_, LiveEventRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM live_events WHERE deleted_at IS NULL ORDER BY name"
        )))
        .fetch_all(&mut **conn)
        .await?,
    )
}

/// An occurrence an event's actor started.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OccurrenceRow {
    pub event_id: String,
    pub start_ms: i64,
    /// `''` unless the schedule is `regionLocal`.
    pub region: String,
    pub end_ms: i64,
    pub started_at_ms: i64,
    /// How long after its start it was started (0: on time).
    pub late_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub end_reason: Option<String>,
    /// JSON list of the deployments carrying its server-wide overrides.
    pub deployments: String,
}

const OCCURRENCE_COLUMNS: &str = "event_id, start_ms, region, end_ms, started_at_ms, late_ms, \
     ended_at_ms, end_reason, deployments";

pub async fn start_occurrence(tx: &mut Tx, row: &OccurrenceRow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO live_event_occurrences (event_id, start_ms, region, end_ms, started_at_ms, late_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id, start_ms, region) DO NOTHING",
    )
    .bind(&row.event_id)
    .bind(row.start_ms)
    .bind(&row.region)
    .bind(row.end_ms)
    .bind(row.started_at_ms)
    .bind(row.late_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn end_occurrence(
    tx: &mut Tx,
    event_id: &str,
    start_ms: i64,
    region: &str,
    at: i64,
    reason: &str,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE live_event_occurrences SET ended_at_ms = $1, end_reason = $2 \
         WHERE event_id = $3 AND start_ms = $4 AND region = $5 AND ended_at_ms IS NULL",
    )
    .bind(at)
    .bind(reason)
    .bind(event_id)
    .bind(start_ms)
    .bind(region)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records the deployments carrying an occurrence's overrides.
pub async fn set_occurrence_deployments(
    conn: &mut Conn,
    event_id: &str,
    start_ms: i64,
    region: &str,
    deployments: &str,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE live_event_occurrences SET deployments = $1 \
         WHERE event_id = $2 AND start_ms = $3 AND region = $4",
    )
    .bind(deployments)
    .bind(event_id)
    .bind(start_ms)
    .bind(region)
    .execute(&mut **conn)
    .await?;
    Ok(())
}

/// Occurrences of an event whose deployments are still to be undone
/// (ended or not): every row with deployments recorded.
pub async fn occurrences_with_deployments(
    conn: &mut Conn,
    event_id: &str,
) -> StoreResult<Vec<OccurrenceRow>> {
    Ok(
        sqlx::query_as::<_, OccurrenceRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {OCCURRENCE_COLUMNS} FROM live_event_occurrences \
         WHERE event_id = $1 AND deployments <> '[]' ORDER BY start_ms, region"
        )))
        .bind(event_id)
        .fetch_all(&mut **conn)
        .await?,
    )
}

/// The occurrences an event started and has not ended.
pub async fn open_occurrences(conn: &mut Conn, event_id: &str) -> StoreResult<Vec<OccurrenceRow>> {
    Ok(
        sqlx::query_as::<_, OccurrenceRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {OCCURRENCE_COLUMNS} FROM live_event_occurrences \
         WHERE event_id = $1 AND ended_at_ms IS NULL ORDER BY start_ms, region"
        )))
        .bind(event_id)
        .fetch_all(&mut **conn)
        .await?,
    )
}
