//! Key material read from settings, from a file, or generated under
//! `data_dir` in development (kept across restarts, readable by the owner only).

use anyhow::Context;
use base64::{Engine, engine::general_purpose::STANDARD};
use std::{fs, io::Write, path::Path};

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS random source failing is not something the hub can work around.
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    bytes
}

/// Decodes base64 (standard or URL-safe, padding optional) and checks the length.
pub fn decode_key(text: &str, expected_len: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let text = text.trim();
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
        })
        .with_context(|| format!("{what} is not base64"))?;
    anyhow::ensure!(
        bytes.len() == expected_len,
        "{what} must decode to {expected_len} bytes (got {})",
        bytes.len()
    );
    Ok(bytes)
}

/// Reads a base64 key file.
pub fn read_key_file(path: &Path, expected_len: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading {what} from {}", path.display()))?;
    decode_key(&text, expected_len, what)
}

/// Reads `data_dir/name`, or creates it with `len` random bytes (base64,
/// mode 0600). Returns the bytes and whether they were just generated.
pub fn load_or_generate(
    data_dir: &Path,
    name: &str,
    len: usize,
) -> anyhow::Result<(Vec<u8>, bool)> {
    let path = data_dir.join(name);
    if path.exists() {
        return Ok((read_key_file(&path, len, name)?, false));
    }
    fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random bytes: {e}"))?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(STANDARD.encode(&bytes).as_bytes())?;
            file.sync_all()?;
            Ok((bytes, true))
        }
        // Another process created it first: use theirs.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok((read_key_file(&path, len, name)?, false))
        }
        Err(error) => Err(error).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_kept_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (first, generated) = load_or_generate(dir.path(), "k", 32).unwrap();
        assert!(generated);
        let (second, generated) = load_or_generate(dir.path(), "k", 32).unwrap();
        assert!(!generated);
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("k"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn keys_of_the_wrong_length_are_refused() {
        assert!(decode_key(&STANDARD.encode([1u8; 16]), 32, "key").is_err());
        assert!(decode_key("not base64 !!", 32, "key").is_err());
        assert_eq!(
            decode_key(&STANDARD.encode([7u8; 32]), 32, "key").unwrap(),
            vec![7u8; 32]
        );
    }
}
