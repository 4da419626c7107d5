//! The keywords that constrain a value directly — `type`, `required`,
//! `enum` and the bounds — compared between two schema versions, and the
//! helpers every comparison writes its findings with.

use super::{Direction, SchemaChange};
use crate::domain::document::pointer_push;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

pub(super) fn push(
    out: &mut Vec<SchemaChange>,
    path: &str,
    kind: &'static str,
    direction: Direction,
    message: String,
) {
    out.push(SchemaChange {
        path: path.to_owned(),
        kind,
        direction,
        message,
    });
}

pub(super) fn display(path: &str) -> &str {
    if path.is_empty() {
        "the document"
    } else {
        path
    }
}

fn type_set(schema: &Map<String, Value>) -> Option<BTreeSet<String>> {
    match schema.get("type")? {
        Value::String(t) => Some(BTreeSet::from([t.clone()])),
        Value::Array(ts) => Some(
            ts.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

pub(super) fn compare_types(
    path: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    out: &mut Vec<SchemaChange>,
) {
    let (old_types, new_types) = (type_set(old), type_set(new));
    if old_types == new_types {
        return;
    }
    let direction = match (&old_types, &new_types) {
        (None, Some(_)) => Direction::Narrowing,
        (Some(_), None) => Direction::Widening,
        (Some(a), Some(b)) if b.is_subset(a) => Direction::Narrowing,
        (Some(a), Some(b)) if a.is_subset(b) => Direction::Widening,
        _ => Direction::Both,
    };
    push(
        out,
        path,
        "changed-type",
        direction,
        format!(
            "{}: type changed from {old_types:?} to {new_types:?}",
            display(path)
        ),
    );
}

fn string_set(schema: &Map<String, Value>, keyword: &str) -> BTreeSet<String> {
    schema
        .get(keyword)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn compare_required(
    path: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    out: &mut Vec<SchemaChange>,
) {
    let (before, after) = (string_set(old, "required"), string_set(new, "required"));
    for name in after.difference(&before) {
        push(
            out,
            &pointer_push(path, "required"),
            "new-required-field",
            Direction::Narrowing,
            format!(
                "{name} is now required at {}; documents without it stop validating",
                display(path)
            ),
        );
    }
    for name in before.difference(&after) {
        push(
            out,
            &pointer_push(path, "required"),
            "dropped-required-field",
            Direction::Widening,
            format!(
                "{name} is no longer required at {}; old readers may miss it",
                display(path)
            ),
        );
    }
}

pub(super) fn compare_enum(
    path: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    out: &mut Vec<SchemaChange>,
) {
    let as_set = |schema: &Map<String, Value>| {
        schema.get("enum").and_then(Value::as_array).map(|values| {
            values
                .iter()
                .map(Value::to_string)
                .collect::<BTreeSet<String>>()
        })
    };
    let here = pointer_push(path, "enum");
    match (as_set(old), as_set(new)) {
        (None, None) => {}
        (None, Some(_)) => push(
            out,
            &here,
            "narrowed-enum",
            Direction::Narrowing,
            format!("{} is now limited to a list of values", display(path)),
        ),
        (Some(_), None) => push(
            out,
            &here,
            "widened-enum",
            Direction::Widening,
            format!("{} is no longer limited to a list of values", display(path)),
        ),
        (Some(before), Some(after)) => {
            let removed: Vec<_> = before.difference(&after).cloned().collect();
            let added: Vec<_> = after.difference(&before).cloned().collect();
            if !removed.is_empty() {
                push(
                    out,
                    &here,
                    "narrowed-enum",
                    Direction::Narrowing,
                    format!("{} no longer allows {}", display(path), removed.join(", ")),
                );
            }
            if !added.is_empty() {
                push(
                    out,
                    &here,
                    "widened-enum",
                    Direction::Widening,
                    format!("{} now also allows {}", display(path), added.join(", ")),
                );
            }
        }
    }
}

/// Lower bounds: a higher (or new) one narrows. Upper bounds: a lower (or new) one narrows.
const LOWER_BOUNDS: [&str; 5] = [
    "minimum",
    "exclusiveMinimum",
    "minLength",
    "minItems",
    "minProperties",
];
const UPPER_BOUNDS: [&str; 5] = [
    "maximum",
    "exclusiveMaximum",
    "maxLength",
    "maxItems",
    "maxProperties",
];

pub(super) fn compare_bounds(
    path: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    out: &mut Vec<SchemaChange>,
) {
    let bounds = LOWER_BOUNDS
        .iter()
        .map(|k| (*k, true))
        .chain(UPPER_BOUNDS.iter().map(|k| (*k, false)));
    for (keyword, is_lower) in bounds {
        let (before, after) = (
            old.get(keyword).and_then(Value::as_f64),
            new.get(keyword).and_then(Value::as_f64),
        );
        let narrowed = match (before, after) {
            (None, None) => continue,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => (b > a) == is_lower,
        };
        let show = |v: Option<f64>| v.map_or("none".to_owned(), |v| v.to_string());
        let message = format!(
            "{} {keyword} changed from {} to {}",
            display(path),
            show(before),
            show(after)
        );
        let here = pointer_push(path, keyword);
        if narrowed {
            push(out, &here, "narrowed-range", Direction::Narrowing, message);
        } else {
            push(out, &here, "widened-range", Direction::Widening, message);
        }
    }
}
