//! Checking `metrics` frames and decoding them once (HdrHistogram V2 bytes
//! into sparse pairs) for the deployment windows and the minute aggregates,
//! and their split by experiment variant for experiments.

use super::hdr;
use crate::domain::{
    experiments::metrics::{Moments, VariantSample},
    window::Report,
};
use hotswap_client::{
    metrics::{MAX_VARIANTS, names},
    protocol::{EncodedHistogram, MetricsReport},
};
use std::collections::BTreeMap;

const MAX_HISTOGRAMS: usize = 32;
const MAX_PAIRS: usize = 10_000;
/// Pairs over all the variant shares of one report, at most.
const VARIANT_PAIRS: usize = 4 * MAX_PAIRS;
const MAX_ENCODED_BYTES: usize = 256 * 1024;
/// Any counter or histogram count of one report, at most (sums over a
/// fleet and a window stay far from overflowing).
const MAX_COUNT: u64 = 1 << 32;
const MAX_CUSTOM: usize = 64;
/// A custom metric's value, at most (in magnitude): sums over a fleet and
/// a window stay finite.
const MAX_CUSTOM_VALUE: f64 = 1e15;
const MAX_NAME_LEN: usize = 64;
/// Values above this (2^40: 35 years in ms) are no latency, session or fps.
const MAX_VALUE: u64 = 1 << 40;

/// A metric name: 1-64 letters, digits, `.`, `_` or `-`.
fn metric_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(24).filter(|c| !c.is_control()).collect();
        Err(format!(
            "{kind} names are 1-{MAX_NAME_LEN} letters, digits, '.', '_' or '-' (got {shown:?})"
        ))
    }
}

/// The histograms the hub folds, decoded (sparse pairs, by value).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Histograms {
    pub latency_ms: Vec<(u64, u64)>,
    pub session_secs: Vec<(u64, u64)>,
    pub fps: Vec<(u64, u64)>,
}

/// The most players one server's reports may count: the capacity it
/// declared in its `hello`, or the hub's cap when it declared none.
pub fn players_allowed(capacity: u32, max_players_per_server: u32) -> u32 {
    match capacity {
        0 => max_players_per_server,
        declared => declared.min(max_players_per_server),
    }
}

/// Checks a report from a server allowed `max_players` (see
/// [`players_allowed`]) and decodes its histograms once; `Err` says why it
/// is refused (sent back to the server as an `error` frame).
pub fn validate(report: &MetricsReport, max_players: u32) -> Result<Histograms, String> {
    if report.window_ms == 0 || report.window_ms > 3_600_000 {
        return Err("windowMs must be between 1 and 3600000".into());
    }
    if report.players > max_players {
        return Err(format!(
            "players is {}, more than the {max_players} this server may report \
             (the capacity it declared in its hello, or the hub's cap)",
            report.players
        ));
    }
    check_counters(report.players, report.counters())?;
    let mut decoded = Histograms::default();
    let mut budget = MAX_HISTOGRAMS * MAX_PAIRS;
    for (name, pairs) in check_histograms(&report.histograms, &mut budget)? {
        let slot = match name {
            names::LATENCY_MS => &mut decoded.latency_ms,
            names::SESSION_SECS => &mut decoded.session_secs,
            names::FPS => &mut decoded.fps,
            // Other names are checked, not kept.
            _ => continue,
        };
        *slot = pairs;
    }
    check_custom(&report.custom)?;
    Ok(decoded)
}

/// A histogram's name and its sparse pairs.
type Named<'a> = (&'a str, Vec<(u64, u64)>);

/// Every histogram of a report (or of a variant's share), checked and
/// decoded to sparse pairs, at most `budget` pairs in all (what is decoded
/// is taken from it).
fn check_histograms<'a>(
    histograms: &'a BTreeMap<String, EncodedHistogram>,
    budget: &mut usize,
) -> Result<Vec<Named<'a>>, String> {
    if histograms.len() > MAX_HISTOGRAMS {
        return Err(format!("at most {MAX_HISTOGRAMS} histograms per report"));
    }
    let mut decoded = Vec::with_capacity(histograms.len());
    for (name, histogram) in histograms {
        metric_name("histogram", name)?;
        let most = MAX_PAIRS.min(*budget);
        let pairs = match histogram {
            EncodedHistogram::Sparse(pairs) => {
                if pairs.len() > most {
                    return Err(format!(
                        "histogram {name}: at most {most} [value, count] pairs \
                         ({MAX_PAIRS} per histogram, {VARIANT_PAIRS} over a report's variant shares)"
                    ));
                }
                pairs.clone()
            }
            EncodedHistogram::HdrV2(bytes) => {
                if bytes.len() > MAX_ENCODED_BYTES {
                    return Err(format!(
                        "histogram {name}: larger than {MAX_ENCODED_BYTES} bytes"
                    ));
                }
                hdr::decode_pairs(bytes, most).map_err(|e| {
                    format!("histogram {name}: not an HdrHistogram V2 encoding the hub takes: {e}")
                })?
            }
        };
        if pairs.iter().any(|(value, _)| *value > MAX_VALUE) {
            return Err(format!("histogram {name}: a value is out of range"));
        }
        let total = pairs
            .iter()
            .try_fold(0_u64, |sum, (_, count)| sum.checked_add(*count))
            .filter(|total| *total <= MAX_COUNT);
        if total.is_none() {
            return Err(format!(
                "histogram {name}: more than {MAX_COUNT} samples in one report"
            ));
        }
        *budget -= pairs.len();
        decoded.push((name.as_str(), pairs));
    }
    Ok(decoded)
}

fn check_custom(custom: &BTreeMap<String, f64>) -> Result<(), String> {
    if custom.len() > MAX_CUSTOM {
        return Err(format!("custom: at most {MAX_CUSTOM} metrics"));
    }
    for (name, value) in custom {
        metric_name("custom metric", name)?;
        if !value.is_finite() || value.abs() > MAX_CUSTOM_VALUE {
            return Err(format!(
                "custom: {name} must be a number between -{MAX_CUSTOM_VALUE:e} and {MAX_CUSTOM_VALUE:e}"
            ));
        }
    }
    Ok(())
}

/// Counters one server can have counted over one report: per player for
/// what players do (a churned player leaves once; crashes and complaints a
/// few times), and no counter past [`MAX_COUNT`]. A report cannot
/// outweigh a fleet, nor overflow a sum. `counters` in
/// [`names::COUNTERS`]' order.
fn check_counters(players: u32, counters: [u64; 8]) -> Result<(), String> {
    let players = u64::from(players);
    let requests = counters[5];
    let limits = [
        players * 64 + 64,
        players * 64 + 64,
        players,
        players * 8 + 8,
        requests.min(MAX_COUNT),
        MAX_COUNT,
        players * 8 + 8,
        players * 64 + 64,
    ];
    for ((name, value), limit) in names::COUNTERS.iter().zip(counters).zip(limits) {
        if value > limit {
            return Err(format!(
                "{name} is {value}, more than {limit} for {players} players"
            ));
        }
    }
    Ok(())
}

/// Checks the report's split by experiment variant and decodes it: at
/// most [`MAX_VARIANTS`] shares, each named by an experiment and a variant
/// (once), with no more players than the report and, per experiment, no
/// more than the report's players in all its variants together.
pub fn validate_variants(report: &MetricsReport) -> Result<Vec<VariantSample>, String> {
    if report.experiments.len() > MAX_VARIANTS {
        return Err(format!(
            "experiments: at most {MAX_VARIANTS} variant shares per report"
        ));
    }
    let mut players_per_experiment: BTreeMap<&str, u64> = BTreeMap::new();
    let mut samples: Vec<VariantSample> = Vec::with_capacity(report.experiments.len());
    let mut budget = VARIANT_PAIRS;
    for (index, share) in report.experiments.iter().enumerate() {
        let at = format!("experiments[{index}]");
        metric_name("experiment", &share.experiment).map_err(|e| format!("{at}: {e}"))?;
        metric_name("variant", &share.variant).map_err(|e| format!("{at}: {e}"))?;
        if samples
            .iter()
            .any(|s| s.experiment == share.experiment && s.variant == share.variant)
        {
            return Err(format!(
                "{at}: {}/{} is split out twice",
                share.experiment, share.variant
            ));
        }
        let together = players_per_experiment
            .entry(share.experiment.as_str())
            .or_default();
        *together += u64::from(share.players);
        if *together > u64::from(report.players) {
            return Err(format!(
                "{at}: the variants of {} count more players than the report's {}",
                share.experiment, report.players
            ));
        }
        let counters = share.counters();
        // Against the report's players: a share's players are counted when
        // the report is taken, after its churned players left.
        check_counters(report.players, counters).map_err(|e| format!("{at}: {e}"))?;
        if let Some((name, _)) = share
            .histograms
            .iter()
            .find(|(_, h)| matches!(h, EncodedHistogram::HdrV2(_)))
        {
            return Err(format!(
                "{at}: histogram {name}: a variant's histograms are sparse [value, count] pairs"
            ));
        }
        let histograms = check_histograms(&share.histograms, &mut budget)
            .map_err(|e| format!("{at}: {e}"))?
            .into_iter()
            .map(|(name, pairs)| (name.to_owned(), Moments::of(&pairs)))
            .collect();
        check_custom(&share.custom).map_err(|e| format!("{at}: {e}"))?;
        samples.push(VariantSample {
            experiment: share.experiment.clone(),
            variant: share.variant.clone(),
            players: share.players,
            counters,
            histograms,
            custom: share.custom.iter().map(|(n, v)| (n.clone(), *v)).collect(),
        });
    }
    Ok(samples)
}

/// A validated report, for every window and aggregate it feeds. Players
/// count as exposure weighted by the stretch the report covers against the
/// nominal interval (`metrics_ms`, clamped to 0.1-10×): its `windowMs`, but
/// never more than `elapsed_ms`, the time since the session's previous
/// counted report (or since it began), so a server sending reports faster
/// than time passes, each claiming a long window, weighs no more than time.
pub fn decode(
    report: &MetricsReport,
    histograms: Histograms,
    healthy: bool,
    metrics_ms: u64,
    elapsed_ms: u64,
) -> Report {
    let covered = report.window_ms.min(elapsed_ms);
    let weight = (covered as f64 / metrics_ms.max(1) as f64).clamp(0.1, 10.0);
    Report {
        players: (f64::from(report.players) * weight).round() as u64,
        sessions_started: report.sessions_started,
        sessions_ended: report.sessions_ended,
        churned: report.churned,
        crashes: report.crashes,
        errors: report.errors,
        requests: report.requests,
        complaints: report.complaints,
        purchases: report.purchases,
        healthy,
        latency_ms: histograms.latency_ms,
        session_secs: histograms.session_secs,
        fps: histograms.fps,
        custom: report
            .custom
            .iter()
            .map(|(name, value)| (name.clone(), *value))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::{
        Histogram,
        serialization::{Serializer, V2DeflateSerializer, V2Serializer},
    };

    fn report() -> MetricsReport {
        MetricsReport {
            seq: 1,
            window_ms: 1000,
            players: 10,
            ..Default::default()
        }
    }

    #[test]
    fn sparse_and_encoded_histograms_are_accepted() {
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        histogram.record_n(25, 10).unwrap();
        let mut plain = Vec::new();
        V2Serializer::new()
            .serialize(&histogram, &mut plain)
            .unwrap();
        let mut deflated = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&histogram, &mut deflated)
            .unwrap();
        let mut ok = report();
        ok.histograms.insert(
            "latencyMs".into(),
            EncodedHistogram::Sparse(vec![(20, 3), (45, 1)]),
        );
        ok.histograms
            .insert("fps".into(), EncodedHistogram::HdrV2(plain));
        ok.histograms
            .insert("sessionSecs".into(), EncodedHistogram::HdrV2(deflated));
        assert!(validate(&ok, 100_000).is_ok());
    }

    #[test]
    fn encoded_and_sparse_histograms_decode_to_the_same_pairs() {
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        histogram.record_n(25, 10).unwrap();
        histogram.record_n(40, 2).unwrap();
        let mut deflated = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&histogram, &mut deflated)
            .unwrap();
        let mut r = report();
        r.crashes = 3;
        r.histograms
            .insert("latencyMs".into(), EncodedHistogram::HdrV2(deflated));
        r.histograms.insert(
            "sessionSecs".into(),
            EncodedHistogram::Sparse(vec![(300, 4)]),
        );
        let histograms = validate(&r, 100_000).unwrap();
        let decoded = decode(&r, histograms, false, 1000, 1000);
        assert_eq!(decoded.latency_ms, vec![(25, 10), (40, 2)]);
        assert_eq!(decoded.session_secs, vec![(300, 4)]);
        assert_eq!(
            (decoded.players, decoded.crashes, decoded.healthy),
            (10, 3, false)
        );
    }

    fn share(
        experiment: &str,
        variant: &str,
        players: u32,
    ) -> hotswap_client::protocol::VariantMetrics {
        hotswap_client::protocol::VariantMetrics {
            experiment: experiment.into(),
            variant: variant.into(),
            players,
            ..Default::default()
        }
    }

    #[test]
    fn a_split_by_variant_is_decoded_into_samples() {
        let mut r = report();
        let mut hot = share("rifle", "hot", 6);
        hot.crashes = 2;
        hot.histograms.insert(
            "latencyMs".into(),
            EncodedHistogram::Sparse(vec![(10, 3), (30, 1)]),
        );
        hot.custom.insert("gold".into(), 12.0);
        r.experiments = vec![share("rifle", "control", 4), hot];
        let samples = validate_variants(&r).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1].counters[3], 2);
        assert_eq!(
            samples[1].histograms,
            vec![(
                "latencyMs".to_owned(),
                Moments {
                    count: 4,
                    sum: 60.0
                }
            )]
        );
        assert_eq!(samples[1].custom, vec![("gold".to_owned(), 12.0)]);
        assert!(validate_variants(&report()).unwrap().is_empty());
    }

    #[test]
    fn a_split_that_does_not_add_up_is_refused() {
        let refused = |experiments: Vec<hotswap_client::protocol::VariantMetrics>| {
            let mut r = report();
            r.experiments = experiments;
            validate_variants(&r).unwrap_err()
        };
        // More players in an experiment's variants than in the report.
        assert!(refused(vec![share("e", "a", 6), share("e", "b", 5)]).contains("more players"));
        // Two experiments each cover the report's players: fine.
        let mut r = report();
        r.experiments = vec![share("e", "a", 10), share("f", "a", 10)];
        assert!(validate_variants(&r).is_ok());
        assert!(refused(vec![share("e", "a", 1), share("e", "a", 1)]).contains("twice"));
        assert!(refused(vec![share("bad name", "a", 1)]).contains("experiment names"));
        assert!(refused(vec![share("e", "", 1)]).contains("variant names"));
        let many = (0..=MAX_VARIANTS)
            .map(|n| share("e", &n.to_string(), 0))
            .collect();
        assert!(refused(many).contains("at most"));
        let mut crashing = share("e", "a", 2);
        crashing.crashes = 100;
        assert!(refused(vec![crashing]).contains("crashes"));
        // A share's churned players left before it was counted.
        let mut churned = share("e", "a", 0);
        churned.churned = 1;
        let mut r = report();
        r.experiments = vec![churned];
        assert!(validate_variants(&r).is_ok());
        let mut encoded = share("e", "a", 1);
        encoded
            .histograms
            .insert("h".into(), EncodedHistogram::HdrV2(vec![0; 40]));
        assert!(refused(vec![encoded]).contains("sparse"));
        let mut nan = share("e", "a", 2);
        nan.custom.insert("x".into(), f64::INFINITY);
        assert!(refused(vec![nan]).contains("custom"));
        // The variants' histograms share one budget of pairs.
        let wide = |variant: &str| {
            let mut s = share("e", variant, 0);
            s.histograms.insert(
                "h".into(),
                EncodedHistogram::Sparse((0..MAX_PAIRS as u64).map(|v| (v, 1)).collect()),
            );
            s
        };
        let shares: Vec<_> = (0..5).map(|n| wide(&n.to_string())).collect();
        assert!(refused(shares).contains("pairs"));
    }

    #[test]
    fn broken_reports_say_what_is_wrong() {
        let mut zero_window = report();
        zero_window.window_ms = 0;
        assert!(
            validate(&zero_window, 100_000)
                .unwrap_err()
                .contains("windowMs")
        );
        let mut garbage = report();
        garbage
            .histograms
            .insert("fps".into(), EncodedHistogram::HdrV2(vec![1, 2, 3, 4]));
        assert!(validate(&garbage, 100_000).unwrap_err().contains("fps"));
        let mut nan = report();
        nan.custom.insert("x".into(), f64::NAN);
        assert!(validate(&nan, 100_000).is_err());
        for bad_name in ["", "with space", "nul\0", &"x".repeat(65)] {
            let mut custom = report();
            custom.custom.insert(bad_name.into(), 1.0);
            assert!(
                validate(&custom, 100_000)
                    .unwrap_err()
                    .contains("custom metric names")
            );
            let mut histogram = report();
            histogram
                .histograms
                .insert(bad_name.into(), EncodedHistogram::Sparse(vec![]));
            assert!(
                validate(&histogram, 100_000)
                    .unwrap_err()
                    .contains("histogram names")
            );
        }
        // Counters out of proportion, or that would overflow a sum.
        for change in [
            |r: &mut MetricsReport| r.crashes = u64::MAX,
            |r: &mut MetricsReport| r.churned = 11,
            |r: &mut MetricsReport| r.errors = 5,
            |r: &mut MetricsReport| r.players = 200_000,
        ] {
            let mut overblown = report();
            change(&mut overblown);
            assert!(validate(&overblown, 100_000).is_err(), "{overblown:?}");
        }
        let mut counts = report();
        counts.histograms.insert(
            "latencyMs".into(),
            EncodedHistogram::Sparse(vec![(5, u64::MAX), (6, u64::MAX)]),
        );
        assert!(validate(&counts, 100_000).unwrap_err().contains("samples"));
        // The length bomb: a 40-byte header claiming a 4 GiB payload.
        let mut bomb = report();
        let mut header = 0x1c84_9313_u32.to_be_bytes().to_vec();
        header.extend_from_slice(&u32::MAX.to_be_bytes());
        header.extend_from_slice(&[0; 4]);
        header.extend_from_slice(&3_u32.to_be_bytes());
        header.extend_from_slice(&1_u64.to_be_bytes());
        header.extend_from_slice(&3_600_000_u64.to_be_bytes());
        header.extend_from_slice(&1.0_f64.to_bits().to_be_bytes());
        bomb.histograms
            .insert("latencyMs".into(), EncodedHistogram::HdrV2(header));
        assert!(validate(&bomb, 100_000).unwrap_err().contains("payload"));
    }

    #[test]
    fn a_server_reports_no_more_players_than_it_declared() {
        assert_eq!(players_allowed(0, 10_000), 10_000);
        assert_eq!(players_allowed(64, 10_000), 64);
        assert_eq!(players_allowed(50_000, 10_000), 10_000);
        let mut inflated = report();
        inflated.players = 100_000;
        let why = validate(&inflated, players_allowed(1, 10_000)).unwrap_err();
        assert!(why.contains("more than the 1"), "{why}");
    }

    #[test]
    fn a_report_weighs_no_more_than_the_time_it_covers() {
        let mut r = report();
        r.window_ms = 10_000;
        r.players = 100;
        let decoded = |elapsed| decode(&r, Histograms::default(), true, 1000, elapsed).players;
        assert_eq!(
            decoded(10_000),
            1000,
            "an honest 10 s window weighs 10 intervals"
        );
        assert_eq!(decoded(1_000), 100, "claimed 10 s, but 1 s passed");
        assert_eq!(decoded(0), 10, "at least a tenth");
    }

    #[test]
    fn custom_values_that_would_overflow_a_sum_are_refused() {
        for value in [1.7e308, -1.7e308, 1e16] {
            let mut custom = report();
            custom.custom.insert("queueSecs".into(), value);
            let why = validate(&custom, 100_000).unwrap_err();
            assert!(why.contains("queueSecs"), "{why}");
        }
        let mut fine = report();
        fine.custom.insert("queueSecs".into(), -12.5e9);
        assert!(validate(&fine, 100_000).is_ok());
    }
}
