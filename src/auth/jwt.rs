//! JWT bearer tokens: HS256 with the hub's secret (minted by `hotswap
//! token`), and RS256/ES256 with a studio identity provider's public key.
//! `exp` is required, `iss`/`aud` are checked when configured, clock skew is
//! bounded, and only the configured algorithms are accepted (so `alg: none`
//! and algorithm confusion fail).

use super::{AuthError, Principal, Role, keyfile};
use crate::{domain::kinds::Environment, settings::AuthSettings};
use anyhow::Context;
use hotswap_client::sync::{read, write};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use std::{collections::HashMap, path::Path, sync::RwLock, time::Duration};

/// Longest clock skew allowed, whatever the settings say.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// Shortest HS256 secret accepted.
pub const MIN_SECRET_BYTES: usize = 32;
/// File under `data_dir` holding the development secret.
const DEV_SECRET_FILE: &str = "jwt-secret";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    /// Player attributes the issuer vouches for (`{"guild": "g-7", "tier": 3}`),
    /// read on player tokens only (other tokens may carry a claim of that
    /// name meaning something else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attrs: Option<serde_json::Value>,
}

/// Most attributes a token vouches for.
pub const MAX_TOKEN_ATTRIBUTES: usize = 16;

/// Checks an `attrs` claim: at most [`MAX_TOKEN_ATTRIBUTES`] names of 1-64
/// letters, digits, `_`, `-` or `.`, each a string of at most 256
/// characters, a number or a boolean.
pub fn check_attributes(attrs: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    if attrs.len() > MAX_TOKEN_ATTRIBUTES {
        return Err(format!("attrs: at most {MAX_TOKEN_ATTRIBUTES} attributes"));
    }
    for (key, value) in attrs {
        let key_ok = !key.is_empty()
            && key.len() <= 64
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        let value_ok = match value {
            serde_json::Value::String(text) => text.chars().count() <= 256,
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => true,
            _ => false,
        };
        if !key_ok || !value_ok {
            return Err(
                "attrs: names are 1-64 letters, digits, '_', '-' or '.'; values a string of at most \
                 256 characters, a number or a boolean"
                    .into(),
            );
        }
    }
    Ok(())
}

impl Claims {
    /// The highest known role the token carries.
    fn role(&self) -> Option<Role> {
        self.roles
            .iter()
            .flatten()
            .chain(self.role.iter())
            .filter_map(|name| name.parse::<Role>().ok())
            .max()
    }
}

struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// Verifies tokens; mints them when it holds an HS256 secret.
pub struct Authenticator {
    hs256: Option<(Verifier, EncodingKey)>,
    public: Option<(Algorithm, Verifier)>,
    issuer: Option<String>,
    audience: Option<String>,
    /// Tokens verified lately, by their text, with their principal and
    /// `exp`: a token's signature and claims are checked once, then its
    /// principal is reused until it expires (a game client's player
    /// lookups send the same token thousands of times).
    verified: RwLock<HashMap<Box<str>, (Principal, u64)>>,
}

/// Verified tokens kept. When full, the expired go; if that leaves more
/// than three quarters, all go (so a full scan happens at most once per
/// quarter of inserts, and a flood of valid tokens costs verifications,
/// never memory).
const VERIFIED_KEPT: usize = 4096;
/// Longer tokens are verified each time, never kept.
const VERIFIED_MAX_CHARS: usize = 2048;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("public", &self.public.as_ref().map(|(alg, _)| alg))
            .finish_non_exhaustive()
    }
}

/// What building the authenticator found out, for the first-run banner.
#[derive(Debug)]
pub struct AuthSetup {
    pub authenticator: Authenticator,
    /// The development secret was generated just now.
    pub generated_secret: bool,
    /// A key derived from the HS256 secret (which every node of a cluster
    /// shares), for signing the nodes' messages when `cluster.secret` is
    /// unset.
    pub derived_cluster_key: Option<[u8; 32]>,
}

fn validation(algorithm: Algorithm, settings: &AuthSettings) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = settings.leeway_secs.min(MAX_LEEWAY_SECS);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.required_spec_claims = ["exp".to_owned(), "sub".to_owned()].into();
    match &settings.issuer {
        Some(issuer) => {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        None => validation.iss = None,
    }
    match &settings.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".into());
        }
        None => validation.validate_aud = false,
    }
    validation
}

impl Authenticator {
    /// From settings; in development with nothing configured, a secret is
    /// generated (or reused) under `data_dir`.
    pub fn from_settings(
        settings: &AuthSettings,
        environment: Environment,
        data_dir: &Path,
    ) -> anyhow::Result<AuthSetup> {
        // An identity provider signs tokens for many services: without an
        // audience, a token it minted for any of them would open the hub.
        if settings.public_key_file.is_some()
            && environment == Environment::Production
            && settings.audience.as_deref().is_none_or(str::is_empty)
        {
            anyhow::bail!(
                "auth.audience is required in production with auth.public_key_file: \
                 without it, a token your identity provider minted for any other service \
                 would be accepted (set HOTSWAP_AUTH__AUDIENCE to the hub's audience)"
            );
        }
        let public = match &settings.public_key_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading auth.public_key_file {}", path.display()))?;
                let algorithm = match settings.public_key_algorithm.as_deref().unwrap_or("RS256") {
                    "RS256" => Algorithm::RS256,
                    "ES256" => Algorithm::ES256,
                    other => anyhow::bail!(
                        "auth.public_key_algorithm must be RS256 or ES256, not {other:?}"
                    ),
                };
                let key = match algorithm {
                    Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                }
                .context("auth.public_key_file is not a PEM public key of that algorithm")?;
                Some((
                    algorithm,
                    Verifier {
                        key,
                        validation: validation(algorithm, settings),
                    },
                ))
            }
            None => None,
        };
        let mut generated_secret = false;
        let secret: Option<Vec<u8>> = match &settings.jwt_secret {
            Some(secret) => Some(secret.expose().as_bytes().to_vec()),
            None if public.is_some() => None,
            None if environment == Environment::Production => anyhow::bail!(
                "no way to verify tokens: set HOTSWAP_AUTH__JWT_SECRET (at least {MIN_SECRET_BYTES} bytes) \
                 or auth.public_key_file for production"
            ),
            None => {
                let (bytes, generated) = keyfile::load_or_generate(data_dir, DEV_SECRET_FILE, 48)?;
                generated_secret = generated;
                Some(bytes)
            }
        };
        if let Some(secret) = &secret {
            anyhow::ensure!(
                secret.len() >= MIN_SECRET_BYTES,
                "the JWT secret must be at least {MIN_SECRET_BYTES} bytes"
            );
        }
        let derived_cluster_key = secret.as_ref().map(|secret| {
            use sha2::Digest as _;
            let mut hash = sha2::Sha256::new();
            hash.update(b"hotswap-cluster-messages\0");
            hash.update(secret);
            <[u8; 32]>::from(hash.finalize())
        });
        let hs256 = secret.map(|secret| {
            (
                Verifier {
                    key: DecodingKey::from_secret(&secret),
                    validation: validation(Algorithm::HS256, settings),
                },
                EncodingKey::from_secret(&secret),
            )
        });
        Ok(AuthSetup {
            authenticator: Authenticator {
                hs256,
                public,
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                verified: RwLock::new(HashMap::new()),
            },
            generated_secret,
            derived_cluster_key,
        })
    }

    /// Checks a bearer token and reads its principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some((principal, exp)) = read(&self.verified).get(token)
            && now < *exp
        {
            return Ok(principal.clone());
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let verifier = match (header.alg, &self.hs256, &self.public) {
            (Algorithm::HS256, Some((verifier, _)), _) => verifier,
            (alg, _, Some((expected, verifier))) if alg == *expected => verifier,
            (alg, _, _) => {
                return Err(AuthError::Invalid(format!(
                    "algorithm {alg:?} is not accepted"
                )));
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &verifier.key, &verifier.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let role = data.claims.role().ok_or_else(|| AuthError::Forbidden {
            have: "none".into(),
            need: Role::Viewer,
        })?;
        if data.claims.sub.is_empty()
            || data.claims.sub.len() > 256
            || data.claims.sub.contains('\0')
        {
            return Err(AuthError::Invalid("sub must be 1-256 characters".into()));
        }
        let attributes = match data.claims.attrs {
            Some(serde_json::Value::Object(attrs)) if role == Role::Player => {
                check_attributes(&attrs).map_err(AuthError::Invalid)?;
                (!attrs.is_empty()).then(|| std::sync::Arc::new(attrs))
            }
            Some(_) if role == Role::Player => {
                return Err(AuthError::Invalid(
                    "attrs: an object of player attributes".into(),
                ));
            }
            _ => None,
        };
        let principal = Principal {
            subject: data.claims.sub,
            role,
            attributes,
        };
        if token.len() <= VERIFIED_MAX_CHARS && now < data.claims.exp {
            let mut kept = write(&self.verified);
            if kept.len() >= VERIFIED_KEPT {
                kept.retain(|_, (_, exp)| now < *exp);
                if kept.len() > VERIFIED_KEPT / 4 * 3 {
                    kept.clear();
                }
            }
            kept.insert(token.into(), (principal.clone(), data.claims.exp));
        }
        Ok(principal)
    }

    /// Mints an HS256 token (needs the secret).
    pub fn mint(&self, subject: &str, role: Role, ttl: Duration) -> anyhow::Result<String> {
        self.mint_with(subject, role, ttl, None)
    }

    /// Mints an HS256 token vouching for player attributes (`attrs`).
    pub fn mint_with(
        &self,
        subject: &str,
        role: Role,
        ttl: Duration,
        attrs: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> anyhow::Result<String> {
        if let Some(attrs) = &attrs {
            anyhow::ensure!(role == Role::Player, "attrs are for player tokens");
            check_attributes(attrs).map_err(anyhow::Error::msg)?;
        }
        let (_, key) = self
            .hs256
            .as_ref()
            .context("minting tokens needs the HS256 secret (auth.jwt_secret)")?;
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: subject.to_owned(),
            exp: now + ttl.as_secs(),
            roles: Some(vec![role.as_str().to_owned()]),
            role: None,
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            attrs: attrs.map(serde_json::Value::Object),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            key,
        )?)
    }
}

/// Parses `90`, `90s`, `30m`, `8h`, `7d` or ISO 8601 (`PT8H`, `P1D`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration (examples: 3600, 30m, 8h, 7d, PT8H)");
    if let Some(iso) = text.strip_prefix('P') {
        let (days, time) = iso.split_once('T').unwrap_or((iso, ""));
        let mut seconds = 0u64;
        if !days.is_empty() {
            seconds += days
                .strip_suffix('D')
                .and_then(|d| d.parse::<u64>().ok())
                .ok_or_else(bad)?
                * 86_400;
        }
        let mut number = String::new();
        for c in time.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let value: u64 = number.parse().map_err(|_| bad())?;
            number.clear();
            seconds += value
                * match c {
                    'H' => 3600,
                    'M' => 60,
                    'S' => 1,
                    _ => return Err(bad()),
                };
        }
        if !number.is_empty() || (days.is_empty() && time.is_empty()) {
            return Err(bad());
        }
        return Ok(Duration::from_secs(seconds));
    }
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(value * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AuthSettings {
        AuthSettings {
            jwt_secret: Some(crate::settings::SecretString::new("s".repeat(40))),
            public_key_file: None,
            public_key_algorithm: None,
            issuer: None,
            audience: None,
            leeway_secs: 60,
        }
    }

    fn authenticator(settings: &AuthSettings) -> Authenticator {
        Authenticator::from_settings(settings, Environment::Production, Path::new("/nonexistent"))
            .unwrap()
            .authenticator
    }

    #[test]
    fn minted_tokens_verify_with_their_role() {
        let auth = authenticator(&settings());
        let token = auth
            .mint("alice", Role::Operator, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            auth.verify(&token).unwrap(),
            Principal {
                subject: "alice".into(),
                role: Role::Operator,
                attributes: None,
            }
        );
    }

    #[test]
    fn a_player_token_vouches_for_bounded_attributes() {
        let auth = authenticator(&settings());
        let attrs = serde_json::json!({"guild": "g-7", "tier": 3, "whale": true});
        let token = auth
            .mint_with(
                "p-1",
                Role::Player,
                Duration::from_secs(60),
                attrs.as_object().cloned(),
            )
            .unwrap();
        let principal = auth.verify(&token).unwrap();
        assert_eq!(principal.attributes.as_deref(), attrs.as_object());
        for bad in [
            serde_json::json!({"with space": 1}),
            serde_json::json!({"nested": {"a": 1}}),
            serde_json::json!({"long": "x".repeat(257)}),
            serde_json::json!(
                (0..17)
                    .map(|n| (n.to_string(), serde_json::json!(n)))
                    .collect::<serde_json::Map<_, _>>()
            ),
        ] {
            assert!(check_attributes(bad.as_object().unwrap()).is_err(), "{bad}");
            assert!(
                auth.mint_with(
                    "p-1",
                    Role::Player,
                    Duration::from_secs(60),
                    bad.as_object().cloned()
                )
                .is_err()
            );
        }
    }

    #[test]
    fn a_kept_token_still_expires_and_a_forged_one_is_never_kept() {
        let mut settings = settings();
        settings.leeway_secs = 0;
        let auth = authenticator(&settings);
        let token = auth
            .mint("alice", Role::Viewer, Duration::from_secs(1))
            .unwrap();
        // Verified twice: the second from what was kept.
        assert!(auth.verify(&token).is_ok());
        assert!(auth.verify(&token).is_ok());
        assert_eq!(read(&auth.verified).len(), 1);
        // A changed signature (a character in its middle, so not only
        // base64 padding bits) is checked in full, refused, and not kept.
        let signature_at = token.rfind('.').unwrap() + 10;
        let mut forged = token.clone().into_bytes();
        forged[signature_at] = if forged[signature_at] == b'A' {
            b'B'
        } else {
            b'A'
        };
        let forged = String::from_utf8(forged).unwrap();
        assert!(matches!(auth.verify(&forged), Err(AuthError::Invalid(_))));
        assert_eq!(read(&auth.verified).len(), 1);
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(auth.verify(&token), Err(AuthError::Expired));
    }

    #[test]
    fn the_highest_known_role_wins_and_unknown_roles_are_ignored() {
        let claims = Claims {
            sub: "x".into(),
            exp: 0,
            roles: Some(vec!["viewer".into(), "wizard".into(), "admin".into()]),
            role: Some("developer".into()),
            iat: None,
            iss: None,
            aud: None,
            attrs: None,
        };
        assert_eq!(claims.role(), Some(Role::Admin));
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let mut strict = settings();
        strict.issuer = Some("https://idp".into());
        strict.audience = Some("hotswap".into());
        let loose_token = authenticator(&settings())
            .mint("a", Role::Admin, Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            authenticator(&strict).verify(&loose_token),
            Err(AuthError::Invalid(_))
        ));
        let strict_auth = authenticator(&strict);
        let good = strict_auth
            .mint("a", Role::Admin, Duration::from_secs(60))
            .unwrap();
        assert!(strict_auth.verify(&good).is_ok());
    }

    #[test]
    fn production_without_a_key_is_a_startup_error() {
        let mut none = settings();
        none.jwt_secret = None;
        let error = Authenticator::from_settings(&none, Environment::Production, Path::new("/x"))
            .unwrap_err();
        assert!(
            error.to_string().contains("HOTSWAP_AUTH__JWT_SECRET"),
            "{error}"
        );
        let mut short = settings();
        short.jwt_secret = Some(crate::settings::SecretString::new("short"));
        assert!(
            Authenticator::from_settings(&short, Environment::Development, Path::new("/x"))
                .is_err()
        );
    }

    fn refusal(result: anyhow::Result<AuthSetup>) -> anyhow::Error {
        match result {
            Ok(_) => panic!("the settings were accepted"),
            Err(error) => error,
        }
    }

    #[test]
    fn an_identity_provider_in_production_needs_an_audience() {
        let dir = std::env::temp_dir().join(format!("hs-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Any PEM will do: the audience is checked before the key is read.
        let pem = dir.join("idp.pem");
        std::fs::write(&pem, "not read").unwrap();
        let mut idp = settings();
        idp.jwt_secret = None;
        idp.public_key_file = Some(pem);
        let error = refusal(Authenticator::from_settings(
            &idp,
            Environment::Production,
            &dir,
        ));
        assert!(error.to_string().contains("auth.audience"), "{error}");
        // With an audience, the key itself is read (and this one is no PEM).
        idp.audience = Some("hotswap".into());
        let error = refusal(Authenticator::from_settings(
            &idp,
            Environment::Production,
            &dir,
        ));
        assert!(!error.to_string().contains("auth.audience"), "{error}");
        // Outside production an audience stays optional.
        idp.audience = None;
        let error = refusal(Authenticator::from_settings(
            &idp,
            Environment::Staging,
            &dir,
        ));
        assert!(!error.to_string().contains("auth.audience"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn durations_parse_in_several_spellings() {
        for (text, secs) in [
            ("90", 90),
            ("90s", 90),
            ("30m", 1800),
            ("8h", 28_800),
            ("7d", 604_800),
            ("PT8H", 28_800),
            ("P1DT30M", 88_200),
            ("PT1H2M3S", 3723),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        for bad in ["", "h", "8x", "P", "PT", "PT8", "-1"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
