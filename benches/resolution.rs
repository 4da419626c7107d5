//! Criterion benchmark of a player's resolution (issue 16's in-process
//! target: 1,000,000 a second): two events' audiences checked and their
//! patches merged over a ~1 KB config, with and without the checksum.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hotswap::domain::{
    resolution::{Audience, EventLayer, PlayerRef, resolve},
    segments::SegmentBook,
};
use serde_json::{Map, Value, json};
use std::hint::black_box;

fn base() -> Value {
    let weapons: Map<String, Value> = (0..12)
        .map(|i| {
            (
                format!("weapon-{i:05}"),
                json!({"damage": 10 + i, "fireRate": 600, "reloadTime": 2.5, "magazineSize": 30}),
            )
        })
        .collect();
    json!({ "weapons": weapons, "xp": 1.0 })
}

fn resolution(c: &mut Criterion) {
    let base = base();
    let book = SegmentBook::with_built_ins();
    let double_xp = json!({"xp": 2.0});
    let winter = json!({"weapons": {"weapon-00003": {"damage": 40}}});
    let vips = Audience {
        segments: vec!["vip".into()],
        percentage: Some(50.0),
    };
    let attributes = json!({"spendTier": "whale", "platform": "ios"});
    let attributes = attributes.as_object().unwrap();
    let mut group = c.benchmark_group("resolution");
    group.throughput(Throughput::Elements(1));
    let layers = |player: &str| {
        let who = PlayerRef {
            id: player,
            attributes,
        };
        let mut events = vec![EventLayer {
            name: "double-xp",
            priority: 1,
            start_ms: 0,
            patch: &double_xp,
        }];
        if vips.includes("winter", who, 0, &book) {
            events.push(EventLayer {
                name: "winter",
                priority: 2,
                start_ms: 0,
                patch: &winter,
            });
        }
        events
    };
    group.bench_function("1KB config, 2 events, with checksum", |b| {
        b.iter(|| black_box(resolve(black_box(&base), layers("player-42"), None, false)))
    });
    group.bench_function("audiences and merge only", |b| {
        b.iter(|| {
            let mut document = base.clone();
            for event in layers("player-42") {
                hotswap::domain::resolution::merge_patch(&mut document, event.patch, "", "", None);
            }
            black_box(document)
        })
    });
    group.finish();
}

criterion_group!(benches, resolution);
criterion_main!(benches);
