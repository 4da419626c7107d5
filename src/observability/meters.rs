//! `GET /metrics`: the hub's own metrics in the Prometheus text format
//! (OpenMetrics), one registry per hub (tests run several in a process).
//! What happens is counted where it happens (configs created, deployments
//! moved, acks, resolutions, telemetry) through the handles of [`Meters`];
//! what a state is (servers, players, deployments in flight, queue depth,
//! store connections) is read when Prometheus scrapes ([`Scrape`]).
//! Labels stay low-cardinality: a strategy, a state — never a player,
//! a server or a config.

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet, text::encode},
    metrics::{
        MetricType, counter::Counter, family::Family, gauge::Gauge, histogram::exponential_buckets,
    },
    registry::{Registry, Unit},
};
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

/// A histogram of seconds observed with atomic adds only (no lock: acks
/// and player lookups observe it on the hot path), its sum kept in
/// nanoseconds. Encoded as prometheus-client's own histograms are.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<Buckets>);

#[derive(Debug)]
struct Buckets {
    /// Upper bounds, ascending; the last bucket (+Inf) is past them.
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Histogram {
        let bounds: Vec<f64> = bounds.into_iter().collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram(Arc::new(Buckets {
            bounds,
            counts,
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    /// Counts one observation of `seconds` (negative or NaN as 0).
    pub fn observe(&self, seconds: f64) {
        let seconds = if seconds.is_finite() && seconds > 0.0 {
            seconds
        } else {
            0.0
        };
        let buckets = &self.0;
        let index = buckets.bounds.partition_point(|bound| *bound < seconds);
        buckets.counts[index].fetch_add(1, Ordering::Relaxed);
        buckets.count.fetch_add(1, Ordering::Relaxed);
        buckets.sum_nanos.fetch_add(
            (seconds * 1e9).min(u64::MAX as f64) as u64,
            Ordering::Relaxed,
        );
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = &self.0;
        let per_bucket: Vec<(f64, u64)> = buckets
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(&buckets.counts)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = per_bucket.iter().map(|(_, n)| n).sum();
        let sum = buckets.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &per_bucket, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One label, with a value from a fixed set.
pub type Label = [(&'static str, &'static str); 1];

/// Every metric the hub exports.
#[derive(Debug)]
pub struct Meters {
    registry: Registry,
    pub configs_created: Counter,
    pub versions_uploaded: Counter,
    pub validation_failures: Counter,
    pub validation_seconds: Histogram,
    /// By strategy (`canary`, `rolling`...).
    pub deployments_started: Family<Label, Counter>,
    pub deployments_completed: Counter,
    pub deployments_rolled_back: Counter,
    /// From creation to completed.
    pub deployment_seconds: Histogram,
    /// From the rollback's decision to every server back.
    pub rollback_seconds: Histogram,
    /// How long servers took to apply a config (their acks' `applyMicros`).
    pub reload_seconds: Histogram,
    /// From a deployment's frame leaving the hub to the server's ack, less
    /// the server's own apply time.
    pub delivery_seconds: Histogram,
    pub resolutions: Counter,
    pub resolution_seconds: Histogram,
    pub telemetry_accepted: Counter,
    pub telemetry_rejected: Counter,
    // Read when scraped.
    frames_sent: Counter,
    acks: Counter,
    metric_frames: Counter,
    slow_consumers: Counter,
    document_loads: Counter,
    cluster_refused: Counter,
    cluster_dropped: Counter,
    configs_active: Gauge,
    deployments_in_progress: Gauge,
    servers_registered: Gauge,
    servers_connected: Gauge,
    servers_healthy: Gauge,
    players_online: Gauge,
    live_events_active: Gauge,
    experiments_running: Gauge,
    telemetry_queue: Gauge,
    store_connections: Family<Label, Gauge>,
}

/// Observes the time from its making to its drop.
#[derive(Debug)]
pub struct Timed<'a> {
    histogram: &'a Histogram,
    started: std::time::Instant,
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// What the hub's state is at a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub frames_sent: u64,
    pub acks: u64,
    pub metric_frames: u64,
    pub slow_consumers: u64,
    /// Version documents read from the store for game servers.
    pub document_loads: u64,
    /// Messages from other nodes refused (unsigned, stale, malformed).
    pub cluster_refused: u64,
    /// Messages for other nodes dropped (the outbound queue was full).
    pub cluster_dropped: u64,
    pub configs_active: u64,
    pub deployments_in_progress: u64,
    pub servers_registered: u64,
    pub servers_connected: u64,
    pub servers_healthy: u64,
    pub players_online: u64,
    pub live_events_active: u64,
    pub experiments_running: u64,
    pub telemetry_queue: u64,
    pub store_connections_idle: u64,
    pub store_connections_in_use: u64,
}

/// Seconds from 1 ms to about 9 minutes (20 buckets, ×2).
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// Seconds from 10 s to about 2 days (15 buckets, ×2.5): deployments.
fn long_seconds() -> Histogram {
    Histogram::new(exponential_buckets(10.0, 2.5, 15))
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Default for Meters {
    fn default() -> Self {
        Self::new()
    }
}

impl Meters {
    pub fn new() -> Meters {
        let mut meters = Meters {
            registry: Registry::with_prefix("hotswap"),
            configs_created: Counter::default(),
            versions_uploaded: Counter::default(),
            validation_failures: Counter::default(),
            validation_seconds: seconds(),
            deployments_started: Family::default(),
            deployments_completed: Counter::default(),
            deployments_rolled_back: Counter::default(),
            deployment_seconds: long_seconds(),
            rollback_seconds: seconds(),
            reload_seconds: seconds(),
            delivery_seconds: seconds(),
            resolutions: Counter::default(),
            resolution_seconds: seconds(),
            telemetry_accepted: Counter::default(),
            telemetry_rejected: Counter::default(),
            frames_sent: Counter::default(),
            acks: Counter::default(),
            metric_frames: Counter::default(),
            slow_consumers: Counter::default(),
            document_loads: Counter::default(),
            cluster_refused: Counter::default(),
            cluster_dropped: Counter::default(),
            configs_active: Gauge::default(),
            deployments_in_progress: Gauge::default(),
            servers_registered: Gauge::default(),
            servers_connected: Gauge::default(),
            servers_healthy: Gauge::default(),
            players_online: Gauge::default(),
            live_events_active: Gauge::default(),
            experiments_running: Gauge::default(),
            telemetry_queue: Gauge::default(),
            store_connections: Family::default(),
        };
        meters.register();
        // Every strategy shows, at 0 until it is used.
        for strategy in crate::domain::kinds::Strategy::ALL {
            meters
                .deployments_started
                .get_or_create(&[("strategy", strategy.as_str())])
                .inc_by(0);
        }
        meters
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "configs_created",
            "Configs created",
            self.configs_created.clone(),
        );
        r.register(
            "config_versions_uploaded",
            "Config versions uploaded (stored, validated)",
            self.versions_uploaded.clone(),
        );
        r.register(
            "config_validation_failures",
            "Config documents refused by their schema (uploads, revalidations, patch checks)",
            self.validation_failures.clone(),
        );
        r.register_with_unit(
            "config_validation_duration",
            "Time to validate a config document against its schema (waiting for a validation slot included)",
            Unit::Seconds,
            self.validation_seconds.clone(),
        );
        r.register(
            "deployments_started",
            "Deployments started, by strategy",
            self.deployments_started.clone(),
        );
        r.register(
            "deployments_completed",
            "Deployments completed",
            self.deployments_completed.clone(),
        );
        r.register(
            "deployments_rolled_back",
            "Deployments rolled back (by their guardrails or an operator)",
            self.deployments_rolled_back.clone(),
        );
        r.register_with_unit(
            "deployment_duration",
            "Time from a deployment's creation to its completion",
            Unit::Seconds,
            self.deployment_seconds.clone(),
        );
        r.register_with_unit(
            "rollback_duration",
            "Time from a rollback's decision to every server back",
            Unit::Seconds,
            self.rollback_seconds.clone(),
        );
        r.register_with_unit(
            "config_reload_duration",
            "Time game servers took to apply a config (their acks)",
            Unit::Seconds,
            self.reload_seconds.clone(),
        );
        r.register_with_unit(
            "delivery_latency",
            "Time from a deployment's frame leaving the hub to the server's ack, less its apply time",
            Unit::Seconds,
            self.delivery_seconds.clone(),
        );
        r.register(
            "resolution_requests",
            "Player resolution requests (lookups, rosters, active events, assignments)",
            self.resolutions.clone(),
        );
        r.register_with_unit(
            "resolution_duration",
            "Time to resolve what players see",
            Unit::Seconds,
            self.resolution_seconds.clone(),
        );
        r.register(
            "telemetry_events_accepted",
            "Telemetry events accepted (stored)",
            self.telemetry_accepted.clone(),
        );
        r.register(
            "telemetry_events_rejected",
            "Telemetry events refused one by one",
            self.telemetry_rejected.clone(),
        );
        r.register(
            "frames_sent",
            "Snapshots and deltas sent to game servers",
            self.frames_sent.clone(),
        );
        r.register("acks", "Acks received from game servers", self.acks.clone());
        r.register(
            "metric_frames",
            "Metrics frames ingested from game servers",
            self.metric_frames.clone(),
        );
        r.register(
            "slow_consumers",
            "Sessions closed because their queue was full",
            self.slow_consumers.clone(),
        );
        r.register(
            "document_loads",
            "Version documents read from the store for game servers (once however many servers miss one at the same time)",
            self.document_loads.clone(),
        );
        r.register(
            "cluster_messages_refused",
            "Messages from other nodes refused: not signed with the cluster's key, stale, or out of bounds",
            self.cluster_refused.clone(),
        );
        r.register(
            "cluster_messages_dropped",
            "Messages for other nodes dropped because the outbound queue was full",
            self.cluster_dropped.clone(),
        );
        r.register(
            "configs_active",
            "Configs with an active revision",
            self.configs_active.clone(),
        );
        r.register(
            "deployments_in_progress",
            "Deployments in flight",
            self.deployments_in_progress.clone(),
        );
        r.register(
            "game_servers_registered",
            "Game servers the hub knows",
            self.servers_registered.clone(),
        );
        r.register(
            "game_servers_connected",
            "Game servers connected now",
            self.servers_connected.clone(),
        );
        r.register(
            "game_servers_healthy",
            "Connected game servers reporting healthy",
            self.servers_healthy.clone(),
        );
        r.register(
            "players_online",
            "Players on connected game servers",
            self.players_online.clone(),
        );
        r.register(
            "live_events_active",
            "Live events with an occurrence in force",
            self.live_events_active.clone(),
        );
        r.register(
            "experiments_running",
            "Experiments running",
            self.experiments_running.clone(),
        );
        r.register(
            "telemetry_queue_events",
            "Telemetry events accepted and waiting to be stored",
            self.telemetry_queue.clone(),
        );
        r.register(
            "store_connections",
            "Store pool connections, by state (idle, in_use)",
            self.store_connections.clone(),
        );
    }

    /// Counts a resolution request and times it until the guard drops.
    pub fn resolution(&self) -> Timed<'_> {
        self.resolutions.inc();
        Timed {
            histogram: &self.resolution_seconds,
            started: std::time::Instant::now(),
        }
    }

    /// Counts a deployment started with `strategy` (its name).
    pub fn deployment_started(&self, strategy: &'static str) {
        self.deployments_started
            .get_or_create(&[("strategy", strategy)])
            .inc();
    }

    /// The text Prometheus scrapes, with `scrape`'s state.
    pub fn render(&self, scrape: &Scrape) -> String {
        for (counter, value) in [
            (&self.frames_sent, scrape.frames_sent),
            (&self.acks, scrape.acks),
            (&self.metric_frames, scrape.metric_frames),
            (&self.slow_consumers, scrape.slow_consumers),
            (&self.document_loads, scrape.document_loads),
            (&self.cluster_refused, scrape.cluster_refused),
            (&self.cluster_dropped, scrape.cluster_dropped),
        ] {
            // Never backwards, even with two scrapes at once.
            counter.inner().fetch_max(value, Ordering::Relaxed);
        }
        for (g, value) in [
            (&self.configs_active, scrape.configs_active),
            (
                &self.deployments_in_progress,
                scrape.deployments_in_progress,
            ),
            (&self.servers_registered, scrape.servers_registered),
            (&self.servers_connected, scrape.servers_connected),
            (&self.servers_healthy, scrape.servers_healthy),
            (&self.players_online, scrape.players_online),
            (&self.live_events_active, scrape.live_events_active),
            (&self.experiments_running, scrape.experiments_running),
            (&self.telemetry_queue, scrape.telemetry_queue),
        ] {
            g.set(gauge(value));
        }
        self.store_connections
            .get_or_create(&[("state", "idle")])
            .set(gauge(scrape.store_connections_idle));
        self.store_connections
            .get_or_create(&[("state", "in_use")])
            .set(gauge(scrape.store_connections_in_use));
        let mut text = String::with_capacity(16 * 1024);
        encode(&mut text, &self.registry).expect("writing to a String never fails");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample named `name` (with its labels) in `text`.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    #[test]
    fn counts_and_state_render_in_the_text_format() {
        let meters = Meters::new();
        meters.configs_created.inc();
        meters.deployment_started("canary");
        meters.deployment_started("canary");
        meters.validation_seconds.observe(0.004);
        let text = meters.render(&Scrape {
            players_online: 1234,
            servers_healthy: 7,
            acks: 42,
            store_connections_idle: 3,
            ..Scrape::default()
        });
        assert_eq!(sample(&text, "hotswap_configs_created_total"), Some(1.0));
        assert_eq!(
            sample(
                &text,
                "hotswap_deployments_started_total{strategy=\"canary\"}"
            ),
            Some(2.0)
        );
        assert_eq!(sample(&text, "hotswap_players_online"), Some(1234.0));
        assert_eq!(sample(&text, "hotswap_game_servers_healthy"), Some(7.0));
        assert_eq!(sample(&text, "hotswap_acks_total"), Some(42.0));
        assert_eq!(
            sample(&text, "hotswap_store_connections{state=\"idle\"}"),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "hotswap_config_validation_duration_seconds_count"),
            Some(1.0)
        );
        assert!(text.contains("# TYPE hotswap_deployment_duration_seconds histogram"));
        assert!(text.trim_end().ends_with("# EOF"));
        // Buckets count up to each bound (cumulative), +Inf holds them all.
        assert_eq!(
            sample(
                &text,
                "hotswap_config_validation_duration_seconds_bucket{le=\"0.004\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "hotswap_config_validation_duration_seconds_bucket{le=\"0.002\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                "hotswap_config_validation_duration_seconds_bucket{le=\"+Inf\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "hotswap_config_validation_duration_seconds_sum"),
            Some(0.004)
        );
        // A later scrape reads the state again.
        let later = meters.render(&Scrape::default());
        assert_eq!(sample(&later, "hotswap_players_online"), Some(0.0));
    }
}
