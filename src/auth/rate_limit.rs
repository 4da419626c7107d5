//! Token buckets per authenticated principal, per source address, and per
//! source address for game-server socket upgrades (`governor`, GCRA).
//! Exceeding one answers 429 with `Retry-After`.

use crate::settings::RateLimitSettings;
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::keyed::DefaultKeyedStateStore,
};
use std::{num::NonZeroU32, time::Duration};

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// Both limiters; shared by every worker.
pub struct RateLimits {
    principals: Keyed,
    addresses: Keyed,
    upgrades: Keyed,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    let per_minute = NonZeroU32::new(per_minute.max(1)).expect("max(1) is non-zero");
    let burst = NonZeroU32::new(burst.max(1)).expect("max(1) is non-zero");
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            principals: RateLimiter::keyed(quota(
                settings.principal_per_minute,
                settings.principal_burst,
            )),
            addresses: RateLimiter::keyed(quota(
                settings.address_per_minute,
                settings.address_burst,
            )),
            upgrades: RateLimiter::keyed(quota(
                settings.upgrade_per_minute,
                settings.upgrade_burst,
            )),
            clock: DefaultClock::default(),
        }
    }

    fn check(&self, limiter: &Keyed, key: &str) -> Result<(), Duration> {
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// `Err(wait)` when the principal has no token left.
    pub fn check_principal(&self, subject: &str) -> Result<(), Duration> {
        self.check(&self.principals, subject)
    }

    /// `Err(wait)` when the address has no token left.
    pub fn check_address(&self, address: &str) -> Result<(), Duration> {
        self.check(&self.addresses, address)
    }

    /// `Err(wait)` when the address may open no game-server socket now.
    pub fn check_upgrade(&self, address: &str) -> Result<(), Duration> {
        self.check(&self.upgrades, address)
    }

    /// Charges an address one more upgrade (a bad key costs two); it may
    /// go without one.
    pub fn charge_upgrade(&self, address: &str) {
        let _ = self.check(&self.upgrades, address);
    }

    /// Forgets buckets that are full again, so memory follows active callers.
    pub fn forget_idle(&self) {
        for limiter in [&self.principals, &self.addresses, &self.upgrades] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_trips_after_its_burst_and_keys_are_independent() {
        let limits = RateLimits::new(&RateLimitSettings {
            principal_per_minute: 60,
            principal_burst: 3,
            address_per_minute: 60,
            address_burst: 1,
            upgrade_per_minute: 60,
            upgrade_burst: 3,
        });
        for _ in 0..3 {
            assert!(limits.check_principal("alice").is_ok());
        }
        let wait = limits.check_principal("alice").unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limits.check_principal("bob").is_ok());
        assert!(limits.check_address("10.0.0.1").is_ok());
        assert!(limits.check_address("10.0.0.1").is_err());
        // A bad key's upgrade costs two: the third attempt finds none left.
        assert!(limits.check_upgrade("10.0.0.2").is_ok());
        limits.charge_upgrade("10.0.0.2");
        assert!(limits.check_upgrade("10.0.0.2").is_ok());
        assert!(limits.check_upgrade("10.0.0.2").is_err());
        assert!(limits.check_upgrade("10.0.0.3").is_ok(), "per address");
    }
}
