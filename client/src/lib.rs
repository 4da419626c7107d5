//! `hotswap-client`: the SDK game servers link, and the wire types the hub
//! and the servers share.
//!
//! # Layout
//! - [`checksum`]: the canonical form of a config document and its SHA-256
//!   checksum, as `docs/PROTOCOL.md` defines them. The hub stamps every
//!   version with it and the SDK verifies it before swapping a config in.
//! - [`protocol`]: the messages of the game-server socket and their
//!   MessagePack encoding.
//! - [`signature`]: the Ed25519 signature every config version carries, and
//!   its verification.
//!
//! - [`client`]: [`Client`], what a game server links: connects with its
//!   API key, keeps its configs current (wait-free reads), acks, heartbeats,
//!   reconnects with backoff, persists its last good configs. Its
//!   `ClientConfig` is in `config.rs`, the state the handle shares with
//!   the connection task in `state.rs`, the task itself in `connection.rs`.
//! - `persist`: the last good configs on disk, checked again when read
//!   back and written atomically, readable by the owner only.
//! - [`metrics`]: [`MetricsRecorder`], player metrics aggregated locally and
//!   sent once per interval.
//! - [`sync`]: poison-tolerant locks, shared with the hub's crates.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use hotswap_client::{Client, ClientConfig};
//! let client = Client::start(
//!     ClientConfig::new("ws://127.0.0.1:8080", "hsk_...", "eu-west-7")
//!         .region("EU-WEST")
//!         .environment("production")
//!         .subscribe("weapon-balance"),
//! )?;
//! client.on_change(|change| println!("{} is now revision {}", change.config, change.current.revision));
//! let damage: Option<serde_json::Value> = client.get("weapon-balance");
//! client.metrics().record_latency_ms(42);
//! # let _ = damage; Ok(()) }
//! ```

pub mod checksum;
pub mod client;
mod config;
mod connection;
pub mod liveops;
pub mod metrics;
mod persist;
pub mod protocol;
pub mod signature;
mod state;
pub mod sync;

pub use checksum::{canonical_json, document_checksum};
pub use client::{
    AppliedConfig, Client, ClientConfig, ConfigChange, ConnectionState, LiveEventPhase,
};
pub use metrics::MetricsRecorder;
