//! Experiments' response bodies.

use super::ExperimentEntry;
use crate::{
    catalog::views::rfc3339,
    domain::{
        experiment_stats::{Interval, SampleRatio},
        experiments::{metrics::MetricSource, results::MetricOutcome},
    },
};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// An experiment: its definition as accepted, with its status.
pub fn experiment_view(entry: &ExperimentEntry) -> Value {
    let mut view = entry.body.as_object().cloned().unwrap_or_default();
    let extra = json!({
        "status": entry.status.name(),
        "statusReason": entry.status_reason,
        "winner": entry.winner,
        "unit": entry.spec.unit,
        "control": entry.spec.variants[entry.spec.control].id,
        "revision": entry.revision,
        "pinnedUnits": entry.definition.pins.len(),
        "startedAt": entry.started_at.map(rfc3339),
        "finishedAt": entry.finished_at.map(rfc3339),
        "createdBy": entry.created_by,
        "createdAt": rfc3339(entry.created_at),
        "updatedAt": rfc3339(entry.updated_at),
    });
    if let Value::Object(extra) = extra {
        view.extend(extra);
    }
    Value::Object(view)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentList {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
}

/// One of a player's experiments, in the studios' shape.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentView {
    pub experiment_id: String,
    pub variant_id: String,
    /// The config the variant changes.
    pub config: String,
    /// The variant's merge patch of the config.
    #[schema(value_type = Object)]
    pub parameters: Value,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentsView {
    pub player_id: String,
    pub assignments: Vec<AssignmentView>,
}

/// What a promotion made.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionView {
    pub experiment: String,
    pub variant: String,
    pub config: String,
    /// The new version.
    pub version: String,
    /// The deployment of it, when asked.
    pub deployment: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IntervalView {
    pub low: f64,
    pub high: f64,
}

impl From<Interval> for IntervalView {
    fn from(i: Interval) -> Self {
        IntervalView {
            low: i.low,
            high: i.high,
        }
    }
}

/// A variant against control.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersusView {
    /// Variant minus control.
    pub difference: f64,
    /// The difference as a fraction of control's value.
    pub relative: Option<f64>,
    /// 95 % interval of the difference.
    pub interval: IntervalView,
    /// Welch's t or the two-proportion z.
    pub statistic: f64,
    /// Fixed-horizon p-value: honest only when read once, at the planned end.
    pub p_value: f64,
    /// Always-valid p-value (mixture SPRT, smallest over every look): honest
    /// whenever it is read.
    pub sequential_p_value: f64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantResultView {
    pub variant: String,
    pub control: bool,
    /// Units with a value for this metric.
    pub units: u64,
    /// The mean per unit, or the rate.
    pub value: f64,
    /// 95 % interval (Student's t for means, Wilson for rates).
    pub interval: Option<IntervalView>,
    pub vs_control: Option<VersusView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricResultView {
    pub name: String,
    /// `binomial`, `count`, `sum`, `duration`.
    pub kind: String,
    /// `telemetry` (each variant's `units` are units), or `server` (the
    /// servers' reports split by variant: `units` counts reports, each one
    /// observation of the variant's players over its window).
    pub source: String,
    pub primary: bool,
    pub variants: Vec<VariantResultView>,
}

/// The sample-ratio-mismatch check: the units each variant got against
/// the weights.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SampleRatioView {
    pub chi_square: f64,
    pub degrees_of_freedom: u32,
    pub p_value: f64,
    /// p < 0.001: the split is not the weights'; the results cannot be trusted.
    pub mismatch: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultsView {
    pub experiment: String,
    pub status: String,
    pub at: String,
    /// Units assigned to each variant.
    #[schema(value_type = Object)]
    pub units: serde_json::Map<String, Value>,
    pub sample_ratio: Option<SampleRatioView>,
    pub metrics: Vec<MetricResultView>,
}

pub fn results_view(
    entry: &ExperimentEntry,
    units: &[u64],
    split: Option<&SampleRatio>,
    outcomes: &[MetricOutcome],
    at_ms: i64,
) -> ResultsView {
    ResultsView {
        experiment: entry.name().to_owned(),
        status: entry.status.name().to_owned(),
        at: rfc3339(at_ms),
        units: entry
            .spec
            .variants
            .iter()
            .zip(units)
            .map(|(v, n)| (v.id.clone(), json!(n)))
            .collect(),
        sample_ratio: split.map(|s| SampleRatioView {
            chi_square: s.chi_square,
            degrees_of_freedom: s.degrees_of_freedom,
            p_value: s.p_value,
            mismatch: s.mismatch,
        }),
        metrics: outcomes
            .iter()
            .enumerate()
            .map(|(index, outcome)| MetricResultView {
                name: outcome.metric.clone(),
                kind: outcome.kind.name().to_owned(),
                source: match entry.spec.metrics.get(index).map(|m| &m.source) {
                    Some(MetricSource::Server { .. }) => "server",
                    _ => "telemetry",
                }
                .to_owned(),
                primary: index == 0,
                variants: outcome
                    .variants
                    .iter()
                    .map(|v| VariantResultView {
                        control: v.variant == entry.spec.variants[entry.spec.control].id,
                        variant: v.variant.clone(),
                        units: v.units,
                        value: v.value,
                        interval: v.interval.map(Into::into),
                        vs_control: v.versus_control.as_ref().map(|versus| VersusView {
                            difference: versus.comparison.difference,
                            relative: versus.relative,
                            interval: versus.comparison.interval.into(),
                            statistic: versus.comparison.statistic,
                            p_value: versus.comparison.p_value,
                            sequential_p_value: versus.sequential_p,
                        }),
                    })
                    .collect(),
            })
            .collect(),
    }
}
