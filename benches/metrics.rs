//! Criterion benchmarks of the metrics path: one game server's `metrics`
//! frame from bytes to a deployment cohort's window (MessagePack decode,
//! validation, decode into a report, fold into the sliding window), and
//! one evaluation of the rollback judgement (every rule plus the rank tests
//! on the histograms) over windows holding a minute of 1,000 servers.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hotswap::domain::{
    judgement::{self, RankSettings},
    window::SlidingWindow,
};
use hotswap::metric_frames as metrics;
use hotswap_client::protocol::{self, EncodedHistogram, MetricsReport, ServerMessage};
use std::{collections::BTreeMap, hint::black_box};

/// A report as a server with 100 players sends it each second.
fn report(seed: u64, latency_shift: u64) -> MetricsReport {
    let pairs = |base: u64, spread: u64, n: u64| -> EncodedHistogram {
        EncodedHistogram::Sparse(
            (0..n)
                .map(|i| (base + (i * 7 + seed) % spread, 1 + (i + seed) % 5))
                .collect(),
        )
    };
    MetricsReport {
        seq: seed,
        window_ms: 1000,
        players: 100,
        sessions_started: seed % 3,
        sessions_ended: seed % 2,
        churned: u64::from(seed.is_multiple_of(17)),
        crashes: u64::from(seed.is_multiple_of(11)),
        errors: seed % 2,
        requests: 200,
        complaints: 0,
        purchases: u64::from(seed.is_multiple_of(29)),
        histograms: BTreeMap::from([
            ("latencyMs".to_owned(), pairs(30 + latency_shift, 40, 24)),
            ("fps".to_owned(), pairs(50, 20, 16)),
            ("sessionSecs".to_owned(), pairs(600, 1800, 4)),
        ]),
        custom: BTreeMap::new(),
        experiments: Vec::new(),
    }
}

fn ingest(c: &mut Criterion) {
    let frame = protocol::encode(&ServerMessage::Metrics(Box::new(report(3, 0))));
    let mut window = SlidingWindow::new(60_000, 1000);
    let mut now = 0i64;
    let mut group = c.benchmark_group("metrics");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ingest_one_frame", |b| {
        b.iter(|| {
            // The hub's own path: the type, then the body straight into its struct.
            let message = protocol::decode_server_message(black_box(&frame)).expect("decodes");
            let ServerMessage::Metrics(report) = message else {
                unreachable!("a metrics frame")
            };
            let histograms = metrics::validate(&report, 10_000).expect("valid");
            let decoded = metrics::decode(&report, histograms, true, 1000, 1000);
            now += 1;
            window.fold(now, &decoded);
        })
    });
    group.finish();
}

fn decoded(report: &MetricsReport) -> hotswap::domain::window::Report {
    let histograms = metrics::validate(report, 10_000).expect("valid");
    metrics::decode(report, histograms, true, 1000, 1000)
}

fn judge(c: &mut Criterion) {
    // A minute of 900 baseline and 100 canary servers reporting each second.
    let (mut baseline, mut canary) = (
        SlidingWindow::new(60_000, 1000),
        SlidingWindow::new(60_000, 1000),
    );
    for second in 0..60i64 {
        for server in 0..1000u64 {
            let at = second * 1000 + (server % 1000) as i64;
            if server % 10 == 0 {
                canary.fold(at, &decoded(&report(server, 5)));
            } else {
                baseline.fold(at, &decoded(&report(server, 0)));
            }
        }
    }
    let rules = judgement::default_rules();
    let rank = RankSettings::default();
    let mut group = c.benchmark_group("judgement");
    group.bench_function("snapshot_and_judge_60s_1000_servers", |b| {
        b.iter(|| {
            let (base, can) = (baseline.snapshot(60_000), canary.snapshot(60_000));
            black_box(judgement::judge(&rules, &rank, &base, &can))
        })
    });
    let (base, can) = (baseline.snapshot(60_000), canary.snapshot(60_000));
    group.bench_function("judge_only", |b| {
        b.iter(|| black_box(judgement::judge(&rules, &rank, black_box(&base), &can)))
    });
    group.finish();
}

criterion_group!(benches, ingest, judge);
criterion_main!(benches);
