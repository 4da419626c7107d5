//! Pure rules, no I/O: names, config kinds, document limits, diffs, schema
//! validation with the game rules, schema compatibility, and the
//! deployment rules: cohorts, metric windows, rollback judgement.
//!
//! **Architecture invariant:** nothing here touches a socket, a file or the
//! database, so every rule is unit tested on plain values.

pub mod compat;
pub mod diff;
pub mod document;
pub mod evaluation;
pub mod feedback;
pub mod judgement;
pub mod kinds;
pub mod layers;
pub mod names;
pub mod plan;
pub mod policy;
pub mod rollout;
pub mod secrets;
pub mod server_hello;
pub mod stats;
pub mod strategy;
pub mod validation;
pub mod window;
