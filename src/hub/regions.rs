//! The region names metrics are folded under, bounded: a region is a free
//! string from each server's `hello`, and every distinct one would open a
//! window in every deployment and a row per minute in the aggregates. At
//! most [`MAX_REGIONS`] names are kept, at most [`MAX_REGIONS_PER_KEY`]
//! brought by any one API key (so one key cannot take every place and
//! leave other keys' servers counted under [`OTHER`]); the set follows the
//! regions of the servers the registry knows (refreshed by the janitor).
//! Servers of any other region report under [`OTHER`].

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

/// Distinct regions metrics are kept apart for.
pub const MAX_REGIONS: usize = 256;
/// Distinct regions one API key's servers may bring.
pub const MAX_REGIONS_PER_KEY: usize = 32;
/// Where the metrics of regions past the caps go.
pub const OTHER: &str = "(other)";

#[derive(Debug, Default)]
struct Names {
    /// Region → the key whose server brought it.
    names: HashMap<Arc<str>, Arc<str>, ahash::RandomState>,
    per_key: HashMap<Arc<str>, usize>,
}

#[derive(Debug)]
pub(super) struct RegionNames {
    inner: RwLock<Names>,
    other: Arc<str>,
}

impl Default for RegionNames {
    fn default() -> Self {
        Self {
            inner: RwLock::new(Names::default()),
            other: Arc::from(OTHER),
        }
    }
}

impl RegionNames {
    /// The shared name for `region` (of a server of `key_id`), learning it
    /// while there is room.
    pub fn name(&self, region: &str, key_id: &str) -> Arc<str> {
        if let Some((name, _)) = hotswap_client::sync::read(&self.inner)
            .names
            .get_key_value(region)
        {
            return name.clone();
        }
        let mut inner = hotswap_client::sync::write(&self.inner);
        if let Some((name, _)) = inner.names.get_key_value(region) {
            return name.clone();
        }
        let brought = inner.per_key.get(key_id).copied().unwrap_or(0);
        if inner.names.len() >= MAX_REGIONS || brought >= MAX_REGIONS_PER_KEY {
            return self.other.clone();
        }
        let (name, key): (Arc<str>, Arc<str>) = (Arc::from(region), Arc::from(key_id));
        inner.names.insert(name.clone(), key.clone());
        *inner.per_key.entry(key).or_default() += 1;
        name
    }

    /// Keeps only the names in `current` (the regions of known servers),
    /// so regions no server reports any more free their place.
    pub fn retain(&self, current: &HashSet<String>) {
        let mut inner = hotswap_client::sync::write(&self.inner);
        inner.names.retain(|name, _| current.contains(&**name));
        let mut per_key: HashMap<Arc<str>, usize> = HashMap::new();
        for key in inner.names.values() {
            *per_key.entry(key.clone()).or_default() += 1;
        }
        inner.per_key = per_key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_past_the_caps_report_as_other_until_places_free_up() {
        let regions = RegionNames::default();
        // One key takes at most its share.
        for i in 0..MAX_REGIONS_PER_KEY {
            assert_eq!(&*regions.name(&format!("R{i}"), "greedy"), format!("R{i}"));
        }
        assert_eq!(&*regions.name("R999", "greedy"), OTHER);
        assert_eq!(
            &*regions.name("EU-WEST", "fleet"),
            "EU-WEST",
            "others still get theirs"
        );
        assert!(
            Arc::ptr_eq(&regions.name("R7", "x"), &regions.name("R7", "y")),
            "shared"
        );
        // Many keys together still stop at the total.
        for i in 0..MAX_REGIONS {
            regions.name(&format!("K{i}"), &format!("key-{}", i % 16));
        }
        assert_eq!(&*regions.name("NA-WEST", "fleet"), OTHER);
        let kept: HashSet<String> = ["R1".to_owned(), "EU-WEST".to_owned()].into();
        regions.retain(&kept);
        assert_eq!(&*regions.name("NA-WEST", "fleet"), "NA-WEST");
        assert_eq!(
            &*regions.name("R500", "greedy"),
            "R500",
            "its places freed too"
        );
    }
}
