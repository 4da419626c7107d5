//! The dashboard's files, embedded at build time from `assets/dashboard/`.

use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// The page once signed in.
pub const INDEX_PAGE: &str = include_str!("../../assets/dashboard/index.html");
/// The sign-in page (`<!--notice-->` becomes why a token was refused).
pub const SIGN_IN_PAGE: &str = include_str!("../../assets/dashboard/sign-in.html");

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    etag: OnceLock<String>,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, bytes: &'static [u8]) -> Self {
        Asset {
            name,
            content_type,
            bytes,
            etag: OnceLock::new(),
        }
    }

    /// A strong ETag: the first 16 bytes of the file's SHA-256, in hex.
    pub fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            let digest = Sha256::digest(self.bytes);
            format!("\"{}\"", hex::encode(&digest[..16]))
        })
    }
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: [Asset; 7] = [
    Asset::new(
        "app.js",
        JS,
        include_bytes!("../../assets/dashboard/app.js"),
    ),
    Asset::new(
        "views.js",
        JS,
        include_bytes!("../../assets/dashboard/views.js"),
    ),
    Asset::new(
        "dom.js",
        JS,
        include_bytes!("../../assets/dashboard/dom.js"),
    ),
    Asset::new(
        "charts.js",
        JS,
        include_bytes!("../../assets/dashboard/charts.js"),
    ),
    Asset::new(
        "style.css",
        CSS,
        include_bytes!("../../assets/dashboard/style.css"),
    ),
    Asset::new(
        "uPlot.iife.min.js",
        JS,
        include_bytes!("../../assets/dashboard/vendor/uPlot.iife.min.js"),
    ),
    Asset::new(
        "uPlot.min.css",
        CSS,
        include_bytes!("../../assets/dashboard/vendor/uPlot.min.css"),
    ),
];

/// The embedded file named `name`, if any.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_pages_name_is_embedded() {
        for page in [INDEX_PAGE, SIGN_IN_PAGE] {
            for piece in page.split("/dashboard/assets/").skip(1) {
                let name: String = piece
                    .chars()
                    .take_while(|c| !matches!(c, '"' | '\''))
                    .collect();
                assert!(find(&name).is_some(), "{name} is not embedded");
            }
        }
        // Modules import each other by relative name.
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for piece in text.split("from './").skip(1) {
                let name: String = piece.chars().take_while(|c| *c != '\'').collect();
                assert!(find(&name).is_some(), "{} imports {name}", asset.name);
            }
        }
        assert!(find("../Cargo.toml").is_none());
        assert_ne!(
            find("app.js").unwrap().etag(),
            find("dom.js").unwrap().etag()
        );
    }
}
