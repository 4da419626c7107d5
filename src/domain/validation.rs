//! Validating config documents against JSON Schema (draft 2020-12) plus the
//! game rules JSON Schema cannot say, as custom keywords:
//!
//! | keyword | on | rule |
//! |---|---|---|
//! | `x-sum` | array or object of objects | `{"of": "dropRate", "equals": 1, "tolerance": 1e-6}`: the field sums to `equals` |
//! | `x-ranges` | array or object of objects | `{"min": "min", "max": "max"}`: every entry has `min <= max`, and sorted by `min` no two entries overlap (bounds inclusive); an array must already be in ascending order |
//! | `x-compare` | object | `{"left": "minPlayers", "op": "<=", "right": "maxPlayers"}` or a list of them; numbers, or RFC 3339 date-times compared as instants |
//!
//! `config/schemas/README.md` documents them for schema authors.

use super::{diff::breaking_changes, document::pointer_push, secrets};
use chrono::{DateTime, FixedOffset};
use jsonschema::{
    Keyword, ValidationError, Validator, error::ValidationErrorKind, paths::Location,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// At most this many errors are reported for one document; a document with
/// more is still refused, and the report says it was truncated.
pub const MAX_REPORTED_ISSUES: usize = 500;

/// Separates a keyword's sub-path from its message (see [`custom_error`]).
const SUBPATH_MARK: char = '\u{1f}';

/// One problem found in a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Issue {
    /// JSON Pointer into the document.
    pub path: String,
    /// The rule broken: a JSON Schema keyword (`maximum`, `required`...),
    /// a custom keyword (`x-sum`...) or a change rule (`removed-key`...).
    pub rule: String,
    pub message: String,
}

/// What validating one document found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidationReport {
    pub valid: bool,
    /// The schema the document was checked against, if it has one.
    pub schema_id: Option<String>,
    pub schema_version: Option<String>,
    pub errors: Vec<Issue>,
    /// Breaking changes against the previous version: they do not refuse the
    /// document, but a production deployment of it needs an approval.
    pub warnings: Vec<Issue>,
    /// More errors were found than [`MAX_REPORTED_ISSUES`].
    pub truncated: bool,
}

impl ValidationReport {
    pub fn has_breaking_changes(&self) -> bool {
        !self.warnings.is_empty()
    }
}

/// The schema a document is checked against.
#[derive(Debug)]
pub struct SchemaRef<'a> {
    pub id: &'a str,
    pub version: &'a str,
    pub validator: &'a Validator,
}

/// A schema document that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct InvalidSchema {
    pub path: String,
    pub message: String,
}

/// Compiles a JSON Schema document with HotSwap's custom keywords. Remote
/// `$ref`s are not fetched (no network from the hub).
pub fn compile(schema: &Value) -> Result<Validator, InvalidSchema> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(InvalidSchema {
            path: String::new(),
            message: "a schema must be a JSON object (or a boolean)".into(),
        });
    }
    jsonschema::options()
        .should_validate_formats(true)
        .with_keyword("x-sum", sum_factory)
        .with_keyword("x-ranges", ranges_factory)
        .with_keyword("x-compare", compare_factory)
        .build(schema)
        .map_err(|error| InvalidSchema {
            path: error.schema_path().as_str().to_owned(),
            message: error.to_string(),
        })
}

/// Validates `document`, comparing it with `previous` (the config's latest
/// version) for breaking-change warnings.
///
/// `secret_paths` are the document's secret values: messages about them do
/// not quote the value, and the comparison with `previous` (whose secrets
/// are already masked) sees them masked too.
pub fn validate(
    schema: Option<SchemaRef<'_>>,
    document: &Value,
    previous: Option<&Value>,
    secret_paths: &[String],
) -> ValidationReport {
    let mut errors = Vec::new();
    let mut truncated = false;
    if let Some(schema) = &schema {
        for error in schema.validator.iter_errors(document) {
            if errors.len() >= MAX_REPORTED_ISSUES {
                truncated = true;
                break;
            }
            errors.extend(describe(&error));
        }
        errors.truncate(MAX_REPORTED_ISSUES);
    }
    // A message may quote the value it is about: about a secret, inside
    // one, or about an object or array that holds one (the document
    // itself, for a rule at its root), it is replaced.
    for issue in &mut errors {
        if secrets::holds_secret(&issue.path, secret_paths) {
            issue.message = format!(
                "the value breaks the {} rule (not shown: it holds secret values)",
                issue.rule
            );
        }
    }
    let masked;
    let compared = if secret_paths.is_empty() {
        document
    } else {
        masked = secrets::masked(document, secret_paths);
        &masked
    };
    let warnings = previous
        .map(|previous| {
            breaking_changes(previous, compared)
                .into_iter()
                .map(|change| Issue {
                    path: change.path,
                    rule: change.rule.into(),
                    message: change.message,
                })
                .collect()
        })
        .unwrap_or_default();
    ValidationReport {
        valid: errors.is_empty(),
        schema_id: schema.as_ref().map(|s| s.id.to_owned()),
        schema_version: schema.as_ref().map(|s| s.version.to_owned()),
        errors,
        warnings,
        truncated,
    }
}

/// Turns one validator error into issues a game designer can act on.
fn describe(error: &ValidationError<'_>) -> Vec<Issue> {
    let path = error.instance_path().as_str().to_owned();
    let instance = error.instance();
    let rule = error.kind().keyword().to_owned();
    let single = |message: String| {
        vec![Issue {
            path: path.clone(),
            rule: rule.clone(),
            message,
        }]
    };
    match error.kind() {
        ValidationErrorKind::Maximum { limit } => {
            single(format!("must be at most {limit} (is {instance})"))
        }
        ValidationErrorKind::Minimum { limit } => {
            single(format!("must be at least {limit} (is {instance})"))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            single(format!("must be less than {limit} (is {instance})"))
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            single(format!("must be greater than {limit} (is {instance})"))
        }
        ValidationErrorKind::Enum { options } => {
            single(format!("must be one of {options} (is {instance})"))
        }
        ValidationErrorKind::Type { .. } => single(format!("has the wrong type: {error}")),
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| property.to_string());
            vec![Issue {
                path: pointer_push(&path, &name),
                rule,
                message: format!("{name} is required"),
            }]
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => unexpected
            .iter()
            .map(|name| Issue {
                path: pointer_push(&path, name),
                rule: rule.clone(),
                message: format!("{name} is not a known field here (misspelt, or not allowed)"),
            })
            .collect(),
        ValidationErrorKind::Custom { message, .. } => {
            let (sub_path, message) = match message.split_once(SUBPATH_MARK) {
                Some((sub_path, message)) => (sub_path, message),
                None => ("", message.as_str()),
            };
            vec![Issue {
                path: format!("{path}{sub_path}"),
                rule,
                message: message.to_owned(),
            }]
        }
        _ => single(error.to_string()),
    }
}

/// A custom keyword's error about `sub_path` below the instance it checks.
fn custom_error(sub_path: &str, message: String) -> ValidationError<'static> {
    ValidationError::custom(format!("{sub_path}{SUBPATH_MARK}{message}"))
}

fn schema_error(keyword: &str, message: &str) -> ValidationError<'static> {
    ValidationError::schema(format!("{keyword}: {message}"))
}

/// The entries of an array (by index) or an object (by key), with the pointer
/// segment of each.
fn entries(instance: &Value) -> Vec<(String, &Value)> {
    match instance {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        _ => Vec::new(),
    }
}

// ---- x-sum -----------------------------------------------------------------

struct SumRule {
    field: String,
    equals: f64,
    tolerance: f64,
}

fn sum_factory<'a>(
    _parent: &'a Map<String, Value>,
    value: &'a Value,
    _location: Location,
) -> Result<Box<dyn for<'i> Keyword<'i>>, ValidationError<'a>> {
    let spec = value
        .as_object()
        .ok_or_else(|| schema_error("x-sum", "must be an object"))?;
    let field = spec
        .get("of")
        .and_then(Value::as_str)
        .ok_or_else(|| schema_error("x-sum", "needs \"of\": the field to add up"))?;
    let equals = spec
        .get("equals")
        .and_then(Value::as_f64)
        .ok_or_else(|| schema_error("x-sum", "needs \"equals\": the expected total"))?;
    let tolerance = match spec.get("tolerance") {
        None => 1e-9,
        Some(t) => t
            .as_f64()
            .filter(|t| *t >= 0.0)
            .ok_or_else(|| schema_error("x-sum", "\"tolerance\" must be a number >= 0"))?,
    };
    Ok(Box::new(SumRule {
        field: field.to_owned(),
        equals,
        tolerance,
    }))
}

impl SumRule {
    fn check(&self, instance: &Value) -> Option<String> {
        if !(instance.is_array() || instance.is_object()) {
            return None;
        }
        let entries = entries(instance);
        if entries.is_empty() {
            return None;
        }
        let total: f64 = entries
            .iter()
            .filter_map(|(_, entry)| entry.get(&self.field).and_then(Value::as_f64))
            .sum();
        ((total - self.equals).abs() > self.tolerance).then(|| {
            format!(
                "the {} values must add up to {} (they add up to {})",
                self.field,
                self.equals,
                round_for_people(total)
            )
        })
    }
}

fn round_for_people(value: f64) -> f64 {
    (value * 1e9).round() / 1e9
}

impl<'i> Keyword<'i> for SumRule {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        match self.check(instance) {
            Some(message) => Err(custom_error("", message)),
            None => Ok(()),
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        self.check(instance).is_none()
    }
}

// ---- x-ranges --------------------------------------------------------------

struct RangesRule {
    min: String,
    max: String,
}

fn ranges_factory<'a>(
    _parent: &'a Map<String, Value>,
    value: &'a Value,
    _location: Location,
) -> Result<Box<dyn for<'i> Keyword<'i>>, ValidationError<'a>> {
    let spec = value
        .as_object()
        .ok_or_else(|| schema_error("x-ranges", "must be an object"))?;
    let field = |name: &str| -> Result<String, ValidationError<'a>> {
        match spec.get(name) {
            None => Ok(name.to_owned()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(schema_error(
                "x-ranges",
                "\"min\" and \"max\" name fields (strings)",
            )),
        }
    };
    Ok(Box::new(RangesRule {
        min: field("min")?,
        max: field("max")?,
    }))
}

impl RangesRule {
    fn problems(&self, instance: &Value) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut ranges: Vec<(String, f64, f64)> = Vec::new();
        for (segment, entry) in entries(instance) {
            let (Some(min), Some(max)) = (
                entry.get(&self.min).and_then(Value::as_f64),
                entry.get(&self.max).and_then(Value::as_f64),
            ) else {
                continue;
            };
            if min > max {
                problems.push((
                    format!("/{segment}"),
                    format!(
                        "{} ({min}) must not be greater than {} ({max})",
                        self.min, self.max
                    ),
                ));
                continue;
            }
            ranges.push((segment, min, max));
        }
        if instance.is_array() {
            for pair in ranges.windows(2) {
                if pair[1].1 < pair[0].1 {
                    problems.push((
                        format!("/{}", pair[1].0),
                        format!(
                            "ranges must be listed in ascending order: this one starts at {} \
                             but the one before starts at {}",
                            pair[1].1, pair[0].1
                        ),
                    ));
                }
            }
        }
        ranges.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(Ordering::Equal));
        for pair in ranges.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            if after.1 <= before.2 {
                problems.push((
                    format!("/{}", after.0),
                    format!(
                        "overlaps {:?}: {}..{} and {}..{} share values",
                        before.0, before.1, before.2, after.1, after.2
                    ),
                ));
            }
        }
        problems
    }
}

impl<'i> Keyword<'i> for RangesRule {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        match self.problems(instance).into_iter().next() {
            Some((path, message)) => Err(custom_error(&escape_segment_path(&path), message)),
            None => Ok(()),
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        self.problems(instance).is_empty()
    }

    fn iter_errors(
        &self,
        instance: &'i Value,
    ) -> Box<dyn Iterator<Item = ValidationError<'i>> + 'i> {
        Box::new(
            self.problems(instance)
                .into_iter()
                .map(|(path, message)| custom_error(&escape_segment_path(&path), message)),
        )
    }
}

/// `"/" + raw key` to a JSON Pointer segment.
fn escape_segment_path(path: &str) -> String {
    pointer_push("", path.strip_prefix('/').unwrap_or(path))
}

// ---- x-compare -------------------------------------------------------------

#[derive(Clone, Copy)]
enum CompareOp {
    Less,
    LessOrEqual,
    Equal,
    GreaterOrEqual,
    Greater,
}

impl CompareOp {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "<" => Self::Less,
            "<=" => Self::LessOrEqual,
            "==" => Self::Equal,
            ">=" => Self::GreaterOrEqual,
            ">" => Self::Greater,
            _ => return None,
        })
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Less => ordering == Ordering::Less,
            Self::LessOrEqual => ordering != Ordering::Greater,
            Self::Equal => ordering == Ordering::Equal,
            Self::GreaterOrEqual => ordering != Ordering::Less,
            Self::Greater => ordering == Ordering::Greater,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Self::Less => "before / less than",
            Self::LessOrEqual => "at most",
            Self::Equal => "equal to",
            Self::GreaterOrEqual => "at least",
            Self::Greater => "after / greater than",
        }
    }
}

struct Comparison {
    left: String,
    op: CompareOp,
    right: String,
}

struct CompareRule(Vec<Comparison>);

fn compare_factory<'a>(
    _parent: &'a Map<String, Value>,
    value: &'a Value,
    _location: Location,
) -> Result<Box<dyn for<'i> Keyword<'i>>, ValidationError<'a>> {
    let specs: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut rules = Vec::with_capacity(specs.len());
    for spec in specs {
        let get = |name: &str| spec.get(name).and_then(Value::as_str);
        let (Some(left), Some(op), Some(right)) = (get("left"), get("op"), get("right")) else {
            return Err(schema_error(
                "x-compare",
                "each rule needs \"left\", \"op\" and \"right\"",
            ));
        };
        let op = CompareOp::parse(op)
            .ok_or_else(|| schema_error("x-compare", "\"op\" is one of <, <=, ==, >=, >"))?;
        rules.push(Comparison {
            left: left.to_owned(),
            op,
            right: right.to_owned(),
        });
    }
    Ok(Box::new(CompareRule(rules)))
}

/// Orders two JSON values as numbers or as RFC 3339 instants; `None` when
/// they are not comparable (the type keywords report that).
fn compare_values(a: &Value, b: &Value) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) {
        return x.partial_cmp(&y);
    }
    let instant = |v: &Value| {
        v.as_str()
            .and_then(|s| DateTime::<FixedOffset>::parse_from_rfc3339(s).ok())
    };
    Some(instant(a)?.cmp(&instant(b)?))
}

impl CompareRule {
    fn problems(&self, instance: &Value) -> Vec<(String, String)> {
        let Some(object) = instance.as_object() else {
            return Vec::new();
        };
        self.0
            .iter()
            .filter_map(|rule| {
                let (left, right) = (object.get(&rule.left)?, object.get(&rule.right)?);
                let ordering = compare_values(left, right)?;
                (!rule.op.holds(ordering)).then(|| {
                    (
                        pointer_push("", &rule.left),
                        format!(
                            "{} ({left}) must be {} {} ({right})",
                            rule.left,
                            rule.op.words(),
                            rule.right
                        ),
                    )
                })
            })
            .collect()
    }
}

impl<'i> Keyword<'i> for CompareRule {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        match self.problems(instance).into_iter().next() {
            Some((path, message)) => Err(custom_error(&path, message)),
            None => Ok(()),
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        self.problems(instance).is_empty()
    }

    fn iter_errors(
        &self,
        instance: &'i Value,
    ) -> Box<dyn Iterator<Item = ValidationError<'i>> + 'i> {
        Box::new(
            self.problems(instance)
                .into_iter()
                .map(|(path, message)| custom_error(&path, message)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(schema: Value, document: Value) -> ValidationReport {
        let validator = compile(&schema).expect("test schema compiles");
        validate(
            Some(SchemaRef {
                id: "t",
                version: "1.0.0",
                validator: &validator,
            }),
            &document,
            None,
            &[],
        )
    }

    fn rules_and_paths(report: &ValidationReport) -> Vec<(String, String)> {
        let mut out: Vec<_> = report
            .errors
            .iter()
            .map(|i| (i.path.clone(), i.rule.clone()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn standard_keywords_report_paths_and_readable_messages() {
        let schema = json!({
            "type": "object",
            "required": ["weapons"],
            "properties": {"weapons": {"type": "object", "additionalProperties": {
                "type": "object",
                "required": ["damage"],
                "additionalProperties": false,
                "properties": {"damage": {"type": "number", "minimum": 1, "maximum": 1000}}
            }}}
        });
        let report = check(
            schema,
            json!({"weapons": {"rifle": {"damage": 1500}, "bow": {"dmg": 3}}}),
        );
        assert!(!report.valid);
        assert_eq!(
            rules_and_paths(&report),
            vec![
                ("/weapons/bow/damage".into(), "required".into()),
                ("/weapons/bow/dmg".into(), "additionalProperties".into()),
                ("/weapons/rifle/damage".into(), "maximum".into()),
            ]
        );
        let maximum = report.errors.iter().find(|i| i.rule == "maximum").unwrap();
        assert_eq!(maximum.message, "must be at most 1000 (is 1500)");
    }

    #[test]
    fn formats_are_asserted_not_just_annotated() {
        let schema = json!({"properties": {
            "at": {"format": "date-time"}, "day": {"format": "date"},
            "mail": {"format": "email"}, "id": {"format": "uuid"},
            "ip": {"format": "ipv4"}, "link": {"format": "uri"},
            "wait": {"format": "duration"}
        }});
        let good = json!({
            "at": "2026-12-02T10:00:00Z", "day": "2026-12-02", "mail": "ops@studio.example",
            "id": "01a23649-6c52-71c2-99a0-44372bf52a1f", "ip": "10.0.0.1",
            "link": "https://studio.example/patch", "wait": "PT5M"
        });
        assert!(check(schema.clone(), good).valid);
        let bad = json!({
            "at": "yesterday", "day": "2026-13-40", "mail": "not an address",
            "id": "nope", "ip": "10.0.0.999", "link": "no scheme", "wait": "5 minutes"
        });
        let report = check(schema, bad);
        let mut paths: Vec<String> = report.errors.iter().map(|e| e.path.clone()).collect();
        paths.sort();
        assert_eq!(
            paths,
            ["/at", "/day", "/id", "/ip", "/link", "/mail", "/wait"],
            "{:?}",
            report.errors
        );
        assert!(report.errors.iter().all(|e| e.rule == "format"));
    }

    #[test]
    fn x_sum_checks_totals_within_tolerance() {
        let schema =
            json!({"type": "array", "x-sum": {"of": "dropRate", "equals": 1, "tolerance": 1e-6}});
        let good =
            json!([{"dropRate": 0.05}, {"dropRate": 0.15}, {"dropRate": 0.3}, {"dropRate": 0.5}]);
        assert!(check(schema.clone(), good).valid);
        let bad = check(schema, json!([{"dropRate": 0.5}, {"dropRate": 0.6}]));
        assert_eq!(rules_and_paths(&bad), vec![("".into(), "x-sum".into())]);
        assert!(
            bad.errors[0]
                .message
                .contains("add up to 1 (they add up to 1.1)"),
            "{:?}",
            bad.errors
        );
    }

    #[test]
    fn x_ranges_finds_inverted_and_overlapping_ranges() {
        let schema = json!({"x-ranges": {"min": "min", "max": "max"}});
        let ordered =
            json!({"bronze": {"min": 0, "max": 1000}, "silver": {"min": 1001, "max": 2000}});
        assert!(check(schema.clone(), ordered).valid);
        let bad = check(
            schema.clone(),
            json!({
                "bronze": {"min": 0, "max": 1000},
                "silver": {"min": 900, "max": 2000},
                "gold": {"min": 3000, "max": 2500}
            }),
        );
        assert_eq!(
            rules_and_paths(&bad),
            vec![
                ("/gold".into(), "x-ranges".into()),
                ("/silver".into(), "x-ranges".into())
            ]
        );
        let unsorted = check(
            schema,
            json!([{"min": 10, "max": 20}, {"min": 0, "max": 5}]),
        );
        assert_eq!(
            rules_and_paths(&unsorted),
            vec![("/1".into(), "x-ranges".into())]
        );
    }

    #[test]
    fn x_compare_handles_numbers_and_date_times() {
        let schema = json!({"x-compare": [
            {"left": "minPlayers", "op": "<=", "right": "maxPlayers"},
            {"left": "startTime", "op": "<", "right": "endTime"}
        ]});
        assert!(check(schema.clone(), json!({"minPlayers": 4, "maxPlayers": 4})).valid);
        let bad = check(
            schema,
            json!({
                "minPlayers": 6, "maxPlayers": 5,
                "startTime": "2025-11-07T23:59:59Z", "endTime": "2025-11-08T00:59:59+02:00"
            }),
        );
        assert_eq!(
            rules_and_paths(&bad),
            vec![
                ("/minPlayers".into(), "x-compare".into()),
                ("/startTime".into(), "x-compare".into())
            ]
        );
    }

    #[test]
    fn malformed_custom_keywords_make_the_schema_invalid() {
        for schema in [
            json!({"x-sum": {"equals": 1}}),
            json!({"x-sum": "dropRate"}),
            json!({"x-compare": {"left": "a", "op": "~", "right": "b"}}),
            json!({"x-ranges": {"min": 3}}),
            json!({"type": "no-such-type"}),
            json!([1, 2]),
        ] {
            assert!(compile(&schema).is_err(), "{schema} should not compile");
        }
    }

    #[test]
    fn previous_version_adds_breaking_change_warnings_without_failing() {
        let report = validate(
            None,
            &json!({"a": "1"}),
            Some(&json!({"a": 1, "b": 2})),
            &[],
        );
        assert!(report.valid);
        assert!(report.has_breaking_changes());
        let rules: Vec<&str> = report.warnings.iter().map(|w| w.rule.as_str()).collect();
        assert_eq!(rules, vec!["type-changed", "removed-key"]);
    }

    #[test]
    fn secret_values_are_never_quoted_or_compared_in_clear() {
        let schema =
            json!({"properties": {"pin": {"type": "string", "maxLength": 4, "x-secret": true}}});
        let validator = compile(&schema).unwrap();
        let document = json!({"pin": "1234567"});
        let report = validate(
            Some(SchemaRef {
                id: "t",
                version: "1",
                validator: &validator,
            }),
            &document,
            Some(&json!({"pin": "***"})),
            &["/pin".to_owned()],
        );
        assert_eq!(report.errors.len(), 1);
        assert!(
            !report.errors[0].message.contains("1234567"),
            "{:?}",
            report.errors
        );
        assert!(
            report.warnings.is_empty(),
            "a masked secret compares equal: {:?}",
            report.warnings
        );
    }

    #[test]
    fn error_lists_are_capped() {
        let schema = json!({"type": "array", "items": {"type": "string"}});
        let report = check(
            schema,
            Value::Array(vec![json!(1); MAX_REPORTED_ISSUES + 10]),
        );
        assert_eq!(report.errors.len(), MAX_REPORTED_ISSUES);
        assert!(report.truncated);
    }
}
