//! Signed configs: the hub signs each version with Ed25519 over its identity
//! and checksum, and serves its public key at `GET /api/v1/signing-key`. A
//! game server verifies before it applies a document, so a document altered
//! on the way (or by anyone without the hub's key) is refused.

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

/// The bytes signed for one version: a domain tag, the config name, the
/// revision and the checksum, newline-separated.
pub fn signed_message(config: &str, revision: i64, checksum: &str) -> Vec<u8> {
    format!("hotswap-config-v1\n{config}\n{revision}\n{checksum}").into_bytes()
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    BadPublicKey,
    BadSignature,
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignatureError::BadPublicKey => "the public key is not a base64 Ed25519 key",
            SignatureError::BadSignature => "the signature is not a base64 Ed25519 signature",
            SignatureError::Mismatch => "the signature does not match this document",
        })
    }
}

impl std::error::Error for SignatureError {}

/// Verifies a version's base64 signature with the hub's base64 public key.
pub fn verify(
    public_key: &str,
    config: &str,
    revision: i64,
    checksum: &str,
    signature: &str,
) -> Result<(), SignatureError> {
    let key_bytes: [u8; 32] = STANDARD
        .decode(public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureError::BadPublicKey)?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| SignatureError::BadPublicKey)?;
    let signature_bytes: [u8; 64] = STANDARD
        .decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureError::BadSignature)?;
    key.verify(
        &signed_message(config, revision, checksum),
        &Signature::from_bytes(&signature_bytes),
    )
    .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn a_signature_verifies_only_for_its_own_identity_and_checksum() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let public = STANDARD.encode(key.verifying_key().to_bytes());
        let signature = STANDARD.encode(key.sign(&signed_message("weapons", 3, "abc")).to_bytes());
        assert_eq!(verify(&public, "weapons", 3, "abc", &signature), Ok(()));
        assert_eq!(
            verify(&public, "weapons", 4, "abc", &signature),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&public, "economy", 3, "abc", &signature),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&public, "weapons", 3, "abd", &signature),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("nope", "weapons", 3, "abc", &signature),
            Err(SignatureError::BadPublicKey)
        );
        assert_eq!(
            verify(&public, "weapons", 3, "abc", "AAAA"),
            Err(SignatureError::BadSignature)
        );
    }
}
