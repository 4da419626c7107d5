//! Every decoder a game server's bytes reach, fed generated and mutated
//! input (proptest, a bounded number of cases so it runs in CI): the
//! MessagePack frame decoder, `hello` parsing, metrics validation with its
//! HdrHistogram and deflate decoding. None may panic, and none may allocate
//! more than its input accounts for: a declared length, count or inflated
//! size is never taken on trust.
//!
//! A binary of its own: it counts every allocation of the process (one
//! test, so no other test allocates meanwhile).

use hotswap::{domain::server_hello::ServerHello, metric_frames as metrics};
use hotswap_client::protocol::{
    self, Ack, EncodedHistogram, Health, Hello, MetricsReport, ServerMessage,
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::{alloc::System, collections::BTreeMap};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Decodes a frame as the hub does, then parses what it holds; returns
/// the bytes allocated on the way (a sum, so at least the peak).
fn decode_as_the_hub_does(frame: &[u8]) -> (usize, usize) {
    let region = Region::new(GLOBAL);
    let mut encoded_histograms = 0;
    match protocol::decode_server_message(frame) {
        Ok(ServerMessage::Hello(hello)) => {
            let _ = ServerHello::parse(hello);
        }
        Ok(ServerMessage::Metrics(report)) => {
            encoded_histograms = report
                .histograms
                .values()
                .filter(|h| matches!(h, EncodedHistogram::HdrV2(_)))
                .count();
            let _ = metrics::validate(&report, 100_000);
        }
        _ => {}
    }
    (region.change().bytes_allocated, encoded_histograms)
}

/// What a frame may cost: proportional to its bytes, plus for each encoded
/// histogram what one may inflate to and decode into (256 KiB inflated,
/// 10,000 pairs), plus a little fixed overhead.
fn allowance(frame_len: usize, encoded_histograms: usize) -> usize {
    64 * frame_len + encoded_histograms.min(32) * (256 * 1024 + 10_000 * 16 * 2) + 64 * 1024
}

fn check(frame: &[u8]) -> Result<(), TestCaseError> {
    let (allocated, histograms) = decode_as_the_hub_does(frame);
    let allowed = allowance(frame.len(), histograms);
    prop_assert!(
        allocated <= allowed,
        "{allocated} bytes allocated for a {}-byte frame ({histograms} encoded histograms), allowed {allowed}",
        frame.len()
    );
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.-]{0,12}",
        ".{0,40}",
        Just("\0".to_owned()),
        (0_usize..3000).prop_map(|n| "x".repeat(n)),
    ]
}

fn hello() -> impl Strategy<Value = ServerMessage> {
    (
        text(),
        text(),
        prop_oneof![Just("staging".to_owned()), text()],
        proptest::collection::vec(text(), 0..40),
        proptest::collection::vec(text(), 0..300),
        proptest::collection::btree_map(text(), any::<i64>(), 0..300),
        proptest::option::of(text()),
    )
        .prop_map(
            |(server_id, region, environment, tags, subscriptions, known, hostname)| {
                ServerMessage::Hello(Hello {
                    server_id,
                    region,
                    environment,
                    tags,
                    capacity: 10,
                    players: 3,
                    subscriptions,
                    known,
                    hostname,
                    address: None,
                    build: None,
                    sdk: None,
                    liveops: false,
                })
            },
        )
}

/// An HdrHistogram V2 header (plain or deflated cookie) with any payload
/// length, parameters and trailing bytes.
fn hdr_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(0x1c84_9313_u32), Just(0x1c84_9314_u32), any::<u32>()],
        any::<u32>(),
        0_u32..8,
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(cookie, declared, digits, low, high, rest)| {
            let mut out = cookie.to_be_bytes().to_vec();
            out.extend_from_slice(&declared.to_be_bytes());
            out.extend_from_slice(&0_u32.to_be_bytes());
            out.extend_from_slice(&digits.to_be_bytes());
            out.extend_from_slice(&low.to_be_bytes());
            out.extend_from_slice(&high.to_be_bytes());
            out.extend_from_slice(&1.0_f64.to_bits().to_be_bytes());
            out.extend(rest);
            out
        })
}

fn metrics_frame() -> impl Strategy<Value = ServerMessage> {
    let histogram = prop_oneof![
        proptest::collection::vec((any::<u64>(), any::<u64>()), 0..50)
            .prop_map(EncodedHistogram::Sparse),
        hdr_bytes().prop_map(EncodedHistogram::HdrV2),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(EncodedHistogram::HdrV2),
    ];
    (
        any::<u64>(),
        any::<u32>(),
        proptest::collection::btree_map(
            prop_oneof![Just("latencyMs".to_owned()), Just("fps".to_owned()), text()],
            histogram,
            0..40,
        ),
        proptest::collection::btree_map(text(), any::<f64>(), 0..80),
    )
        .prop_map(|(window_ms, players, histograms, custom)| {
            ServerMessage::Metrics(Box::new(MetricsReport {
                seq: 1,
                window_ms,
                players,
                crashes: 3,
                histograms,
                custom,
                ..Default::default()
            }))
        })
}

fn other_frame() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (
            text(),
            any::<i64>(),
            any::<bool>(),
            proptest::option::of(text())
        )
            .prop_map(|(config, revision, ok, error)| ServerMessage::Ack(Ack {
                config,
                revision,
                ok,
                error,
                apply_micros: 1,
            })),
        text().prop_map(|config| ServerMessage::Resync { config }),
        (any::<u32>(), any::<f64>()).prop_map(|(players, load)| ServerMessage::Heartbeat {
            players,
            status: Health::Degraded,
            load: Some(load),
        }),
    ]
}

/// A well-formed frame with a few bytes changed, inserted or cut.
fn mutated(frame: Vec<u8>, edits: Vec<(usize, u8, u8)>) -> Vec<u8> {
    let mut frame = frame;
    for (at, byte, kind) in edits {
        if frame.is_empty() {
            break;
        }
        let at = at % frame.len();
        match kind % 3 {
            0 => frame[at] = byte,
            1 => frame.insert(at, byte),
            _ => frame.truncate(at),
        }
    }
    frame
}

/// A frame whose field claims a huge length (array32, map32, bin32,
/// str32) and carries little or nothing of it.
fn length_lie() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just("hello"), Just("metrics"), Just("ack")],
        prop_oneof![
            Just("tags"),
            Just("subscriptions"),
            Just("known"),
            Just("histograms"),
            Just("custom"),
            Just("config")
        ],
        prop_oneof![Just(0xdd_u8), Just(0xdf), Just(0xc6), Just(0xdb)],
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(kind, field, marker, declared, tail)| {
            let mut out = vec![0x82, 0xa4];
            out.extend_from_slice(b"type");
            out.push(0xa0 | kind.len() as u8);
            out.extend_from_slice(kind.as_bytes());
            out.push(0xa0 | field.len() as u8);
            out.extend_from_slice(field.as_bytes());
            out.push(marker);
            out.extend_from_slice(&declared.to_be_bytes());
            out.extend(tail);
            out
        })
}

#[test]
fn no_decoder_panics_or_allocates_past_its_input() {
    a_histogram_length_bomb_costs_nothing_like_its_claim();
    deep_nesting_is_refused_not_recursed();
    let runner = |cases| {
        TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        })
    };
    runner(1500)
        .run(&proptest::collection::vec(any::<u8>(), 0..2048), |bytes| {
            check(&bytes)
        })
        .unwrap();
    let frames = prop_oneof![hello(), metrics_frame(), other_frame()];
    runner(1500)
        .run(
            &(
                frames,
                proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..4),
            ),
            |(message, edits)| {
                let frame = protocol::encode(&message);
                check(&frame)?;
                check(&mutated(frame, edits))
            },
        )
        .unwrap();
    runner(1500)
        .run(&length_lie(), |frame| check(&frame))
        .unwrap();
}

/// Two 40-byte headers each claiming a 4 GiB payload (measured before the
/// fix: +1.1 GiB of peak memory from one frame).
fn a_histogram_length_bomb_costs_nothing_like_its_claim() {
    let mut header = 0x1c84_9313_u32.to_be_bytes().to_vec();
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    header.extend_from_slice(&[0; 4]);
    header.extend_from_slice(&3_u32.to_be_bytes());
    header.extend_from_slice(&1_u64.to_be_bytes());
    header.extend_from_slice(&3_600_000_u64.to_be_bytes());
    header.extend_from_slice(&1.0_f64.to_bits().to_be_bytes());
    let frame = protocol::encode(&ServerMessage::Metrics(Box::new(MetricsReport {
        seq: 1,
        window_ms: 1000,
        players: 1,
        histograms: BTreeMap::from([
            (
                "latencyMs".to_owned(),
                EncodedHistogram::HdrV2(header.clone()),
            ),
            ("fps".to_owned(), EncodedHistogram::HdrV2(header)),
        ]),
        ..Default::default()
    })));
    let (allocated, _) = decode_as_the_hub_does(&frame);
    assert!(allocated < 64 * 1024, "{allocated} bytes for a 4 GiB claim");
}

/// 100,000 nested arrays in a 100 KB frame: refused at a fixed depth (the
/// decoder's default of 1,024 overflowed the hub's stack with 1 KB).
fn deep_nesting_is_refused_not_recursed() {
    let mut frame = vec![0x82, 0xa4];
    frame.extend_from_slice(b"type");
    frame.push(0xa5);
    frame.extend_from_slice(b"hello");
    frame.push(0xa3);
    frame.extend_from_slice(b"zzz");
    frame.extend(std::iter::repeat_n(0x91, 100_000));
    frame.push(0xc0);
    assert!(protocol::decode_server_message(&frame).is_err());
    let (allocated, _) = decode_as_the_hub_does(&frame);
    assert!(allocated < 64 * 1024, "{allocated}");
}
