//! The load-test harness: a coordinator that starts (or targets) a hub,
//! spreads simulated game servers over worker processes, runs a scenario
//! and writes the figures. See `loadtest/README.md`.
//!
//! - [`players`]: what a server's players report each metrics interval.
//! - [`worker`]: one worker process's simulated game servers (real
//!   WebSockets speaking `docs/PROTOCOL.md`).
//! - [`fleet`]: the coordinator's handle on its worker processes.
//! - [`hubproc`]: the hub as a child process, its CPU and memory.
//! - [`http`]: a minimal HTTP/1.1 client for the REST API.
//! - [`floor`]: the raw-socket floor (one pre-encoded frame to N sockets).
//! - [`http_floor`]: the HTTP floor (a bare keep-alive responder) that
//!   `scripts/bench-players.sh` measures the player lookups against.
//! - [`stamped`]: client sockets stamped with the kernel's receive time.
//! - [`scenarios`]: fanout, canary-rollback, kill-switch, reconnect-storm,
//!   soak, chaos, live-event.
//! - [`report`]: percentiles, the terminal table, `report.json`, the chart.

pub mod fleet;
pub mod floor;
pub mod http;
pub mod http_floor;
pub mod hubproc;
pub mod nchan;
pub mod players;
pub mod reaper;
pub mod report;
pub mod scenarios;
pub mod stamped;
pub mod worker;

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall clock in Unix microseconds (hub, workers and coordinator share it).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Prints a one-line progress bar on stderr (overwritten in place).
pub fn progress(label: &str, done: usize, total: usize) {
    let width = 30;
    let filled = (done.min(total) * width)
        .checked_div(total)
        .unwrap_or(width);
    eprint!(
        "\r{label:<28} [{}{}] {done}/{total}   ",
        "=".repeat(filled),
        " ".repeat(width - filled)
    );
    if done >= total {
        eprintln!();
    }
}
