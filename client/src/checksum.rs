//! The checksum of a config document: the lowercase hex SHA-256 of the
//! document in the JSON Canonicalization Scheme (RFC 8785, "JCS"): object
//! members sorted by the UTF-16 code units of their names, no whitespace,
//! strings with the minimal escapes (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`,
//! `\t`, `\u00xx` in lowercase hex for the other control characters,
//! everything else as UTF-8), and numbers as ECMAScript writes IEEE-754
//! doubles (`1e+21`, `1e-7`, `0.000001`, `-0` as `0`). Any engine with a
//! JCS library (C#, C++, Go, TypeScript...) computes the same bytes; the
//! test vectors of the RFC and of its reference implementation are in
//! `tests/jcs/`, and a property test holds this writer to an independent
//! implementation (`serde_json_canonicalizer`) on random documents.
//!
//! Numbers are doubles in JCS: integers beyond 2^53 are written as their
//! nearest double, so two documents differing only there share a checksum
//! (keep such ids as strings). `serde_json` parses numbers with
//! `float_roundtrip`, to the nearest double as JCS assumes.
//!
//! The hub stores documents in [`canonical_json`] (sorted keys, serde_json's
//! exact numbers), which round-trips every value; only the checksum uses JCS.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The two compact forms with sorted keys: JCS (RFC 8785) for checksums,
/// and the hub's stored form (keys byte-wise, numbers exactly as serde_json
/// holds them, so integers beyond 2^53 survive).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Jcs,
    Stored,
}

/// The document in the JSON Canonicalization Scheme (RFC 8785), written
/// straight from the value (a general serializer took 20 µs for 1 KB).
pub fn jcs(document: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(document, Form::Jcs, &mut out);
    out
}

fn write(value: &Value, form: Form, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            match form {
                // By UTF-16 code units (which differs from UTF-8's byte
                // order only between characters above U+FFFF and
                // U+E000..U+FFFF).
                Form::Jcs => {
                    entries.sort_unstable_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()))
                }
                Form::Stored => entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes())),
            }
            out.push(b'{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write(item, form, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write(item, form, out);
            }
            out.push(b']');
        }
        Value::String(text) => write_string(text, out),
        Value::Number(number) if form == Form::Jcs => write_number(number, out),
        // Writing a scalar into a Vec cannot fail.
        scalar => {
            serde_json::to_writer(&mut *out, scalar).expect("writing JSON to a Vec is infallible")
        }
    }
}

/// serde_json escapes exactly as JCS asks: `"`, `\\`, `\b`, `\f`, `\n`,
/// `\r`, `\t`, other control characters as lowercase `\u00xx`, nothing
/// else (the test data pins it).
fn write_string(text: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, text).expect("writing a string to a Vec is infallible");
}

/// Numbers are IEEE-754 doubles written as ECMAScript writes them.
fn write_number(number: &serde_json::Number, out: &mut Vec<u8>) {
    const EXACT: u64 = 1 << 53;
    // Integers a double holds exactly are written as they are (below
    // 1e21 ECMAScript writes no exponent); others go through the double.
    if let Some(n) = number.as_u64().filter(|n| *n <= EXACT) {
        out.extend_from_slice(n.to_string().as_bytes());
    } else if let Some(n) = number.as_i64().filter(|n| n.unsigned_abs() <= EXACT) {
        out.extend_from_slice(n.to_string().as_bytes());
    } else if let Some(n) = number.as_f64() {
        let mut buffer = ryu_js::Buffer::new();
        out.extend_from_slice(buffer.format_finite(n).as_bytes());
    }
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
    write(document, Form::Stored, &mut out);
    out
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
