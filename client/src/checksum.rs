//! The checksum of a config document.
//!
//! `checksum` is the lowercase hex SHA-256 of the document written as compact
//! JSON with object keys sorted. Keys are sorted here explicitly rather than
//! relying on `serde_json::Map` being a `BTreeMap`: any crate in a build can
//! turn on serde_json's `preserve_order` feature, which would silently change
//! every checksum.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The document as compact JSON with object keys sorted (byte-wise, as
/// serde_json's default map sorts them).
pub fn canonical_json(document: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(document, &mut out);
    out
}

/// Lowercase hex SHA-256 of [`canonical_json`].
pub fn document_checksum(document: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(document)))
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                // Writing a string into a Vec cannot fail.
                serde_json::to_writer(&mut *out, key).expect("writing JSON to a Vec is infallible");
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar into a Vec cannot fail.
    serde_json::to_writer(&mut *out, value).expect("writing JSON to a Vec is infallible");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_at_every_depth_and_has_no_whitespace() {
        let document = json!({"b": 1, "a": {"z": [1, {"y": true, "x": null}], "c": "s"}});
        assert_eq!(
            String::from_utf8(canonical_json(&document)).unwrap(),
            r#"{"a":{"c":"s","z":[1,{"x":null,"y":true}]},"b":1}"#
        );
    }

    #[test]
    fn checksum_matches_sha256_of_the_canonical_bytes() {
        // echo -n '{"a":1}' | sha256sum
        assert_eq!(
            document_checksum(&json!({"a": 1})),
            "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
        );
    }

    #[test]
    fn checksum_ignores_key_order_but_not_values() {
        let one: Value = serde_json::from_str(r#"{"x":1,"y":[2,3]}"#).unwrap();
        let two: Value = serde_json::from_str(r#"{"y":[2,3],"x":1}"#).unwrap();
        let three: Value = serde_json::from_str(r#"{"y":[3,2],"x":1}"#).unwrap();
        assert_eq!(document_checksum(&one), document_checksum(&two));
        assert_ne!(document_checksum(&one), document_checksum(&three));
    }

    #[test]
    fn strings_are_escaped_like_serde_json() {
        let document = json!({"k\"ey": "line\nbreak \u{e9}"});
        assert_eq!(
            canonical_json(&document),
            serde_json::to_vec(&document).unwrap()
        );
    }
}
