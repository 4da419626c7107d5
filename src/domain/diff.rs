//! Differences between two documents: the RFC 6902 patch that turns one into
//! the other, and a readable list of changes for people.

use super::document::pointer_push;
use serde::Serialize;
use serde_json::Value;

/// One readable change between two documents.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// JSON Pointer of the changed value.
    pub path: String,
    pub kind: ChangeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub from: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub to: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
}

/// The RFC 6902 patch from `from` to `to`.
pub fn patch(from: &Value, to: &Value) -> json_patch::Patch {
    json_patch::diff(from, to)
}

/// Every leaf-level change from `from` to `to`, in document order. Objects
/// are compared key by key and arrays index by index; a value whose type
/// changed is one `modified` change.
pub fn changes(from: &Value, to: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    collect(String::new(), from, to, &mut out);
    out
}

fn collect(path: String, from: &Value, to: &Value, out: &mut Vec<Change>) {
    match (from, to) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, old_value) in old {
                let child = pointer_push(&path, key);
                match new.get(key) {
                    Some(new_value) => collect(child, old_value, new_value, out),
                    None => out.push(Change {
                        path: child,
                        kind: ChangeKind::Removed,
                        from: Some(old_value.clone()),
                        to: None,
                    }),
                }
            }
            for (key, new_value) in new {
                if !old.contains_key(key) {
                    out.push(Change {
                        path: pointer_push(&path, key),
                        kind: ChangeKind::Added,
                        from: None,
                        to: Some(new_value.clone()),
                    });
                }
            }
        }
        (Value::Array(old), Value::Array(new)) => {
            for index in 0..old.len().max(new.len()) {
                let child = pointer_push(&path, &index.to_string());
                match (old.get(index), new.get(index)) {
                    (Some(a), Some(b)) => collect(child, a, b, out),
                    (Some(a), None) => out.push(Change {
                        path: child,
                        kind: ChangeKind::Removed,
                        from: Some(a.clone()),
                        to: None,
                    }),
                    (None, Some(b)) => out.push(Change {
                        path: child,
                        kind: ChangeKind::Added,
                        from: None,
                        to: Some(b.clone()),
                    }),
                    (None, None) => unreachable!("index is below the longer length"),
                }
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Change {
            path,
            kind: ChangeKind::Modified,
            from: Some(a.clone()),
            to: Some(b.clone()),
        }),
    }
}

/// A change that can break a game server reading the new document with code
/// written for the old one: a removed key or a value whose JSON type changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakingChange {
    pub path: String,
    pub rule: &'static str,
    pub message: String,
}

pub fn breaking_changes(from: &Value, to: &Value) -> Vec<BreakingChange> {
    changes(from, to)
        .into_iter()
        .filter_map(|change| match change.kind {
            ChangeKind::Removed => Some(BreakingChange {
                message: format!(
                    "{} was removed; servers reading it will not find it",
                    change.path
                ),
                path: change.path,
                rule: "removed-key",
            }),
            ChangeKind::Modified => {
                let (old, new) = (
                    type_name(change.from.as_ref()?),
                    type_name(change.to.as_ref()?),
                );
                (old != new).then(|| BreakingChange {
                    message: format!("{} changed type from {old} to {new}", change.path),
                    path: change.path,
                    rule: "type-changed",
                })
            }
            ChangeKind::Added => None,
        })
        .collect()
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readable_changes_name_each_leaf() {
        let from = json!({"weapons": {"rifle": {"damage": 45, "range": 100}}, "drops": [1, 2]});
        let to = json!({"weapons": {"rifle": {"damage": 50, "spread": 2}}, "drops": [1]});
        let changes = changes(&from, &to);
        let summary: Vec<(String, ChangeKind)> =
            changes.iter().map(|c| (c.path.clone(), c.kind)).collect();
        assert_eq!(
            summary,
            vec![
                ("/drops/1".into(), ChangeKind::Removed),
                ("/weapons/rifle/damage".into(), ChangeKind::Modified),
                ("/weapons/rifle/range".into(), ChangeKind::Removed),
                ("/weapons/rifle/spread".into(), ChangeKind::Added),
            ]
        );
        assert_eq!(changes[1].from, Some(json!(45)));
        assert_eq!(changes[1].to, Some(json!(50)));
    }

    #[test]
    fn the_patch_turns_from_into_to() {
        let from = json!({"a": 1, "b": {"c": [1, 2, 3]}, "k/ey": true});
        let to = json!({"a": 2, "b": {"c": [1, 3]}, "d": null});
        let mut doc = from.clone();
        json_patch::patch(&mut doc, &patch(&from, &to)).unwrap();
        assert_eq!(doc, to);
    }

    #[test]
    fn identical_documents_have_no_changes() {
        let doc = json!({"a": [1, {"b": 2}]});
        assert!(changes(&doc, &doc).is_empty());
        assert!(patch(&doc, &doc).0.is_empty());
    }

    #[test]
    fn breaking_changes_are_removals_and_type_changes_only() {
        let from = json!({"a": 1, "b": "x", "c": 3, "d": 4});
        let to = json!({"a": "1", "b": "y", "d": 5, "e": 6});
        let rules: Vec<(String, &str)> = breaking_changes(&from, &to)
            .into_iter()
            .map(|b| (b.path, b.rule))
            .collect();
        assert_eq!(
            rules,
            vec![("/a".into(), "type-changed"), ("/c".into(), "removed-key")]
        );
    }
}
