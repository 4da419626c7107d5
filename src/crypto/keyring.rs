//! AES-256-GCM encryption of secret config values.
//!
//! A secret value (any JSON) is stored as the string
//! `$hsenc:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`, with a fresh
//! random 96-bit nonce per value and the value's JSON Pointer as associated
//! data (a ciphertext moved to another field does not decrypt). The key id is
//! derived from the key, so rotation can tell which key sealed a value.

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, KeyInit, Payload},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Every envelope starts with this; documents may not contain it otherwise.
pub const ENVELOPE_PREFIX: &str = "$hsenc:";
const VERSION: &str = "v1";
pub use crate::domain::secrets::MASK;

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("no secrets key is configured (set HOTSWAP_SECRETS__KEY or secrets.key_file)")]
    NoKey,
    #[error("the value at {path} was sealed with key {key_id}, which is not configured")]
    UnknownKey { path: String, key_id: String },
    #[error("the value at {path} is not a valid secret envelope or was altered")]
    Corrupt { path: String },
}

struct SealingKey {
    id: String,
    cipher: Aes256Gcm,
}

impl SealingKey {
    fn new(bytes: &[u8]) -> anyhow::Result<Self> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("a secrets key is 32 bytes"))?;
        let id = hex::encode(
            &Sha256::digest([b"hotswap-secrets-key:".as_slice(), &array].concat())[..8],
        );
        Ok(Self {
            id,
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(array)),
        })
    }
}

/// The current key (seals and opens) and previous keys (open only).
pub struct Keyring {
    current: Option<SealingKey>,
    previous: Vec<SealingKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    pub fn new(current: Option<&[u8]>, previous: &[Vec<u8>]) -> anyhow::Result<Self> {
        Ok(Self {
            current: current.map(SealingKey::new).transpose()?,
            previous: previous
                .iter()
                .map(|k| SealingKey::new(k))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    pub fn current_key_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    fn key(&self, id: &str) -> Option<&SealingKey> {
        self.current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id == id)
    }

    /// Seals one value found at `path`.
    pub fn seal(&self, path: &str, value: &Value) -> Result<String, KeyringError> {
        let key = self.current.as_ref().ok_or(KeyringError::NoKey)?;
        let nonce_bytes: [u8; 12] = crate::auth::keyfile::random_bytes();
        let plaintext = serde_json::to_vec(value).expect("a JSON value serializes");
        let sealed = key
            .cipher
            .encrypt(
                &Nonce::from(nonce_bytes),
                Payload {
                    msg: &plaintext,
                    aad: path.as_bytes(),
                },
            )
            .map_err(|_| KeyringError::Corrupt {
                path: path.to_owned(),
            })?;
        let mut blob = nonce_bytes.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(format!(
            "{ENVELOPE_PREFIX}{VERSION}:{}:{}",
            key.id,
            URL_SAFE_NO_PAD.encode(blob)
        ))
    }

    /// Opens an envelope found at `path`; returns the value and the key id that sealed it.
    pub fn open(&self, path: &str, envelope: &str) -> Result<(Value, String), KeyringError> {
        let corrupt = || KeyringError::Corrupt {
            path: path.to_owned(),
        };
        let rest = envelope.strip_prefix(ENVELOPE_PREFIX).ok_or_else(corrupt)?;
        let mut parts = rest.splitn(3, ':');
        let (Some(VERSION), Some(key_id), Some(blob)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt());
        };
        let key = self.key(key_id).ok_or_else(|| KeyringError::UnknownKey {
            path: path.to_owned(),
            key_id: key_id.to_owned(),
        })?;
        let blob = URL_SAFE_NO_PAD.decode(blob).map_err(|_| corrupt())?;
        if blob.len() < 12 + 16 {
            return Err(corrupt());
        }
        let (nonce, sealed) = blob.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| corrupt())?;
        let plaintext = key
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: path.as_bytes(),
                },
            )
            .map_err(|_| corrupt())?;
        Ok((
            serde_json::from_slice(&plaintext).map_err(|_| corrupt())?,
            key_id.to_owned(),
        ))
    }

    /// Seals the values at `paths` in place.
    pub fn seal_paths(&self, document: &mut Value, paths: &[String]) -> Result<(), KeyringError> {
        for path in paths {
            if let Some(slot) = document.pointer_mut(path) {
                *slot = Value::String(self.seal(path, slot)?);
            }
        }
        Ok(())
    }

    /// Opens every envelope in place; returns the key ids that had sealed them.
    pub fn open_all(&self, document: &mut Value) -> Result<Vec<String>, KeyringError> {
        let mut key_ids = Vec::new();
        for path in envelope_paths(document) {
            let slot = document
                .pointer_mut(&path)
                .expect("the path was just found");
            let envelope = slot.as_str().expect("envelopes are strings").to_owned();
            let (value, key_id) = self.open(&path, &envelope)?;
            *slot = value;
            key_ids.push(key_id);
        }
        Ok(key_ids)
    }
}

fn is_envelope(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.starts_with(ENVELOPE_PREFIX))
}

/// JSON Pointers of every envelope (or envelope-looking string) in a document.
pub fn envelope_paths(document: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), document)];
    while let Some((path, value)) = stack.pop() {
        match value {
            Value::Object(map) => stack.extend(
                map.iter()
                    .map(|(k, v)| (crate::domain::document::pointer_push(&path, k), v)),
            ),
            Value::Array(items) => stack.extend(items.iter().enumerate().map(|(i, v)| {
                (
                    crate::domain::document::pointer_push(&path, &i.to_string()),
                    v,
                )
            })),
            other if is_envelope(other) => out.push(path),
            _ => {}
        }
    }
    out.sort();
    out
}

/// Replaces every envelope with [`MASK`].
pub fn mask(document: &mut Value) {
    for path in envelope_paths(document) {
        if let Some(slot) = document.pointer_mut(&path) {
            *slot = Value::String(MASK.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keyring(current: u8, previous: &[u8]) -> Keyring {
        let previous: Vec<Vec<u8>> = previous.iter().map(|b| vec![*b; 32]).collect();
        Keyring::new(Some(&[current; 32]), &previous).unwrap()
    }

    #[test]
    fn sealed_values_round_trip_with_fresh_nonces() {
        let ring = keyring(1, &[]);
        let a = ring.seal("/db/password", &json!("hunter2")).unwrap();
        let b = ring.seal("/db/password", &json!("hunter2")).unwrap();
        assert_ne!(a, b, "a fresh nonce per value");
        assert!(!a.contains("hunter2"));
        assert_eq!(ring.open("/db/password", &a).unwrap().0, json!("hunter2"));
    }

    #[test]
    fn a_moved_or_altered_ciphertext_does_not_open() {
        let ring = keyring(1, &[]);
        let sealed = ring.seal("/a", &json!({"n": 1})).unwrap();
        assert!(matches!(
            ring.open("/b", &sealed),
            Err(KeyringError::Corrupt { .. })
        ));
        let mut altered = sealed.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(matches!(
            ring.open("/a", &altered),
            Err(KeyringError::Corrupt { .. })
        ));
    }

    #[test]
    fn previous_keys_open_but_do_not_seal() {
        let old = keyring(1, &[]);
        let sealed = old.seal("/k", &json!(42)).unwrap();
        let rotated = keyring(2, &[1]);
        let (value, key_id) = rotated.open("/k", &sealed).unwrap();
        assert_eq!(value, json!(42));
        assert_eq!(key_id, old.current_key_id().unwrap());
        assert_ne!(rotated.current_key_id(), old.current_key_id());
        let unknown = keyring(3, &[]);
        assert!(matches!(
            unknown.open("/k", &sealed),
            Err(KeyringError::UnknownKey { .. })
        ));
        let none = Keyring::new(None, &[]).unwrap();
        assert_eq!(none.seal("/k", &json!(1)), Err(KeyringError::NoKey));
    }

    #[test]
    fn documents_are_sealed_opened_and_masked_by_path() {
        let ring = keyring(1, &[]);
        let plain = json!({"db": {"password": "hunter2", "host": "h"}, "list": [{"token": 7}]});
        let mut doc = plain.clone();
        ring.seal_paths(&mut doc, &["/db/password".into(), "/list/0/token".into()])
            .unwrap();
        assert_eq!(envelope_paths(&doc), vec!["/db/password", "/list/0/token"]);
        let mut masked = doc.clone();
        mask(&mut masked);
        assert_eq!(
            masked,
            json!({"db": {"password": "***", "host": "h"}, "list": [{"token": "***"}]})
        );
        ring.open_all(&mut doc).unwrap();
        assert_eq!(doc, plain);
    }
}
