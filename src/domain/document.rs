//! Limits on config documents, checked before anything else looks at them.

use serde_json::Value;

/// How deep a document may nest (objects and arrays). serde_json itself stops
/// at 128; game configs rarely pass 10.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Depth of the deepest container in `document` (a scalar is depth 0).
/// Iterative, so a hostile document cannot overflow the stack here.
pub fn depth(document: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(document, 0usize)];
    while let Some((value, level)) = stack.pop() {
        match value {
            Value::Object(map) => {
                deepest = deepest.max(level + 1);
                stack.extend(map.values().map(|child| (child, level + 1)));
            }
            Value::Array(items) => {
                deepest = deepest.max(level + 1);
                stack.extend(items.iter().map(|child| (child, level + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Appends `segment` to a JSON Pointer, escaping `~` and `/` (RFC 6901).
pub fn pointer_push(pointer: &str, segment: &str) -> String {
    let escaped = segment.replace('~', "~0").replace('/', "~1");
    format!("{pointer}/{escaped}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": {}}]})), 4);
    }

    #[test]
    fn pointer_segments_are_escaped() {
        assert_eq!(pointer_push("", "a/b~c"), "/a~1b~0c");
        assert_eq!(pointer_push("/x", "0"), "/x/0");
    }
}
