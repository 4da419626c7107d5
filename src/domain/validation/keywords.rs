//! HotSwap's custom keywords (`x-sum`, `x-ranges`, `x-compare`) as
//! `jsonschema` keywords. Each problem says where it is and which values
//! its message quotes, so a message quoting a secret is never shown.

use super::super::document::pointer_push;
use chrono::{DateTime, FixedOffset};
use jsonschema::{Keyword, ValidationError, paths::Location};
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// Separates the parts of an encoded [`Problem`].
const PART: char = '\u{1f}';
/// Separates the quoted pointers of an encoded [`Problem`].
const QUOTE: char = '\u{1e}';

/// A custom keyword's finding, relative to the value the keyword checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    /// JSON Pointer below the checked value the problem is filed under.
    pub at: String,
    /// JSON Pointers below the checked value whose values the message
    /// quotes (`""`: the whole value).
    pub quotes: Vec<String>,
    pub message: String,
}

impl Problem {
    fn new(at: String, quotes: Vec<String>, message: String) -> Problem {
        Problem {
            at,
            quotes,
            message,
        }
    }

    /// Carried through `jsonschema` as a custom error's message.
    fn into_error(self) -> ValidationError<'static> {
        let quotes = self.quotes.join(&QUOTE.to_string());
        ValidationError::custom(format!("{}{PART}{quotes}{PART}{}", self.at, self.message))
    }

    /// Reads back [`Problem::into_error`]'s message.
    pub fn decode(message: &str) -> Problem {
        let mut parts = message.splitn(3, PART);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(at), Some(quotes), Some(message)) => Problem {
                at: at.to_owned(),
                quotes: quotes.split(QUOTE).map(str::to_owned).collect(),
                message: message.to_owned(),
            },
            // Not ours: filed at the value, quoting all of it.
            _ => Problem::new(String::new(), vec![String::new()], message.to_owned()),
        }
    }
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

pub(super) fn sum_factory<'a>(
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
            // The total quotes every entry: the whole value.
            Some(message) => {
                Err(Problem::new(String::new(), vec![String::new()], message).into_error())
            }
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

pub(super) fn ranges_factory<'a>(
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
    fn problems(&self, instance: &Value) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut ranges: Vec<(String, f64, f64)> = Vec::new();
        let at = |segment: &str| pointer_push("", segment);
        for (segment, entry) in entries(instance) {
            let (Some(min), Some(max)) = (
                entry.get(&self.min).and_then(Value::as_f64),
                entry.get(&self.max).and_then(Value::as_f64),
            ) else {
                continue;
            };
            if min > max {
                problems.push(Problem::new(
                    at(&segment),
                    vec![at(&segment)],
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
                    problems.push(Problem::new(
                        at(&pair[1].0),
                        vec![at(&pair[1].0), at(&pair[0].0)],
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
                problems.push(Problem::new(
                    at(&after.0),
                    vec![at(&after.0), at(&before.0)],
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

/// The `Keyword` of a rule that lists its problems with `problems`: the
/// first is the error, none is valid, each is one error of the iterator.
macro_rules! problem_keyword {
    ($rule:ty) => {
        impl<'i> Keyword<'i> for $rule {
            fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
                match self.problems(instance).into_iter().next() {
                    Some(problem) => Err(problem.into_error()),
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
                        .map(|problem| -> ValidationError<'i> { problem.into_error() }),
                )
            }
        }
    };
}

problem_keyword!(RangesRule);

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

pub(super) fn compare_factory<'a>(
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
    fn problems(&self, instance: &Value) -> Vec<Problem> {
        let Some(object) = instance.as_object() else {
            return Vec::new();
        };
        self.0
            .iter()
            .filter_map(|rule| {
                let (left, right) = (object.get(&rule.left)?, object.get(&rule.right)?);
                let ordering = compare_values(left, right)?;
                (!rule.op.holds(ordering)).then(|| {
                    Problem::new(
                        pointer_push("", &rule.left),
                        vec![pointer_push("", &rule.left), pointer_push("", &rule.right)],
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

problem_keyword!(CompareRule);

#[cfg(test)]
mod tests {
    use super::*;

    fn custom_message(error: ValidationError<'_>) -> String {
        match error.kind() {
            jsonschema::error::ValidationErrorKind::Custom { message, .. } => message.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn problems_survive_the_trip_through_jsonschema_messages() {
        let problem = Problem::new(
            "/a~1b".into(),
            vec!["/a~1b".into(), "/c".into()],
            "a (3) must be at most c (2)".into(),
        );
        let message = custom_message(problem.clone().into_error());
        assert_eq!(Problem::decode(&message), problem);
        let foreign = Problem::decode("plain text");
        assert_eq!(
            foreign.quotes,
            [""],
            "a message not ours quotes the whole value"
        );
    }
}
