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

mod constraints;
mod secret_rules;

use super::{document::pointer_push, kinds::Compatibility};
use constraints::{compare_bounds, compare_enum, compare_required, compare_types, display, push};
use serde::Serialize;
use serde_json::{Map, Value};

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
    /// `added-keyword` / `removed-keyword` (a subschema keyword such as
    /// `additionalProperties` or a `patternProperties` entry),
    /// `changed-keyword` (any other keyword whose effect is not worked out:
    /// `not`, `if`, `allOf`, `pattern`, `$ref`, unknown ones...),
    /// `removed-secret`, `changed-secret-rule`, `weakened-compatibility`.
    pub kind: &'static str,
    pub direction: Direction,
    pub message: String,
}

impl SchemaChange {
    /// Whether `mode` forbids this change. A secret no longer marked
    /// (`removed-secret`), a rule that may see a secret value
    /// (`changed-secret-rule`: validation results would tell its value
    /// bit by bit) and a weaker compatibility mode (`weakened-compatibility`)
    /// break every mode, `none` included: only an admin may approve them.
    pub fn breaks(&self, mode: Compatibility) -> bool {
        if matches!(
            self.kind,
            REMOVED_SECRET | CHANGED_SECRET_RULE | WEAKENED_COMPATIBILITY
        ) {
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

/// Keywords that only annotate: they change nothing that validates.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "x-secret",
];

/// Keywords whose effect `compare` works out; every other keyword is
/// compared as "changed or not", and a change may go either way.
const WORKED_OUT: &[&str] = &[
    "type",
    "required",
    "enum",
    "const",
    "minimum",
    "exclusiveMinimum",
    "minLength",
    "minItems",
    "minProperties",
    "maximum",
    "exclusiveMaximum",
    "maxLength",
    "maxItems",
    "maxProperties",
    "properties",
    "patternProperties",
    "dependentSchemas",
    "$defs",
    "definitions",
];

/// Subschema keywords whose subschema narrowing narrows the schema.
const MONOTONE_SUBSCHEMAS: &[&str] = &[
    "items",
    "additionalItems",
    "unevaluatedItems",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
];

/// HotSwap's own keywords: extension keywords that do validate.
const CUSTOM_KEYWORDS: &[&str] = &["x-sum", "x-ranges", "x-compare"];

pub const REMOVED_SECRET: &str = "removed-secret";
pub const CHANGED_SECRET_RULE: &str = "changed-secret-rule";
pub const WEAKENED_COMPATIBILITY: &str = "weakened-compatibility";

/// Every compatibility-relevant change from `old` to `new`.
pub fn schema_changes(old: &Value, new: &Value) -> Vec<SchemaChange> {
    let mut out = Vec::new();
    let context = Context::of(old, new);
    compare(&context, String::new(), old, new, &mut out);
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
    if let Some(rules) = secret_rules::changed_secret_rules(old, new) {
        let rules: Vec<String> = rules
            .into_iter()
            .map(|rule| match rule.char_indices().nth(120) {
                Some((cut, _)) => format!("{}…", &rule[..cut]),
                None => rule,
            })
            .collect();
        push(
            &mut out,
            "",
            CHANGED_SECRET_RULE,
            Direction::Both,
            format!(
                "a rule that may see a secret value changed ({}): validating the stored \
                 configs again would tell the value bit by bit, so only an admin may approve it",
                rules.join("; ")
            ),
        );
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

/// What a whole comparison knows about both schemas.
struct Context {
    /// Whether every `$ref` sits where a narrower target narrows the schema
    /// (not under `not`, `if`, `oneOf`...): only then does a change inside
    /// `$defs` keep its direction.
    refs_monotone: bool,
    /// Whether a `$ref` points into an extension keyword (`x-...`): then
    /// those are not mere annotations.
    refs_into_extensions: bool,
}

impl Context {
    fn of(old: &Value, new: &Value) -> Context {
        let mut refs_monotone = true;
        let mut refs_into_extensions = false;
        for schema in [old, new] {
            scan_refs(
                schema,
                true,
                &mut refs_monotone,
                &mut refs_into_extensions,
                0,
            );
        }
        Context {
            refs_monotone,
            refs_into_extensions,
        }
    }

    fn is_inert(&self, keyword: &str) -> bool {
        ANNOTATIONS.contains(&keyword)
            || (keyword.starts_with("x-")
                && !CUSTOM_KEYWORDS.contains(&keyword)
                && !self.refs_into_extensions)
    }
}

/// Notes whether any `$ref` below `schema` sits under a keyword that is
/// not monotone, or points into an extension keyword.
fn scan_refs(
    schema: &Value,
    monotone: bool,
    refs_monotone: &mut bool,
    refs_into_extensions: &mut bool,
    depth: usize,
) {
    let Value::Object(map) = schema else {
        return;
    };
    if depth > 256 {
        *refs_monotone = false;
        return;
    }
    for (keyword, value) in map {
        match keyword.as_str() {
            "$ref" | "$dynamicRef" | "$recursiveRef" => {
                *refs_monotone &= monotone;
                if value.as_str().is_some_and(|r| r.contains("/x-")) {
                    *refs_into_extensions = true;
                }
            }
            "properties" | "patternProperties" | "dependentSchemas" | "$defs" | "definitions" => {
                for child in value.as_object().into_iter().flat_map(|m| m.values()) {
                    scan_refs(
                        child,
                        monotone,
                        refs_monotone,
                        refs_into_extensions,
                        depth + 1,
                    );
                }
            }
            "allOf" | "anyOf" => {
                for child in value.as_array().into_iter().flatten() {
                    scan_refs(
                        child,
                        monotone,
                        refs_monotone,
                        refs_into_extensions,
                        depth + 1,
                    );
                }
            }
            k if MONOTONE_SUBSCHEMAS.contains(&k) => scan_refs(
                value,
                monotone,
                refs_monotone,
                refs_into_extensions,
                depth + 1,
            ),
            // Anything else holding subschemas (`not`, `if`, `oneOf`,
            // `contains`, `prefixItems`, extensions...) is not monotone.
            _ => match value {
                Value::Object(_) => {
                    scan_refs(value, false, refs_monotone, refs_into_extensions, depth + 1)
                }
                Value::Array(items) => {
                    for child in items {
                        scan_refs(child, false, refs_monotone, refs_into_extensions, depth + 1);
                    }
                }
                _ => {}
            },
        }
    }
}

/// A subschema that accepts everything (`true` or `{}`).
fn accepts_all(schema: &Value) -> bool {
    schema == &Value::Bool(true) || schema.as_object().is_some_and(Map::is_empty)
}

/// A subschema as an object: `true` is `{}`, `false` is `{"not": {}}`.
fn as_object(schema: &Value) -> Option<std::borrow::Cow<'_, Map<String, Value>>> {
    use std::borrow::Cow;
    match schema {
        Value::Object(map) => Some(Cow::Borrowed(map)),
        Value::Bool(true) => Some(Cow::Owned(Map::new())),
        Value::Bool(false) => Some(Cow::Owned(
            [("not".to_owned(), Value::Object(Map::new()))]
                .into_iter()
                .collect(),
        )),
        _ => None,
    }
}

fn compare(context: &Context, path: String, old: &Value, new: &Value, out: &mut Vec<SchemaChange>) {
    let (Some(old), Some(new)) = (as_object(old), as_object(new)) else {
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
    let (old, new) = (old.as_ref(), new.as_ref());
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
    compare_properties(context, &path, old, new, out);
    for keyword in MONOTONE_SUBSCHEMAS {
        let here = pointer_push(&path, keyword);
        match (old.get(*keyword), new.get(*keyword)) {
            // The old drafts' `items` array is compared as a whole below.
            (Some(Value::Array(_)), _) | (_, Some(Value::Array(_))) => {}
            (Some(a), Some(b)) => compare(context, here, a, b, out),
            (None, Some(b)) if !accepts_all(b) => push(
                out,
                &here,
                "added-keyword",
                Direction::Narrowing,
                format!("{}: {keyword} was added", display(&path)),
            ),
            (Some(a), None) if !accepts_all(a) => push(
                out,
                &here,
                "removed-keyword",
                Direction::Widening,
                format!("{}: {keyword} was removed", display(&path)),
            ),
            _ => {}
        }
    }
    // Where `additionalProperties` checks members, a new `patternProperties`
    // entry both adds a rule and takes members from it (and a dropped one
    // hands them back).
    let open =
        |schema: &Map<String, Value>| schema.get("additionalProperties").is_none_or(accepts_all);
    let (was_open, is_open) = (open(old), open(new));
    compare_subschema_map(
        context,
        &path,
        "patternProperties",
        (old, was_open),
        (new, is_open),
        out,
    );
    compare_subschema_map(
        context,
        &path,
        "dependentSchemas",
        (old, true),
        (new, true),
        out,
    );
    for keyword in ["$defs", "definitions"] {
        // Only what a `$ref` reaches matters, and the `$ref` is compared.
        let (Some(Value::Object(a)), Some(Value::Object(b))) = (old.get(keyword), new.get(keyword))
        else {
            continue;
        };
        let mut inside = Vec::new();
        for (name, old_schema) in a {
            if let Some(new_schema) = b.get(name) {
                let here = pointer_push(&pointer_push(&path, keyword), name);
                compare(context, here, old_schema, new_schema, &mut inside);
            }
        }
        if !context.refs_monotone {
            for change in &mut inside {
                change.direction = Direction::Both;
            }
        }
        out.extend(inside);
    }
    // Every other keyword: changed or not.
    let keywords: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for keyword in keywords {
        let keyword = keyword.as_str();
        if WORKED_OUT.contains(&keyword)
            || MONOTONE_SUBSCHEMAS.contains(&keyword) && !is_items_array(old, new, keyword)
            || context.is_inert(keyword)
            || old.get(keyword) == new.get(keyword)
        {
            continue;
        }
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

/// Whether `keyword` is an `items` in its old array form on either side.
fn is_items_array(old: &Map<String, Value>, new: &Map<String, Value>, keyword: &str) -> bool {
    keyword == "items"
        && (old.get(keyword).is_some_and(Value::is_array)
            || new.get(keyword).is_some_and(Value::is_array))
}

/// A keyword holding named subschemas that each add a rule: entries in both
/// are compared, a new one narrows and a dropped one widens. Either may go
/// both ways when another keyword checked (`old`'s `open` false) or checks
/// (`new`'s) what the entry covers.
fn compare_subschema_map(
    context: &Context,
    path: &str,
    keyword: &str,
    (old, was_open): (&Map<String, Value>, bool),
    (new, is_open): (&Map<String, Value>, bool),
    out: &mut Vec<SchemaChange>,
) {
    let empty = Map::new();
    let entries = |schema: &Map<String, Value>| match schema.get(keyword) {
        Some(Value::Object(map)) => Some(map.clone()),
        None => Some(empty.clone()),
        Some(_) => None,
    };
    let (Some(before), Some(after)) = (entries(old), entries(new)) else {
        return; // not a map: compared as a whole
    };
    let here = pointer_push(path, keyword);
    for (name, old_schema) in &before {
        let at = pointer_push(&here, name);
        match after.get(name) {
            Some(new_schema) => compare(context, at, old_schema, new_schema, out),
            None if accepts_all(old_schema) => {}
            None => push(
                out,
                &at,
                "removed-keyword",
                if is_open {
                    Direction::Widening
                } else {
                    Direction::Both
                },
                format!(
                    "{}: the {keyword} entry {name:?} was removed",
                    display(path)
                ),
            ),
        }
    }
    for (name, new_schema) in &after {
        if before.contains_key(name) || (was_open && accepts_all(new_schema)) {
            continue;
        }
        push(
            out,
            &pointer_push(&here, name),
            "added-keyword",
            if was_open {
                Direction::Narrowing
            } else {
                Direction::Both
            },
            format!("{}: the {keyword} entry {name:?} was added", display(path)),
        );
    }
}

fn compare_properties(
    context: &Context,
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
            Some(new_schema) => compare(context, here, old_schema, new_schema, out),
            None => push(
                out,
                &here,
                "removed-property",
                Direction::Both,
                format!("property {name} was removed from {}", display(path)),
            ),
        }
    }
    // A member not named before was checked by `additionalProperties`
    // (refused outright when it is `false`); once named, by its own schema.
    let additional = old.get("additionalProperties");
    let closed = additional == Some(&Value::Bool(false));
    let open = additional.is_none_or(accepts_all);
    for (name, new_schema) in after.iter().filter(|(name, _)| !before.contains_key(*name)) {
        let here = pointer_push(&properties, name);
        let (direction, why) = if closed {
            (Direction::Widening, "which old readers refuse")
        } else if open && accepts_all(new_schema) {
            continue;
        } else if open {
            (
                Direction::Narrowing,
                "whose rules documents that already had it may break",
            )
        } else {
            (
                Direction::Both,
                "now checked by its own rules instead of additionalProperties",
            )
        };
        push(
            out,
            &here,
            "added-property",
            direction,
            format!("property {name} was added to {}, {why}", display(path)),
        );
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

    /// Every keyword added where there was none, from the attacker review:
    /// each one narrows (or may), none passes under `backward`.
    #[test]
    fn keywords_added_where_there_were_none_break_backward() {
        let old = json!({"type": "object", "properties": {"name": {"type": "string"}, "tags": {"type": "array"}}});
        let added: Vec<(Value, &str)> = vec![
            (
                json!({"patternProperties": {"^a": {"pattern": "^x"}}}),
                "added-keyword",
            ),
            (json!({"additionalProperties": false}), "added-keyword"),
            (
                json!({"additionalProperties": {"type": "integer"}}),
                "added-keyword",
            ),
            (json!({"propertyNames": {"maxLength": 3}}), "added-keyword"),
            (
                json!({"properties": {"apiKey": {"pattern": "^x"}}}),
                "added-property",
            ),
            (
                json!({"properties": {"tags": {"items": {"type": "integer"}}}}),
                "added-keyword",
            ),
            (
                json!({"properties": {"tags": {"prefixItems": [{"type": "integer"}]}}}),
                "changed-keyword",
            ),
            (
                json!({"properties": {"tags": {"contains": {"type": "integer"}}}}),
                "changed-keyword",
            ),
            (
                json!({"properties": {"tags": {"minContains": 2}}}),
                "changed-keyword",
            ),
            (
                json!({"dependentSchemas": {"name": {"required": ["tags"]}}}),
                "added-keyword",
            ),
            (
                json!({"x-compare": {"left": "a", "op": "<", "right": "b"}}),
                "changed-keyword",
            ),
            (json!({"someFutureKeyword": 1}), "changed-keyword"),
        ];
        for (patch, kind) in added {
            let mut new = old.clone();
            merge(&mut new, &patch);
            let found = kinds(old.clone(), new.clone(), Compatibility::Backward);
            assert!(found.contains(&kind), "{patch}: {found:?}");
        }
        // Removing them again widens: fine under backward.
        let mut strict = old.clone();
        merge(
            &mut strict,
            &json!({"additionalProperties": false, "patternProperties": {"^a": {"pattern": "^x"}}}),
        );
        assert!(kinds(strict, old.clone(), Compatibility::Backward).is_empty());
        // A property named with no rules, in an open object, changes nothing.
        let mut named = old.clone();
        merge(&mut named, &json!({"properties": {"note": {}}}));
        assert!(kinds(old, named, Compatibility::Full).is_empty());
    }

    #[test]
    fn a_ref_target_outside_defs_is_compared() {
        let old = json!({"x-lib": {"key": {"maxLength": 64}}, "properties": {"k": {"$ref": "#/x-lib/key"}}});
        let mut new = old.clone();
        new["x-lib"]["key"]["maxLength"] = json!(8);
        assert_eq!(
            kinds(old, new, Compatibility::Backward),
            ["changed-keyword"]
        );
        // Without a $ref into them, extension keywords are annotations.
        let annotated = json!({"x-ui": {"widget": "slider"}, "maximum": 5});
        let reworded = json!({"x-ui": {"widget": "dial"}, "maximum": 5});
        assert!(kinds(annotated, reworded, Compatibility::Full).is_empty());
    }

    #[test]
    fn defs_reached_under_not_lose_their_direction() {
        let old = json!({"not": {"$ref": "#/$defs/banned"}, "$defs": {"banned": {"maximum": 10}}});
        let mut new = old.clone();
        new["$defs"]["banned"]["maximum"] = json!(20);
        // Widening what `not` refuses narrows the schema: not "widened".
        let changes =
            breaking_schema_changes(&old, &new, Compatibility::Backward, Compatibility::Backward);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].direction, Direction::Both);
    }

    #[test]
    fn a_rule_seeing_a_secret_breaks_every_mode() {
        let old = json!({"properties": {"db": {"properties": {"apiKey": {"type": "string", "x-secret": true}}}}});
        let mut probe = old.clone();
        probe["properties"]["db"]["patternProperties"] = json!({"^apiKey$": {"pattern": "^sk-"}});
        let changes =
            breaking_schema_changes(&old, &probe, Compatibility::None, Compatibility::None);
        assert_eq!(
            changes.iter().map(|c| c.kind).collect::<Vec<_>>(),
            [CHANGED_SECRET_RULE]
        );
        assert!(
            changes[0].message.contains("/db/*"),
            "{}",
            changes[0].message
        );
    }

    fn merge(target: &mut Value, patch: &Value) {
        match (target, patch) {
            (Value::Object(target), Value::Object(patch)) => {
                for (key, value) in patch {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
            (target, patch) => *target = patch.clone(),
        }
    }
}
