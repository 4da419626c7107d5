//! HotSwap: a real-time configuration and live-ops hub for online games.
//!
//! # Layout
//! - [`settings`] — layered settings (defaults, `--config` file, `HOTSWAP_*`).
//! - [`startup`] — [`startup::Application`], building and running the hub.
//! - [`http`] — the REST API, one module per resource, problem+json errors.
//! - [`catalog`] — use cases over configs, versions and schemas; writes the audit trail.
//! - [`domain`] — pure rules (names, validation with game rules, diffs, schema compatibility).
//! - [`store`] — repositories over sqlx (SQLite or PostgreSQL); the only SQL.
//! - [`observability`] — logging.
//!
//! `ARCHITECTURE.md` at the repository root has the code map and invariants.

pub mod auth;
pub mod catalog;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod hub;
pub mod observability;
pub mod settings;
pub mod startup;
pub mod store;
pub mod ws;
