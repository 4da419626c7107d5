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

use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};

/// Roles, each allowed everything the one before it is.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Developer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "viewer" => Ok(Role::Viewer),
            "developer" => Ok(Role::Developer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}; expected viewer, developer, operator or admin"
            )),
        }
    }
}

/// A verified caller of the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
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
}
