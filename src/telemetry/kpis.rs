//! `GET /kpis/{name}`: a KPI's rows from the store's grouped counts, and
//! the balance report's figures.

use super::{Telemetry, TelemetryError, invalid};
use crate::{
    catalog::views::rfc3339,
    domain::kpis::{
        ContentFigures, ContentRow, Group, Kpi, KpiQuery, content_rows, date_of_day, ratio,
    },
    store::{experiments as experiment_store, kpis as store},
};
use serde_json::{Map, Value, json};

/// The store's per-id counts as the domain reads them.
fn figures(ids: Vec<(String, i64, i64, i64, i64)>) -> Vec<ContentFigures> {
    ids.into_iter()
        .map(|(id, offers, picks, ended, won)| ContentFigures {
            id,
            offers: offers.max(0) as u64,
            picks: picks.max(0) as u64,
            runs_ended: ended.max(0) as u64,
            runs_won: won.max(0) as u64,
        })
        .collect()
}

fn day_text(key: &str) -> Value {
    key.parse::<i64>()
        .map_or(Value::Null, |day| Value::String(date_of_day(day)))
}

impl Telemetry {
    /// A KPI over the query's window (see `domain::kpis`).
    pub async fn kpi(
        &self,
        name: &str,
        params: &[(String, String)],
    ) -> Result<Value, TelemetryError> {
        let query = KpiQuery::parse(name, params, crate::store::now_ms())
            .map_err(|e| invalid(&format!("/query/{}", e.parameter), e.message))?;
        let mut conn = self.store.conn().await?;
        let experiment_id = match &query.experiment {
            None => None,
            Some(name) => Some(
                experiment_store::by_name(&mut conn, name)
                    .await?
                    .ok_or_else(|| invalid("/query/experiment", format!("no experiment {name:?}")))?
                    .id,
            ),
        };
        let filter = store::Filter {
            from_ms: query.from_ms,
            to_ms: query.to_ms,
            event: query.event.as_deref(),
            experiment_id: experiment_id.as_deref(),
        };
        let backend = self.store.backend();
        let mut answer = json!({
            "kpi": name,
            "groupBy": query.group.name(),
            "from": rfc3339(query.from_ms),
            "to": rfc3339(query.to_ms),
            "event": query.event,
            "experiment": query.experiment,
        });
        if query.kpi == Kpi::PickRate {
            let (ids, (runs, won)) = store::content(&mut conn, backend, &filter).await?;
            let overall = ratio(won as f64, runs as f64);
            let rows = content_rows(figures(ids), overall);
            answer["runsEnded"] = json!(runs);
            answer["overallWinRate"] = json!(overall);
            answer["rows"] = Value::Array(rows.iter().map(content_view).collect());
            return Ok(answer);
        }
        let rows = store::grouped(&mut conn, backend, query.kpi, query.group, &filter).await?;
        answer["rows"] = Value::Array(
            rows.into_iter()
                .map(|row| row_view(query.kpi, query.group, row))
                .collect(),
        );
        Ok(answer)
    }
}

pub fn content_view(row: &ContentRow) -> Value {
    json!({
        "contentId": row.figures.id,
        "offers": row.figures.offers,
        "picks": row.figures.picks,
        "pickRate": row.pick_rate,
        "runsEnded": row.figures.runs_ended,
        "runsWon": row.figures.runs_won,
        "winRate": row.win_rate,
        "winContribution": row.win_contribution,
    })
}

/// A per-day KPI's keys (or a retention cohort's): the day, then the
/// grouping's own key.
fn daily_keys(view: &mut Map<String, Value>, group: Group, first: &str, k1: &str, k2: &str) {
    match group {
        Group::None => {}
        Group::Day => {
            view.insert(first.into(), day_text(k1));
        }
        other => {
            view.insert(first.into(), day_text(k1));
            view.insert(other.name().into(), Value::String(k2.to_owned()));
        }
    }
}

fn row_view(kpi: Kpi, group: Group, (k1, k2, a, b, c): store::Row) -> Value {
    let mut view = Map::new();
    match kpi {
        Kpi::Dau => {
            daily_keys(&mut view, group, "day", &k1, &k2);
            view.insert("dau".into(), json!(a));
        }
        Kpi::ChallengeParticipation => {
            daily_keys(&mut view, group, "day", &k1, &k2);
            view.insert("dau".into(), json!(a));
            view.insert("participants".into(), json!(b));
            view.insert("rate".into(), json!(ratio(b as f64, a as f64)));
        }
        Kpi::SessionLength => {
            daily_keys(&mut view, group, "day", &k1, &k2);
            view.insert("sessions".into(), json!(a));
            view.insert("meanSeconds".into(), json!(ratio(c, a as f64)));
        }
        Kpi::WinRate => {
            match group {
                Group::None => {}
                Group::Day => {
                    view.insert("day".into(), day_text(&k1));
                }
                other => {
                    view.insert(other.name().into(), Value::String(k1.clone()));
                }
            }
            view.insert("runs".into(), json!(a));
            view.insert("wins".into(), json!(b));
            view.insert("losses".into(), json!(c as i64));
            view.insert("winRate".into(), json!(ratio(b as f64, a as f64)));
            view.insert("failRate".into(), json!(ratio(c, a as f64)));
        }
        Kpi::Retention(_) => {
            daily_keys(&mut view, group, "cohortDay", &k1, &k2);
            view.insert("cohort".into(), json!(a));
            view.insert("retained".into(), json!(b));
            view.insert("rate".into(), json!(ratio(b as f64, a as f64)));
        }
        Kpi::PickRate => {}
    }
    Value::Object(view)
}

/// What `hotswap report balance` asks.
#[derive(Debug, Clone)]
pub struct BalanceQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    /// How many over- and under-performing content ids.
    pub top: usize,
    /// Fewest runs ended for a content id or a tier to be judged.
    pub min_runs: u64,
    pub min_fail: f64,
    pub max_fail: f64,
}

/// The studios' balance loop's flags, as text: the `top` most over- and
/// under-performing content ids by win contribution, and the tiers whose
/// fail rate is outside `[min_fail, max_fail]`.
pub async fn balance_report(store: &crate::Store, query: &BalanceQuery) -> anyhow::Result<String> {
    use crate::domain::kpis::{TierFigures, outliers, tiers_off_target};
    use std::fmt::Write;
    let filter = store::Filter {
        from_ms: query.from_ms,
        to_ms: query.to_ms,
        event: None,
        experiment_id: None,
    };
    let mut conn = store.conn().await?;
    let (ids, (runs, won)) = store::content(&mut conn, store.backend(), &filter).await?;
    let overall = ratio(won as f64, runs as f64);
    let rows = content_rows(figures(ids), overall);
    let tiers: Vec<TierFigures> = store::grouped(
        &mut conn,
        store.backend(),
        Kpi::WinRate,
        Group::Tier,
        &filter,
    )
    .await?
    .into_iter()
    .map(|(tier, _, runs, _, losses)| TierFigures {
        tier,
        runs: runs.max(0) as u64,
        losses: losses.max(0.0) as u64,
    })
    .collect();
    let percent = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.1} %", v * 100.0));
    let signed = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:+.1} pts", v * 100.0));
    let mut out = String::new();
    writeln!(
        out,
        "Balance report {} .. {}: {runs} runs ended, win rate {}",
        rfc3339(query.from_ms),
        rfc3339(query.to_ms),
        percent(overall)
    )?;
    let (over, under) = outliers(&rows, query.top, query.min_runs);
    for (title, list) in [
        ("Most over-performing content (win contribution)", over),
        ("Most under-performing content (win contribution)", under),
    ] {
        writeln!(out, "\n{title}, at least {} runs:", query.min_runs)?;
        if list.is_empty() {
            writeln!(out, "  (none with enough runs)")?;
        }
        for row in list {
            writeln!(
                out,
                "  {:<24} {:>10}  win rate {:>8}  picked {:>8} of offers  ({} runs)",
                row.figures.id,
                signed(row.win_contribution),
                percent(row.win_rate),
                percent(row.pick_rate),
                row.figures.runs_ended
            )?;
        }
    }
    let (hard, easy) = tiers_off_target(&tiers, query.min_runs, query.min_fail, query.max_fail);
    for (title, list) in [
        (
            format!(
                "Tiers failed too often (above {})",
                percent(Some(query.max_fail))
            ),
            hard,
        ),
        (
            format!(
                "Tiers failed too rarely (below {})",
                percent(Some(query.min_fail))
            ),
            easy,
        ),
    ] {
        writeln!(out, "\n{title}:")?;
        if list.is_empty() {
            writeln!(out, "  (none)")?;
        }
        for tier in list {
            writeln!(
                out,
                "  tier {:<6} fail rate {:>8}  ({} runs)",
                if tier.tier.is_empty() {
                    "?"
                } else {
                    &tier.tier
                },
                percent(tier.fail_rate()),
                tier.runs
            )?;
        }
    }
    Ok(out)
}
