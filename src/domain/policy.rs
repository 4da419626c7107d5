//! Who may do what where: the roles, and what each environment asks of a
//! deployment. The one place that knows production is special; callers
//! ask [`policy`] instead of comparing environment names.

use super::kinds::Environment;
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
    /// A game client: reads only its own player's answers (the token's
    /// `sub` is the player id) and sends its telemetry.
    Player,
    Viewer,
    Developer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Player,
        Role::Viewer,
        Role::Developer,
        Role::Operator,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Player => "player",
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
            "player" => Ok(Role::Player),
            "viewer" => Ok(Role::Viewer),
            "developer" => Ok(Role::Developer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}; expected player, viewer, developer, operator or admin"
            )),
        }
    }
}

/// What an environment asks of the changes that reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvironmentPolicy {
    /// The least role that may start a deployment there.
    pub deployer: Role,
    /// A version with breaking changes is deployed there only once an
    /// admin approved it (`POST .../versions/{v}/approve` is admin-only).
    pub breaking_needs_approval: bool,
    /// Every deployment there waits for an admin other than its creator
    /// (`deployment.approval_environments` in the settings).
    pub deployment_needs_approval: bool,
    /// Player complaints sent over REST move a deployment's cohorts only
    /// from an operator or the server's own API key.
    pub complaints_from_operators_only: bool,
}

/// The policy of `environment`, given the environments the settings name
/// for deployment approval.
pub fn policy(
    environment: Environment,
    approval_environments: &[Environment],
) -> EnvironmentPolicy {
    let production = environment == Environment::Production;
    EnvironmentPolicy {
        deployer: if production {
            Role::Operator
        } else {
            Role::Developer
        },
        breaking_needs_approval: production,
        deployment_needs_approval: approval_environments.contains(&environment),
        complaints_from_operators_only: production,
    }
}

/// A stored environment name as the vocabulary's value. The store only
/// holds names it was given through [`Environment`]; anything else is
/// treated as the strictest environment rather than the loosest.
pub fn stored_environment(name: &str) -> Environment {
    name.parse().unwrap_or(Environment::Production)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_environment_has_its_policy() {
        use Environment::*;
        let approvals = [Production];
        // (environment, deployer, breaking needs approval, deployment needs approval, complaints from operators only)
        let table = [
            (Development, Role::Developer, false, false, false),
            (Staging, Role::Developer, false, false, false),
            (Production, Role::Operator, true, true, true),
        ];
        for (environment, deployer, breaking, deployment, complaints) in table {
            assert_eq!(
                policy(environment, &approvals),
                EnvironmentPolicy {
                    deployer,
                    breaking_needs_approval: breaking,
                    deployment_needs_approval: deployment,
                    complaints_from_operators_only: complaints,
                },
                "{environment}"
            );
        }
        assert!(policy(Staging, &[Staging, Production]).deployment_needs_approval);
        assert!(!policy(Production, &[]).deployment_needs_approval);
    }

    #[test]
    fn unknown_stored_names_are_treated_as_production() {
        assert_eq!(stored_environment("staging"), Environment::Staging);
        assert_eq!(stored_environment("Staging"), Environment::Production);
        assert_eq!(stored_environment(""), Environment::Production);
    }

    #[test]
    fn roles_are_ordered_and_read_back() {
        assert!(Role::Player < Role::Viewer);
        assert!(Role::Viewer < Role::Developer && Role::Operator < Role::Admin);
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
