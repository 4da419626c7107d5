//! The rules of a schema that may see a secret value.
//!
//! Validation answers valid or not, even when its messages hide a secret:
//! whoever may change a rule that sees a secret, and then validate the
//! stored config again, learns something about the value with each try
//! (a `pattern` of `^a`, `^b`... spells it out). So the rules that may see
//! a secret are the admin's to change, whatever the compatibility mode.
//!
//! The schema is walked from its root, following `$ref`s and every
//! applicator, with the place in a document each subschema applies to
//! written as a path of member names, where `*` stands for any member or
//! item (`patternProperties`, `additionalProperties`, `items`...). The
//! secret places are those of subschemas marked `x-secret`. A keyword
//! *sees* a secret when its subschema's place may be a secret's place, or
//! when it compares whole values (`enum`, `const`, `uniqueItems`, the custom
//! keywords) at a place that may hold one. Two schema versions whose sets
//! of (place, keyword, value) that see a secret differ change a secret rule.

use crate::domain::{document::pointer_push, validation::SchemaRefs};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};

/// One step of a place in a document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Member(String),
    /// Any member or item.
    Any,
    /// Anything at any depth below (a recursive schema, cut short).
    Deeper,
}

type Place = Vec<Step>;

/// Places deeper than this are cut short with [`Step::Deeper`].
const MAX_STEPS: usize = 24;
/// Subschema visits a walk may make before it gives up.
const MAX_VISITS: usize = 50_000;

/// Keywords that compare a whole value, secrets inside included.
const WHOLE_VALUE: &[&str] = &[
    "enum",
    "const",
    "uniqueItems",
    "x-sum",
    "x-ranges",
    "x-compare",
];

/// Keywords that say nothing about any value beyond the annotations
/// (`super::ANNOTATIONS`), or whose subschemas the walk follows (those are
/// seen through their own keywords).
const NOT_RULES: &[&str] = &[
    "$schema",
    "$id",
    "$anchor",
    "$dynamicAnchor",
    "$defs",
    "definitions",
    "$ref",
    "$dynamicRef",
    "$recursiveRef",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "properties",
    "patternProperties",
    "additionalProperties",
    "unevaluatedProperties",
    "items",
    "prefixItems",
    "additionalItems",
    "unevaluatedItems",
    "contains",
    // Member names are never secret.
    "propertyNames",
];

/// Every subschema the walk reached, with its place.
struct Reached<'a> {
    visits: Vec<(Place, &'a Value)>,
}

/// The subschemas of `schema` and their places; `None` when the schema is
/// too intricate to follow (every change then counts).
fn reach(schema: &Value) -> Option<Reached<'_>> {
    let refs = SchemaRefs::new(schema).ok()?;
    let mut seen: HashSet<(String, Place)> = HashSet::new();
    let mut visits = Vec::new();
    let mut stack: Vec<(String, Place)> = vec![(String::new(), Vec::new())];
    while let Some((pointer, place)) = stack.pop() {
        if !seen.insert((pointer.clone(), place.clone())) {
            continue;
        }
        if seen.len() > MAX_VISITS {
            return None;
        }
        let Some(node) = schema.pointer(&pointer) else {
            continue;
        };
        visits.push((place.clone(), node));
        let Value::Object(map) = node else {
            continue;
        };
        let below = |step: Step| -> Place {
            let mut next = place.clone();
            if next.last() == Some(&Step::Deeper) {
                return next;
            }
            if next.len() >= MAX_STEPS {
                next.push(Step::Deeper);
            } else {
                next.push(step);
            }
            next
        };
        for (keyword, value) in map {
            let here = pointer_push(&pointer, keyword);
            let each = |value: &Value| -> Vec<(String, String)> {
                match value {
                    Value::Array(items) => (0..items.len())
                        .map(|i| (format!("{here}/{i}"), i.to_string()))
                        .collect(),
                    Value::Object(members) => members
                        .keys()
                        .map(|k| (pointer_push(&here, k), k.clone()))
                        .collect(),
                    _ => Vec::new(),
                }
            };
            match keyword.as_str() {
                "$ref" | "$dynamicRef" | "$recursiveRef" => {
                    let target = value.as_str().and_then(|r| refs.resolve(&here, r).ok());
                    for target in target.into_iter().flatten() {
                        stack.push((target, place.clone()));
                    }
                }
                "not" | "if" | "then" | "else" => stack.push((here, place.clone())),
                "allOf" | "anyOf" | "oneOf" | "dependentSchemas" => {
                    for (child, _) in each(value) {
                        stack.push((child, place.clone()));
                    }
                }
                "properties" => {
                    for (child, name) in each(value) {
                        stack.push((child, below(Step::Member(name))));
                    }
                }
                "patternProperties" | "prefixItems" => {
                    for (child, _) in each(value) {
                        stack.push((child, below(Step::Any)));
                    }
                }
                "items" if value.is_array() => {
                    for (child, _) in each(value) {
                        stack.push((child, below(Step::Any)));
                    }
                }
                "additionalProperties"
                | "unevaluatedProperties"
                | "items"
                | "additionalItems"
                | "unevaluatedItems"
                | "contains" => stack.push((here, below(Step::Any))),
                _ => {}
            }
        }
    }
    Some(Reached { visits })
}

/// Whether a document place matched by `a` may be one matched by `b`, when
/// `prefix`: or an ancestor of one.
fn may_meet(a: &[Step], b: &[Step], prefix: bool) -> bool {
    for (i, step) in a.iter().enumerate() {
        let Some(other) = b.get(i) else {
            return false; // `a` is deeper than `b`
        };
        match (step, other) {
            (Step::Deeper, _) | (_, Step::Deeper) => return true,
            (Step::Member(x), Step::Member(y)) if x != y => return false,
            _ => {}
        }
    }
    a.len() == b.len() || (prefix && a.len() < b.len())
}

fn shown(place: &[Step]) -> String {
    let steps: Vec<String> = place
        .iter()
        .map(|step| match step {
            Step::Member(name) => name.replace('~', "~0").replace('/', "~1"),
            Step::Any => "*".to_owned(),
            Step::Deeper => "**".to_owned(),
        })
        .collect();
    format!("/{}", steps.join("/"))
}

/// The secret places of a schema.
fn secret_places(reached: &Reached<'_>) -> Vec<Place> {
    reached
        .visits
        .iter()
        .filter(|(_, node)| node.get("x-secret") == Some(&Value::Bool(true)))
        .map(|(place, _)| place.clone())
        .collect()
}

/// The rules that see a secret at one of `secrets`: `place keyword value`.
fn rules_seeing(reached: &Reached<'_>, secrets: &[Place]) -> BTreeSet<String> {
    let mut rules = BTreeSet::new();
    for (place, node) in &reached.visits {
        let Value::Object(map) = node else {
            // `false` refuses whatever is there.
            if node == &&Value::Bool(false) && secrets.iter().any(|s| may_meet(place, s, true)) {
                rules.insert(format!("{} false", shown(place)));
            }
            continue;
        };
        for (keyword, value) in map {
            if super::ANNOTATIONS.contains(&keyword.as_str())
                || NOT_RULES.contains(&keyword.as_str())
            {
                continue;
            }
            let whole = WHOLE_VALUE.contains(&keyword.as_str());
            if secrets.iter().any(|s| may_meet(place, s, whole)) {
                rules.insert(format!("{} {keyword} {value}", shown(place)));
            }
        }
    }
    rules
}

/// When a rule that may see a secret differs between `old` and `new`,
/// which ones (a few, for the message); `None` when none does.
pub fn changed_secret_rules(old: &Value, new: &Value) -> Option<Vec<String>> {
    let (Some(before), Some(after)) = (reach(old), reach(new)) else {
        // Too intricate to follow: any change to a schema with secrets counts.
        let has_secrets = super::super::secrets::schema_has_secrets(old)
            || super::super::secrets::schema_has_secrets(new);
        return (has_secrets && old != new)
            .then(|| vec!["the schema is too intricate to tell which rules see a secret".into()]);
    };
    let mut secrets = secret_places(&before);
    secrets.extend(secret_places(&after));
    if secrets.is_empty() {
        return None;
    }
    let (a, b) = (
        rules_seeing(&before, &secrets),
        rules_seeing(&after, &secrets),
    );
    let changed: Vec<String> = a.symmetric_difference(&b).take(3).cloned().collect();
    (!changed.is_empty()).then_some(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "type": "object",
            "properties": {
                "db": {
                    "type": "object",
                    "properties": {
                        "host": {"type": "string"},
                        "apiKey": {"type": "string", "minLength": 8, "x-secret": true}
                    }
                },
                "weapons": {"additionalProperties": {"properties": {"damage": {"maximum": 100}}}}
            }
        })
    }

    fn edited(edit: impl FnOnce(&mut Value)) -> Value {
        let mut schema = base();
        edit(&mut schema);
        schema
    }

    #[test]
    fn a_probe_reaching_the_secret_by_any_route_is_a_change() {
        let probes = [
            edited(|s| {
                s["properties"]["db"]["patternProperties"] =
                    json!({"^apiKey$|^zz$": {"pattern": "^sk-"}})
            }),
            edited(|s| s["properties"]["db"]["additionalProperties"] = json!({"pattern": "^a"})),
            edited(|s| s["properties"]["db"]["properties"]["apiKey"]["maxLength"] = json!(30)),
            edited(|s| {
                s["properties"]["db"]["allOf"] =
                    json!([{"properties": {"apiKey": {"pattern": "^b"}}}])
            }),
            edited(|s| s["properties"]["db"]["$ref"] = json!("#/$defs/probe")),
            edited(|s| {
                s["properties"]["db"]["x-compare"] =
                    json!({"left": "apiKey", "op": "<", "right": "host"})
            }),
            edited(|s| s["properties"]["db"]["enum"] = json!([{"apiKey": "guess"}])),
            edited(|s| {
                s["not"] = json!({"properties": {"db": {"properties": {"apiKey": {"const": "x"}}}}})
            }),
        ];
        for (i, probe) in probes.iter().enumerate() {
            let mut probe = probe.clone();
            if i == 4 {
                probe["$defs"] = json!({"probe": {"properties": {"apiKey": {"pattern": "^c"}}}});
            }
            assert!(
                changed_secret_rules(&base(), &probe).is_some(),
                "probe {i} went unnoticed: {probe}"
            );
        }
    }

    #[test]
    fn changes_away_from_secrets_are_not_secret_rules() {
        let unrelated = [
            edited(|s| {
                s["properties"]["weapons"]["additionalProperties"]["properties"]["damage"]["maximum"] =
                    json!(200)
            }),
            edited(|s| s["properties"]["db"]["properties"]["host"]["maxLength"] = json!(255)),
            edited(|s| s["properties"]["db"]["required"] = json!(["apiKey"])),
            edited(|s| {
                s["properties"]["db"]["properties"]["apiKey"]["description"] = json!("the key")
            }),
            edited(|s| s["properties"]["name"] = json!({"type": "string"})),
        ];
        for (i, change) in unrelated.iter().enumerate() {
            assert_eq!(changed_secret_rules(&base(), change), None, "change {i}");
        }
        let plain = json!({"properties": {"a": {"maximum": 1}}});
        assert_eq!(
            changed_secret_rules(&plain, &json!({"properties": {"a": {"maximum": 2}}})),
            None,
            "a schema without secrets has no secret rules"
        );
    }

    #[test]
    fn recursive_schemas_end() {
        let tree = json!({"$defs": {"node": {"properties": {
            "token": {"type": "string", "x-secret": true},
            "children": {"items": {"$ref": "#/$defs/node"}}
        }}}, "$ref": "#/$defs/node"});
        let mut deeper = tree.clone();
        deeper["$defs"]["node"]["properties"]["token"]["maxLength"] = json!(64);
        assert!(changed_secret_rules(&tree, &deeper).is_some());
        assert_eq!(changed_secret_rules(&tree, &tree), None);
    }
}
