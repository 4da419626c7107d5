//! Key performance indicators over stored telemetry: which ones exist, the
//! query read at the edge into bounded values, and what is derived from
//! the store's counts (rates, retention, a content id's win contribution,
//! the balance report's outliers).

use std::collections::BTreeMap;

/// Longest window one query reads.
pub const MAX_WINDOW_DAYS: i64 = 92;
/// The window when none is given: the last seven days.
pub const DEFAULT_WINDOW_DAYS: i64 = 7;
const DAY_MS: i64 = 86_400_000;

/// The KPIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kpi {
    /// Distinct players with any event, per UTC day.
    Dau,
    /// Of the players first seen on a day, those with an event `n` days later.
    Retention(u8),
    /// `run_end` outcomes: wins ÷ runs ended, per tier.
    WinRate,
    /// Per content id: picks ÷ offers in drafts, and the win rate of the
    /// runs it was picked in against all runs ended (its win contribution).
    PickRate,
    /// Players who started a daily-challenge run (`run_start` with a
    /// `challenge_id`) ÷ DAU, per day.
    ChallengeParticipation,
    /// `session_end` `duration_s`: sessions and mean length, per day.
    SessionLength,
}

impl Kpi {
    pub const NAMES: [&'static str; 7] = [
        "dau",
        "retention-d1",
        "retention-d7",
        "win-rate",
        "pick-rate",
        "challenge-participation",
        "session-length",
    ];

    pub fn parse(name: &str) -> Option<Kpi> {
        Some(match name {
            "dau" => Kpi::Dau,
            "retention-d1" => Kpi::Retention(1),
            "retention-d7" => Kpi::Retention(7),
            "win-rate" => Kpi::WinRate,
            "pick-rate" => Kpi::PickRate,
            "challenge-participation" => Kpi::ChallengeParticipation,
            "session-length" => Kpi::SessionLength,
            _ => return None,
        })
    }

    /// The groupings this KPI reads, the first its default.
    pub fn groupings(self) -> &'static [Group] {
        match self {
            Kpi::Dau | Kpi::ChallengeParticipation | Kpi::SessionLength => {
                &[Group::Day, Group::Platform, Group::Variant, Group::None]
            }
            Kpi::Retention(_) => &[Group::Day, Group::Variant, Group::None],
            Kpi::WinRate => &[
                Group::Tier,
                Group::Day,
                Group::Platform,
                Group::Variant,
                Group::None,
            ],
            Kpi::PickRate => &[Group::ContentId],
        }
    }
}

/// What a KPI's rows are split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// The UTC day (`2026-12-03`).
    Day,
    Platform,
    /// The experiment variant of the player (needs `experiment`).
    Variant,
    /// The run's difficulty tier (`tier` in the payload).
    Tier,
    /// The content id (pick rate's only grouping).
    ContentId,
    /// One row.
    None,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::Day => "day",
            Group::Platform => "platform",
            Group::Variant => "variant",
            Group::Tier => "tier",
            Group::ContentId => "contentId",
            Group::None => "none",
        }
    }

    fn parse(text: &str) -> Option<Group> {
        [
            Group::Day,
            Group::Platform,
            Group::Variant,
            Group::Tier,
            Group::ContentId,
            Group::None,
        ]
        .into_iter()
        .find(|g| g.name() == text)
    }
}

/// A KPI query, read.
#[derive(Debug, Clone, PartialEq)]
pub struct KpiQuery {
    pub kpi: Kpi,
    pub group: Group,
    /// Events at or after (Unix ms).
    pub from_ms: i64,
    /// Events before.
    pub to_ms: i64,
    /// Only players who took part in this live event (an
    /// `event_participation` with this `event_id` in the window).
    pub event: Option<String>,
    /// The experiment whose variants `groupBy=variant` reads.
    pub experiment: Option<String>,
}

/// Why a query is refused: the parameter and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub parameter: &'static str,
    pub message: String,
}

fn refuse(parameter: &'static str, message: impl Into<String>) -> QueryError {
    QueryError {
        parameter,
        message: message.into(),
    }
}

/// An instant: RFC 3339, or a UTC date (`2026-12-03`, its midnight).
pub fn parse_instant(text: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| {
            d.and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp_millis()
        })
        .map_err(|_| "an RFC 3339 instant or a date like 2026-12-03".to_owned())
}

fn instant(text: &str, parameter: &'static str) -> Result<i64, QueryError> {
    parse_instant(text).map_err(|message| refuse(parameter, message))
}

fn short_name(text: &str, parameter: &'static str) -> Result<String, QueryError> {
    let ok = !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(refuse(
            parameter,
            "1 to 128 letters, digits, '-', '_' or '.'",
        ))
    }
}

impl KpiQuery {
    /// Reads `name` and the query's parameters (each at most once).
    pub fn parse(
        name: &str,
        params: &[(String, String)],
        now_ms: i64,
    ) -> Result<KpiQuery, QueryError> {
        let kpi = Kpi::parse(name).ok_or_else(|| {
            refuse(
                "name",
                format!("unknown KPI; one of {}", Kpi::NAMES.join(", ")),
            )
        })?;
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, value) in params {
            let known = ["from", "to", "groupBy", "event", "experiment"];
            let Some(key) = known.iter().find(|k| **k == key.as_str()) else {
                return Err(refuse(
                    "query",
                    format!(
                        "{:?}: unknown parameter ({})",
                        key.chars().take(64).collect::<String>(),
                        known.join(", ")
                    ),
                ));
            };
            if seen.insert(key, value.as_str()).is_some() {
                return Err(refuse("query", format!("{key}: given twice")));
            }
        }
        let to_ms = match seen.get("to") {
            Some(text) => instant(text, "to")?,
            None => now_ms,
        };
        let from_ms = match seen.get("from") {
            Some(text) => instant(text, "from")?,
            None => to_ms - DEFAULT_WINDOW_DAYS * DAY_MS,
        };
        if from_ms >= to_ms {
            return Err(refuse("to", "after from"));
        }
        if to_ms - from_ms > MAX_WINDOW_DAYS * DAY_MS {
            return Err(refuse(
                "from",
                format!("at most {MAX_WINDOW_DAYS} days before to"),
            ));
        }
        let group = match seen.get("groupBy") {
            None => kpi.groupings()[0],
            Some(text) => Group::parse(text)
                .filter(|g| kpi.groupings().contains(g))
                .ok_or_else(|| {
                    let names: Vec<&str> = kpi.groupings().iter().map(|g| g.name()).collect();
                    refuse("groupBy", format!("one of {} for {name}", names.join(", ")))
                })?,
        };
        let event = seen
            .get("event")
            .map(|e| short_name(e, "event"))
            .transpose()?;
        let experiment = seen
            .get("experiment")
            .map(|e| short_name(e, "experiment"))
            .transpose()?;
        if group == Group::Variant && experiment.is_none() {
            return Err(refuse("experiment", "required with groupBy=variant"));
        }
        Ok(KpiQuery {
            kpi,
            group,
            from_ms,
            to_ms,
            event,
            experiment,
        })
    }
}

/// `part ÷ whole`, none for an empty whole.
pub fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| part / whole)
}

/// One content id's draft figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentFigures {
    pub id: String,
    pub offers: u64,
    pub picks: u64,
    /// Runs it was picked in that ended, and those won.
    pub runs_ended: u64,
    pub runs_won: u64,
}

/// A content id's row: pick rate, and its win contribution — the win rate
/// of the runs it was picked in minus the win rate of every run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentRow {
    pub figures: ContentFigures,
    pub pick_rate: Option<f64>,
    pub win_rate: Option<f64>,
    pub win_contribution: Option<f64>,
}

pub fn content_rows(
    figures: Vec<ContentFigures>,
    overall_win_rate: Option<f64>,
) -> Vec<ContentRow> {
    figures
        .into_iter()
        .map(|f| {
            let win_rate = ratio(f.runs_won as f64, f.runs_ended as f64);
            ContentRow {
                pick_rate: ratio(f.picks as f64, f.offers as f64),
                win_contribution: win_rate.zip(overall_win_rate).map(|(w, all)| w - all),
                win_rate,
                figures: f,
            }
        })
        .collect()
}

/// The balance report's content: the `n` ids with the highest and the
/// lowest win contribution among those picked in at least `min_runs`
/// ended runs (too few runs say nothing), best first and worst first.
pub fn outliers(
    rows: &[ContentRow],
    n: usize,
    min_runs: u64,
) -> (Vec<&ContentRow>, Vec<&ContentRow>) {
    let mut rated: Vec<&ContentRow> = rows
        .iter()
        .filter(|r| r.figures.runs_ended >= min_runs && r.win_contribution.is_some())
        .collect();
    rated.sort_by(|a, b| {
        b.win_contribution
            .partial_cmp(&a.win_contribution)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.figures.id.cmp(&b.figures.id))
    });
    let over: Vec<&ContentRow> = rated.iter().take(n).copied().collect();
    let under: Vec<&ContentRow> = rated.iter().rev().take(n).copied().collect();
    (over, under)
}

/// The UTC date of a day number.
pub fn date_of_day(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day * DAY_MS)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_000_000_000;

    fn query(name: &str, params: &[(&str, &str)]) -> Result<KpiQuery, QueryError> {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        KpiQuery::parse(name, &params, NOW)
    }

    #[test]
    fn a_query_is_read_with_defaults_and_bounds() {
        let q = query("win-rate", &[]).unwrap();
        assert_eq!(q.group, Group::Tier);
        assert_eq!(q.to_ms - q.from_ms, 7 * DAY_MS);
        let q = query(
            "dau",
            &[
                ("from", "2026-11-01"),
                ("to", "2026-11-03T12:00:00Z"),
                ("groupBy", "platform"),
            ],
        )
        .unwrap();
        assert_eq!(q.from_ms, 1_793_491_200_000);
        assert_eq!(q.group, Group::Platform);
        assert_eq!(query("mau", &[]).unwrap_err().parameter, "name");
        assert_eq!(
            query("dau", &[("groupBy", "tier")]).unwrap_err().parameter,
            "groupBy"
        );
        assert_eq!(
            query("dau", &[("groupBy", "variant")])
                .unwrap_err()
                .parameter,
            "experiment"
        );
        assert_eq!(
            query("dau", &[("from", "2026-01-01"), ("to", "2026-12-01")])
                .unwrap_err()
                .parameter,
            "from"
        );
        assert_eq!(
            query("dau", &[("from", "2026-12-01"), ("to", "2026-11-01")])
                .unwrap_err()
                .parameter,
            "to"
        );
        assert_eq!(
            query("dau", &[("from", "yesterday")])
                .unwrap_err()
                .parameter,
            "from"
        );
        assert_eq!(
            query("dau", &[("event", "x y")]).unwrap_err().parameter,
            "event"
        );
        assert_eq!(
            query("dau", &[("surprise", "1")]).unwrap_err().parameter,
            "query"
        );
        assert_eq!(
            query("dau", &[("to", "2026-11-01"), ("to", "2026-11-02")])
                .unwrap_err()
                .parameter,
            "query"
        );
    }

    #[test]
    fn win_contribution_is_against_all_runs_and_outliers_need_enough_runs() {
        let figures = |id: &str, offers, picks, ended, won| ContentFigures {
            id: id.into(),
            offers,
            picks,
            runs_ended: ended,
            runs_won: won,
        };
        let rows = content_rows(
            vec![
                figures("axe", 10, 5, 4, 3),
                figures("bow", 10, 2, 2, 0),
                figures("cape", 0, 0, 0, 0),
                figures("dirk", 4, 4, 4, 1),
            ],
            Some(0.5),
        );
        assert_eq!(rows[0].pick_rate, Some(0.5));
        assert_eq!(rows[0].win_contribution, Some(0.25));
        assert_eq!(rows[2].pick_rate, None);
        assert_eq!(rows[2].win_contribution, None);
        let (over, under) = outliers(&rows, 5, 3);
        let ids = |rows: &[&ContentRow]| {
            rows.iter()
                .map(|r| r.figures.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&over), ["axe", "dirk"]);
        assert_eq!(ids(&under), ["dirk", "axe"]);
        assert_eq!(date_of_day(20_790), "2026-12-03");
    }
}

/// A tier's run outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct TierFigures {
    pub tier: String,
    pub runs: u64,
    pub losses: u64,
}

impl TierFigures {
    pub fn fail_rate(&self) -> Option<f64> {
        ratio(self.losses as f64, self.runs as f64)
    }
}

/// The tiers (with at least `min_runs` runs ended) whose fail rate is
/// above `max_fail` (too hard) and below `min_fail` (too easy).
pub fn tiers_off_target(
    tiers: &[TierFigures],
    min_runs: u64,
    min_fail: f64,
    max_fail: f64,
) -> (Vec<&TierFigures>, Vec<&TierFigures>) {
    let rated = || {
        tiers
            .iter()
            .filter(move |t| t.runs >= min_runs)
            .filter_map(|t| Some((t, t.fail_rate()?)))
    };
    (
        rated()
            .filter(|(_, f)| *f > max_fail)
            .map(|(t, _)| t)
            .collect(),
        rated()
            .filter(|(_, f)| *f < min_fail)
            .map(|(t, _)| t)
            .collect(),
    )
}

#[cfg(test)]
mod tier_tests {
    use super::*;

    #[test]
    fn tiers_outside_the_band_with_enough_runs_are_flagged() {
        let tier = |tier: &str, runs, losses| TierFigures {
            tier: tier.into(),
            runs,
            losses,
        };
        let tiers = [
            tier("1", 100, 10),
            tier("2", 100, 50),
            tier("3", 100, 90),
            tier("4", 5, 5),
        ];
        let (hard, easy) = tiers_off_target(&tiers, 20, 0.2, 0.8);
        assert_eq!(
            hard.iter().map(|t| t.tier.as_str()).collect::<Vec<_>>(),
            ["3"]
        );
        assert_eq!(
            easy.iter().map(|t| t.tier.as_str()).collect::<Vec<_>>(),
            ["1"]
        );
    }
}
