//! A game server's `hello`, parsed at the edge into bounded, typed values
//! ("parse, don't validate"): nothing a client sends reaches the registry,
//! the store or a log unbounded, with control characters, or with a name
//! the rest of the hub would have to check again.
//!
//! Limits (also in `docs/PROTOCOL.md`):
//! - `serverId`: 1-128 of `A-Z a-z 0-9 . _ : @ -`;
//! - `region`: 1-64 of `A-Z a-z 0-9 _ -`;
//! - `environment`: `development`, `staging` or `production`;
//! - `subscriptions` and `known`: at most 256 config names (slugs) each,
//!   `known` revisions at least 1;
//! - `tags`: at most 32, each 1-64 printable ASCII characters;
//! - `hostname` (253), `address` (64): printable ASCII; `build`, `sdk`
//!   (128 characters): any text without control characters.

use super::{kinds::Environment, names::Slug};
use hotswap_client::protocol;
use std::collections::BTreeMap;

pub const MAX_SERVER_ID_LEN: usize = 128;
pub const MAX_REGION_LEN: usize = 64;
pub const MAX_SUBSCRIPTIONS: usize = 256;
pub const MAX_KNOWN: usize = 256;
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_LEN: usize = 64;
pub const MAX_HOSTNAME_LEN: usize = 253;
pub const MAX_ADDRESS_LEN: usize = 64;
pub const MAX_LABEL_LEN: usize = 128;

/// Why a `hello` is refused: the field and what is wrong with it. Sent to
/// the server as the reason of its close (1008).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hello.{field}: {problem}")]
pub struct HelloError {
    pub field: &'static str,
    pub problem: String,
}

fn refuse(field: &'static str, problem: impl Into<String>) -> HelloError {
    HelloError {
        field,
        problem: problem.into(),
    }
}

/// A `hello` the hub accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerHello {
    pub server_id: String,
    pub region: String,
    pub environment: Environment,
    pub tags: Vec<String>,
    pub capacity: u32,
    pub players: u32,
    /// Sorted, without duplicates.
    pub subscriptions: Vec<Slug>,
    /// Revisions the server holds, of the configs it subscribes to.
    pub known: BTreeMap<String, i64>,
    pub hostname: Option<String>,
    pub address: Option<String>,
    pub build: Option<String>,
    pub sdk: Option<String>,
    /// Asked for the live-ops definitions.
    pub liveops: bool,
}

fn server_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-')
}

/// Whether `text` can be a server id at all (paths that name one refuse
/// the rest before any lookup).
pub fn is_server_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_SERVER_ID_LEN && text.chars().all(server_id_char)
}

impl ServerHello {
    pub fn parse(hello: protocol::Hello) -> Result<Self, HelloError> {
        let server_id = checked(
            "serverId",
            hello.server_id,
            MAX_SERVER_ID_LEN,
            "letters, digits, '.', '_', ':', '@' and '-'",
            server_id_char,
        )?;
        let region = checked(
            "region",
            hello.region,
            MAX_REGION_LEN,
            "letters, digits, '_' and '-'",
            |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'),
        )?;
        let environment: Environment = hello.environment.parse().map_err(|_| {
            refuse(
                "environment",
                format!(
                    "{:?} is not development, staging or production",
                    shortened(&hello.environment)
                ),
            )
        })?;
        if hello.tags.len() > MAX_TAGS {
            return Err(refuse(
                "tags",
                format!("at most {MAX_TAGS} tags (got {})", hello.tags.len()),
            ));
        }
        let mut tags = Vec::with_capacity(hello.tags.len());
        for tag in hello.tags {
            tags.push(checked("tags", tag, MAX_TAG_LEN, "printable ASCII", |c| {
                c.is_ascii_graphic()
            })?);
        }
        tags.sort();
        tags.dedup();
        if hello.subscriptions.len() > MAX_SUBSCRIPTIONS {
            return Err(refuse(
                "subscriptions",
                format!(
                    "at most {MAX_SUBSCRIPTIONS} configs (got {})",
                    hello.subscriptions.len()
                ),
            ));
        }
        let mut subscriptions = hello
            .subscriptions
            .iter()
            .map(|name| {
                Slug::parse(name)
                    .map_err(|why| refuse("subscriptions", format!("{:?} {why}", shortened(name))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        subscriptions.sort();
        subscriptions.dedup();
        if hello.known.len() > MAX_KNOWN {
            return Err(refuse(
                "known",
                format!("at most {MAX_KNOWN} configs (got {})", hello.known.len()),
            ));
        }
        let mut known = BTreeMap::new();
        for (name, revision) in hello.known {
            let slug = Slug::parse(&name)
                .map_err(|why| refuse("known", format!("{:?} {why}", shortened(&name))))?;
            if revision < 1 {
                return Err(refuse(
                    "known",
                    format!(
                        "the revision of {:?} must be at least 1 (got {revision})",
                        shortened(&name)
                    ),
                ));
            }
            // What the server holds of configs it does not subscribe to is
            // of no use to the hub: it is not kept.
            if subscriptions.binary_search(&slug).is_ok() {
                known.insert(name, revision);
            }
        }
        let ascii = |c: char| c.is_ascii_graphic();
        let text = |c: char| !c.is_control();
        Ok(Self {
            server_id,
            region,
            environment,
            tags,
            capacity: hello.capacity,
            players: hello.players,
            subscriptions,
            known,
            hostname: optional(
                "hostname",
                hello.hostname,
                MAX_HOSTNAME_LEN,
                "printable ASCII",
                ascii,
            )?,
            address: optional(
                "address",
                hello.address,
                MAX_ADDRESS_LEN,
                "printable ASCII",
                ascii,
            )?,
            build: optional(
                "build",
                hello.build,
                MAX_LABEL_LEN,
                "text without control characters",
                text,
            )?,
            sdk: optional(
                "sdk",
                hello.sdk,
                MAX_LABEL_LEN,
                "text without control characters",
                text,
            )?,
            liveops: hello.liveops,
        })
    }

    /// The subscriptions as plain names (the registry's form).
    pub fn subscription_names(&self) -> Vec<String> {
        self.subscriptions
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect()
    }
}

/// What a `hello` may do with a server id, given the API key that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdClaim {
    /// The claimant's key holds it: a server (re)connecting as itself.
    Held,
    /// Another key held it but was revoked: the claimant takes it.
    TakeOver,
    /// Another live key holds it: refused, the holder stays connected.
    HeldByAnother,
}

/// A server id belongs to the API key that first registered it.
pub fn claim_server_id(holder: &str, claimant: &str, holder_revoked: bool) -> IdClaim {
    if holder == claimant {
        IdClaim::Held
    } else if holder_revoked {
        IdClaim::TakeOver
    } else {
        IdClaim::HeldByAnother
    }
}

/// The first characters of a refused value, safe to quote in a reason.
fn shortened(text: &str) -> String {
    text.chars()
        .take(20)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

fn checked(
    field: &'static str,
    text: String,
    max_chars: usize,
    allowed: &str,
    ok: impl Fn(char) -> bool,
) -> Result<String, HelloError> {
    if text.is_empty() {
        return Err(refuse(field, "must not be empty"));
    }
    // Characters, counted without walking more than the limit allows.
    if text.chars().nth(max_chars).is_some() {
        return Err(refuse(
            field,
            format!("at most {max_chars} characters ({} bytes sent)", text.len()),
        ));
    }
    if let Some(bad) = text.chars().find(|c| !ok(*c)) {
        return Err(refuse(
            field,
            format!("may contain only {allowed} (found {bad:?})"),
        ));
    }
    Ok(text)
}

fn optional(
    field: &'static str,
    text: Option<String>,
    max_chars: usize,
    allowed: &str,
    ok: impl Fn(char) -> bool,
) -> Result<Option<String>, HelloError> {
    match text {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => checked(field, text, max_chars, allowed, ok).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> protocol::Hello {
        protocol::Hello {
            server_id: "eu-1".into(),
            region: "EU-WEST".into(),
            environment: "production".into(),
            tags: vec!["ranked".into(), "gpu=a100".into(), "ranked".into()],
            capacity: 64,
            players: 10,
            subscriptions: vec!["weapons".into(), "loot".into(), "weapons".into()],
            known: BTreeMap::from([("weapons".into(), 3), ("maps".into(), 9)]),
            hostname: Some("game-eu-1.example.com".into()),
            address: Some("10.0.0.1:7777".into()),
            build: Some("1.2.3 (nightly)".into()),
            sdk: Some("rust/0.1".into()),
            liveops: false,
        }
    }

    #[test]
    fn a_good_hello_is_typed_sorted_and_trimmed_to_what_matters() {
        let parsed = ServerHello::parse(hello()).unwrap();
        assert_eq!(parsed.environment, Environment::Production);
        assert_eq!(parsed.subscription_names(), ["loot", "weapons"]);
        assert_eq!(parsed.tags, ["gpu=a100", "ranked"]);
        assert_eq!(
            parsed.known,
            BTreeMap::from([("weapons".to_owned(), 3)]),
            "maps is not subscribed"
        );
        let mut empty_optionals = hello();
        empty_optionals.hostname = Some(String::new());
        assert_eq!(ServerHello::parse(empty_optionals).unwrap().hostname, None);
    }

    #[test]
    fn every_bound_is_refused_with_the_field_that_broke_it() {
        type Change = fn(&mut protocol::Hello);
        let cases: Vec<(Change, &str)> = vec![
            (|h| h.server_id = String::new(), "serverId"),
            (|h| h.server_id = "x".repeat(129), "serverId"),
            (|h| h.server_id = "a/b".into(), "serverId"),
            (|h| h.server_id = "nul\0".into(), "serverId"),
            (|h| h.region = "EU WEST".into(), "region"),
            (|h| h.region = "x".repeat(65), "region"),
            (|h| h.environment = "prod".into(), "environment"),
            (
                |h| h.tags = (0..33).map(|i| format!("t{i}")).collect(),
                "tags",
            ),
            (|h| h.tags = vec!["has space".into()], "tags"),
            (|h| h.tags = vec!["x".repeat(65)], "tags"),
            (
                |h| h.subscriptions = (0..257).map(|i| format!("c{i}")).collect(),
                "subscriptions",
            ),
            (
                |h| h.subscriptions = vec!["Weapons".into()],
                "subscriptions",
            ),
            (
                |h| h.known = (0..257).map(|i| (format!("c{i}"), 1)).collect(),
                "known",
            ),
            (
                |h| h.known = BTreeMap::from([("weapons".into(), 0)]),
                "known",
            ),
            (
                |h| h.known = BTreeMap::from([("bad name".into(), 1)]),
                "known",
            ),
            (|h| h.hostname = Some("h".repeat(100_000)), "hostname"),
            (|h| h.hostname = Some("host\0name".into()), "hostname"),
            (|h| h.address = Some("10.0.0.1 7777".into()), "address"),
            (|h| h.build = Some("line\nbreak".into()), "build"),
            (|h| h.sdk = Some("é".repeat(129)), "sdk"),
        ];
        for (change, field) in cases {
            let mut bad = hello();
            change(&mut bad);
            let error = ServerHello::parse(bad).unwrap_err();
            assert_eq!(error.field, field, "{error}");
            assert!(error.to_string().starts_with(&format!("hello.{field}: ")));
            assert!(
                error.to_string().len() <= 123,
                "a reason fits a close frame: {error}"
            );
            assert!(!error.to_string().contains('\0'));
        }
    }

    #[test]
    fn a_server_id_stays_with_its_key_unless_that_key_was_revoked() {
        assert_eq!(claim_server_id("k1", "k1", false), IdClaim::Held);
        assert_eq!(claim_server_id("k1", "k1", true), IdClaim::Held);
        assert_eq!(claim_server_id("k1", "k2", false), IdClaim::HeldByAnother);
        assert_eq!(claim_server_id("k1", "k2", true), IdClaim::TakeOver);
    }

    #[test]
    fn the_limits_themselves_are_accepted() {
        let mut at_limits = hello();
        at_limits.server_id = "s".repeat(MAX_SERVER_ID_LEN);
        at_limits.tags = (0..MAX_TAGS).map(|i| format!("t{i}")).collect();
        at_limits.subscriptions = (0..MAX_SUBSCRIPTIONS).map(|i| format!("c{i}")).collect();
        at_limits.known = (0..MAX_KNOWN).map(|i| (format!("c{i}"), 1)).collect();
        at_limits.hostname = Some("h".repeat(MAX_HOSTNAME_LEN));
        at_limits.sdk = Some("é".repeat(MAX_LABEL_LEN));
        let parsed = ServerHello::parse(at_limits).unwrap();
        assert_eq!(parsed.known.len(), MAX_KNOWN);
        assert_eq!(parsed.subscriptions.len(), MAX_SUBSCRIPTIONS);
    }
}
