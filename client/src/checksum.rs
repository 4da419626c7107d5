//! The checksum of a config document: the lowercase hex SHA-256 of the
//! document in the JSON Canonicalization Scheme (RFC 8785, "JCS"): object
//! members sorted by the UTF-16 code units of their names, no whitespace,
//! strings with the minimal escapes (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`,
//! `\t`, `\u00xx` in lowercase hex for the other control characters,
//! everything else as UTF-8), and numbers as ECMAScript writes IEEE-754
//! doubles (`1e+21`, `1e-7`, `0.000001`, `-0` as `0`). Any engine with a
//! JCS library (C#, C++, Go, TypeScript...) computes the same bytes; the
//! test vectors of the RFC and of its reference implementation are in
//! `tests/jcs/`.
//!
//! Numbers are doubles in JCS: integers beyond 2^53 are written as their
//! nearest double, so two documents differing only there share a checksum
//! (keep such ids as strings).
//!
//! The hub stores documents in [`canonical_json`] (sorted keys, serde_json's
//! exact numbers), which round-trips every value; only the checksum uses JCS.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The document in the JSON Canonicalization Scheme (RFC 8785).
pub fn jcs(document: &Value) -> Vec<u8> {
    // A `Value` always serializes: its numbers are finite and its keys strings.
    serde_json_canonicalizer::to_vec(document).expect("a JSON value canonicalizes")
}

/// Lowercase hex SHA-256 of [`jcs`].
pub fn document_checksum(document: &Value) -> String {
    hex::encode(Sha256::digest(jcs(document)))
}

/// The document as compact JSON with object keys sorted (byte-wise) and
/// numbers exactly as serde_json holds them: how the hub stores documents.
/// Keys are sorted here explicitly rather than relying on
/// `serde_json::Map` being a `BTreeMap` (any crate in a build can turn on
/// serde_json's `preserve_order`).
pub fn canonical_json(document: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(document, &mut out);
    out
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
        // Writing a scalar into a Vec cannot fail.
        scalar => {
            serde_json::to_writer(&mut *out, scalar).expect("writing JSON to a Vec is infallible")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_form_sorts_keys_at_every_depth_and_has_no_whitespace() {
        let document = json!({"b": 1, "a": {"z": [1, {"y": true, "x": null}], "c": "s"}});
        assert_eq!(
            String::from_utf8(canonical_json(&document)).unwrap(),
            r#"{"a":{"c":"s","z":[1,{"x":null,"y":true}]},"b":1}"#
        );
    }

    #[test]
    fn checksum_is_sha256_of_the_jcs_bytes() {
        // echo -n '{"a":1}' | sha256sum
        assert_eq!(
            document_checksum(&json!({"a": 1})),
            "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
        );
        // Where serde_json and JCS differ: exponents and UTF-16 key order.
        let document: Value = serde_json::from_str(r#"{"\ud83d\ude00":1,"\ufb33":2e21}"#).unwrap();
        assert_eq!(
            String::from_utf8(jcs(&document)).unwrap(),
            "{\"\u{1f600}\":1,\"\u{fb33}\":2e+21}"
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
}
