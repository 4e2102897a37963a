//! Rate limits on every route (token buckets from `governor`):
//! pairing and enrollment per source IP, each device key, each organization
//! API key, and everything else (no or bad credential) per source IP.

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::keyed::DefaultKeyedStateStore,
};
use std::{hash::Hash, net::IpAddr, num::NonZeroU32, time::Duration};
use uuid::Uuid;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// Rate limit settings; 0 as a rate turns that limit off.
#[derive(clap::Args, Clone, Debug)]
pub struct RateLimitConfig {
    /// `pair` and `enroll` requests per minute per source IP.
    #[arg(long, env = "SWRM_PAIR_RATE_PER_MINUTE", default_value_t = 10)]
    pub pair_rate_per_minute: u32,
    /// Pairing requests allowed at once before the rate applies.
    #[arg(long, env = "SWRM_PAIR_BURST", default_value_t = 10)]
    pub pair_burst: u32,
    /// Requests per second per device key (and per source IP without a key).
    #[arg(long, env = "SWRM_DEVICE_RATE_PER_SECOND", default_value_t = 20)]
    pub device_rate_per_second: u32,
    /// Device requests allowed at once before the rate applies.
    #[arg(long, env = "SWRM_DEVICE_BURST", default_value_t = 100)]
    pub device_burst: u32,
    /// Requests per second per organization API key.
    #[arg(long, env = "SWRM_ORG_KEY_RATE_PER_SECOND", default_value_t = 50)]
    pub org_key_rate_per_second: u32,
    /// Organization key requests allowed at once before the rate applies.
    #[arg(long, env = "SWRM_ORG_KEY_BURST", default_value_t = 200)]
    pub org_key_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            pair_rate_per_minute: 10,
            pair_burst: 10,
            device_rate_per_second: 20,
            device_burst: 100,
            org_key_rate_per_second: 50,
            org_key_burst: 200,
        }
    }
}

/// Which bucket a request draws from.
#[derive(Clone, Copy, Debug)]
pub enum Bucket {
    Pairing(IpAddr),
    Device(Uuid),
    OrgKey(Uuid),
    Anonymous(IpAddr),
}

pub struct Limits {
    pairing: Option<Keyed<IpAddr>>,
    device: Option<Keyed<Uuid>>,
    org_key: Option<Keyed<Uuid>>,
    anonymous: Option<Keyed<IpAddr>>,
}

fn keyed<K: Hash + Eq + Clone>(rate: u32, per: Duration, burst: u32) -> Option<Keyed<K>> {
    let rate = NonZeroU32::new(rate)?;
    let quota =
        Quota::with_period(per / rate.get())?.allow_burst(NonZeroU32::new(burst).unwrap_or(rate));
    Some(RateLimiter::keyed(quota))
}

impl Limits {
    pub fn new(c: &RateLimitConfig) -> Self {
        let second = Duration::from_secs(1);
        Self {
            pairing: keyed(
                c.pair_rate_per_minute,
                Duration::from_secs(60),
                c.pair_burst,
            ),
            device: keyed(c.device_rate_per_second, second, c.device_burst),
            org_key: keyed(c.org_key_rate_per_second, second, c.org_key_burst),
            anonymous: keyed(c.device_rate_per_second, second, c.device_burst),
        }
    }

    /// `Ok`, or how many whole seconds to wait (for `Retry-After`).
    pub fn check(&self, bucket: Bucket) -> Result<(), u64> {
        match bucket {
            Bucket::Pairing(ip) => check(&self.pairing, &ip),
            Bucket::Device(id) => check(&self.device, &id),
            Bucket::OrgKey(id) => check(&self.org_key, &id),
            Bucket::Anonymous(ip) => check(&self.anonymous, &ip),
        }
    }

    /// Forgets idle keys so the maps do not grow without bound.
    pub fn prune(&self) {
        fn prune<K: Hash + Eq + Clone>(l: &Option<Keyed<K>>) {
            if let Some(l) = l {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
        prune(&self.pairing);
        prune(&self.device);
        prune(&self.org_key);
        prune(&self.anonymous);
    }
}

fn check<K: Hash + Eq + Clone>(limiter: &Option<Keyed<K>>, key: &K) -> Result<(), u64> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
    })
}
