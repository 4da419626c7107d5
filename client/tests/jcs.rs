//! The checksum's canonical form against published RFC 8785 test data:
//! the RFC's own examples (sections 3.2.2-3.2.4, Appendix B), the test data
//! of its reference implementation (github.com/cyberphone/json-canonicalization,
//! `testdata/`, Apache-2.0, see `tests/jcs/cyberphone/README.upstream.md`),
//! and numbers checked against ECMAScript's `JSON.stringify` (node).

use hotswap_client::checksum::{document_checksum, jcs};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/jcs")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(data(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn canonical(text: &str) -> String {
    let value: Value = serde_json::from_str(text).expect("test input parses");
    String::from_utf8(jcs(&value)).expect("JCS is UTF-8")
}

#[test]
fn the_reference_implementations_test_data() {
    for name in [
        "arrays",
        "french",
        "structures",
        "unicode",
        "values",
        "weird",
    ] {
        let input = read(&format!("cyberphone/input/{name}.json"));
        let expected = read(&format!("cyberphone/output/{name}.json"));
        assert_eq!(canonical(&input), expected.trim_end(), "{name}.json");
    }
}

#[test]
fn the_rfcs_examples() {
    let expected = read("rfc8785/sample_3.2.2.expected.json");
    assert_eq!(
        canonical(&read("rfc8785/sample_3.2.2.input.json")),
        expected.trim_end()
    );
    // Section 3.2.4: the same, as UTF-8 bytes.
    let hex_dump: String = read("rfc8785/sample_3.2.4.expected.hex")
        .split_whitespace()
        .collect();
    let value: Value = serde_json::from_str(&read("rfc8785/sample_3.2.2.input.json")).unwrap();
    assert_eq!(hex::encode(jcs(&value)), hex_dump.to_lowercase());
    // Section 3.2.3: members sorted by UTF-16 code units.
    assert_eq!(
        canonical(&read("rfc8785/sorting_3.2.3.input.json")),
        read("rfc8785/sorting_3.2.3.expected.json").trim_end()
    );
    // The checksum is the SHA-256 of those bytes.
    assert_eq!(
        document_checksum(&value),
        hex::encode(Sha256::digest(hex::decode(hex_dump).unwrap()))
    );
}

/// `ieee754_hex,expected` lines: the double with those bits, written by ES6.
fn numbers(path: &str) -> usize {
    let mut checked = 0;
    for line in read(path).lines().skip(1) {
        let (hex_bits, expected) = line.split_once(',').expect("two columns");
        let number = f64::from_bits(u64::from_str_radix(hex_bits, 16).unwrap());
        if expected == "error" {
            assert!(!number.is_finite(), "{line}");
            continue;
        }
        let value = serde_json::Number::from_f64(number)
            .map(Value::Number)
            .unwrap();
        assert_eq!(String::from_utf8(jcs(&value)).unwrap(), expected, "{line}");
        // Written, then read back: the same double.
        let again: f64 = serde_json::from_str(expected).unwrap();
        assert_eq!(again.to_bits(), (number + 0.0).to_bits(), "{line}");
        checked += 1;
    }
    checked
}

#[test]
fn numbers_are_written_as_ecmascript_writes_doubles() {
    assert!(numbers("rfc8785/appendix_b.csv") >= 20);
    assert_eq!(numbers("extra/es6_numbers_random_2k.csv"), 2000);
}

#[test]
fn escapes_numbers_and_key_order_cases() {
    let cases: Value = serde_json::from_str(&read("extra/cases.json")).unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() > 40);
    for case in cases {
        let input = case["input"].as_str().unwrap();
        let expected = case["expected"].as_str().unwrap();
        assert_eq!(canonical(input), expected, "{}: {input}", case["group"]);
    }
}

mod against_an_independent_implementation {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_same_bytes_as_serde_json_canonicalizer(document in value()) {
            let theirs = serde_json_canonicalizer::to_vec(&document).unwrap();
            prop_assert_eq!(
                String::from_utf8(jcs(&document)).unwrap(),
                String::from_utf8(theirs).unwrap()
            );
        }
    }
}
