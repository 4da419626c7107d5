//! The region names metrics are folded under, bounded: a region is a free
//! string from each server's `hello`, and every distinct one would open a
//! window in every deployment and a row per minute in the aggregates. At
//! most [`MAX_REGIONS`] names are kept (the regions of the servers the
//! registry knows, refreshed by the janitor); servers of any other region
//! report under [`OTHER`].

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

/// Distinct regions metrics are kept apart for.
pub const MAX_REGIONS: usize = 256;
/// Where the metrics of regions past the cap go.
pub const OTHER: &str = "(other)";

#[derive(Debug)]
pub(super) struct RegionNames {
    names: RwLock<HashSet<Arc<str>>>,
    other: Arc<str>,
}

impl Default for RegionNames {
    fn default() -> Self {
        Self {
            names: RwLock::new(HashSet::new()),
            other: Arc::from(OTHER),
        }
    }
}

impl RegionNames {
    /// The shared name for `region`, learning it while there is room.
    pub fn name(&self, region: &str) -> Arc<str> {
        if let Some(name) = self
            .names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(region)
        {
            return name.clone();
        }
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = names.get(region) {
            return name.clone();
        }
        if names.len() >= MAX_REGIONS {
            return self.other.clone();
        }
        let name: Arc<str> = Arc::from(region);
        names.insert(name.clone());
        name
    }

    /// Keeps only the names in `current` (the regions of known servers),
    /// so regions no server reports any more free their place.
    pub fn retain(&self, current: &HashSet<String>) {
        self.names
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name| current.contains(&**name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_past_the_cap_report_as_other_until_places_free_up() {
        let regions = RegionNames::default();
        for i in 0..MAX_REGIONS {
            assert_eq!(&*regions.name(&format!("R{i}")), format!("R{i}"));
        }
        assert!(
            Arc::ptr_eq(&regions.name("R7"), &regions.name("R7")),
            "shared"
        );
        assert_eq!(&*regions.name("EU-WEST"), OTHER);
        let kept: HashSet<String> = ["R1".to_owned()].into();
        regions.retain(&kept);
        assert_eq!(&*regions.name("EU-WEST"), "EU-WEST");
    }
}
