//! Game-server API keys: `hsk_` + 32 random bytes (base64url). Only the
//! SHA-256 of a key is stored: it is a 256-bit random secret, so a fast hash
//! is as safe as a slow one, and a reconnect storm of 10,000 servers costs
//! microseconds, not minutes, of CPU.

use super::keyfile::random_bytes;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "hsk_";

/// A new key: the secret (shown once) and what is stored of it.
#[derive(Debug)]
pub struct NewKey {
    pub secret: String,
    pub hash: String,
    /// The first characters, shown in listings to tell keys apart.
    pub hint: String,
}

pub fn generate() -> NewKey {
    let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
    NewKey {
        hash: hash(&secret),
        hint: secret[..PREFIX.len() + 6].to_owned(),
        secret,
    }
}

/// Lowercase hex SHA-256 of a presented key.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether a presented string has the shape of a key (cheap check before any lookup).
pub fn looks_like_key(candidate: &str) -> bool {
    candidate.len() == PREFIX.len() + 43
        && candidate.starts_with(PREFIX)
        && candidate[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_unique_well_formed_and_hash_stably() {
        let (a, b) = (generate(), generate());
        assert_ne!(a.secret, b.secret);
        assert!(looks_like_key(&a.secret), "{}", a.secret);
        assert_eq!(hash(&a.secret), a.hash);
        assert!(a.secret.starts_with(&a.hint));
        assert!(!looks_like_key("hsk_short"));
        assert!(!looks_like_key(&format!("xyz_{}", &a.secret[4..])));
    }
}
