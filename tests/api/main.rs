//! Integration tests: a real hub on port 0 per test, real HTTP, and each
//! test run on SQLite and on PostgreSQL (see `helpers.rs` for how
//! PostgreSQL tests are enabled, skipped or failed).

mod helpers;
mod sockets;

mod access;
mod attacks;
mod audit;
mod binary;
mod cluster;
mod cluster_experiments;
mod cluster_processes;
mod cluster_store;
mod cluster_views;
mod configs;
mod crash;
mod ctl;
mod dashboard;
mod durability;
mod edges;
mod experiments;
mod health;
mod hub;
mod kpis;
mod live_events;
mod manifest;
mod observability;
mod progressive;
mod schema_attacks;
mod schemas;
mod sdk;
mod security;
mod session_attacks;
mod stream;
mod telemetry;
mod traces;
mod upgrades;
mod upkeep;
mod versions;
