//! Player experiments (A/B/n): a definition parsed at the edge into
//! bounded types and its lifecycle (`spec.rs`), and the results and
//! guardrails read from per-variant sums (`results.rs`, over
//! `experiment_stats`), the metrics they read, from telemetry or from
//! the servers' reports split by variant (`metrics.rs`). Assignment — which variant a unit gets from its
//! bucket and the weights — lives in the SDK crate
//! (`hotswap_client::liveops::experiments`, re-exported here) so game
//! servers assign players exactly as the hub does.

pub mod metrics;
pub mod results;
pub mod spec;

pub use hotswap_client::liveops::experiments::*;
