//! `$ref`s within one schema document: JSON Pointers, `#anchor`s and the
//! root's own `$id`. Nothing outside the document is ever fetched, and a
//! `$id` below the root is refused, so every reference resolves against
//! the one document.

use super::super::document::pointer_push;
use serde_json::Value;
use std::collections::HashMap;

/// A schema that cannot be validated within bounds, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooComplex {
    /// JSON Pointer into the schema.
    pub path: String,
    pub message: String,
}

pub(super) fn too_complex(path: &str, message: impl Into<String>) -> TooComplex {
    TooComplex {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The anchors of one schema document, for resolving its `$ref`s.
#[derive(Debug)]
pub struct SchemaRefs<'a> {
    root: &'a Value,
    anchors: HashMap<String, Vec<String>>,
}

impl<'a> SchemaRefs<'a> {
    pub fn new(root: &'a Value) -> Result<SchemaRefs<'a>, TooComplex> {
        let mut anchors = HashMap::new();
        collect_anchors(root, String::new(), &mut anchors, 0)?;
        Ok(SchemaRefs { root, anchors })
    }

    /// The subschemas `reference` names (several for a dynamic anchor).
    pub fn resolve(&self, at: &str, reference: &str) -> Result<Vec<String>, TooComplex> {
        let unsupported = || {
            too_complex(
                at,
                format!(
                    "{reference:?} is not a reference within this schema \
                     (#/$defs/<name>, a JSON Pointer or an #anchor)"
                ),
            )
        };
        let (base, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        if !base.is_empty() {
            let root_id = self.root.get("$id").and_then(Value::as_str).unwrap_or("");
            let same_document = !root_id.is_empty()
                && (root_id == base
                    || root_id.ends_with(&format!("/{base}"))
                    || base.ends_with(&format!("/{root_id}")));
            if !same_document {
                return Err(unsupported());
            }
        }
        let fragment = percent_decode(fragment).ok_or_else(unsupported)?;
        let targets = if fragment.is_empty() || fragment.starts_with('/') {
            vec![fragment]
        } else {
            self.anchors.get(&fragment).cloned().unwrap_or_default()
        };
        if targets.is_empty() {
            return Err(unsupported());
        }
        for target in &targets {
            match self.root.pointer(target) {
                Some(Value::Object(_) | Value::Bool(_)) => {}
                _ => return Err(unsupported()),
            }
        }
        Ok(targets)
    }
}

/// Every `$anchor` and `$dynamicAnchor`, by name; and no `$id` below the
/// root (a `$ref` then resolves against one document).
fn collect_anchors(
    value: &Value,
    pointer: String,
    anchors: &mut HashMap<String, Vec<String>>,
    depth: usize,
) -> Result<(), TooComplex> {
    // Schemas arrive with the document depth limit; this bounds the
    // recursion should one not.
    if depth > 256 {
        return Err(too_complex(&pointer, "the schema is nested too deeply"));
    }
    match value {
        Value::Object(map) => {
            for keyword in ["$anchor", "$dynamicAnchor"] {
                if let Some(Value::String(name)) = map.get(keyword) {
                    anchors
                        .entry(name.clone())
                        .or_default()
                        .push(pointer.clone());
                }
            }
            if !pointer.is_empty() && map.get("$id").is_some_and(Value::is_string) {
                return Err(too_complex(
                    &format!("{pointer}/$id"),
                    "$id is supported only at the root: name the subschema in $defs and \
                     refer to it as #/$defs/<name>",
                ));
            }
            for (key, child) in map {
                collect_anchors(child, pointer_push(&pointer, key), anchors, depth + 1)?;
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_anchors(child, format!("{pointer}/{i}"), anchors, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `%XX` escapes in a URI fragment.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
