//! The content manifest a client reads at launch: the content version live
//! for its platform, the hash to verify the download with, and whether its
//! build is too old to play (semantic-version precedence: a prerelease
//! comes before its release, build metadata does not count).
//!
//! The manifest is a `ContentManifest` config (built-in schema
//! `content-manifest`), so it is versioned, deployed progressively and
//! rolled back like any config: flipping `activeVersion` back is a
//! rollback.

use semver::{BuildMetadata, Version};
use serde_json::Value;

/// Longest version text read.
pub const MAX_VERSION_CHARS: usize = 64;
/// Longest platform name.
pub const MAX_PLATFORM_CHARS: usize = 32;

/// A manifest as one platform sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformManifest {
    pub active_version: Version,
    pub content_hash: String,
    pub min_supported_client_version: Version,
}

/// A version as a client or a manifest writes it (strict semver).
pub fn parse_version(text: &str) -> Result<Version, String> {
    if text.is_empty() || text.chars().count() > MAX_VERSION_CHARS {
        return Err(format!(
            "a semantic version (1.4.2, 2.0.0-beta.1) of at most {MAX_VERSION_CHARS} characters"
        ));
    }
    Version::parse(text)
        .map_err(|e| format!("{text:?} is not a semantic version (1.4.2, 2.0.0-beta.1): {e}"))
}

/// A platform name: lowercase letters, digits, `-` and `_`.
pub fn parse_platform(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= MAX_PLATFORM_CHARS
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "1 to {MAX_PLATFORM_CHARS} lowercase letters, digits, '-' or '_' (ios, android, pc)"
        ))
    }
}

/// The manifest for `platform`: the document's top-level fields, each
/// replaced by the platform's entry under `platforms` where it has one.
pub fn for_platform(document: &Value, platform: Option<&str>) -> Result<PlatformManifest, String> {
    let overrides = platform.and_then(|p| document.get("platforms")?.get(p));
    let field = |name: &str| -> Result<&str, String> {
        overrides
            .and_then(|o| o.get(name))
            .or_else(|| document.get(name))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the manifest has no {name}: is the config a ContentManifest?"))
    };
    Ok(PlatformManifest {
        active_version: parse_version(field("activeVersion")?)?,
        content_hash: field("contentHash")?.to_owned(),
        min_supported_client_version: parse_version(field("minSupportedClientVersion")?)?,
    })
}

/// Whether a client of `client` must update: it comes before the minimum
/// in semver precedence (`1.4.0-rc.1` before `1.4.0`), build metadata
/// ignored (`1.4.0+build.7` is `1.4.0`).
pub fn update_required(client: &Version, minimum: &Version) -> bool {
    let strip = |v: &Version| Version {
        build: BuildMetadata::EMPTY,
        ..v.clone()
    };
    strip(client) < strip(minimum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(text: &str) -> Version {
        parse_version(text).unwrap()
    }

    #[test]
    fn old_clients_and_prereleases_of_the_minimum_must_update() {
        let minimum = v("1.4.0");
        for (client, required) in [
            ("1.3.9", true),
            ("0.9.0", true),
            ("1.4.0-rc.1", true),
            ("1.4.0-alpha", true),
            ("1.4.0", false),
            ("1.4.0+build.7", false),
            ("1.4.1-beta", false),
            ("1.10.0", false),
            ("2.0.0", false),
        ] {
            assert_eq!(update_required(&v(client), &minimum), required, "{client}");
        }
        // Prerelease precedence: numeric identifiers compare as numbers,
        // and fewer identifiers come first.
        let minimum = v("2.0.0-beta.11");
        assert!(update_required(&v("2.0.0-beta.2"), &minimum));
        assert!(update_required(&v("2.0.0-beta"), &minimum));
        assert!(!update_required(&v("2.0.0-rc.1"), &minimum));
        assert!(!update_required(&v("2.0.0"), &minimum));
    }

    #[test]
    fn versions_and_platforms_are_read_strictly() {
        for bad in [
            "",
            "1.4",
            "v1.4.0",
            "1.04.0",
            "1.4.0-",
            "banana",
            &"9".repeat(70),
        ] {
            assert!(parse_version(bad).is_err(), "{bad:?}");
        }
        assert!(parse_platform("ios").is_ok());
        for bad in ["", "iOS", "p c", &"a".repeat(33)] {
            assert!(parse_platform(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_platform_entry_replaces_the_fields_it_names() {
        let hash = format!("sha256:{}", "a".repeat(64));
        let ios_hash = format!("sha256:{}", "b".repeat(64));
        let document = json!({
            "activeVersion": "2.3.0",
            "contentHash": hash,
            "minSupportedClientVersion": "1.4.0",
            "platforms": {"ios": {"activeVersion": "2.2.0", "contentHash": ios_hash}}
        });
        let pc = for_platform(&document, Some("pc")).unwrap();
        assert_eq!(pc.active_version, v("2.3.0"));
        assert_eq!(pc.content_hash, hash);
        let ios = for_platform(&document, Some("ios")).unwrap();
        assert_eq!(ios.active_version, v("2.2.0"));
        assert_eq!(ios.content_hash, ios_hash);
        assert_eq!(ios.min_supported_client_version, v("1.4.0"));
        assert_eq!(for_platform(&document, None).unwrap(), pc);
        assert!(for_platform(&json!({"weapons": {}}), None).is_err());
    }
}
