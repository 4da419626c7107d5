//! Key material in use: the Ed25519 key that signs config versions and the
//! AES-256-GCM keyring that encrypts secret config fields at rest.
//!
//! # Layout
//! - `signing.rs`: [`signing::Signer`].
//! - `keyring.rs`: [`keyring::Keyring`] and the ciphertext envelope.

pub mod keyring;
pub mod signing;

use crate::{auth::keyfile, domain::kinds::Environment, settings::Settings};
use anyhow::Context;

/// Everything the catalog needs to sign and to protect secrets.
#[derive(Debug)]
pub struct KeyMaterial {
    pub signer: signing::Signer,
    pub keyring: keyring::Keyring,
}

impl KeyMaterial {
    /// From settings; in development, missing keys are generated (or
    /// reused) under `data_dir`. In production the signing key is required,
    /// and a missing secrets key only refuses versions with secret fields.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let production = settings.environment == Environment::Production;
        let signing_seed = match (&settings.signing.key, &settings.signing.key_file) {
            (Some(key), _) => keyfile::decode_key(key.expose(), 32, "signing.key")?,
            (None, Some(path)) => keyfile::read_key_file(path, 32, "signing.key_file")?,
            (None, None) if production => anyhow::bail!(
                "no signing key: set HOTSWAP_SIGNING__KEY (base64 of 32 random bytes) or signing.key_file for production"
            ),
            (None, None) => keyfile::load_or_generate(&settings.data_dir, "signing.key", 32)?.0,
        };
        let current = match (&settings.secrets.key, &settings.secrets.key_file) {
            (Some(key), _) => Some(keyfile::decode_key(key.expose(), 32, "secrets.key")?),
            (None, Some(path)) => Some(keyfile::read_key_file(path, 32, "secrets.key_file")?),
            (None, None) if production => None,
            (None, None) => {
                Some(keyfile::load_or_generate(&settings.data_dir, "secrets.key", 32)?.0)
            }
        };
        let previous = settings
            .secrets
            .previous_keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                keyfile::decode_key(key.expose(), 32, &format!("secrets.previous_keys[{i}]"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            signer: signing::Signer::from_seed(
                signing_seed
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("seed length"))?,
            ),
            keyring: keyring::Keyring::new(current.as_deref(), &previous)
                .context("building the secrets keyring")?,
        })
    }
}
