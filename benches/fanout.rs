//! Criterion benchmarks of the fan-out hot path: building and encoding a
//! delta frame, and handing one encoded frame to N sessions' bounded queues
//! (what the hub does per deployment push; the socket writes happen in each
//! session's own task).

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hotswap_actors::{Fanout, Outbox, OutboxReceiver, Registry, ServerRecord};
use hotswap_client::protocol::Health;
use hotswap_client::protocol::{self, HubMessage};
use serde_json::{Value, json};
use std::hint::black_box;

fn balance(weapons: usize, damage: u64) -> Value {
    let weapons: serde_json::Map<String, Value> = (0..weapons)
        .map(|i| {
            (
                format!("weapon-{i:05}"),
                json!({"damage": damage + i as u64 % 7, "fireRate": 600, "reloadTime": 2.5}),
            )
        })
        .collect();
    json!({ "weapons": weapons })
}

fn delta_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("delta_frame");
    for (label, weapons) in [("1KB", 12), ("100KB", 1_200), ("1MB", 12_000)] {
        let old = balance(weapons, 40);
        let mut new = old.clone();
        new["weapons"]["weapon-00000"]["damage"] = json!(999);
        group.throughput(Throughput::Bytes(
            hotswap_client::canonical_json(&new).len() as u64,
        ));
        group.bench_with_input(
            BenchmarkId::new("diff_checksum_encode", label),
            &(&old, &new),
            |b, (old, new)| {
                b.iter(|| {
                    let patch =
                        serde_json::to_value(hotswap::domain::diff::patch(old, new)).unwrap();
                    let frame = HubMessage::Delta {
                        config: "weapon-balance".into(),
                        base_revision: 1,
                        revision: 2,
                        version: "1.1.0".into(),
                        patch,
                        checksum: hotswap_client::document_checksum(new),
                        signature: Some("x".repeat(88)),
                        deployment_id: None,
                        sent_at_ms: 0,
                    };
                    Bytes::from(protocol::encode(black_box(&frame)))
                })
            },
        );
    }
    group.finish();
}

fn record(id: usize) -> ServerRecord {
    ServerRecord {
        server_id: format!("server-{id:05}"),
        key_id: "key".into(),
        region: ["NA-WEST", "EU-WEST", "APAC"][id % 3].into(),
        environment: "production".into(),
        tags: vec![],
        operator_tags: vec![],
        capacity: 100,
        players: 100,
        status: Health::Healthy,
        load: None,
        hostname: None,
        address: None,
        build: None,
        sdk: None,
        liveops: false,
        subscriptions: vec!["weapon-balance".into()],
        applied: [("weapon-balance".to_owned(), 1)].into(),
        connected: true,
        session_id: Some(format!("s{id}")),
        connected_since_ms: Some(0),
        last_seen_ms: 0,
        stale: false,
        disconnect_reason: None,
        metrics_frames: 0,
        last_metrics_ms: None,
    }
}

/// The hub's push path: find the connected subscribers in the registry,
/// then queue the one encoded frame to each session.
fn fan_out(c: &mut Criterion) {
    let frame = Bytes::from(protocol::encode(&HubMessage::Delta {
        config: "weapon-balance".into(),
        base_revision: 1,
        revision: 2,
        version: "1.1.0".into(),
        patch: json!([{"op": "replace", "path": "/weapons/rifle/damage", "value": 50}]),
        checksum: "0".repeat(64),
        signature: Some("x".repeat(88)),
        deployment_id: None,
        sent_at_ms: 0,
    }));
    let mut group = c.benchmark_group("fan_out");
    for sessions in [1_000usize, 10_000] {
        let registry = Registry::default();
        let mut receivers: Vec<OutboxReceiver> = Vec::with_capacity(sessions);
        for id in 0..sessions {
            let (outbox, receiver) = Outbox::channel(256);
            registry.connect(record(id), outbox);
            receivers.push(receiver);
        }
        group.throughput(Throughput::Elements(sessions as u64));
        group.bench_function(BenchmarkId::new("targets_and_push", sessions), |b| {
            b.iter(|| {
                let targets = registry.targets("weapon-balance", |r| r.environment == "production");
                let mut fanout = Fanout::new();
                for target in &targets {
                    // The same bytes for everyone: a reference count, no copy.
                    let _ = fanout.push(&target.outbox, frame.clone());
                }
                fanout.wake();
                // Drain, as the sessions' writer tasks do, so queues never fill.
                for receiver in &mut receivers {
                    let _ = receiver.try_next_frame();
                }
                black_box(targets.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, delta_frame, fan_out);
criterion_main!(benches);
