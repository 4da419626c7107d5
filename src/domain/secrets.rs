//! Which values of a document are secrets: those a schema marks with
//! `"x-secret": true`. The walk follows `properties`, `additionalProperties`,
//! `patternProperties` (applied to every key not in `properties`: without
//! evaluating the pattern it over-approximates, which masks more, never
//! less), `items`/`prefixItems`, local `$ref`s and `allOf`/`anyOf`/`oneOf`
//! (a secret in any branch counts).

use super::document::pointer_push;
use serde_json::Value;

/// What a masked secret shows as.
pub const MASK: &str = "***";

/// Whether `path` is one of `secrets` or lies inside one.
pub fn is_within(path: &str, secrets: &[String]) -> bool {
    secrets
        .iter()
        .any(|secret| path == secret || path.starts_with(&format!("{secret}/")))
}

/// Whether the value at `path` holds a secret: it is one of `secrets`,
/// lies inside one, or contains one (a message about it could quote it).
pub fn holds_secret(path: &str, secrets: &[String]) -> bool {
    is_within(path, secrets)
        || secrets
            .iter()
            .any(|secret| path.is_empty() || secret.starts_with(&format!("{path}/")))
}

/// A copy of `document` with the values at `paths` replaced by [`MASK`].
pub fn masked(document: &Value, paths: &[String]) -> Value {
    let mut copy = document.clone();
    for path in paths {
        if let Some(slot) = copy.pointer_mut(path) {
            *slot = Value::String(MASK.into());
        }
    }
    copy
}

/// What to seal in a new version of a config: the values its schema marks
/// secret now, and every value at a pointer that was ever sealed in a
/// version of that config, whatever the schema says now (a value once
/// secret stays sealed: dropping `x-secret` or rolling back cannot bring
/// it out in clear). Only pointers present in `document`, outermost only,
/// sorted.
pub fn paths_to_seal(
    schema_paths: &[String],
    ever_sealed: &[String],
    document: &Value,
) -> Vec<String> {
    let mut all: Vec<String> = schema_paths
        .iter()
        .chain(ever_sealed)
        .filter(|path| document.pointer(path).is_some())
        .cloned()
        .collect();
    all.sort();
    all.dedup();
    outermost(all)
}

fn outermost(sorted: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(sorted.len());
    for path in sorted {
        // "" (the whole document) covers everything.
        if !out
            .iter()
            .any(|outer| outer.is_empty() || path.starts_with(&format!("{outer}/")))
        {
            out.push(path);
        }
    }
    out
}

/// Locations in a schema document (JSON Pointers into the schema) that
/// carry `"x-secret": true`.
pub fn secret_locations(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), schema)];
    while let Some((path, node)) = stack.pop() {
        match node {
            Value::Object(map) => {
                if map.get("x-secret") == Some(&Value::Bool(true)) {
                    out.push(path.clone());
                }
                stack.extend(map.iter().map(|(k, v)| (pointer_push(&path, k), v)));
            }
            Value::Array(items) => stack.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (pointer_push(&path, &i.to_string()), v)),
            ),
            _ => {}
        }
    }
    out.sort();
    out
}

/// A `$ref` chain deeper than this is cut (cycles).
const MAX_REF_DEPTH: usize = 32;

/// JSON Pointers of the secret values present in `instance`, outermost only,
/// sorted.
pub fn secret_paths(schema: &Value, instance: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, schema, instance, String::new(), 0, &mut out);
    out.sort();
    out.dedup();
    // A secret inside a secret is covered by the outer one.
    outermost(out)
}

/// Whether any subschema of `schema` marks a secret (cheap pre-check).
pub fn schema_has_secrets(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => {
            map.get("x-secret") == Some(&Value::Bool(true)) || map.values().any(schema_has_secrets)
        }
        Value::Array(items) => items.iter().any(schema_has_secrets),
        _ => false,
    }
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    if pointer.is_empty() {
        Some(root)
    } else {
        root.pointer(pointer)
    }
}

fn walk(
    root: &Value,
    schema: &Value,
    instance: &Value,
    path: String,
    depth: usize,
    out: &mut Vec<String>,
) {
    let Some(node) = schema.as_object() else {
        return;
    };
    if depth > MAX_REF_DEPTH {
        return;
    }
    if node.get("x-secret") == Some(&Value::Bool(true)) {
        out.push(path);
        return;
    }
    if let Some(target) = node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| resolve(root, r))
    {
        walk(root, target, instance, path.clone(), depth + 1, out);
    }
    for keyword in ["allOf", "anyOf", "oneOf"] {
        for branch in node
            .get(keyword)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            walk(root, branch, instance, path.clone(), depth + 1, out);
        }
    }
    match instance {
        Value::Object(map) => {
            let properties = node.get("properties").and_then(Value::as_object);
            for (key, value) in map {
                let child = pointer_push(&path, key);
                if let Some(sub) = properties.and_then(|p| p.get(key)) {
                    walk(root, sub, value, child, depth, out);
                    continue;
                }
                for sub in node
                    .get("patternProperties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(|p| p.values())
                {
                    walk(root, sub, value, child.clone(), depth, out);
                }
                if let Some(sub) = node.get("additionalProperties").filter(|s| s.is_object()) {
                    walk(root, sub, value, child, depth, out);
                }
            }
        }
        Value::Array(items) => {
            let prefix = node.get("prefixItems").and_then(Value::as_array);
            for (index, value) in items.iter().enumerate() {
                let child = pointer_push(&path, &index.to_string());
                match prefix.and_then(|p| p.get(index)) {
                    Some(sub) => walk(root, sub, value, child, depth, out),
                    None => {
                        if let Some(sub) = node.get("items") {
                            walk(root, sub, value, child, depth, out);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_found_through_properties_maps_arrays_and_refs() {
        let schema = json!({
            "properties": {
                "db": {"properties": {"password": {"type": "string", "x-secret": true}, "host": {}}},
                "partners": {"additionalProperties": {"$ref": "#/$defs/partner"}},
                "webhooks": {"items": {"properties": {"token": {"x-secret": true}}}},
                "vault": {"x-secret": true, "properties": {"inner": {"x-secret": true}}}
            },
            "$defs": {"partner": {"allOf": [{"properties": {"apiKey": {"x-secret": true}}}]}}
        });
        let doc = json!({
            "db": {"password": "hunter2", "host": "h"},
            "partners": {"a/b": {"apiKey": "k1", "name": "n"}, "c": {"name": "no key"}},
            "webhooks": [{"token": "t0"}, {"url": "u"}],
            "vault": {"inner": "x"},
            "other": "public"
        });
        assert_eq!(
            secret_paths(&schema, &doc),
            vec![
                "/db/password",
                "/partners/a~1b/apiKey",
                "/vault",
                "/webhooks/0/token"
            ]
        );
        assert!(schema_has_secrets(&schema));
        assert!(!schema_has_secrets(
            &json!({"properties": {"a": {"x-secret": false}}})
        ));
    }

    #[test]
    fn what_was_sealed_once_stays_sealed_whatever_the_schema_says_now() {
        let doc = json!({"db": {"password": "p", "host": "h"}, "hooks": [{"token": "t"}], "x": 1});
        // The schema no longer marks anything; the config sealed two pointers before.
        let sealed = vec![
            "/db/password".to_owned(),
            "/hooks/0/token".to_owned(),
            "/gone".to_owned(),
        ];
        assert_eq!(
            paths_to_seal(&[], &sealed, &doc),
            ["/db/password", "/hooks/0/token"],
            "present ones only"
        );
        assert_eq!(
            paths_to_seal(&["/db".to_owned()], &sealed, &doc),
            ["/db", "/hooks/0/token"],
            "an outer secret covers an inner one"
        );
        assert!(paths_to_seal(&[], &[], &doc).is_empty());
    }

    #[test]
    fn secret_locations_are_found_anywhere_in_a_schema() {
        let schema = json!({
            "properties": {"db": {"properties": {"password": {"x-secret": true}}}},
            "$defs": {"k": {"x-secret": true}, "n": {"x-secret": false}},
            "anyOf": [{"x-secret": true}]
        });
        assert_eq!(
            secret_locations(&schema),
            ["/$defs/k", "/anyOf/0", "/properties/db/properties/password"]
        );
    }

    #[test]
    fn a_value_holds_a_secret_inside_around_or_at_it() {
        let secrets = vec!["/db/password".to_owned()];
        for path in ["", "/db", "/db/password", "/db/password/0"] {
            assert!(holds_secret(path, &secrets), "{path}");
        }
        for path in ["/dbx", "/db/host", "/other"] {
            assert!(!holds_secret(path, &secrets), "{path}");
        }
        assert!(!holds_secret("", &[]), "no secrets, nothing to hide");
    }

    #[test]
    fn reference_cycles_terminate() {
        let schema = json!({"$ref": "#"});
        assert!(secret_paths(&schema, &json!({"a": 1})).is_empty());
    }
}
