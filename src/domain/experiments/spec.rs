//! An experiment's definition, parsed at the edge into bounded types, its
//! lifecycle (`Draft → Running ⇄ Paused → Finished`), and what a revision
//! of a started experiment may change.
//!
//! What needs the store (the config and its schema under each variant's
//! patch, segment names, telemetry event types) is checked by the caller
//! with the parsed value.

use crate::domain::{
    document::depth,
    live_event::{FieldError, MAX_PATCH_BYTES, MAX_PATCH_DEPTH, parse_audience},
    names::Slug,
    resolution::Audience,
};
use serde_json::Value;
use std::collections::BTreeSet;

use super::metrics::parse_metrics;
pub use super::metrics::{MetricKind, MetricSource, MetricSpec, ServerMetric};

/// Most variants, the control included.
pub const MAX_VARIANTS: usize = 8;
/// Most metrics one experiment reads.
pub const MAX_METRICS: usize = 10;
/// Most guardrails.
pub const MAX_GUARDRAILS: usize = 10;
/// Fewest units in each arm before a guardrail may pause the experiment.
pub const DEFAULT_GUARDRAIL_MIN_UNITS: u64 = 100;

/// Where an experiment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Draft,
    Running,
    Paused,
    Finished,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Draft,
        Status::Running,
        Status::Paused,
        Status::Finished,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::Draft => "Draft",
            Status::Running => "Running",
            Status::Paused => "Paused",
            Status::Finished => "Finished",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Self::ALL.into_iter().find(|s| s.name() == text)
    }
}

/// An operator's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Start,
    Pause,
    Resume,
    Finish,
}

impl Control {
    pub fn name(self) -> &'static str {
        match self {
            Control::Start => "start",
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Finish => "finish",
        }
    }
}

/// The status a command leads to, or why it may not be given now.
pub fn next_status(status: Status, control: Control) -> Result<Status, String> {
    use {Control as C, Status as S};
    match (status, control) {
        (S::Draft, C::Start) => Ok(S::Running),
        (S::Running, C::Pause) => Ok(S::Paused),
        (S::Paused, C::Resume) => Ok(S::Running),
        (S::Running | S::Paused, C::Finish) => Ok(S::Finished),
        (S::Draft, C::Finish) => Ok(S::Finished),
        (status, control) => Err(format!(
            "an experiment that is {} cannot {}: Draft → start → Running ⇄ pause/resume ⇄ Paused → finish → Finished",
            status.name(),
            control.name()
        )),
    }
}

/// Which way a metric must not move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harm {
    Increase,
    Decrease,
}

/// A guardrail: a variant that moves `metric` the harmful way by more
/// than `max_change` (relative to control), with an always-valid p-value
/// under `alpha` and at least `min_units` units in each arm, pauses the
/// experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Guardrail {
    pub metric: String,
    pub harm: Harm,
    /// A fraction of control's value (0.05: five per cent).
    pub max_change: f64,
    pub alpha: f64,
    pub min_units: u64,
}

/// One variant: an id, a weight, a merge patch (the control's is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub id: String,
    pub weight: f64,
    pub patch: Value,
}

/// A parsed experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSpec {
    pub name: Slug,
    pub description: String,
    pub config: Slug,
    pub variants: Vec<Variant>,
    /// The index of the control (the variant with an empty patch).
    pub control: usize,
    pub audience: Audience,
    /// `player`, or the attribute that names the unit.
    pub unit: String,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub metrics: Vec<MetricSpec>,
    pub guardrails: Vec<Guardrail>,
}

const FIELDS: [&str; 10] = [
    "name",
    "description",
    "config",
    "variants",
    "audience",
    "unit",
    "startTime",
    "endTime",
    "metrics",
    "guardrails",
];

pub(super) fn error(path: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_owned(),
        message: message.into(),
    }
}

pub(super) fn keys_known(
    object: &serde_json::Map<String, Value>,
    at: &str,
    known: &[&str],
) -> Result<(), FieldError> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(error(&format!("{at}/{unknown}"), "unknown field")),
        None => Ok(()),
    }
}

/// A short name: letters, digits, `_`, `-`, `.`, 1 to `max` characters.
pub(super) fn short_name(
    value: Option<&Value>,
    at: &str,
    max: usize,
) -> Result<String, FieldError> {
    value
        .and_then(Value::as_str)
        .filter(|t| {
            !t.is_empty()
                && t.len() <= max
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        })
        .map(str::to_owned)
        .ok_or_else(|| error(at, format!("1 to {max} letters, digits, '_', '-' or '.'")))
}

fn instant(value: Option<&Value>, at: &str) -> Result<Option<i64>, FieldError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.timestamp_millis()))
            .map_err(|_| error(at, "an RFC 3339 time like 2027-01-10T00:00:00Z")),
        Some(_) => Err(error(at, "an RFC 3339 time like 2027-01-10T00:00:00Z")),
    }
}

impl ExperimentSpec {
    /// Reads a `POST /experiments` body.
    pub fn parse(body: &Value) -> Result<ExperimentSpec, FieldError> {
        let Some(object) = body.as_object() else {
            return Err(error("", "an experiment is an object"));
        };
        keys_known(object, "", &FIELDS)?;
        let slug = |key: &str| -> Result<Slug, FieldError> {
            let text = object
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| error(&format!("/{key}"), "required: a name"))?;
            Slug::parse(text).map_err(|e| error(&format!("/{key}"), e.to_string()))
        };
        let name = slug("name")?;
        let config = slug("config")?;
        let description = match object.get("description") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text))
                if text.chars().count() <= 1024
                    && !text.chars().any(|c| c.is_control() && c != '\n') =>
            {
                text.clone()
            }
            Some(_) => return Err(error("/description", "a text of at most 1024 characters")),
        };
        let (variants, control) = parse_variants(object.get("variants"))?;
        let audience = parse_audience(object.get("audience"))?;
        let unit = match object.get("unit") {
            None | Some(Value::Null) => "player".to_owned(),
            value => short_name(value, "/unit", 64)?,
        };
        let start_ms = instant(object.get("startTime"), "/startTime")?;
        let end_ms = instant(object.get("endTime"), "/endTime")?;
        if let (Some(start), Some(end)) = (start_ms, end_ms)
            && end <= start
        {
            return Err(error("/endTime", "after startTime"));
        }
        let metrics = parse_metrics(object.get("metrics"))?;
        let guardrails = parse_guardrails(object.get("guardrails"), &metrics)?;
        Ok(ExperimentSpec {
            name,
            description,
            config,
            variants,
            control,
            audience,
            unit,
            start_ms,
            end_ms,
            metrics,
            guardrails,
        })
    }

    pub fn weights(&self) -> Vec<f64> {
        self.variants.iter().map(|v| v.weight).collect()
    }

    /// What a revision of an experiment in `status` may change: all of a
    /// draft; of a started one only its description, weights, end,
    /// metrics and guardrails (who is in it and what they get stay, or its
    /// results would mix two experiments).
    pub fn check_revision(&self, next: &ExperimentSpec, status: Status) -> Result<(), FieldError> {
        if next.name != self.name {
            return Err(error("/name", "an experiment's name does not change"));
        }
        match status {
            Status::Draft => Ok(()),
            Status::Finished => Err(error("", "a finished experiment does not change")),
            Status::Running | Status::Paused => {
                let fixed = |same: bool, path: &str| {
                    if same {
                        Ok(())
                    } else {
                        Err(error(
                            path,
                            "fixed once the experiment started (only description, variants' weights, \
                             endTime, metrics and guardrails change); finish it and start another",
                        ))
                    }
                };
                fixed(next.config == self.config, "/config")?;
                fixed(next.unit == self.unit, "/unit")?;
                fixed(next.audience == self.audience, "/audience")?;
                fixed(next.start_ms == self.start_ms, "/startTime")?;
                fixed(next.variants.len() == self.variants.len(), "/variants")?;
                for (index, (a, b)) in self.variants.iter().zip(&next.variants).enumerate() {
                    fixed(a.id == b.id, &format!("/variants/{index}/id"))?;
                    fixed(a.patch == b.patch, &format!("/variants/{index}/patch"))?;
                }
                // A metric kept by name reads what it read: its smallest
                // sequential p-value so far is about that reading.
                for (index, metric) in next.metrics.iter().enumerate() {
                    if let Some(before) = self.metrics.iter().find(|m| m.name == metric.name) {
                        fixed(before == metric, &format!("/metrics/{index}"))?;
                    }
                }
                Ok(())
            }
        }
    }
}

fn parse_variants(value: Option<&Value>) -> Result<(Vec<Variant>, usize), FieldError> {
    let list = match value {
        Some(Value::Array(list)) if (2..=MAX_VARIANTS).contains(&list.len()) => list,
        _ => {
            return Err(error(
                "/variants",
                format!(
                    "2 to {MAX_VARIANTS} variants [{{id, weight, patch}}], one of them the control with an empty patch"
                ),
            ));
        }
    };
    let mut seen = BTreeSet::new();
    let mut variants = Vec::with_capacity(list.len());
    for (index, item) in list.iter().enumerate() {
        let at = format!("/variants/{index}");
        let Some(object) = item.as_object() else {
            return Err(error(&at, "an object {id, weight, patch}"));
        };
        keys_known(object, &at, &["id", "weight", "patch"])?;
        let id = short_name(object.get("id"), &format!("{at}/id"), 64)?;
        if !seen.insert(id.clone()) {
            return Err(error(&format!("{at}/id"), format!("{id} is named twice")));
        }
        let weight = object
            .get("weight")
            .and_then(Value::as_f64)
            .filter(|w| w.is_finite() && (0.0..=1_000_000.0).contains(w))
            .ok_or_else(|| error(&format!("{at}/weight"), "a number from 0 to 1,000,000"))?;
        let patch = match object.get("patch") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(patch @ Value::Object(_)) => patch.clone(),
            Some(_) => return Err(error(&format!("{at}/patch"), "a JSON Merge Patch object")),
        };
        if depth(&patch) > MAX_PATCH_DEPTH {
            return Err(error(
                &format!("{at}/patch"),
                format!("nested at most {MAX_PATCH_DEPTH} deep"),
            ));
        }
        let bytes = serde_json::to_vec(&patch).map_or(usize::MAX, |b| b.len());
        if bytes > MAX_PATCH_BYTES {
            return Err(error(
                &format!("{at}/patch"),
                format!("at most {MAX_PATCH_BYTES} bytes as JSON ({bytes} given)"),
            ));
        }
        variants.push(Variant { id, weight, patch });
    }
    let controls: Vec<usize> = variants
        .iter()
        .enumerate()
        .filter(|(_, v)| v.patch.as_object().is_some_and(|p| p.is_empty()))
        .map(|(i, _)| i)
        .collect();
    let control = match controls.as_slice() {
        [one] => *one,
        [] => {
            return Err(error(
                "/variants",
                "one variant is the control: an empty patch ({})",
            ));
        }
        _ => {
            return Err(error(
                "/variants",
                "exactly one variant has an empty patch (the control); the others change something",
            ));
        }
    };
    if variants.iter().map(|v| v.weight).sum::<f64>() <= 0.0 {
        return Err(error("/variants", "the weights sum to more than zero"));
    }
    if variants[control].weight <= 0.0 {
        return Err(error(
            &format!("/variants/{control}/weight"),
            "the control needs a weight above zero: every variant is compared with it",
        ));
    }
    Ok((variants, control))
}

fn parse_guardrails(
    value: Option<&Value>,
    metrics: &[MetricSpec],
) -> Result<Vec<Guardrail>, FieldError> {
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) if list.len() <= MAX_GUARDRAILS => list,
        Some(_) => {
            return Err(error(
                "/guardrails",
                format!(
                    "at most {MAX_GUARDRAILS} guardrails [{{metric, maxIncrease | maxDecrease}}]"
                ),
            ));
        }
    };
    let mut guardrails = Vec::with_capacity(list.len());
    for (index, item) in list.iter().enumerate() {
        let at = format!("/guardrails/{index}");
        let Some(object) = item.as_object() else {
            return Err(error(&at, "an object {metric, maxIncrease | maxDecrease}"));
        };
        keys_known(
            object,
            &at,
            &["metric", "maxIncrease", "maxDecrease", "alpha", "minUnits"],
        )?;
        let metric = short_name(object.get("metric"), &format!("{at}/metric"), 64)?;
        if !metrics.iter().any(|m| m.name == metric) {
            return Err(error(
                &format!("{at}/metric"),
                format!("{metric} is not one of the experiment's metrics"),
            ));
        }
        let change = |key: &str| -> Result<Option<f64>, FieldError> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => value
                    .as_f64()
                    .filter(|c| c.is_finite() && (0.0..=10.0).contains(c))
                    .map(Some)
                    .ok_or_else(|| {
                        error(
                            &format!("{at}/{key}"),
                            "a fraction of control's value from 0 to 10 (0.05: five per cent)",
                        )
                    }),
            }
        };
        let (harm, max_change) = match (change("maxIncrease")?, change("maxDecrease")?) {
            (Some(c), None) => (Harm::Increase, c),
            (None, Some(c)) => (Harm::Decrease, c),
            _ => {
                return Err(error(
                    &at,
                    "name one of maxIncrease (the metric must not rise by more) or maxDecrease",
                ));
            }
        };
        let alpha = match object.get("alpha") {
            None | Some(Value::Null) => 0.05,
            Some(value) => value
                .as_f64()
                .filter(|a| *a > 0.0 && *a <= 0.2)
                .ok_or_else(|| error(&format!("{at}/alpha"), "a number above 0, at most 0.2"))?,
        };
        let min_units = match object.get("minUnits") {
            None | Some(Value::Null) => DEFAULT_GUARDRAIL_MIN_UNITS,
            Some(value) => value
                .as_u64()
                .filter(|n| (2..=10_000_000).contains(n))
                .ok_or_else(|| {
                    error(&format!("{at}/minUnits"), "an integer from 2 to 10,000,000")
                })?,
        };
        guardrails.push(Guardrail {
            metric,
            harm,
            max_change,
            alpha,
            min_units,
        });
    }
    Ok(guardrails)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({
            "name": "sword-tuning",
            "config": "balance",
            "variants": [
                {"id": "control", "weight": 50, "patch": {}},
                {"id": "strong", "weight": 50, "patch": {"damage": {"sword": 12}}}
            ],
            "metrics": [
                {"name": "win", "kind": "binomial", "event": "run_end", "field": "won"},
                {"name": "runs", "kind": "count", "event": "run_end"}
            ],
            "guardrails": [{"metric": "runs", "maxDecrease": 0.1}]
        })
    }

    fn refused(change: impl FnOnce(&mut Value)) -> FieldError {
        let mut body = body();
        change(&mut body);
        ExperimentSpec::parse(&body).expect_err("refused")
    }

    #[test]
    fn a_full_definition_reads_into_bounded_types() {
        let spec = ExperimentSpec::parse(&body()).unwrap();
        assert_eq!(spec.control, 0);
        assert_eq!(spec.unit, "player");
        assert_eq!(spec.weights(), vec![50.0, 50.0]);
        assert_eq!(spec.metrics[0].kind, MetricKind::Binomial);
        assert_eq!(spec.guardrails[0].harm, Harm::Decrease);
        assert_eq!(spec.guardrails[0].min_units, DEFAULT_GUARDRAIL_MIN_UNITS);
    }

    /// A change to a good definition and the path its error must name.
    type Case = (Box<dyn FnOnce(&mut Value)>, &'static str);

    #[test]
    fn bad_definitions_are_refused_at_the_path_at_fault() {
        let cases: Vec<Case> = vec![
            (Box::new(|b| b["surprise"] = json!(1)), "/surprise"),
            (
                Box::new(|b| b["variants"] = json!([{"id": "a", "weight": 1, "patch": {}}])),
                "/variants",
            ),
            (
                Box::new(|b| b["variants"][1]["patch"] = json!({})),
                "/variants",
            ),
            (
                Box::new(|b| b["variants"][0]["patch"] = json!({"x": 1})),
                "/variants",
            ),
            (
                Box::new(|b| b["variants"][1]["id"] = json!("control")),
                "/variants/1/id",
            ),
            (
                Box::new(|b| b["variants"][1]["weight"] = json!(-1)),
                "/variants/1/weight",
            ),
            (
                Box::new(|b| b["variants"][0]["weight"] = json!(0)),
                "/variants/0/weight",
            ),
            (
                Box::new(|b| b["variants"][1]["patch"] = json!([1])),
                "/variants/1/patch",
            ),
            (
                Box::new(|b| b["metrics"][0]["kind"] = json!("median")),
                "/metrics/0/kind",
            ),
            (
                Box::new(|b| b["metrics"][1]["field"] = json!("x")),
                "/metrics/1/field",
            ),
            (
                Box::new(|b| {
                    b["metrics"][0]["kind"] = json!("sum");
                    b["metrics"][0]["field"] = Value::Null;
                }),
                "/metrics/0/field",
            ),
            (
                Box::new(|b| b["metrics"][1]["equals"] = json!("win")),
                "/metrics/1/equals",
            ),
            (
                Box::new(|b| b["guardrails"][0]["metric"] = json!("nope")),
                "/guardrails/0/metric",
            ),
            (
                Box::new(|b| b["guardrails"][0]["maxIncrease"] = json!(0.1)),
                "/guardrails/0",
            ),
            (Box::new(|b| b["unit"] = json!("guild id")), "/unit"),
            (
                Box::new(|b| {
                    b["startTime"] = json!("2027-01-02T00:00:00Z");
                    b["endTime"] = json!("2027-01-01T00:00:00Z");
                }),
                "/endTime",
            ),
            (Box::new(|b| b["name"] = json!("Not A Slug")), "/name"),
        ];
        for (change, path) in cases {
            assert_eq!(refused(change).path, path);
        }
    }

    #[test]
    fn the_lifecycle_goes_one_way_with_pause_and_resume_between() {
        use {Control as C, Status as S};
        assert_eq!(next_status(S::Draft, C::Start), Ok(S::Running));
        assert_eq!(next_status(S::Running, C::Pause), Ok(S::Paused));
        assert_eq!(next_status(S::Paused, C::Resume), Ok(S::Running));
        assert_eq!(next_status(S::Paused, C::Finish), Ok(S::Finished));
        assert!(next_status(S::Running, C::Start).is_err());
        assert!(next_status(S::Finished, C::Resume).is_err());
        assert!(next_status(S::Draft, C::Pause).is_err());
    }

    #[test]
    fn a_started_experiment_changes_only_weights_end_metrics_and_guardrails() {
        let old = ExperimentSpec::parse(&body()).unwrap();
        let mut changed = body();
        changed["variants"][1]["weight"] = json!(10);
        changed["endTime"] = json!("2030-01-01T00:00:00Z");
        let next = ExperimentSpec::parse(&changed).unwrap();
        assert!(old.check_revision(&next, Status::Running).is_ok());
        changed["variants"][1]["patch"] = json!({"damage": {"sword": 99}});
        let next = ExperimentSpec::parse(&changed).unwrap();
        assert_eq!(
            old.check_revision(&next, Status::Paused).unwrap_err().path,
            "/variants/1/patch"
        );
        assert!(old.check_revision(&next, Status::Draft).is_ok());
        assert!(old.check_revision(&next, Status::Finished).is_err());
        // A metric may be added or dropped, not redefined under its name.
        let mut changed = body();
        changed["metrics"][1]["event"] = json!("session_end");
        let next = ExperimentSpec::parse(&changed).unwrap();
        assert_eq!(
            old.check_revision(&next, Status::Running).unwrap_err().path,
            "/metrics/1"
        );
        let mut changed = body();
        changed["metrics"][1]["name"] = json!("renamed");
        changed["guardrails"] = json!([]);
        let next = ExperimentSpec::parse(&changed).unwrap();
        assert!(old.check_revision(&next, Status::Running).is_ok());
    }
}
