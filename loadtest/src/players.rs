//! The simulated players of one game server: each metrics interval they
//! start and end sessions, crash, churn, complain, make requests, and
//! leave latency, fps and session-length samples, drawn from a
//! [`PlayerModel`]. A regression multiplies the crash rate.

use hotswap_client::protocol::{EncodedHistogram, MetricsReport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The distributions players are drawn from (per player unless said).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlayerModel {
    pub players_per_server: u32,
    /// Mean session length (exponential).
    pub session_minutes: f64,
    pub crashes_per_player_hour: f64,
    /// Share of ended sessions that are churn (the player does not come back).
    pub churn_share: f64,
    pub requests_per_player_second: f64,
    pub error_share: f64,
    pub complaints_per_player_hour: f64,
    pub purchases_per_player_hour: f64,
    /// Median round-trip latency (log-normal, sigma 0.35).
    pub latency_ms: f64,
    /// Mean frame rate (normal, sd 8).
    pub fps: f64,
}

impl Default for PlayerModel {
    fn default() -> Self {
        Self {
            players_per_server: 100,
            session_minutes: 25.0,
            crashes_per_player_hour: 2.0,
            churn_share: 0.1,
            requests_per_player_second: 2.0,
            error_share: 0.002,
            complaints_per_player_hour: 0.05,
            purchases_per_player_hour: 0.2,
            latency_ms: 45.0,
            fps: 60.0,
        }
    }
}

/// xorshift64*: cheap, seeded per server, good enough for load.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
    /// The second normal of the last Box-Muller pair, not yet handed out.
    spare_normal: Option<f64>,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            spare_normal: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller; both of a pair are used, which halves
    /// what a metrics report costs the simulated servers).
    pub fn normal(&mut self) -> f64 {
        if let Some(spare) = self.spare_normal.take() {
            return spare;
        }
        let u = self.unit().max(f64::MIN_POSITIVE);
        let v = self.unit();
        let radius = (-2.0 * u.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * v).sin_cos();
        self.spare_normal = Some(radius * sin);
        radius * cos
    }

    /// Poisson with mean `lambda` (Knuth below 30, normal above).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda.is_nan() || lambda <= 0.0 {
            return 0;
        }
        if lambda > 30.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let limit = (-lambda).exp();
        let mut product = self.unit();
        let mut count = 0;
        while product > limit {
            product *= self.unit();
            count += 1;
        }
        count
    }
}

/// Sparse `[value, count]` pairs from up to 64 samples, each standing for
/// `total / samples` players.
fn sparse(rng: &mut Rng, total: u64, mut sample: impl FnMut(&mut Rng) -> f64) -> EncodedHistogram {
    let samples = total.min(64);
    let mut pairs: BTreeMap<u64, u64> = BTreeMap::new();
    if let Some(weight) = total.checked_div(samples) {
        let mut rest = total % samples;
        for _ in 0..samples {
            let value = sample(rng).round().max(1.0) as u64;
            let extra = u64::from(rest > 0);
            rest = rest.saturating_sub(1);
            *pairs.entry(value).or_default() += weight + extra;
        }
    }
    EncodedHistogram::Sparse(pairs.into_iter().collect())
}

impl PlayerModel {
    /// One report covering `window_ms`; `crash_factor` > 1 is a regression.
    pub fn report(
        &self,
        rng: &mut Rng,
        seq: u64,
        window_ms: u64,
        crash_factor: f64,
    ) -> MetricsReport {
        let players = f64::from(self.players_per_server);
        let seconds = window_ms as f64 / 1000.0;
        let hours = seconds / 3600.0;
        let session_secs = self.session_minutes * 60.0;
        let sessions_started = rng.poisson(players * seconds / session_secs);
        let sessions_ended = rng.poisson(players * seconds / session_secs);
        let churned = rng.poisson(sessions_ended as f64 * self.churn_share);
        let crashes = rng.poisson(players * hours * self.crashes_per_player_hour * crash_factor);
        let requests = rng.poisson(players * seconds * self.requests_per_player_second);
        let errors = rng.poisson(requests as f64 * self.error_share);
        let complaints = rng.poisson(players * hours * self.complaints_per_player_hour);
        let purchases = rng.poisson(players * hours * self.purchases_per_player_hour);
        let (latency, fps) = (self.latency_ms, self.fps);
        let mut histograms = BTreeMap::new();
        let n = u64::from(self.players_per_server);
        histograms.insert(
            "latencyMs".to_owned(),
            sparse(rng, n, |r| latency * (0.35 * r.normal()).exp()),
        );
        histograms.insert("fps".to_owned(), sparse(rng, n, |r| fps + 8.0 * r.normal()));
        if sessions_ended > 0 {
            histograms.insert(
                "sessionSecs".to_owned(),
                sparse(rng, sessions_ended, |r| {
                    -session_secs * r.unit().max(1e-9).ln()
                }),
            );
        }
        MetricsReport {
            seq,
            window_ms,
            players: self.players_per_server,
            sessions_started,
            sessions_ended,
            churned,
            crashes,
            errors,
            requests,
            complaints,
            purchases,
            histograms,
            custom: BTreeMap::new(),
            experiments: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_have_mean_zero_and_unit_variance() {
        let mut rng = Rng::new(3);
        let n = 200_000;
        let draws: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let variance = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((variance - 1.0).abs() < 0.01, "{variance}");
        // Consecutive draws (the two of a pair) are uncorrelated.
        let lag: f64 = draws.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / (n - 1) as f64;
        assert!(lag.abs() < 0.01, "{lag}");
    }

    #[test]
    fn poisson_means_come_out_right() {
        let mut rng = Rng::new(7);
        for lambda in [0.05, 1.0, 12.0, 400.0] {
            let n = 20_000;
            let mean = (0..n).map(|_| rng.poisson(lambda) as f64).sum::<f64>() / n as f64;
            assert!(
                (mean - lambda).abs() < lambda.max(0.2) * 0.05,
                "{lambda}: {mean}"
            );
        }
    }

    #[test]
    fn a_report_counts_every_player_and_a_regression_multiplies_crashes() {
        let model = PlayerModel {
            players_per_server: 1000,
            crashes_per_player_hour: 36.0,
            ..PlayerModel::default()
        };
        let mut rng = Rng::new(1);
        let report = model.report(&mut rng, 1, 1000, 1.0);
        let EncodedHistogram::Sparse(pairs) = &report.histograms["latencyMs"] else {
            panic!("sparse");
        };
        assert_eq!(pairs.iter().map(|p| p.1).sum::<u64>(), 1000);
        let mut crashes = |factor| {
            (0..2000)
                .map(|i| model.report(&mut rng, i, 1000, factor).crashes as f64)
                .sum::<f64>()
                / 2000.0
        };
        let (healthy, bad) = (crashes(1.0), crashes(3.0));
        assert!((healthy - 10.0).abs() < 0.5, "{healthy}");
        assert!((bad / healthy - 3.0).abs() < 0.2, "{bad} / {healthy}");
    }
}
