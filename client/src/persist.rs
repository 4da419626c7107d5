//! The client's last good configs on disk: read back at start (each one
//! checked again, as if it came from the network) and written after every
//! change, atomically and readable by the owner only (secret values are in
//! clear).

use crate::{
    checksum::document_checksum,
    client::{AppliedConfig, ClientConfig, ClientError},
    signature,
};
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};
use tokio::task::JoinHandle;

/// The configs of the persist file that may be served. A file that cannot
/// be read is an error; one that cannot be parsed is ignored with a
/// warning (a damaged file must not keep the server from starting: the hub
/// resends), and a config that fails its checksum, or its signature when
/// the client verifies them, is dropped.
pub(crate) fn load(
    config: &ClientConfig,
) -> Result<HashMap<String, Arc<AppliedConfig>>, ClientError> {
    let Some(path) = config.persist_path.as_ref().filter(|path| path.exists()) else {
        return Ok(HashMap::new());
    };
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Persisted(e.to_string()))?;
    match serde_json::from_str::<Vec<AppliedConfig>>(&text) {
        Ok(list) => Ok(list
            .into_iter()
            .filter(|c| trusted_on_disk(config, c))
            .map(|c| (c.config.clone(), Arc::new(c)))
            .collect()),
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "ignoring unreadable persisted configs");
            Ok(HashMap::new())
        }
    }
}

/// Whether a config read back from the persist file may be served: its
/// checksum holds and, when the client verifies signatures, its signature
/// does (a file edited on disk is not trusted more than the network).
fn trusted_on_disk(config: &ClientConfig, applied: &AppliedConfig) -> bool {
    if document_checksum(&applied.document) != applied.checksum {
        tracing::warn!(config = %applied.config, "a persisted config fails its checksum; dropped");
        return false;
    }
    let Some(key) = &config.signing_key else {
        return true;
    };
    let verified = applied.signature.as_deref().is_some_and(|sig| {
        signature::verify(
            key,
            &applied.config,
            applied.revision,
            &applied.checksum,
            sig,
        )
        .is_ok()
    });
    if !verified {
        tracing::warn!(config = %applied.config, "a persisted config fails its signature; dropped");
    }
    verified
}

/// Writes snapshots of the configs to the persist file, when there is one.
/// Writes are numbered and serialized, so an older snapshot never lands
/// after a newer one.
pub(crate) struct Writer {
    path: Option<PathBuf>,
    sequence: AtomicU64,
    written: Arc<Mutex<u64>>,
}

impl Writer {
    pub(crate) fn new(path: Option<PathBuf>) -> Writer {
        Writer {
            path,
            sequence: AtomicU64::new(0),
            written: Arc::new(Mutex::new(0)),
        }
    }

    /// Writes `configs` in the background: a temp file (mode 0600), fsync,
    /// rename. Returns the write's task (when there is a file).
    pub(crate) fn write(
        &self,
        configs: &HashMap<String, Arc<AppliedConfig>>,
    ) -> Option<JoinHandle<()>> {
        let path = self.path.clone()?;
        let list: Vec<&AppliedConfig> = configs.values().map(|c| c.as_ref()).collect();
        let text = serde_json::to_vec(&list).ok()?;
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let written = self.written.clone();
        Some(tokio::task::spawn_blocking(move || {
            let mut written = crate::sync::lock(&written);
            if *written >= sequence {
                return;
            }
            let temp = path.with_extension(format!("tmp{sequence}"));
            let result = (|| {
                use std::io::Write;
                // A temp file left by a crash is replaced.
                let _ = std::fs::remove_file(&temp);
                let mut file = create_private(&temp)?;
                file.write_all(&text)?;
                file.sync_all()?;
                std::fs::rename(&temp, &path)
            })();
            match result {
                Ok(()) => *written = sequence,
                Err(error) => {
                    let _ = std::fs::remove_file(&temp);
                    tracing::warn!(%error, path = %path.display(), "could not persist configs");
                }
            }
        }))
    }
}

/// Opens a new persist file readable by its owner only (it holds secret
/// values in clear).
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}
