//! Whether a player's complaint sent over REST counts in the cohorts a
//! deployment judges. Anyone allowed to send feedback has it stored; only
//! some of it may move a production deployment towards a rollback.

use super::{kinds::Environment, policy::policy};

/// Who sent a complaint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter<'a> {
    /// A person or tool with a token: an operator or admin when `operator`.
    User { operator: bool },
    /// A game server's API key.
    ServerKey { key_id: &'a str },
}

/// Whether a complaint about a server counts in its deployments' cohorts:
/// in production only from an operator (or admin), or from the server's
/// own API key (the one holding its id); elsewhere from anyone allowed to
/// send it. (The hub also bounds how many count per server.)
pub fn complaint_counts(
    environment: Environment,
    reporter: Reporter<'_>,
    server_key_id: &str,
) -> bool {
    match reporter {
        Reporter::ServerKey { key_id } => key_id == server_key_id,
        Reporter::User { operator } => {
            operator || !policy(environment, &[]).complaints_from_operators_only
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_complaints_count_from_operators_and_the_servers_own_key() {
        let cases = [
            (
                Environment::Production,
                Reporter::User { operator: true },
                true,
            ),
            (
                Environment::Production,
                Reporter::User { operator: false },
                false,
            ),
            (
                Environment::Production,
                Reporter::ServerKey { key_id: "k1" },
                true,
            ),
            (
                Environment::Production,
                Reporter::ServerKey { key_id: "k2" },
                false,
            ),
            (
                Environment::Staging,
                Reporter::User { operator: false },
                true,
            ),
            (
                Environment::Staging,
                Reporter::ServerKey { key_id: "k1" },
                true,
            ),
            (
                Environment::Staging,
                Reporter::ServerKey { key_id: "k2" },
                false,
            ),
        ];
        for (environment, reporter, counts) in cases {
            assert_eq!(
                complaint_counts(environment, reporter, "k1"),
                counts,
                "{environment} {reporter:?}"
            );
        }
    }
}
