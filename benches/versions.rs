//! Criterion benchmarks of the version hot paths: checksum, diff and
//! validation of game configs of growing size.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hotswap::domain::{
    diff,
    validation::{self, SchemaRef},
};
use serde_json::{Value, json};
use std::hint::black_box;

/// A GameBalance document with `weapons` weapons (~90 bytes each).
fn balance(weapons: usize, damage_shift: u64) -> Value {
    let weapons: serde_json::Map<String, Value> = (0..weapons)
        .map(|i| {
            (
                format!("weapon-{i:05}"),
                json!({"damage": 10 + (i as u64 + damage_shift) % 900, "fireRate": 600, "reloadTime": 2.5, "magazineSize": 30}),
            )
        })
        .collect();
    json!({ "weapons": weapons })
}

fn sizes() -> [(&'static str, usize); 3] {
    // ~1 KB, ~100 KB, ~1 MB of compact JSON.
    [("1KB", 12), ("100KB", 1_200), ("1MB", 12_000)]
}

fn checksum_and_diff(c: &mut Criterion) {
    let mut group = c.benchmark_group("versions");
    for (label, weapons) in sizes() {
        let old = balance(weapons, 0);
        let mut new = old.clone();
        // A typical balance pass: one weapon in a hundred changes.
        for (index, weapon) in new["weapons"]
            .as_object_mut()
            .unwrap()
            .values_mut()
            .enumerate()
        {
            if index % 100 == 0 {
                weapon["damage"] = json!(999);
            }
        }
        let bytes = hotswap_client::canonical_json(&new).len() as u64;
        group.throughput(Throughput::Bytes(bytes));
        group.bench_with_input(BenchmarkId::new("checksum", label), &new, |b, doc| {
            b.iter(|| hotswap_client::document_checksum(black_box(doc)))
        });
        group.bench_with_input(
            BenchmarkId::new("json_patch_diff", label),
            &(&old, &new),
            |b, (old, new)| b.iter(|| diff::patch(black_box(old), black_box(new))),
        );
        group.bench_with_input(
            BenchmarkId::new("readable_changes", label),
            &(&old, &new),
            |b, (old, new)| b.iter(|| diff::changes(black_box(old), black_box(new))),
        );
    }
    group.finish();
}

fn validation(c: &mut Criterion) {
    let schema: Value = serde_json::from_str(hotswap::BUILTIN_SCHEMAS[0].document).unwrap();
    let rules = validation::compile(&schema).unwrap();
    let mut group = c.benchmark_group("validation");
    for (label, weapons) in sizes() {
        let doc = balance(weapons, 0);
        let previous = balance(weapons, 1);
        group.throughput(Throughput::Bytes(
            hotswap_client::canonical_json(&doc).len() as u64,
        ));
        group.bench_with_input(
            BenchmarkId::new("game_balance_with_breaking_check", label),
            &doc,
            |b, doc| {
                b.iter(|| {
                    validation::validate(
                        Some(SchemaRef {
                            id: "game-balance",
                            version: "1.0.0",
                            rules: &rules,
                        }),
                        black_box(doc),
                        Some(&previous),
                        &[],
                    )
                })
            },
        );
        // The bound worked out before each validation (included above).
        group.bench_with_input(BenchmarkId::new("work_bound", label), &doc, |b, doc| {
            b.iter(|| rules.cost(black_box(doc)))
        });
        eprintln!(
            "validation/{label}: at most {} checks",
            rules.cost(&doc).unwrap_or(u64::MAX)
        );
    }
    group.finish();
}

criterion_group!(benches, checksum_and_diff, validation);
criterion_main!(benches);
