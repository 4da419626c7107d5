//! YAML request bodies, read into JSON values within a budget. YAML aliases
//! repeat what an anchor holds wherever they appear, so a small body can
//! describe a huge document (a "billion laughs"); the parser's own
//! repetition limit still allows 100 expansions per event. Here every
//! value and every byte of text is counted while it is built, and the
//! document is refused as soon as the budget is spent, long before it
//! would be whole.

use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::Cell;

/// What one YAML body may expand into.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub values: usize,
    pub text_bytes: usize,
}

/// Parses `bytes` as one YAML document into a JSON value, refusing one
/// that expands past `budget`.
pub fn from_slice(bytes: &[u8], budget: Budget) -> Result<Value, serde_yaml_ng::Error> {
    let spent = Spent {
        budget,
        values: Cell::new(0),
        text_bytes: Cell::new(0),
    };
    Seed(&spent).deserialize(serde_yaml_ng::Deserializer::from_slice(bytes))
}

struct Spent {
    budget: Budget,
    values: Cell<usize>,
    text_bytes: Cell<usize>,
}

impl Spent {
    fn spend<E: Error>(&self, values: usize, text_bytes: usize) -> Result<(), E> {
        self.values.set(self.values.get() + values);
        self.text_bytes.set(self.text_bytes.get() + text_bytes);
        if self.values.get() > self.budget.values || self.text_bytes.get() > self.budget.text_bytes
        {
            return Err(E::custom(format!(
                "the document expands past {} values or {} bytes of text (YAML aliases repeat what they refer to)",
                self.budget.values, self.budget.text_bytes
            )));
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Seed<'a>(&'a Spent);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value that JSON can hold")
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
        self.0.spend(1, 0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
        self.0.spend(1, 0)?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
        self.0.spend(1, 0)?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
        self.0.spend(1, 0)?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
        self.0.spend(1, v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
        self.0.spend(1, v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: Error>(self) -> Result<Value, E> {
        self.0.spend(1, 0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.spend(1, 0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.spend(1, 0)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.0.spend(0, key.len())?;
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: Budget = Budget {
        values: 1_000_000,
        text_bytes: 16 << 20,
    };

    #[test]
    fn plain_yaml_reads_like_serde_yaml_ng() {
        let text = "version: 1.0.0\ncontent:\n  a: [1, 2.5, true, null, \"s\"]\n  b: {c: -3}\n";
        let ours = from_slice(text.as_bytes(), ROOMY).unwrap();
        let theirs: Value = serde_yaml_ng::from_slice(text.as_bytes()).unwrap();
        assert_eq!(ours, theirs);
        // Anchors and aliases within the budget work.
        let aliased = "base: &b {x: 1}\ncopy: *b\n";
        assert_eq!(
            from_slice(aliased.as_bytes(), ROOMY).unwrap()["copy"],
            serde_json::json!({"x": 1})
        );
    }

    #[test]
    fn aliases_that_expand_past_the_budget_are_refused_before_they_are_built() {
        // One anchor of 1,000 values and 1,000 aliases of it: a 6 KB body
        // describing a million values. The parser's own limit (100 alias
        // jumps per event) lets it through; the budget does not.
        let anchor = vec!["1"; 1000].join(", ");
        let aliases = vec!["*a"; 1000].join(", ");
        let text = format!("a: &a [{anchor}]\nb: [{aliases}]\n");
        assert!(text.len() < 8 * 1024);
        let unbounded: Value = serde_yaml_ng::from_slice(text.as_bytes()).unwrap();
        assert_eq!(unbounded["b"].as_array().unwrap().len(), 1000);
        let budget = Budget {
            values: text.len() / 2 + 1024,
            text_bytes: text.len() * 4 + 1024,
        };
        let error = from_slice(text.as_bytes(), budget).unwrap_err().to_string();
        assert!(error.contains("expands past"), "{error}");
        // Text counts too.
        let long = format!("a: &a \"{}\"\nb: [*a, *a, *a]\n", "x".repeat(1000));
        let small = Budget {
            values: 100,
            text_bytes: 2500,
        };
        assert!(from_slice(long.as_bytes(), small).is_err());
        // A billion laughs stops at one limit or the other.
        let mut laughs =
            String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for level in 1..9 {
            let items = vec![format!("*a{}", level - 1); 10].join(", ");
            laughs.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        assert!(from_slice(laughs.as_bytes(), ROOMY).is_err());
    }
}
