//! Experiments: definitions and status, players' first assignments, and
//! the per-variant sums of a metric over the units' telemetry.

use super::{Backend, Conn, StoreResult, Tx};
use crate::domain::experiments::metrics::RatioSums;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExperimentRow {
    pub id: String,
    pub name: String,
    pub revision: i64,
    pub spec: String,
    /// The config its variants patch (one started experiment per config).
    pub config: Option<String>,
    pub status: String,
    pub status_reason: Option<String>,
    pub winner: Option<String>,
    /// JSON: `{"metric/variant": smallest sequential p}`.
    pub looks: String,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, name, revision, spec, config, status, status_reason, winner, looks, \
    started_at, finished_at, created_by, created_at, updated_at";

pub async fn insert(tx: &mut Tx, row: &ExperimentRow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO experiments (id, name, revision, spec, status, status_reason, winner, looks, \
         started_at, finished_at, created_by, created_at, updated_at, config) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&row.id)
    .bind(&row.name)
    .bind(row.revision)
    .bind(&row.spec)
    .bind(&row.status)
    .bind(&row.status_reason)
    .bind(&row.winner)
    .bind(&row.looks)
    .bind(row.started_at)
    .bind(row.finished_at)
    .bind(&row.created_by)
    .bind(row.created_at)
    .bind(row.updated_at)
    .bind(&row.config)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes a row's definition and status if it is still at `revision`
/// (the row carries the next one); false when it changed meanwhile,
/// [`super::StoreError::Conflict`] when it would start a second experiment
/// on its config.
pub async fn update(tx: &mut Tx, row: &ExperimentRow, revision: i64) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE experiments SET revision = $1, spec = $2, status = $3, status_reason = $4, \
         winner = $5, started_at = $6, finished_at = $7, updated_at = $8, config = $11 \
         WHERE id = $9 AND revision = $10",
    )
    .bind(row.revision)
    .bind(&row.spec)
    .bind(&row.status)
    .bind(&row.status_reason)
    .bind(&row.winner)
    .bind(row.started_at)
    .bind(row.finished_at)
    .bind(row.updated_at)
    .bind(&row.id)
    .bind(revision)
    .bind(&row.config)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The experiment running or paused on `config`, if one is.
pub async fn started_on(conn: &mut Conn, config: &str) -> StoreResult<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT name FROM experiments WHERE config = $1 AND status IN ('Running', 'Paused')",
    )
    .bind(config)
    .fetch_optional(&mut **conn)
    .await?)
}

/// Keeps the smallest sequential p-values seen.
pub async fn set_looks(conn: &mut Conn, id: &str, looks: &str) -> StoreResult<()> {
    sqlx::query("UPDATE experiments SET looks = $1 WHERE id = $2")
        .bind(looks)
        .bind(id)
        .execute(&mut **conn)
        .await?;
    Ok(())
}

pub async fn all(conn: &mut Conn) -> StoreResult<Vec<ExperimentRow>> {
    Ok(
        sqlx::query_as::<_, ExperimentRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM experiments ORDER BY name"
        )))
        .fetch_all(&mut **conn)
        .await?,
    )
}

pub async fn by_name(conn: &mut Conn, name: &str) -> StoreResult<Option<ExperimentRow>> {
    Ok(
        sqlx::query_as::<_, ExperimentRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM experiments WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&mut **conn)
        .await?,
    )
}

/// A player's first assignment.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AssignmentRow {
    pub experiment_id: String,
    pub player_id: String,
    pub unit: String,
    pub variant: String,
    pub assigned_at: i64,
}

/// Stores first assignments; a player already assigned keeps its row.
pub async fn insert_assignments(tx: &mut Tx, rows: &[AssignmentRow]) -> StoreResult<()> {
    for chunk in rows.chunks(500) {
        let mut sql = String::from(
            "INSERT INTO experiment_assignments (experiment_id, player_id, unit, variant, assigned_at) VALUES ",
        );
        for index in 0..chunk.len() {
            if index > 0 {
                sql.push_str(", ");
            }
            let at = index * 5;
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${})",
                at + 1,
                at + 2,
                at + 3,
                at + 4,
                at + 5
            ));
        }
        sql.push_str(" ON CONFLICT (experiment_id, player_id) DO NOTHING");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            query = query
                .bind(&row.experiment_id)
                .bind(&row.player_id)
                .bind(&row.unit)
                .bind(&row.variant)
                .bind(row.assigned_at);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Each unit's first variant (the earliest assignment of its players).
pub async fn unit_variants(
    conn: &mut Conn,
    experiment_id: &str,
) -> StoreResult<Vec<(String, String)>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT unit, variant, assigned_at FROM experiment_assignments \
         WHERE experiment_id = $1 ORDER BY unit, assigned_at, player_id",
    )
    .bind(experiment_id)
    .fetch_all(&mut **conn)
    .await?;
    let mut units: Vec<(String, String)> = Vec::new();
    for (unit, variant, _) in rows {
        if units.last().is_none_or(|(last, _)| *last != unit) {
            units.push((unit, variant));
        }
    }
    Ok(units)
}

/// The ids of the players assigned (to know whom not to write again).
pub async fn assigned_players(conn: &mut Conn, experiment_id: &str) -> StoreResult<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT player_id FROM experiment_assignments WHERE experiment_id = $1")
            .bind(experiment_id)
            .fetch_all(&mut **conn)
            .await?;
    Ok(rows.into_iter().map(|(p,)| p).collect())
}

/// Units per variant.
pub async fn units_per_variant(
    conn: &mut Conn,
    experiment_id: &str,
) -> StoreResult<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT variant, COUNT(DISTINCT unit) FROM experiment_assignments \
         WHERE experiment_id = $1 GROUP BY variant",
    )
    .bind(experiment_id)
    .fetch_all(&mut **conn)
    .await?)
}

/// How a metric reads a unit's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// 1 when the unit sent one (with a field: one whose field is true or
    /// non-zero), else 0.
    Any,
    /// How many the unit sent.
    Count,
    /// The field's sum (0 without events).
    Sum,
    /// The field's mean over the unit's events; units without are left out.
    Mean,
}

/// Per variant: the units and the sum and sum of squares of each unit's
/// value, over the events of `event_type` its players sent after their
/// assignment and before `until_ms`.
pub async fn metric_sums(
    conn: &mut Conn,
    backend: Backend,
    experiment_id: &str,
    event_type: &str,
    field: Option<&str>,
    equals: Option<&str>,
    reading: Reading,
    until_ms: i64,
) -> StoreResult<Vec<(String, i64, f64, f64)>> {
    // A field as a number: numbers as they are, booleans 1/0, else NULL;
    // with `equals`, 1 when the field's text is that, else 0.
    let value = match (backend, field) {
        (_, None) => "1.0".to_owned(),
        (Backend::Sqlite, Some(_)) if equals.is_some() => {
            "(CASE WHEN json_type(t.payload, $4) = 'text' AND json_extract(t.payload, $4) = $5 \
             THEN 1.0 ELSE 0.0 END)"
                .to_owned()
        }
        (Backend::Postgres, Some(_)) if equals.is_some() => {
            "(CASE WHEN jsonb_typeof(t.payload::jsonb -> $4) = 'string' \
             AND (t.payload::jsonb ->> $4) = $5 THEN 1.0 ELSE 0.0 END)"
                .to_owned()
        }
        (Backend::Sqlite, Some(_)) => "(CASE json_type(t.payload, $4) \
             WHEN 'integer' THEN CAST(json_extract(t.payload, $4) AS REAL) \
             WHEN 'real' THEN json_extract(t.payload, $4) \
             WHEN 'true' THEN 1.0 WHEN 'false' THEN 0.0 END)"
            .to_owned(),
        (Backend::Postgres, Some(_)) => "(CASE jsonb_typeof(t.payload::jsonb -> $4) \
             WHEN 'number' THEN (t.payload::jsonb ->> $4)::double precision \
             WHEN 'boolean' THEN CASE WHEN (t.payload::jsonb ->> $4) = 'true' THEN 1.0 ELSE 0.0 END END)"
            .to_owned(),
    };
    let per_unit = match reading {
        Reading::Any if field.is_some() => {
            format!("MAX(CASE WHEN {value} <> 0 THEN 1.0 ELSE 0.0 END)")
        }
        Reading::Any => "MAX(CASE WHEN t.event_id IS NULL THEN 0.0 ELSE 1.0 END)".to_owned(),
        Reading::Count => "CAST(COUNT(t.event_id) AS DOUBLE PRECISION)".to_owned(),
        Reading::Sum => format!("COALESCE(SUM({value}), 0.0)"),
        Reading::Mean => format!("AVG({value})"),
    };
    let field_path = match (backend, field) {
        (Backend::Sqlite, Some(field)) => format!("$.\"{field}\""),
        (_, Some(field)) => field.to_owned(),
        (_, None) => String::new(),
    };
    let sql = format!(
        "SELECT variant, COUNT(*), CAST(COALESCE(SUM(v), 0) AS DOUBLE PRECISION), \
                CAST(COALESCE(SUM(v * v), 0) AS DOUBLE PRECISION) FROM ( \
           SELECT a.unit, MIN(a.variant) AS variant, CAST({per_unit} AS DOUBLE PRECISION) AS v \
           FROM experiment_assignments a \
           LEFT JOIN telemetry_events t ON t.player_id = a.player_id AND t.event_type = $2 \
             AND t.event_time >= a.assigned_at AND t.event_time < $3 \
             AND t.event_day <= $3 / 86400000 \
           WHERE a.experiment_id = $1 {unused} \
           GROUP BY a.unit \
         ) units WHERE v IS NOT NULL GROUP BY variant",
        // `$4` and `$5` are bound either way: the query reads them when a
        // field (and a value) is named.
        unused = match (field, equals) {
            (None, _) => "AND $4 = $4 AND $5 = $5",
            (Some(_), None) => "AND $5 = $5",
            (Some(_), Some(_)) => "",
        },
    );
    // PostgreSQL reads `0.0` as numeric: every value is cast to a double.
    let sql = if backend == Backend::Sqlite {
        sql.replace("DOUBLE PRECISION", "REAL")
    } else {
        sql
    };
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(experiment_id)
        .bind(event_type)
        .bind(until_ms)
        .bind(field_path)
        .bind(equals.unwrap_or(""))
        .fetch_all(&mut **conn)
        .await?)
}

/// One (experiment, metric, variant)'s observations from server reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSumsRow {
    pub experiment_id: String,
    /// The metric's storage key.
    pub metric: String,
    pub variant: String,
    pub sums: RatioSums,
}

/// Adds observations to the stored sums (a row is created the first time).
pub async fn add_server_sums(tx: &mut Tx, rows: &[ServerSumsRow]) -> StoreResult<()> {
    for row in rows {
        sqlx::query(
            "INSERT INTO experiment_server_sums \
               (experiment_id, metric, variant, reports, x, n, xx, nn, xn) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (experiment_id, metric, variant) DO UPDATE SET \
               reports = experiment_server_sums.reports + excluded.reports, \
               x = experiment_server_sums.x + excluded.x, \
               n = experiment_server_sums.n + excluded.n, \
               xx = experiment_server_sums.xx + excluded.xx, \
               nn = experiment_server_sums.nn + excluded.nn, \
               xn = experiment_server_sums.xn + excluded.xn",
        )
        .bind(&row.experiment_id)
        .bind(&row.metric)
        .bind(&row.variant)
        .bind(i64::try_from(row.sums.reports).unwrap_or(i64::MAX))
        .bind(row.sums.x)
        .bind(row.sums.n)
        .bind(row.sums.xx)
        .bind(row.sums.nn)
        .bind(row.sums.xn)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// (metric, variant, reports, x, n, xx, nn, xn) as stored.
type StoredSums = (String, String, i64, f64, f64, f64, f64, f64);

/// An experiment's stored sums over server reports.
pub async fn server_sums(conn: &mut Conn, experiment_id: &str) -> StoreResult<Vec<ServerSumsRow>> {
    let rows: Vec<StoredSums> = sqlx::query_as(
        "SELECT metric, variant, reports, x, n, xx, nn, xn FROM experiment_server_sums \
         WHERE experiment_id = $1",
    )
    .bind(experiment_id)
    .fetch_all(&mut **conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(metric, variant, reports, x, n, xx, nn, xn)| ServerSumsRow {
                experiment_id: experiment_id.to_owned(),
                metric,
                variant,
                sums: RatioSums {
                    reports: reports.max(0) as u64,
                    x,
                    n,
                    xx,
                    nn,
                    xn,
                },
            },
        )
        .collect())
}
