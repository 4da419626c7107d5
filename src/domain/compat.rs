//! Schema compatibility: which changes between two versions of a JSON Schema
//! can break documents or the servers reading them.
//!
//! A change *narrows* the schema when documents valid before may now fail
//! (new required field, higher minimum, fewer enum values, fewer types): that
//! breaks **backward** compatibility (new schema, old data). It *widens* the
//! schema when the new one accepts documents the old one refused: that breaks
//! **forward** compatibility (old readers, new data). A removed property and a
//! changed type are breaking in both directions. `full` refuses both,
//! `none` neither.

use super::{document::pointer_push, kinds::Compatibility};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Narrowing,
    Widening,
    Both,
}

/// One difference between two schema versions that matters to compatibility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaChange {
    /// JSON Pointer into the new schema document.
    pub path: String,
    /// `removed-property`, `added-property`, `new-required-field`,
    /// `dropped-required-field`, `narrowed-range`, `widened-range`,
    /// `narrowed-enum`, `widened-enum`, `changed-type`, `changed-const`,
    /// `changed-keyword` (a keyword whose effect is not worked out:
    /// `not`, `if`, `allOf`, `pattern`...), `removed-secret`,
    /// `weakened-compatibility`.
    pub kind: &'static str,
    pub direction: Direction,
    pub message: String,
}

impl SchemaChange {
    /// Whether `mode` forbids this change. A secret no longer marked
    /// (`removed-secret`) and a weaker compatibility mode
    /// (`weakened-compatibility`) break every mode, `none` included: only
    /// an admin may approve them.
    pub fn breaks(&self, mode: Compatibility) -> bool {
        if matches!(self.kind, REMOVED_SECRET | WEAKENED_COMPATIBILITY) {
            return true;
        }
        match mode {
            Compatibility::None => false,
            Compatibility::Full => true,
            Compatibility::Backward => self.direction != Direction::Widening,
            Compatibility::Forward => self.direction != Direction::Narrowing,
        }
    }
}

/// Keywords compared only as "changed or not" (see `compare`).
const UNANALYSED: &[&str] = &[
    "not",
    "if",
    "then",
    "else",
    "allOf",
    "anyOf",
    "oneOf",
    "dependentRequired",
    "dependentSchemas",
    "pattern",
    "format",
    "multipleOf",
    "uniqueItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$ref",
    "x-sum",
    "x-ranges",
    "x-compare",
];

pub const REMOVED_SECRET: &str = "removed-secret";
pub const WEAKENED_COMPATIBILITY: &str = "weakened-compatibility";

/// Every compatibility-relevant change from `old` to `new`.
pub fn schema_changes(old: &Value, new: &Value) -> Vec<SchemaChange> {
    let mut out = Vec::new();
    compare(String::new(), old, new, &mut out);
    let kept = super::secrets::secret_locations(new);
    for location in super::secrets::secret_locations(old) {
        if kept.binary_search(&location).is_err() {
            push(
                &mut out,
                &location,
                REMOVED_SECRET,
                Direction::Both,
                format!(
                    "{} no longer marks its value x-secret: a value once secret stays sealed, \
                     and only an admin may approve the change",
                    if location.is_empty() { "/" } else { &location }
                ),
            );
        }
    }
    out
}

/// Whether moving from mode `old` to `new` lets through changes `old`
/// refused (anything but staying, or moving to `full`).
pub fn weakens(old: Compatibility, new: Compatibility) -> bool {
    old != new && new != Compatibility::Full
}

/// The changes `mode` forbids, going from a schema version checked with
/// `old_mode` to one checked with `mode`.
pub fn breaking_schema_changes(
    old: &Value,
    new: &Value,
    old_mode: Compatibility,
    mode: Compatibility,
) -> Vec<SchemaChange> {
    let mut breaking: Vec<SchemaChange> = schema_changes(old, new)
        .into_iter()
        .filter(|c| c.breaks(mode))
        .collect();
    if weakens(old_mode, mode) {
        push(
            &mut breaking,
            "",
            WEAKENED_COMPATIBILITY,
            Direction::Both,
            format!(
                "the compatibility mode goes from {old_mode} to {mode}: only an admin may approve that"
            ),
        );
    }
    breaking
}

fn push(
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

fn compare(path: String, old: &Value, new: &Value, out: &mut Vec<SchemaChange>) {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        if old != new {
            push(
                out,
                &path,
                "changed-type",
                Direction::Both,
                format!("{path} changed from {old} to {new}"),
            );
        }
        return;
    };
    compare_types(&path, old, new, out);
    compare_required(&path, old, new, out);
    compare_enum(&path, old, new, out);
    compare_bounds(&path, old, new, out);
    if old.get("const") != new.get("const")
        && (old.contains_key("const") || new.contains_key("const"))
    {
        push(
            out,
            &path,
            "changed-const",
            Direction::Both,
            format!("{path}: the constant value changed"),
        );
    }
    compare_properties(&path, old, new, out);
    // Keywords whose effect this comparison does not work out: any change
    // to them may narrow or widen what passes.
    for keyword in UNANALYSED {
        if old.get(*keyword) != new.get(*keyword) {
            push(
                out,
                &pointer_push(&path, keyword),
                "changed-keyword",
                Direction::Both,
                format!(
                    "{}: {keyword} changed, which may refuse documents that passed or pass ones refused",
                    display(&path)
                ),
            );
        }
    }
    for keyword in ["items", "additionalProperties", "contains", "propertyNames"] {
        if let (Some(a @ Value::Object(_)), Some(b @ Value::Object(_))) =
            (old.get(keyword), new.get(keyword))
        {
            compare(pointer_push(&path, keyword), a, b, out);
        }
    }
    for keyword in ["$defs", "definitions", "patternProperties"] {
        if let (Some(Value::Object(a)), Some(Value::Object(b))) =
            (old.get(keyword), new.get(keyword))
        {
            for (name, old_schema) in a {
                if let Some(new_schema) = b.get(name) {
                    compare(
                        pointer_push(&pointer_push(&path, keyword), name),
                        old_schema,
                        new_schema,
                        out,
                    );
                }
            }
        }
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

fn compare_types(
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

fn compare_required(
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

fn compare_enum(
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

fn compare_bounds(
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

fn compare_properties(
    path: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    out: &mut Vec<SchemaChange>,
) {
    let empty = Map::new();
    let before = old
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let after = new
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let properties = pointer_push(path, "properties");
    for (name, old_schema) in before {
        let here = pointer_push(&properties, name);
        match after.get(name) {
            Some(new_schema) => compare(here, old_schema, new_schema, out),
            None => push(
                out,
                &here,
                "removed-property",
                Direction::Both,
                format!("property {name} was removed from {}", display(path)),
            ),
        }
    }
    let closed = old.get("additionalProperties") == Some(&Value::Bool(false));
    for name in after.keys().filter(|name| !before.contains_key(*name)) {
        if closed {
            push(
                out,
                &pointer_push(&properties, name),
                "added-property",
                Direction::Widening,
                format!(
                    "property {name} was added to {}, which old readers refuse",
                    display(path)
                ),
            );
        }
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() {
        "the document"
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kinds(old: Value, new: Value, mode: Compatibility) -> Vec<&'static str> {
        breaking_schema_changes(&old, &new, mode, mode)
            .into_iter()
            .map(|c| c.kind)
            .collect()
    }

    fn base() -> Value {
        json!({
            "type": "object",
            "required": ["damage"],
            "additionalProperties": false,
            "properties": {
                "damage": {"type": "number", "minimum": 1, "maximum": 1000},
                "currency": {"enum": ["credits", "gems"]},
                "name": {"type": "string"}
            }
        })
    }

    fn edited(edit: impl FnOnce(&mut Value)) -> Value {
        let mut schema = base();
        edit(&mut schema);
        schema
    }

    #[test]
    fn each_breaking_change_is_named_under_backward() {
        let cases: Vec<(Value, &str)> = vec![
            (
                edited(|s| {
                    s["properties"].as_object_mut().unwrap().remove("name");
                }),
                "removed-property",
            ),
            (
                edited(|s| s["required"] = json!(["damage", "name"])),
                "new-required-field",
            ),
            (
                edited(|s| s["properties"]["damage"]["maximum"] = json!(500)),
                "narrowed-range",
            ),
            (
                edited(|s| s["properties"]["damage"]["minimum"] = json!(2)),
                "narrowed-range",
            ),
            (
                edited(|s| s["properties"]["currency"]["enum"] = json!(["credits"])),
                "narrowed-enum",
            ),
            (
                edited(|s| s["properties"]["name"]["type"] = json!("integer")),
                "changed-type",
            ),
        ];
        for (new, expected) in cases {
            assert_eq!(kinds(base(), new, Compatibility::Backward), vec![expected]);
        }
    }

    #[test]
    fn widening_is_fine_backward_but_breaks_forward() {
        let widened = edited(|s| {
            s["properties"]["damage"]["maximum"] = json!(2000);
            s["properties"]["currency"]["enum"] = json!(["credits", "gems", "gold"]);
            s["properties"]["extra"] = json!({"type": "string"});
        });
        assert!(kinds(base(), widened.clone(), Compatibility::Backward).is_empty());
        assert_eq!(
            kinds(base(), widened.clone(), Compatibility::Forward),
            vec!["widened-enum", "widened-range", "added-property"]
        );
        assert_eq!(kinds(base(), widened.clone(), Compatibility::Full).len(), 3);
        assert!(kinds(base(), widened, Compatibility::None).is_empty());
    }

    #[test]
    fn identical_schemas_have_no_changes() {
        assert!(schema_changes(&base(), &base()).is_empty());
    }

    #[test]
    fn nested_definitions_are_compared() {
        let old = json!({"$defs": {"weapon": {"properties": {"damage": {"maximum": 1000}}}}});
        let new = json!({"$defs": {"weapon": {"properties": {"damage": {"maximum": 10}}}}});
        let changes =
            breaking_schema_changes(&old, &new, Compatibility::Backward, Compatibility::Backward);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path, "/$defs/weapon/properties/damage/maximum");
    }

    #[test]
    fn keywords_not_worked_out_break_both_ways_when_they_change() {
        let old = json!({"properties": {"a": {"type": "string"}}});
        let narrowed = json!({"properties": {"a": {"type": "string"}}, "not": {"type": "object"}});
        assert_eq!(
            kinds(old.clone(), narrowed, Compatibility::Backward),
            ["changed-keyword"]
        );
        let patterned = json!({"properties": {"a": {"type": "string", "pattern": "^x"}}});
        assert_eq!(
            kinds(old.clone(), patterned.clone(), Compatibility::Forward),
            ["changed-keyword"]
        );
        assert!(kinds(old, patterned, Compatibility::None).is_empty());
    }

    #[test]
    fn dropping_a_secret_or_weakening_the_mode_breaks_even_under_none() {
        let old = json!({"properties": {"db": {"properties": {"password": {"type": "string", "x-secret": true}}}}});
        let plain = json!({"properties": {"db": {"properties": {"password": {"type": "string"}}}}});
        let unmarked = json!({"properties": {"db": {"properties": {"password": {"type": "string", "x-secret": false}}}}});
        for new in [&plain, &unmarked] {
            let changes =
                breaking_schema_changes(&old, new, Compatibility::None, Compatibility::None);
            assert_eq!(changes.len(), 1, "{changes:?}");
            assert_eq!(changes[0].kind, REMOVED_SECRET);
            assert_eq!(changes[0].path, "/properties/db/properties/password");
        }
        // Marking more secrets is no break.
        assert!(
            breaking_schema_changes(&plain, &old, Compatibility::None, Compatibility::None)
                .is_empty()
        );
        assert_eq!(
            kinds_between(Compatibility::Backward, Compatibility::None),
            [WEAKENED_COMPATIBILITY]
        );
        assert_eq!(
            kinds_between(Compatibility::Full, Compatibility::Forward),
            [WEAKENED_COMPATIBILITY]
        );
        assert!(kinds_between(Compatibility::None, Compatibility::Full).is_empty());
        assert!(kinds_between(Compatibility::Backward, Compatibility::Backward).is_empty());
    }

    fn kinds_between(old: Compatibility, new: Compatibility) -> Vec<&'static str> {
        breaking_schema_changes(&base(), &base(), old, new)
            .into_iter()
            .map(|c| c.kind)
            .collect()
    }
}
