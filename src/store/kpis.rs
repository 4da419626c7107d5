//! KPI queries over `telemetry_events` and `players`: counts grouped in
//! SQL, the rates derived by `domain::kpis`. Payload fields are named by
//! the code (constants), never by a request; every value a request gives
//! is a bound parameter.

use super::{Backend, Conn, StoreResult};
use crate::domain::kpis::{Group, Kpi};

/// What narrows a KPI query (bound as `$1`..`$4`).
#[derive(Debug, Clone)]
pub struct Filter<'a> {
    pub from_ms: i64,
    pub to_ms: i64,
    /// Only players who took part in this live event.
    pub event: Option<&'a str>,
    /// The experiment id whose assignments `Group::Variant` reads.
    pub experiment_id: Option<&'a str>,
}

/// One grouped row: two keys and three figures.
pub type Row = (String, String, i64, i64, f64);

/// A payload field as text.
fn text(backend: Backend, alias: &str, field: &'static str) -> String {
    match backend {
        Backend::Sqlite => format!("CAST(json_extract({alias}.payload, '$.{field}') AS TEXT)"),
        Backend::Postgres => format!("({alias}.payload::jsonb ->> '{field}')"),
    }
}

/// A payload field as a number (NULL when it is none).
fn number(backend: Backend, alias: &str, field: &'static str) -> String {
    match backend {
        Backend::Sqlite => format!(
            "(CASE json_type({alias}.payload, '$.{field}') WHEN 'integer' THEN CAST(json_extract({alias}.payload, '$.{field}') AS REAL) \
             WHEN 'real' THEN json_extract({alias}.payload, '$.{field}') END)"
        ),
        Backend::Postgres => format!(
            "(CASE jsonb_typeof({alias}.payload::jsonb -> '{field}') WHEN 'number' THEN ({alias}.payload::jsonb ->> '{field}')::double precision END)"
        ),
    }
}

/// The window, the live event's participants and the variant join, for
/// rows of `telemetry_events` (`alias`) or `players` (`pl`, by first seen).
fn narrowing(backend: Backend, player: &str, filter: &Filter<'_>, time: &str) -> (String, String) {
    let join = if filter.experiment_id.is_some() {
        format!("JOIN experiment_assignments a ON a.player_id = {player} AND a.experiment_id = $4")
    } else {
        String::new()
    };
    let mut clause = format!("{time} >= $1 AND {time} < $2");
    // Rows of `telemetry_events` are bounded by day too: PostgreSQL reads
    // only the window's partitions, SQLite walks the key's day prefix.
    if let Some((alias, _)) = time.split_once(".event_time") {
        clause.push_str(&format!(
            " AND {alias}.event_day >= $1 / 86400000 AND {alias}.event_day <= $2 / 86400000"
        ));
    }
    clause.push_str(if filter.experiment_id.is_some() {
        ""
    } else {
        " AND $4 = $4"
    });
    if filter.event.is_some() {
        clause.push_str(&format!(
            " AND {player} IN (SELECT e.player_id FROM telemetry_events e WHERE e.event_type = 'event_participation' \
              AND e.event_day >= $1 / 86400000 AND e.event_day <= $2 / 86400000 \
              AND e.event_time >= $1 AND e.event_time < $2 AND {} = $3)",
            text(backend, "e", "event_id")
        ));
    } else {
        clause.push_str(" AND $3 = $3");
    }
    (join, clause)
}

/// A group's key as SQL over rows of `alias`. "No key" is an empty text
/// that still depends on the row, as PostgreSQL groups by no constant.
fn key(backend: Backend, group: Group, alias: &str) -> String {
    match group {
        Group::Day => format!("CAST({alias}.event_day AS TEXT)"),
        Group::Platform => format!("COALESCE({alias}.platform, '')"),
        Group::Variant => "a.variant".to_owned(),
        Group::Tier => format!("COALESCE({}, '')", text(backend, alias, "tier")),
        Group::ContentId | Group::None => format!("SUBSTR({alias}.player_id, 1, 0)"),
    }
}

fn sql_for(backend: Backend, sql: String) -> String {
    match backend {
        Backend::Sqlite => sql.replace("DOUBLE PRECISION", "REAL"),
        Backend::Postgres => sql,
    }
}

async fn fetch(
    conn: &mut Conn,
    backend: Backend,
    sql: String,
    filter: &Filter<'_>,
) -> StoreResult<Vec<Row>> {
    Ok(
        sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql_for(backend, sql)))
            .bind(filter.from_ms)
            .bind(filter.to_ms)
            .bind(filter.event.unwrap_or(""))
            .bind(filter.experiment_id.unwrap_or(""))
            .fetch_all(&mut **conn)
            .await?,
    )
}

/// Grouped counts for every KPI but the pick rate: per row, the keys
/// and the figures the KPI needs (see `telemetry::kpis`).
pub async fn grouped(
    conn: &mut Conn,
    backend: Backend,
    kpi: Kpi,
    group: Group,
    filter: &Filter<'_>,
) -> StoreResult<Vec<Row>> {
    // Per-day KPIs keep the day as their first key, the grouping second.
    let daily = |t: &str| -> (String, String) {
        match group {
            Group::None => (key(backend, Group::None, t), key(backend, Group::None, t)),
            Group::Day => (key(backend, Group::Day, t), key(backend, Group::None, t)),
            other => (key(backend, Group::Day, t), key(backend, other, t)),
        }
    };
    let sql = match kpi {
        Kpi::Dau | Kpi::ChallengeParticipation => {
            let (join, clause) = narrowing(backend, "t.player_id", filter, "t.event_time");
            let (k1, k2) = daily("t");
            format!(
                "SELECT {k1}, {k2}, COUNT(DISTINCT t.player_id), \
                   COUNT(DISTINCT CASE WHEN t.event_type = 'run_start' AND {challenge} IS NOT NULL THEN t.player_id END), \
                   CAST(0 AS DOUBLE PRECISION) \
                 FROM telemetry_events t {join} WHERE {clause} GROUP BY 1, 2 ORDER BY 1, 2",
                challenge = text(backend, "t", "challenge_id"),
            )
        }
        Kpi::SessionLength => {
            let (join, clause) = narrowing(backend, "t.player_id", filter, "t.event_time");
            let (k1, k2) = daily("t");
            format!(
                "SELECT {k1}, {k2}, COUNT({duration}), 0, CAST(COALESCE(SUM({duration}), 0) AS DOUBLE PRECISION) \
                 FROM telemetry_events t {join} WHERE t.event_type = 'session_end' AND {clause} GROUP BY 1, 2 ORDER BY 1, 2",
                duration = number(backend, "t", "duration_s"),
            )
        }
        Kpi::WinRate => {
            let (join, clause) = narrowing(backend, "t.player_id", filter, "t.event_time");
            let k1 = key(backend, group, "t");
            let outcome = text(backend, "t", "outcome");
            format!(
                "SELECT {k1}, '', COUNT(*), SUM(CASE WHEN {outcome} = 'win' THEN 1 ELSE 0 END), \
                   CAST(SUM(CASE WHEN {outcome} = 'loss' THEN 1 ELSE 0 END) AS DOUBLE PRECISION) \
                 FROM telemetry_events t {join} WHERE t.event_type = 'run_end' AND {clause} GROUP BY 1 ORDER BY 1"
            )
        }
        Kpi::Retention(days) => {
            let (join, clause) = narrowing(backend, "pl.player_id", filter, "pl.first_seen");
            let day = "(pl.first_seen / 86400000)";
            let none = "SUBSTR(pl.player_id, 1, 0)".to_owned();
            let k1 = match group {
                Group::None => none.clone(),
                _ => format!("CAST({day} AS TEXT)"),
            };
            let k2 = if group == Group::Variant {
                "a.variant".to_owned()
            } else {
                none
            };
            format!(
                "SELECT {k1}, {k2}, COUNT(*), SUM(CASE WHEN EXISTS (SELECT 1 FROM telemetry_events r \
                   WHERE r.event_day = {day} + {days} AND r.player_id = pl.player_id) THEN 1 ELSE 0 END), \
                   CAST(0 AS DOUBLE PRECISION) \
                 FROM players pl {join} WHERE {clause} GROUP BY 1, 2 ORDER BY 1, 2"
            )
        }
        Kpi::PickRate => unreachable!("the pick rate is `content`'s"),
    };
    fetch(conn, backend, sql, filter).await
}

/// Per content id: (id, offers, picks, picked runs ended, of them won);
/// and every run ended in the window: (runs, won).
pub async fn content(
    conn: &mut Conn,
    backend: Backend,
    filter: &Filter<'_>,
) -> StoreResult<(Vec<(String, i64, i64, i64, i64)>, (i64, i64))> {
    let (join, clause) = narrowing(backend, "t.player_id", filter, "t.event_time");
    let offers = match backend {
        Backend::Sqlite => format!(
            "SELECT CAST(o.value AS TEXT), '', COUNT(*), 0, CAST(0 AS DOUBLE PRECISION) \
             FROM telemetry_events t {join}, json_each(t.payload, '$.options') o \
             WHERE t.event_type = 'draft_offered' AND {clause} GROUP BY 1"
        ),
        Backend::Postgres => format!(
            "SELECT o.value, '', COUNT(*), 0, CAST(0 AS DOUBLE PRECISION) \
             FROM telemetry_events t {join} CROSS JOIN LATERAL jsonb_array_elements_text( \
               CASE WHEN jsonb_typeof(t.payload::jsonb -> 'options') = 'array' THEN t.payload::jsonb -> 'options' ELSE '[]'::jsonb END) AS o(value) \
             WHERE t.event_type = 'draft_offered' AND {clause} GROUP BY 1"
        ),
    };
    let offers = fetch(conn, backend, offers, filter).await?;
    let runs = format!(
        "SELECT t.player_id AS player, {run} AS run, MAX(CASE WHEN {outcome} = 'win' THEN 1 ELSE 0 END) AS won \
         FROM telemetry_events t {join} WHERE t.event_type = 'run_end' AND {clause} GROUP BY 1, 2",
        run = text(backend, "t", "run_id"),
        outcome = text(backend, "t", "outcome"),
    );
    let picks = format!(
        "SELECT p.picked, '', COUNT(*), COUNT(r.run), CAST(COALESCE(SUM(r.won), 0) AS DOUBLE PRECISION) FROM ( \
           SELECT t.player_id AS player, {run} AS run, {picked} AS picked FROM telemetry_events t {join} \
           WHERE t.event_type = 'draft_pick' AND {clause}) p \
         LEFT JOIN ({runs}) r ON r.player = p.player AND r.run = p.run \
         WHERE p.picked IS NOT NULL GROUP BY 1",
        run = text(backend, "t", "run_id"),
        picked = text(backend, "t", "picked_id"),
    );
    let picks = fetch(conn, backend, picks, filter).await?;
    let overall = format!(
        "SELECT '', '', COUNT(*), COALESCE(SUM(won), 0), CAST(0 AS DOUBLE PRECISION) FROM ({runs}) r"
    );
    let overall = fetch(conn, backend, overall, filter).await?;
    let mut ids: std::collections::BTreeMap<String, (i64, i64, i64, i64)> = Default::default();
    for (id, _, n, _, _) in offers {
        ids.entry(id).or_default().0 += n;
    }
    for (id, _, n, ended, won) in picks {
        let entry = ids.entry(id).or_default();
        entry.1 += n;
        entry.2 += ended;
        entry.3 += won as i64;
    }
    let overall = overall.first().map_or((0, 0), |r| (r.2, r.3));
    Ok((
        ids.into_iter()
            .map(|(id, (offers, picks, ended, won))| (id, offers, picks, ended, won))
            .collect(),
        overall,
    ))
}

/// A live event's telemetry in a window: distinct participants, its
/// `event_participation` actions (join, progress, complete) and the runs
/// started in it (`run_start` with its `event_id`).
pub async fn event_participation(
    conn: &mut Conn,
    backend: Backend,
    event_id: &str,
    from_ms: i64,
    to_ms: i64,
) -> StoreResult<(i64, i64, i64, i64, i64)> {
    let event = text(backend, "t", "event_id");
    let action = text(backend, "t", "action");
    let sql = format!(
        "SELECT COUNT(DISTINCT CASE WHEN t.event_type = 'event_participation' THEN t.player_id END), \
           COALESCE(SUM(CASE WHEN t.event_type = 'event_participation' AND {action} = 'join' THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN t.event_type = 'event_participation' AND {action} = 'progress' THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN t.event_type = 'event_participation' AND {action} = 'complete' THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN t.event_type = 'run_start' THEN 1 ELSE 0 END), 0) \
         FROM telemetry_events t \
         WHERE t.event_type IN ('event_participation', 'run_start') \
           AND t.event_day >= $1 / 86400000 AND t.event_day <= $2 / 86400000 \
           AND t.event_time >= $1 AND t.event_time < $2 AND {event} = $3"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(from_ms)
        .bind(to_ms)
        .bind(event_id)
        .fetch_one(&mut **conn)
        .await?)
}
