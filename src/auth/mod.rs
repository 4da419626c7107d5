//! Who may do what: JWT verification and roles for people and tools, API
//! keys for game servers, the development key material kept under
//! `data_dir`, and rate limits.
//!
//! # Layout
//! - `mod.rs`: [`Role`], [`Principal`], [`AuthError`].
//! - `jwt.rs`: [`jwt::Authenticator`]: verifies (and, with an HS256 secret, mints) tokens.
//! - `keyfile.rs`: reading or generating secrets under `data_dir`.
//! - `api_keys.rs`: game-server API keys (format, hashing).
//! - `rate_limit.rs`: token buckets per principal and per source address.

pub mod api_keys;
pub mod jwt;
pub mod keyfile;
pub mod rate_limit;

pub use crate::domain::policy::Role;

/// A verified caller of the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    /// A player token's `attrs` claim: player attributes its issuer (the
    /// studio's login service) vouches for, which outrank what the player
    /// says in a request.
    pub attributes: Option<std::sync::Arc<serde_json::Map<String, serde_json::Value>>>,
}

/// Why a request is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send Authorization: Bearer <token>")]
    Missing,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
    #[error("role {have} may not do this; it needs {need}")]
    Forbidden { have: String, need: Role },
    #[error("{0}")]
    Denied(String),
}
