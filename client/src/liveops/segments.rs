//! Player segments: rules over a player's attributes, or lists of player
//! ids, and the stable percentage bucket audiences widen by.
//!
//! A rule is JSON, parsed once into a bounded tree:
//!
//! ```json
//! {"all": [
//!   {"attribute": "platform", "eq": "ios"},
//!   {"attribute": "level", "gte": 10},
//!   {"attribute": "country", "in": ["DE", "FR"]},
//!   {"attribute": "clientVersion", "semver": ">=1.4.0"},
//!   {"attribute": "firstSeen", "within": "P7D"},
//!   {"not": {"segment": "vip"}}
//! ]}
//! ```
//!
//! `any`, `all` and `not` combine; comparisons are `eq`, `ne`, `lt`, `lte`,
//! `gt`, `gte` (numbers with numbers, text with text); `in` lists values;
//! `semver` takes a requirement; `within` and `before` take a duration back
//! from now over a time attribute (RFC 3339 text or Unix milliseconds);
//! `segment` names another segment. A missing attribute matches nothing
//! but `ne` and a negation. Depth, size and references are bounded when a
//! rule is parsed, and a reference cycle is refused then, so evaluation
//! always ends.

use super::parse_duration;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// Deepest nesting of a rule.
pub const MAX_DEPTH: usize = 8;
/// Most nodes in one rule.
pub const MAX_NODES: usize = 256;
/// Most values in one `in`.
pub const MAX_IN_VALUES: usize = 1_000;
/// Most player ids in a list segment.
pub const MAX_LIST_MEMBERS: usize = 100_000;
/// Buckets of the stable percentage (0.01 % each).
pub const PERCENT_BUCKETS: u32 = 10_000;

/// The segments every hub has.
pub const BUILT_IN: [(&str, &str); 3] = [
    (
        "vip",
        r#"{"attribute": "spendTier", "in": ["vip", "whale"]}"#,
    ),
    (
        "new-players",
        r#"{"attribute": "firstSeen", "within": "P7D"}"#,
    ),
    (
        "inactive-players",
        r#"{"attribute": "lastSeen", "before": "P14D"}"#,
    ),
];

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Lte,
    Gt,
    Gte,
}

const OPS: [(&str, Op); 6] = [
    ("eq", Op::Eq),
    ("ne", Op::Ne),
    ("lt", Op::Lt),
    ("lte", Op::Lte),
    ("gt", Op::Gt),
    ("gte", Op::Gte),
];

/// A parsed rule.
#[derive(Debug, Clone)]
pub enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Compare {
        attribute: String,
        op: Op,
        value: Value,
    },
    In {
        attribute: String,
        values: Vec<Value>,
    },
    Semver {
        attribute: String,
        requirement: semver::VersionReq,
    },
    /// The time attribute is at most this long ago.
    Within {
        attribute: String,
        ms: i64,
    },
    /// The time attribute is more than this long ago.
    Before {
        attribute: String,
        ms: i64,
    },
    Segment(String),
}

/// What is wrong with a rule, and where (a JSON Pointer below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub path: String,
    pub message: String,
}

fn error(path: &str, message: impl Into<String>) -> RuleError {
    RuleError {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// A segment: a rule, or a list of player ids.
#[derive(Debug, Clone)]
pub enum Segment {
    Rule(Rule),
    List(HashSet<String>),
}

impl Rule {
    /// Parses a rule; `known` says whether a segment name exists.
    pub fn parse(rule: &Value, known: &dyn Fn(&str) -> bool) -> Result<Rule, RuleError> {
        let mut nodes = 0;
        parse(rule, "", 1, &mut nodes, known)
    }

    /// The segments this rule names, directly.
    pub fn references(&self) -> Vec<&str> {
        let mut found = Vec::new();
        self.walk(&mut |rule| {
            if let Rule::Segment(name) = rule {
                found.push(name.as_str());
            }
        });
        found
    }

    /// The attributes this rule reads, directly.
    pub fn attributes(&self) -> Vec<&str> {
        let mut found = Vec::new();
        self.walk(&mut |rule| match rule {
            Rule::Compare { attribute, .. }
            | Rule::In { attribute, .. }
            | Rule::Semver { attribute, .. }
            | Rule::Within { attribute, .. }
            | Rule::Before { attribute, .. } => found.push(attribute.as_str()),
            _ => {}
        });
        found
    }

    fn walk<'a>(&'a self, visit: &mut dyn FnMut(&'a Rule)) {
        visit(self);
        match self {
            Rule::All(rules) | Rule::Any(rules) => rules.iter().for_each(|r| r.walk(visit)),
            Rule::Not(rule) => rule.walk(visit),
            _ => {}
        }
    }
}

fn parse(
    rule: &Value,
    path: &str,
    depth: usize,
    nodes: &mut usize,
    known: &dyn Fn(&str) -> bool,
) -> Result<Rule, RuleError> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(error(path, format!("a rule has at most {MAX_NODES} parts")));
    }
    if depth > MAX_DEPTH {
        return Err(error(
            path,
            format!("a rule nests at most {MAX_DEPTH} deep"),
        ));
    }
    let Some(object) = rule.as_object() else {
        return Err(error(path, "a rule is an object"));
    };
    let only = |key: &str| -> Result<(), RuleError> {
        match object.keys().find(|k| k.as_str() != key) {
            Some(other) => Err(error(
                &format!("{path}/{other}"),
                format!("unexpected beside {key:?}"),
            )),
            None => Ok(()),
        }
    };
    for (key, combine) in [("all", true), ("any", false)] {
        if let Some(list) = object.get(key) {
            only(key)?;
            let path = format!("{path}/{key}");
            let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
                return Err(error(&path, "a non-empty list of rules"));
            };
            let rules = list
                .iter()
                .enumerate()
                .map(|(i, r)| parse(r, &format!("{path}/{i}"), depth + 1, nodes, known))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if combine {
                Rule::All(rules)
            } else {
                Rule::Any(rules)
            });
        }
    }
    if let Some(inner) = object.get("not") {
        only("not")?;
        let inner = parse(inner, &format!("{path}/not"), depth + 1, nodes, known)?;
        return Ok(Rule::Not(Box::new(inner)));
    }
    if let Some(name) = object.get("segment") {
        only("segment")?;
        let path = format!("{path}/segment");
        let Some(name) = name.as_str() else {
            return Err(error(&path, "a segment name"));
        };
        if !known(name) {
            return Err(error(&path, format!("no segment is named {name:?}")));
        }
        return Ok(Rule::Segment(name.to_owned()));
    }
    let attribute = match object.get("attribute") {
        Some(Value::String(a)) if !a.is_empty() && a.len() <= 64 => a.clone(),
        Some(_) => return Err(error(&format!("{path}/attribute"), "1-64 characters")),
        None => {
            return Err(error(
                path,
                "a rule is all, any, not, segment, or an attribute with a test",
            ));
        }
    };
    let tests: Vec<(&String, &Value)> = object.iter().filter(|(k, _)| *k != "attribute").collect();
    let [(test, value)] = tests.as_slice() else {
        return Err(error(
            path,
            "an attribute rule has exactly one test: eq, ne, lt, lte, gt, gte, in, semver, within or before",
        ));
    };
    let at = format!("{path}/{test}");
    if let Some((_, op)) = OPS.iter().find(|(name, _)| name == test) {
        let comparable = match op {
            Op::Eq | Op::Ne => {
                matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
            }
            _ => matches!(value, Value::String(_) | Value::Number(_)),
        };
        if !comparable || value.as_str().is_some_and(|s| s.len() > 256) {
            return Err(error(
                &at,
                "a number or a text of at most 256 characters (eq and ne also take true or false)",
            ));
        }
        return Ok(Rule::Compare {
            attribute,
            op: *op,
            value: (*value).clone(),
        });
    }
    match test.as_str() {
        "in" => {
            let Some(values) = value
                .as_array()
                .filter(|v| !v.is_empty() && v.len() <= MAX_IN_VALUES)
            else {
                return Err(error(&at, format!("a list of 1 to {MAX_IN_VALUES} values")));
            };
            if values
                .iter()
                .any(|v| !matches!(v, Value::String(s) if s.len() <= 256) && !v.is_number())
            {
                return Err(error(&at, "numbers or texts of at most 256 characters"));
            }
            Ok(Rule::In {
                attribute,
                values: values.clone(),
            })
        }
        "semver" => {
            let requirement = value
                .as_str()
                .and_then(|r| semver::VersionReq::parse(r).ok())
                .ok_or_else(|| error(&at, "a semver requirement like \">=1.4.0, <2\""))?;
            Ok(Rule::Semver {
                attribute,
                requirement,
            })
        }
        "within" | "before" => {
            let ms = parse_duration(value).map_err(|e| error(&at, e))? as i64;
            Ok(if test.as_str() == "within" {
                Rule::Within { attribute, ms }
            } else {
                Rule::Before { attribute, ms }
            })
        }
        other => Err(error(
            &format!("{path}/{other}"),
            "unknown test; use eq, ne, lt, lte, gt, gte, in, semver, within or before",
        )),
    }
}

/// A time attribute in Unix milliseconds: RFC 3339 text or a number.
fn time_ms(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => None,
    }
}

fn compare(left: &Value, right: &Value) -> Option<std::cmp::Ordering> {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// The segments a hub knows, by name.
#[derive(Debug, Clone, Default)]
pub struct SegmentBook {
    segments: HashMap<String, Segment>,
}

/// A segment definition the book refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookError {
    Rule(RuleError),
    /// Naming itself, directly or through others: the names around the cycle.
    Cycle(Vec<String>),
    /// A chain of references deeper than [`MAX_DEPTH`] (its depth).
    TooDeep(usize),
    /// More members than [`MAX_LIST_MEMBERS`].
    TooManyMembers(usize),
}

impl SegmentBook {
    /// A book with the built-in segments.
    pub fn with_built_ins() -> Self {
        let mut book = SegmentBook::default();
        for (name, rule) in BUILT_IN {
            let rule: Value = serde_json::from_str(rule).expect("a built-in rule is JSON");
            book.define_rule(name, &rule)
                .expect("a built-in rule is valid");
        }
        book
    }

    pub fn get(&self, name: &str) -> Option<&Segment> {
        self.segments.get(name)
    }

    /// Whether segment `name`'s rule, or a segment it names, reads one of
    /// `attributes`.
    pub fn reads_any(&self, name: &str, attributes: &[&str]) -> bool {
        let mut seen = HashSet::new();
        let mut pending = vec![name];
        while let Some(next) = pending.pop() {
            if !seen.insert(next) {
                continue;
            }
            if let Some(Segment::Rule(rule)) = self.segments.get(next) {
                if rule.attributes().iter().any(|a| attributes.contains(a)) {
                    return true;
                }
                pending.extend(rule.references());
            }
        }
        false
    }

    /// Forgets a segment (the caller checks nothing names it).
    pub fn remove(&mut self, name: &str) {
        self.segments.remove(name);
    }

    /// Defines (or redefines) a rule segment, refusing one that would
    /// close a cycle of references.
    pub fn define_rule(&mut self, name: &str, rule: &Value) -> Result<(), BookError> {
        let parsed = Rule::parse(rule, &|other| {
            other == name || self.segments.contains_key(other)
        })
        .map_err(BookError::Rule)?;
        if let Some(cycle) = self.cycle_through(name, &parsed) {
            return Err(BookError::Cycle(cycle));
        }
        let before = self.segments.insert(name.to_owned(), Segment::Rule(parsed));
        // Redefining a segment deepens every chain through it: the whole
        // book is measured, and the change undone if a chain is too deep.
        let deepest = self.deepest_chain();
        if deepest > MAX_DEPTH {
            match before {
                Some(before) => self.segments.insert(name.to_owned(), before),
                None => self.segments.remove(name),
            };
            return Err(BookError::TooDeep(deepest));
        }
        Ok(())
    }

    /// Defines (or redefines) a list segment.
    pub fn define_list(
        &mut self,
        name: &str,
        members: impl IntoIterator<Item = String>,
    ) -> Result<(), BookError> {
        let mut set = HashSet::new();
        for member in members {
            set.insert(member);
            if set.len() > MAX_LIST_MEMBERS {
                return Err(BookError::TooManyMembers(set.len()));
            }
        }
        self.segments.insert(name.to_owned(), Segment::List(set));
        Ok(())
    }

    /// The longest chain of segment references in the book.
    fn deepest_chain(&self) -> usize {
        fn depth<'a>(
            book: &'a SegmentBook,
            name: &'a str,
            known: &mut HashMap<&'a str, usize>,
        ) -> usize {
            if let Some(depth) = known.get(name) {
                return *depth;
            }
            // Cycles are refused before this runs; the mark stops one anyway.
            known.insert(name, usize::MAX / 2);
            let deepest = match book.segments.get(name) {
                Some(Segment::Rule(rule)) => rule
                    .references()
                    .into_iter()
                    .map(|r| 1 + depth(book, r, known))
                    .max()
                    .unwrap_or(0),
                _ => 0,
            };
            known.insert(name, deepest);
            deepest
        }
        let mut known = HashMap::new();
        self.segments
            .keys()
            .map(|name| depth(self, name, &mut known))
            .max()
            .unwrap_or(0)
    }

    /// The cycle `name` would close if it were `rule`, if any.
    fn cycle_through(&self, name: &str, rule: &Rule) -> Option<Vec<String>> {
        let mut stack: Vec<(String, Vec<String>)> = rule
            .references()
            .into_iter()
            .map(|r| (r.to_owned(), vec![name.to_owned(), r.to_owned()]))
            .collect();
        let mut seen = HashSet::new();
        while let Some((current, trail)) = stack.pop() {
            if current == name {
                return Some(trail);
            }
            if !seen.insert(current.clone()) {
                continue;
            }
            if let Some(Segment::Rule(rule)) = self.segments.get(&current) {
                for next in rule.references() {
                    let mut trail = trail.clone();
                    trail.push(next.to_owned());
                    stack.push((next.to_owned(), trail));
                }
            }
        }
        None
    }

    /// Whether the player is in the segment (an unknown name: no).
    pub fn contains(
        &self,
        segment: &str,
        player_id: &str,
        attributes: &Map<String, Value>,
        now_ms: i64,
    ) -> bool {
        match self.segments.get(segment) {
            Some(Segment::List(members)) => members.contains(player_id),
            Some(Segment::Rule(rule)) => self.matches(rule, player_id, attributes, now_ms),
            None => false,
        }
    }

    /// Whether the player matches `rule`. Each segment it names is worked
    /// out once per call, however often it is named (the book refuses
    /// cycles and reference chains deeper than [`MAX_DEPTH`]).
    pub fn matches(
        &self,
        rule: &Rule,
        player_id: &str,
        attributes: &Map<String, Value>,
        now_ms: i64,
    ) -> bool {
        let mut known = HashMap::new();
        self.eval(rule, player_id, attributes, now_ms, &mut known)
    }

    fn eval<'a>(
        &'a self,
        rule: &'a Rule,
        player_id: &str,
        attributes: &Map<String, Value>,
        now_ms: i64,
        known: &mut HashMap<&'a str, bool>,
    ) -> bool {
        let get = |attribute: &str| attributes.get(attribute).filter(|v| !v.is_null());
        match rule {
            Rule::All(rules) => rules
                .iter()
                .all(|r| self.eval(r, player_id, attributes, now_ms, known)),
            Rule::Any(rules) => rules
                .iter()
                .any(|r| self.eval(r, player_id, attributes, now_ms, known)),
            Rule::Not(rule) => !self.eval(rule, player_id, attributes, now_ms, known),
            Rule::Compare {
                attribute,
                op,
                value,
            } => match (get(attribute), op) {
                (None, Op::Ne) => true,
                (None, _) => false,
                (Some(have), Op::Eq) => have == value,
                (Some(have), Op::Ne) => have != value,
                (Some(have), op) => compare(have, value).is_some_and(|order| match op {
                    Op::Lt => order.is_lt(),
                    Op::Lte => order.is_le(),
                    Op::Gt => order.is_gt(),
                    Op::Gte => order.is_ge(),
                    Op::Eq | Op::Ne => unreachable!("handled above"),
                }),
            },
            Rule::In { attribute, values } => {
                get(attribute).is_some_and(|have| values.contains(have))
            }
            Rule::Semver {
                attribute,
                requirement,
            } => get(attribute)
                .and_then(Value::as_str)
                .and_then(|v| semver::Version::parse(v.trim_start_matches('v')).ok())
                .is_some_and(|v| requirement.matches(&v)),
            Rule::Within { attribute, ms } => get(attribute)
                .and_then(time_ms)
                .and_then(|t| now_ms.checked_sub(t))
                .is_some_and(|ago| (0..=*ms).contains(&ago)),
            Rule::Before { attribute, ms } => get(attribute)
                .and_then(time_ms)
                .and_then(|t| now_ms.checked_sub(t))
                .is_some_and(|ago| ago > *ms),
            Rule::Segment(name) => {
                if let Some(answer) = known.get(name.as_str()) {
                    return *answer;
                }
                let answer = match self.segments.get(name) {
                    Some(Segment::List(members)) => members.contains(player_id),
                    Some(Segment::Rule(rule)) => {
                        self.eval(rule, player_id, attributes, now_ms, known)
                    }
                    None => false,
                };
                known.insert(name.as_str(), answer);
                answer
            }
        }
    }
}

/// A player's stable bucket for `salt` (an event's or experiment's id):
/// `sha256(salt + ":" + playerId)` mod 10,000, so a player stays in as a
/// percentage widens.
pub fn percent_bucket(salt: &str, player_id: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update(b":")
        .chain_update(player_id.as_bytes())
        .finalize();
    let head = u64::from_be_bytes(digest[..8].try_into().expect("a digest has 8 bytes"));
    (head % u64::from(PERCENT_BUCKETS)) as u32
}

/// Whether the player falls in the first `percent` of the salt's buckets.
pub fn in_percentage(salt: &str, player_id: &str, percent: f64) -> bool {
    let limit = (percent.clamp(0.0, 100.0) * f64::from(PERCENT_BUCKETS) / 100.0).round() as u32;
    percent_bucket(salt, player_id) < limit
}

#[cfg(test)]
mod tests;
