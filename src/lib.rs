//! HotSwap: a real-time configuration and live-ops hub for online games.
//!
//! # Layout
//! - [`settings`] — layered settings (defaults, `--config` file, `HOTSWAP_*`).
//! - [`startup`] — [`startup::Application`], building and running the hub.
//! - `http` — the REST API, one module per resource, problem+json errors.
//! - `ws` — the game servers' socket endpoint.
//! - `hub` — the game-server side: sessions, fan-out, metric ingest, the
//!   deployment engine.
//! - `liveops` — segments, live events (one actor each), what each player sees.
//! - `catalog` — use cases over configs, versions and schemas; writes the audit trail.
//! - [`domain`] — pure rules: names, validation with game rules, diffs, schema
//!   compatibility, the layers a server's revision comes from, the
//!   deployment strategies' decisions, rollback judgement.
//! - `store` — repositories over sqlx (SQLite or PostgreSQL); the only SQL.
//! - `auth`, `crypto` — tokens, roles, API keys; signing and sealing.
//! - [`observability`] — logging.
//!
//! `ARCHITECTURE.md` at the repository root has the code map and invariants.

mod auth;
mod catalog;
mod cluster;
mod crypto;
pub mod ctl;
mod dashboard;
pub mod domain;
mod feed;
mod http;
mod hub;
mod liveops;
pub mod observability;
pub mod settings;
pub mod startup;
mod store;
mod telemetry;
mod ws;

// The curated surface: what the binary, the benchmarks and the tests reach.
// Everything else is private, so the compiler finds what nothing uses.
pub use auth::{Role, jwt, jwt::Authenticator};
pub use catalog::{Actor, BUILTIN_SCHEMAS, Catalog};
pub use crypto::KeyMaterial;
pub use http::auth::DOCS_COOKIE;
pub use hub::{Hub, metrics as metric_frames};
pub use liveops::{LiveOps, PlayerRequest, attribute_value};
pub use store::{Store, cluster as leases};
pub use telemetry::{
    Telemetry,
    kpis::{BalanceQuery, balance_report},
};
