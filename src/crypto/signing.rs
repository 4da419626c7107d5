//! Signing config versions (Ed25519). The message format and verification
//! are in `hotswap_client::signature`, shared with the SDK.

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest, Sha256};

pub struct Signer {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let key_id = hex::encode(&Sha256::digest(key.verifying_key().as_bytes())[..8]);
        Self { key, key_id }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, base64.
    pub fn public_key(&self) -> String {
        STANDARD.encode(self.key.verifying_key().as_bytes())
    }

    /// The base64 signature of one version.
    pub fn sign(&self, config: &str, revision: i64, checksum: &str) -> String {
        let message = hotswap_client::signature::signed_message(config, revision, checksum);
        STANDARD.encode(self.key.sign(&message).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_with_the_published_key() {
        let signer = Signer::from_seed([9u8; 32]);
        let signature = signer.sign("weapons", 2, "abc");
        assert!(
            hotswap_client::signature::verify(
                &signer.public_key(),
                "weapons",
                2,
                "abc",
                &signature
            )
            .is_ok()
        );
        assert_eq!(signer.key_id().len(), 16);
    }
}
