//! How much work validating a document against a schema may take, worked
//! out before any validation runs.
//!
//! A schema is a graph: subschemas apply at the same place in a document
//! (`allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`,
//! `dependentSchemas`, `$ref`) or one level down (`properties`, `items`,
//! `additionalProperties`...). A validator walks every path of that graph
//! a document takes, so a few hundred bytes of `anyOf`s that each refer
//! twice to the next one cost 2^depth checks at one place; and one that
//! does it one level down per level costs 2^depth across the document.
//!
//! [`CostGraph::build`] refuses, once, when a schema is registered: a `$ref`
//! cycle that never goes down into the document (validation would never
//! end), more than [`MAX_CHECKS_AT_ONE_PLACE`] checks at any one place, and
//! `$ref`s outside the schema document. [`CostGraph::cost`] then bounds,
//! for one document, the checks validation may make — every branch taken,
//! every `patternProperties` matching — and stops counting at the budget,
//! so a document is refused before the validator starts on it.

use super::{
    super::document::pointer_push,
    refs::{SchemaRefs, TooComplex, too_complex},
};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// The most checks evaluating a schema may make at one place in a document,
/// counting every subschema applied there (an `enum` of n values is n checks).
pub const MAX_CHECKS_AT_ONE_PLACE: u64 = 20_000;

/// The most checks validating one document may make.
pub const MAX_CHECKS_PER_DOCUMENT: u64 = 20_000_000;

/// The most (subschema, subschema it pulls in) pairs the graph keeps: past
/// it, subschemas combine in too many ways to be worth validating.
const MAX_PULLED_IN: usize = 1_000_000;

type NodeId = usize;

/// A document whose validation would take more than the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooCostly {
    pub budget: u64,
}

/// One subschema, reduced to what its evaluation costs.
#[derive(Debug, Default)]
struct Node {
    /// Checks one evaluation of this subschema makes at its own place,
    /// with every subschema it pulls in there.
    local: u64,
    /// The subschemas among those pulled in (itself included) that go one
    /// level down, and how many times each is evaluated.
    descending: Vec<(NodeId, u64)>,
    down: Down,
}

/// Where a subschema's own children apply, one level down.
#[derive(Debug, Default)]
struct Down {
    /// `properties`, sorted by name.
    named: Vec<(String, NodeId)>,
    /// `patternProperties`, `additionalProperties`,
    /// `unevaluatedProperties`: counted for every member.
    every_member: Vec<NodeId>,
    /// `propertyNames`: applied to each member's name.
    names: Vec<NodeId>,
    /// `prefixItems` (or an `items` array): by index.
    prefix: Vec<NodeId>,
    /// `items`, `additionalItems`, `unevaluatedItems`, `contains`:
    /// counted for every element.
    every_item: Vec<NodeId>,
}

impl Down {
    fn is_empty(&self) -> bool {
        self.named.is_empty()
            && self.every_member.is_empty()
            && self.names.is_empty()
            && self.prefix.is_empty()
            && self.every_item.is_empty()
    }
}

/// A schema's subschemas as a cost graph (see the module docs).
#[derive(Debug)]
pub struct CostGraph {
    nodes: Vec<Node>,
}

/// Keywords that hold subschemas applied at the same place.
const SAME_PLACE_ONE: [&str; 4] = ["not", "if", "then", "else"];
const SAME_PLACE_LIST: [&str; 3] = ["allOf", "anyOf", "oneOf"];

struct Builder<'a> {
    root: &'a Value,
    ids: HashMap<String, NodeId>,
    pointers: Vec<String>,
    same: Vec<Vec<NodeId>>,
    own: Vec<u64>,
    down: Vec<Down>,
    queue: Vec<NodeId>,
    refs: SchemaRefs<'a>,
}

impl CostGraph {
    /// Builds the graph of `schema` and checks it against the bounds.
    pub fn build(schema: &Value) -> Result<CostGraph, TooComplex> {
        let mut builder = Builder {
            root: schema,
            ids: HashMap::new(),
            pointers: Vec::new(),
            same: Vec::new(),
            own: Vec::new(),
            down: Vec::new(),
            queue: Vec::new(),
            refs: SchemaRefs::new(schema)?,
        };
        builder.node(String::new());
        while let Some(id) = builder.queue.pop() {
            builder.expand(id)?;
        }
        builder.finish()
    }

    /// The checks validating `document` may make, at most `budget` (the
    /// root is node 0).
    pub fn cost(&self, document: &Value, budget: u64) -> Result<u64, TooCostly> {
        let mut spent = 0u64;
        self.walk(document, &[(0, 1)], budget, &mut spent)
            .map(|()| spent)
            .ok_or(TooCostly { budget })
    }

    fn walk(
        &self,
        value: &Value,
        applied: &[(NodeId, u64)],
        budget: u64,
        spent: &mut u64,
    ) -> Option<()> {
        let charge = |spent: &mut u64, amount: u64| {
            *spent = spent.saturating_add(amount);
            (*spent <= budget).then_some(())
        };
        for &(id, times) in applied {
            charge(spent, times.saturating_mul(self.nodes[id].local))?;
        }
        if !(value.is_object() || value.is_array()) {
            return Some(());
        }
        let mut owners: Vec<(NodeId, u64)> = Vec::new();
        for &(id, times) in applied {
            for &(owner, count) in &self.nodes[id].descending {
                owners.push((owner, times.saturating_mul(count)));
            }
        }
        if owners.is_empty() {
            return Some(());
        }
        merge(&mut owners);
        // One buffer per level, refilled for each member.
        let mut next: Vec<(NodeId, u64)> = Vec::new();
        match value {
            Value::Object(members) => {
                for (name, member) in members {
                    // Looking this member up in each subschema is work too.
                    charge(spent, owners.len() as u64)?;
                    next.clear();
                    for &(owner, times) in &owners {
                        let down = &self.nodes[owner].down;
                        if let Ok(i) = down.named.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
                            next.push((down.named[i].1, times));
                        }
                        next.extend(down.every_member.iter().map(|&id| (id, times)));
                        for &id in &down.names {
                            // A name is a string: nothing below it.
                            charge(spent, times.saturating_mul(self.nodes[id].local))?;
                        }
                    }
                    merge(&mut next);
                    self.walk(member, &next, budget, spent)?;
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    charge(spent, owners.len() as u64)?;
                    next.clear();
                    for &(owner, times) in &owners {
                        let down = &self.nodes[owner].down;
                        if let Some(&id) = down.prefix.get(index) {
                            next.push((id, times));
                        }
                        next.extend(down.every_item.iter().map(|&id| (id, times)));
                    }
                    merge(&mut next);
                    self.walk(item, &next, budget, spent)?;
                }
            }
            _ => {}
        }
        Some(())
    }
}

/// Sorts `(node, times)` pairs and adds up those of one node.
fn merge(pairs: &mut Vec<(NodeId, u64)>) {
    if pairs.len() < 2 {
        return;
    }
    pairs.sort_unstable_by_key(|&(id, _)| id);
    let mut kept = 0;
    for i in 1..pairs.len() {
        if pairs[i].0 == pairs[kept].0 {
            pairs[kept].1 = pairs[kept].1.saturating_add(pairs[i].1);
        } else {
            kept += 1;
            pairs[kept] = pairs[i];
        }
    }
    pairs.truncate(kept + 1);
}

impl Builder<'_> {
    fn node(&mut self, pointer: String) -> NodeId {
        if let Some(&id) = self.ids.get(&pointer) {
            return id;
        }
        let id = self.pointers.len();
        self.ids.insert(pointer.clone(), id);
        self.pointers.push(pointer);
        self.same.push(Vec::new());
        self.own.push(1);
        self.down.push(Down::default());
        self.queue.push(id);
        id
    }

    fn expand(&mut self, id: NodeId) -> Result<(), TooComplex> {
        let pointer = self.pointers[id].clone();
        let Some(Value::Object(schema)) = self.root.pointer(&pointer) else {
            return Ok(()); // `true` / `false`: one check
        };
        self.own[id] = own_checks(schema);
        let mut same = Vec::new();
        let mut down = Down::default();
        for (keyword, value) in schema {
            let here = pointer_push(&pointer, keyword);
            let subschemas = |value: &Value| -> Vec<String> {
                match value {
                    Value::Array(items) => {
                        (0..items.len()).map(|i| format!("{here}/{i}")).collect()
                    }
                    Value::Object(map) => map.keys().map(|k| pointer_push(&here, k)).collect(),
                    _ => Vec::new(),
                }
            };
            match keyword.as_str() {
                "$ref" | "$dynamicRef" | "$recursiveRef" => {
                    let Value::String(reference) = value else {
                        continue;
                    };
                    for target in self.refs.resolve(&here, reference)? {
                        same.push(self.node(target));
                    }
                }
                k if SAME_PLACE_ONE.contains(&k) => same.push(self.node(here)),
                k if SAME_PLACE_LIST.contains(&k) => {
                    for p in subschemas(value) {
                        same.push(self.node(p));
                    }
                }
                "dependentSchemas" => {
                    for p in subschemas(value) {
                        same.push(self.node(p));
                    }
                }
                "properties" => {
                    if let Value::Object(map) = value {
                        for name in map.keys() {
                            let child = self.node(pointer_push(&here, name));
                            down.named.push((name.clone(), child));
                        }
                    }
                }
                "patternProperties" => {
                    for p in subschemas(value) {
                        down.every_member.push(self.node(p));
                    }
                }
                "additionalProperties" | "unevaluatedProperties" => {
                    down.every_member.push(self.node(here))
                }
                "propertyNames" => down.names.push(self.node(here)),
                "prefixItems" => {
                    for p in subschemas(value) {
                        down.prefix.push(self.node(p));
                    }
                }
                "items" if value.is_array() => {
                    for p in subschemas(value) {
                        down.prefix.push(self.node(p));
                    }
                }
                "items" | "additionalItems" | "unevaluatedItems" | "contains" => {
                    down.every_item.push(self.node(here))
                }
                _ => {}
            }
        }
        down.named.sort_by(|a, b| a.0.cmp(&b.0));
        self.same[id] = same;
        self.down[id] = down;
        Ok(())
    }

    /// Works out each node's checks at one place and what it pulls in,
    /// refusing cycles that stay in one place and the bounds.
    fn finish(self) -> Result<CostGraph, TooComplex> {
        let count = self.pointers.len();
        let mut local = vec![0u64; count];
        let mut descending: Vec<Vec<(NodeId, u64)>> = vec![Vec::new(); count];
        // 0: not visited, 1: on the path, 2: done.
        let mut state = vec![0u8; count];
        let mut pulled_in = 0usize;
        for start in 0..count {
            if state[start] != 0 {
                continue;
            }
            // An iterative depth-first walk: a long `$ref` chain must not
            // exhaust the stack.
            let mut stack: Vec<(NodeId, usize)> = vec![(start, 0)];
            state[start] = 1;
            while let Some(top) = stack.last_mut() {
                let id = top.0;
                if let Some(&target) = self.same[id].get(top.1) {
                    top.1 += 1;
                    match state[target] {
                        0 => {
                            state[target] = 1;
                            stack.push((target, 0));
                        }
                        1 => {
                            return Err(too_complex(
                                &self.pointers[target],
                                "this subschema applies itself again at the same place in \
                                 the document (a $ref cycle that never goes down a level): \
                                 validation would never end",
                            ));
                        }
                        _ => {}
                    }
                    continue;
                }
                stack.pop();
                let mut total = self.own[id];
                let mut pulled: BTreeMap<NodeId, u64> = BTreeMap::new();
                if !self.down[id].is_empty() {
                    pulled.insert(id, 1);
                }
                for &target in &self.same[id] {
                    total = total.saturating_add(local[target]);
                    for &(owner, times) in &descending[target] {
                        let entry = pulled.entry(owner).or_default();
                        *entry = entry.saturating_add(times);
                    }
                }
                if total > MAX_CHECKS_AT_ONE_PLACE {
                    return Err(too_complex(
                        &self.pointers[id],
                        format!(
                            "this subschema makes {} checks at one place in a document \
                             (counting every subschema it applies there and each enum value); \
                             at most {MAX_CHECKS_AT_ONE_PLACE}",
                            if total == u64::MAX {
                                "too many".to_owned()
                            } else {
                                total.to_string()
                            }
                        ),
                    ));
                }
                pulled_in += pulled.len();
                if pulled_in > MAX_PULLED_IN {
                    return Err(too_complex(
                        &self.pointers[id],
                        "the schema's subschemas combine in too many ways to validate",
                    ));
                }
                local[id] = total;
                descending[id] = pulled.into_iter().collect();
                state[id] = 2;
            }
        }
        let nodes = local
            .into_iter()
            .zip(descending)
            .zip(self.down)
            .map(|((local, descending), down)| Node {
                local,
                descending,
                down,
            })
            .collect();
        Ok(CostGraph { nodes })
    }
}

/// Keywords that only annotate or hold definitions: no check of their own.
const NOT_CHECKS: [&str; 14] = [
    "$schema",
    "$id",
    "$anchor",
    "$dynamicAnchor",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// The checks a subschema's own keywords make at one place: one per
/// keyword, one per `enum` value, `required` name and `x-compare` rule.
fn own_checks(schema: &Map<String, Value>) -> u64 {
    let listed = |keyword: &str| {
        schema
            .get(keyword)
            .and_then(Value::as_array)
            .map_or(0, |list| list.len() as u64)
    };
    let keywords = schema
        .keys()
        .filter(|k| !NOT_CHECKS.contains(&k.as_str()))
        .count() as u64;
    1 + keywords + listed("enum") + listed("required") + listed("x-compare")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `levels` subschemas, each an `anyOf` referring twice to the next.
    fn doubling(levels: usize, down_a_level: bool) -> Value {
        let mut defs = Map::new();
        for i in 0..levels {
            let next = json!({"$ref": format!("#/$defs/d{}", i + 1)});
            let branch = if down_a_level {
                json!({"properties": {"a": next}})
            } else {
                next
            };
            defs.insert(format!("d{i}"), json!({"anyOf": [branch, branch]}));
        }
        defs.insert(format!("d{levels}"), json!({"type": "string"}));
        json!({"$ref": "#/$defs/d0", "$defs": defs})
    }

    #[test]
    fn branches_that_double_at_one_place_are_refused_when_registered() {
        assert!(CostGraph::build(&doubling(8, false)).is_ok());
        let refused = CostGraph::build(&doubling(16, false)).unwrap_err();
        assert!(
            refused.message.contains("checks at one place"),
            "{refused:?}"
        );
        let refused = CostGraph::build(&doubling(64, false)).unwrap_err();
        assert!(
            refused.message.contains("checks at one place"),
            "refused at the first subschema past the bound: {refused:?}"
        );
    }

    #[test]
    fn branches_that_double_a_level_down_are_refused_for_deep_documents() {
        let graph = CostGraph::build(&doubling(40, true)).expect("each place is cheap");
        let mut document = json!(1);
        for _ in 0..12 {
            document = json!({ "a": document });
        }
        let shallow = graph.cost(&document, MAX_CHECKS_PER_DOCUMENT).unwrap();
        assert!(shallow > 4096, "2^12 paths reach the leaf: {shallow}");
        for _ in 0..28 {
            document = json!({ "a": document });
        }
        assert_eq!(
            graph.cost(&document, MAX_CHECKS_PER_DOCUMENT),
            Err(TooCostly {
                budget: MAX_CHECKS_PER_DOCUMENT
            })
        );
    }

    #[test]
    fn cycles_that_stay_in_place_are_refused_but_recursive_trees_are_fine() {
        let looping = json!({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"});
        let refused = CostGraph::build(&looping).unwrap_err();
        assert!(refused.message.contains("never end"), "{refused:?}");
        let tree = json!({"type": "object", "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#"}}
        }});
        let graph = CostGraph::build(&tree).unwrap();
        let mut document = json!({"name": "leaf"});
        for _ in 0..30 {
            document = json!({"name": "node", "children": [document.clone(), document]});
            if document.to_string().len() > 200_000 {
                break;
            }
        }
        let cost = graph.cost(&document, MAX_CHECKS_PER_DOCUMENT).unwrap();
        assert!(cost < 1_000_000, "linear in the document: {cost}");
    }

    #[test]
    fn cost_grows_with_the_document_and_enums_count_their_values() {
        let schema = json!({"type": "array", "items": {"enum": (0..1000).collect::<Vec<_>>()}});
        let graph = CostGraph::build(&schema).unwrap();
        let small = graph.cost(&json!([1, 2, 3]), u64::MAX).unwrap();
        let large = graph
            .cost(&Value::Array(vec![json!(1); 300]), u64::MAX)
            .unwrap();
        assert!(small > 3000 && large > 300_000, "{small} {large}");
        assert!(
            graph
                .cost(
                    &Value::Array(vec![json!(1); 30_000]),
                    MAX_CHECKS_PER_DOCUMENT
                )
                .is_err()
        );
        let huge = json!({"enum": (0..30_000).collect::<Vec<_>>()});
        assert!(CostGraph::build(&huge).is_err());
    }

    #[test]
    fn references_outside_the_document_and_nested_ids_are_refused() {
        for (schema, path) in [
            (json!({"$ref": "https://example.com/other.json"}), "/$ref"),
            (json!({"$ref": "#/$defs/missing"}), "/$ref"),
            (json!({"$ref": "#/enum/0", "enum": [1]}), "/$ref"),
            (
                json!({"properties": {"a": {"$id": "a.json", "type": "string"}}}),
                "/properties/a/$id",
            ),
        ] {
            let refused = CostGraph::build(&schema).unwrap_err();
            assert_eq!(refused.path, path, "{schema}");
        }
        let anchored = json!({
            "$id": "https://studio.example/schemas/shop.json",
            "properties": {
                "a": {"$ref": "#price"},
                "b": {"$ref": "shop.json#/$defs/price"},
                "c": {"$ref": "#/$defs/with%20space"}
            },
            "$defs": {"price": {"$anchor": "price", "type": "integer"}, "with space": {}}
        });
        CostGraph::build(&anchored).expect("anchors, the root's $id and escapes resolve");
    }

    #[test]
    fn property_names_and_patterns_are_counted_for_every_member() {
        let schema = json!({
            "propertyNames": {"maxLength": 8},
            "patternProperties": {"^a": {"type": "integer"}, "^b": {"type": "integer"}}
        });
        let graph = CostGraph::build(&schema).unwrap();
        let one = graph.cost(&json!({"x": 1}), u64::MAX).unwrap();
        let ten = graph
            .cost(
                &Value::Object((0..10).map(|i| (format!("k{i}"), json!(1))).collect()),
                u64::MAX,
            )
            .unwrap();
        assert!(ten >= one * 5, "{one} {ten}");
    }
}
