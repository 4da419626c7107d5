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
//!
//! # Layout
//! - `mod.rs`: compiling a schema, validating a document, readable issues
//!   (never quoting a secret, never longer than [`MAX_MESSAGE_CHARS`]).
//! - `keywords.rs`: the custom keywords.
//! - `cost.rs`: the bound on validation work, from the schema's graph.
//! - `refs.rs`: resolving `$ref`s within one schema document.

mod cost;
mod keywords;
mod refs;

pub use cost::{MAX_CHECKS_AT_ONE_PLACE, MAX_CHECKS_PER_DOCUMENT, TooCostly};
pub use refs::SchemaRefs;
pub use refs::TooComplex;

use super::{diff::breaking_changes, document::pointer_push, secrets};
use cost::CostGraph;
use jsonschema::{ValidationError, Validator, error::ValidationErrorKind};
use keywords::Problem;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// At most this many errors are reported for one document; a document with
/// more is still refused, and the report says it was truncated.
pub const MAX_REPORTED_ISSUES: usize = 500;

/// The longest message an issue carries; what a message quotes of the
/// document is shorter still ([`MAX_QUOTE_CHARS`]).
pub const MAX_MESSAGE_CHARS: usize = 400;
const MAX_QUOTE_CHARS: usize = 120;
/// The most `enum` values a message lists.
const MAX_LISTED_OPTIONS: usize = 8;

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

/// A compiled schema: the validator, and the graph that bounds its work.
#[derive(Debug)]
pub struct CompiledRules {
    pub validator: Validator,
    cost: CostGraph,
}

impl CompiledRules {
    /// The checks validating `document` may make, if within
    /// [`MAX_CHECKS_PER_DOCUMENT`].
    pub fn cost(&self, document: &Value) -> Result<u64, TooCostly> {
        self.cost.cost(document, MAX_CHECKS_PER_DOCUMENT)
    }
}

/// The schema a document is checked against.
#[derive(Debug)]
pub struct SchemaRef<'a> {
    pub id: &'a str,
    pub version: &'a str,
    pub rules: &'a CompiledRules,
}

/// A schema document that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct InvalidSchema {
    pub path: String,
    pub message: String,
}

/// Compiles a JSON Schema document with HotSwap's custom keywords. Remote
/// `$ref`s are not fetched (no network from the hub), and a schema whose
/// validation could take unbounded work is refused (see `cost.rs`).
pub fn compile(schema: &Value) -> Result<CompiledRules, InvalidSchema> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(InvalidSchema {
            path: String::new(),
            message: "a schema must be a JSON object (or a boolean)".into(),
        });
    }
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .with_keyword("x-sum", keywords::sum_factory)
        .with_keyword("x-ranges", keywords::ranges_factory)
        .with_keyword("x-compare", keywords::compare_factory)
        .build(schema)
        .map_err(|error| InvalidSchema {
            path: error.schema_path().as_str().to_owned(),
            message: error.to_string(),
        })?;
    let cost = CostGraph::build(schema).map_err(|refused| InvalidSchema {
        path: refused.path,
        message: refused.message,
    })?;
    Ok(CompiledRules { validator, cost })
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
) -> Result<ValidationReport, TooCostly> {
    let mut errors = Vec::new();
    let mut truncated = false;
    if let Some(schema) = &schema {
        // Bounded before the validator starts: the graph's count is an
        // upper bound of the validator's work.
        schema.rules.cost(document)?;
        for error in schema.rules.validator.iter_errors(document) {
            if errors.len() >= MAX_REPORTED_ISSUES {
                truncated = true;
                break;
            }
            errors.extend(describe(&error, secret_paths));
        }
        errors.truncate(MAX_REPORTED_ISSUES);
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
                    message: clip(change.message, MAX_MESSAGE_CHARS),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ValidationReport {
        valid: errors.is_empty(),
        schema_id: schema.as_ref().map(|s| s.id.to_owned()),
        schema_version: schema.as_ref().map(|s| s.version.to_owned()),
        errors,
        warnings,
        truncated,
    })
}

/// `text` cut to at most `max` characters, marked with an ellipsis.
fn clip(mut text: String, max: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max.saturating_sub(1)) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// A value as a message quotes it: compact JSON, cut short.
fn quote(value: &Value) -> String {
    clip(value.to_string(), MAX_QUOTE_CHARS)
}

/// The first few of an `enum`'s values, and how many there are.
fn options_list(options: &Value) -> String {
    match options.as_array() {
        Some(values) if values.len() > MAX_LISTED_OPTIONS => {
            let shown: Vec<String> = values[..MAX_LISTED_OPTIONS].iter().map(quote).collect();
            format!("{}, … ({} values in all)", shown.join(", "), values.len())
        }
        Some(values) => values.iter().map(quote).collect::<Vec<_>>().join(", "),
        None => quote(options),
    }
}

/// Turns one validator error into issues a game designer can act on.
///
/// A message may quote the value it is about, or (a custom keyword's) other
/// values beside it: when any of them is, is inside or holds a secret
/// (`secret_paths`), the message says only which rule broke.
fn describe(error: &ValidationError<'_>, secret_paths: &[String]) -> Vec<Issue> {
    let path = error.instance_path().as_str().to_owned();
    let instance = quote(error.instance());
    let rule = error.kind().keyword().to_owned();
    let issue = |path: String, message: String, quoted: &[&str]| {
        let hidden = quoted
            .iter()
            .any(|q| secrets::holds_secret(q, secret_paths));
        Issue {
            message: if hidden {
                format!("the value breaks the {rule} rule (not shown: it holds secret values)")
            } else {
                clip(message, MAX_MESSAGE_CHARS)
            },
            path,
            rule: rule.clone(),
        }
    };
    let single = |message: String| vec![issue(path.clone(), message, &[&path])];
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
        ValidationErrorKind::Enum { options } => single(format!(
            "must be one of {} (is {instance})",
            options_list(options)
        )),
        ValidationErrorKind::Type { .. } => single(format!("has the wrong type: {error}")),
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| property.to_string());
            let at = pointer_push(&path, &name);
            let message = format!("{} is required", clip(name, MAX_QUOTE_CHARS));
            // A missing member quotes nothing.
            vec![issue(at, message, &[])]
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => unexpected
            .iter()
            .map(|name| {
                let at = pointer_push(&path, name);
                let message = format!(
                    "{} is not a known field here (misspelt, or not allowed)",
                    clip(name.clone(), MAX_QUOTE_CHARS)
                );
                issue(at.clone(), message, &[&at])
            })
            .collect(),
        ValidationErrorKind::Custom { message, .. } => {
            let problem = Problem::decode(message);
            let quoted: Vec<String> = problem
                .quotes
                .iter()
                .map(|q| format!("{path}{q}"))
                .collect();
            let quoted: Vec<&str> = quoted.iter().map(String::as_str).collect();
            vec![issue(
                format!("{path}{}", problem.at),
                problem.message,
                &quoted,
            )]
        }
        _ => single(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(schema: Value, document: Value) -> ValidationReport {
        let rules = compile(&schema).expect("test schema compiles");
        validate(
            Some(SchemaRef {
                id: "t",
                version: "1.0.0",
                rules: &rules,
            }),
            &document,
            None,
            &[],
        )
        .expect("within the work bound")
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
        )
        .unwrap();
        assert!(report.valid);
        assert!(report.has_breaking_changes());
        let rules: Vec<&str> = report.warnings.iter().map(|w| w.rule.as_str()).collect();
        assert_eq!(rules, vec!["type-changed", "removed-key"]);
    }

    #[test]
    fn secret_values_are_never_quoted_or_compared_in_clear() {
        let schema =
            json!({"properties": {"pin": {"type": "string", "maxLength": 4, "x-secret": true}}});
        let rules = compile(&schema).unwrap();
        let document = json!({"pin": "1234567"});
        let report = validate(
            Some(SchemaRef {
                id: "t",
                version: "1",
                rules: &rules,
            }),
            &document,
            Some(&json!({"pin": "***"})),
            &["/pin".to_owned()],
        )
        .unwrap();
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

    fn check_with_secrets(schema: Value, document: Value, secrets: &[&str]) -> ValidationReport {
        let rules = compile(&schema).unwrap();
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        validate(
            Some(SchemaRef {
                id: "t",
                version: "1",
                rules: &rules,
            }),
            &document,
            None,
            &secrets,
        )
        .unwrap()
    }

    #[test]
    fn custom_rules_never_quote_a_secret_beside_the_value_they_are_filed_under() {
        let compare = check_with_secrets(
            json!({"properties": {"db": {"x-compare": {"left": "port", "op": "==", "right": "pin"}}}}),
            json!({"db": {"port": 5432, "pin": 982451653}}),
            &["/db/pin"],
        );
        assert_eq!(compare.errors.len(), 1);
        assert_eq!(compare.errors[0].path, "/db/port");
        assert!(
            !compare.errors[0].message.contains("982451653"),
            "{:?}",
            compare.errors
        );
        let ranges = check_with_secrets(
            json!({"x-ranges": {"min": "min", "max": "max"}}),
            json!([{"min": 10, "max": 4242}, {"min": 20, "max": 30}]),
            &["/0/max"],
        );
        assert_eq!(ranges.errors.len(), 1, "{:?}", ranges.errors);
        assert_eq!(ranges.errors[0].path, "/1");
        assert!(
            !ranges.errors[0].message.contains("4242"),
            "{:?}",
            ranges.errors
        );
        // Without a secret beside it, the message says the values.
        let plain = check_with_secrets(
            json!({"x-compare": {"left": "port", "op": "==", "right": "pin"}}),
            json!({"port": 5432, "pin": 1}),
            &[],
        );
        assert!(
            plain.errors[0].message.contains("(1)"),
            "{:?}",
            plain.errors
        );
    }

    #[test]
    fn messages_are_short_whatever_they_quote() {
        let options: Vec<String> = (0..5000).map(|i| format!("option-{i}")).collect();
        let report = check(
            json!({"type": "array", "items": {"enum": options}}),
            json!(["nope", {"huge": "x".repeat(100_000)}]),
        );
        assert_eq!(report.errors.len(), 2);
        for issue in &report.errors {
            assert!(
                issue.message.chars().count() <= MAX_MESSAGE_CHARS,
                "{} chars",
                issue.message.len()
            );
        }
        assert!(
            report.errors[0].message.contains("(5000 values in all)"),
            "{}",
            report.errors[0].message
        );
        let long_name = "k".repeat(10_000);
        let required = check(json!({"required": [long_name]}), json!({}));
        assert!(required.errors[0].message.chars().count() <= MAX_MESSAGE_CHARS);
    }

    #[test]
    fn work_beyond_the_bound_is_refused_before_validating() {
        let rules = compile(&json!({"items": {"enum": (0..2000).collect::<Vec<_>>()}})).unwrap();
        let refused = validate(
            Some(SchemaRef {
                id: "t",
                version: "1",
                rules: &rules,
            }),
            &Value::Array(vec![json!(-1); 20_000]),
            None,
            &[],
        );
        assert_eq!(
            refused.unwrap_err(),
            TooCostly {
                budget: MAX_CHECKS_PER_DOCUMENT
            }
        );
        let mut defs = serde_json::Map::new();
        for i in 0..22 {
            let next = json!({"$ref": format!("#/$defs/d{}", i + 1)});
            defs.insert(format!("d{i}"), json!({"anyOf": [next, next]}));
        }
        defs.insert("d22".into(), json!({"type": "string"}));
        let bomb = compile(&json!({"$ref": "#/$defs/d0", "$defs": defs})).unwrap_err();
        assert!(bomb.message.contains("at one place"), "{bomb:?}");
    }
}
