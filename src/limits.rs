//! Rate limits on every route (token buckets from `governor`):
//! pairing and enrollment per source IP, each device key, each organization
//! API key, and everything else (no or bad credential) per source IP.

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::keyed::DefaultKeyedStateStore,
};
use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    num::NonZeroU32,
    sync::RwLock,
    time::{Duration, Instant},
};
use uuid::Uuid;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

// The contract's defaults, one source for the flags and `Default`.
const PAIR_RATE_PER_MINUTE: u32 = 10;
const PAIR_BURST: u32 = 10;
const DEVICE_RATE_PER_SECOND: u32 = 20;
const DEVICE_BURST: u32 = 100;
const ORG_KEY_RATE_PER_SECOND: u32 = 50;
const ORG_KEY_BURST: u32 = 200;

/// Rate limit settings; 0 as a rate turns that limit off.
#[derive(clap::Args, Clone, Debug)]
pub struct RateLimitConfig {
    /// `pair` and `enroll` requests per minute per source IP.
    #[arg(long, env = "SWRM_PAIR_RATE_PER_MINUTE", default_value_t = PAIR_RATE_PER_MINUTE)]
    pub pair_rate_per_minute: u32,
    /// Pairing requests allowed at once before the rate applies.
    #[arg(long, env = "SWRM_PAIR_BURST", default_value_t = PAIR_BURST)]
    pub pair_burst: u32,
    /// Requests per second per device key (and per source IP without a key).
    #[arg(long, env = "SWRM_DEVICE_RATE_PER_SECOND", default_value_t = DEVICE_RATE_PER_SECOND)]
    pub device_rate_per_second: u32,
    /// Device requests allowed at once before the rate applies.
    #[arg(long, env = "SWRM_DEVICE_BURST", default_value_t = DEVICE_BURST)]
    pub device_burst: u32,
    /// Requests per second per organization API key.
    #[arg(long, env = "SWRM_ORG_KEY_RATE_PER_SECOND", default_value_t = ORG_KEY_RATE_PER_SECOND)]
    pub org_key_rate_per_second: u32,
    /// Organization key requests allowed at once before the rate applies.
    #[arg(long, env = "SWRM_ORG_KEY_BURST", default_value_t = ORG_KEY_BURST)]
    pub org_key_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            pair_rate_per_minute: PAIR_RATE_PER_MINUTE,
            pair_burst: PAIR_BURST,
            device_rate_per_second: DEVICE_RATE_PER_SECOND,
            device_burst: DEVICE_BURST,
            org_key_rate_per_second: ORG_KEY_RATE_PER_SECOND,
            org_key_burst: ORG_KEY_BURST,
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

impl Bucket {
    /// The bucket's kind, as a metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Pairing(_) => "pairing",
            Bucket::Device(_) => "device",
            Bucket::OrgKey(_) => "org_key",
            Bucket::Anonymous(_) => "anonymous",
        }
    }
}

/// The address a per-IP bucket is kept for: IPv4 as is (IPv4-mapped IPv6
/// too), IPv6 by its /64, which one client usually holds whole.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

/// A bucket's quota as the IETF `RateLimit-Policy` header states it:
/// `q` requests per window of `w` seconds (the burst, and the time it takes
/// to refill).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub name: &'static str,
    pub quota: u32,
    pub window_secs: u64,
}

impl Policy {
    fn new(name: &'static str, rate: u32, per: Duration, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(rate)?;
        let quota = if burst == 0 { rate.get() } else { burst };
        let refill = per.as_secs_f64() * f64::from(quota) / f64::from(rate.get());
        Some(Self {
            name,
            quota,
            window_secs: (refill.ceil() as u64).max(1),
        })
    }

    /// `RateLimit-Policy: "device";q=100;w=5`
    pub fn header(&self) -> String {
        format!("\"{}\";q={};w={}", self.name, self.quota, self.window_secs)
    }

    /// `RateLimit: "device";r=0;t=3` for a request turned away.
    pub fn exhausted(&self, retry_after_secs: u64) -> String {
        format!("\"{}\";r=0;t={retry_after_secs}", self.name)
    }
}

pub struct Limits {
    policies: Vec<Policy>,
    pairing: Option<Keyed<IpAddr>>,
    device: Option<Keyed<Uuid>>,
    org_key: Option<Keyed<Uuid>>,
    anonymous: Option<Keyed<IpAddr>>,
    failed_lookups: Option<Keyed<IpAddr>>,
    /// Clients whose failed lookups ran out, until when.
    blocked: RwLock<HashMap<IpAddr, Instant>>,
}

/// A bucket's limiter, its policy noted in `policies` (`None` when off).
fn bucket<K: Hash + Eq + Clone>(
    policies: &mut Vec<Policy>,
    name: &'static str,
    rate: u32,
    per: Duration,
    burst: u32,
) -> Option<Keyed<K>> {
    policies.extend(Policy::new(name, rate, per, burst));
    keyed(rate, per, burst)
}

fn keyed<K: Hash + Eq + Clone>(rate: u32, per: Duration, burst: u32) -> Option<Keyed<K>> {
    let rate = NonZeroU32::new(rate)?;
    let quota =
        Quota::with_period(per / rate.get())?.allow_burst(NonZeroU32::new(burst).unwrap_or(rate));
    Some(RateLimiter::keyed(quota))
}

impl Limits {
    pub fn new(c: &RateLimitConfig) -> Self {
        let (second, minute) = (Duration::from_secs(1), Duration::from_secs(60));
        let mut policies = Vec::new();
        let p = &mut policies;
        let (pairing, device, org_key, anonymous, failed_lookups) = (
            bucket(p, "pairing", c.pair_rate_per_minute, minute, c.pair_burst),
            bucket(
                p,
                "device",
                c.device_rate_per_second,
                second,
                c.device_burst,
            ),
            bucket(
                p,
                "org_key",
                c.org_key_rate_per_second,
                second,
                c.org_key_burst,
            ),
            bucket(
                p,
                "anonymous",
                c.device_rate_per_second,
                second,
                c.device_burst,
            ),
            bucket(
                p,
                "failed_lookups",
                c.device_rate_per_second,
                second,
                c.device_burst,
            ),
        );
        Self {
            policies,
            pairing,
            device,
            org_key,
            anonymous,
            failed_lookups,
            blocked: RwLock::default(),
        }
    }

    /// The policy of the bucket named `name` (see [`Bucket::name`]).
    pub fn policy(&self, name: &str) -> Option<Policy> {
        self.policies.iter().find(|p| p.name == name).cloned()
    }

    /// `Ok`, or how many whole seconds to wait (for `Retry-After`).
    pub fn check(&self, bucket: Bucket) -> Result<(), u64> {
        match bucket {
            Bucket::Pairing(ip) => check(&self.pairing, &client_key(ip)),
            Bucket::Device(id) => check(&self.device, &id),
            Bucket::OrgKey(id) => check(&self.org_key, &id),
            Bucket::Anonymous(ip) => check(&self.anonymous, &client_key(ip)),
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
        prune(&self.failed_lookups);
        let now = Instant::now();
        self.blocked
            .write()
            .expect("blocked lock")
            .retain(|_, until| *until > now);
    }

    /// Counts a credential lookup that found no valid key. When `ip` has
    /// used up its failures, it is blocked until its bucket refills, and
    /// [`Limits::lookups_blocked`] turns even its cache misses away before
    /// the database. Valid keys never draw on this bucket.
    pub fn failed_lookup(&self, ip: IpAddr) -> Result<(), u64> {
        let key = client_key(ip);
        check(&self.failed_lookups, &key).inspect_err(|&wait| {
            let until = Instant::now() + Duration::from_secs(wait);
            self.blocked
                .write()
                .expect("blocked lock")
                .insert(key, until);
        })
    }

    /// Seconds left if `ip` is blocked from credential lookups.
    pub fn lookups_blocked(&self, ip: IpAddr) -> Option<u64> {
        let until = *self
            .blocked
            .read()
            .expect("blocked lock")
            .get(&client_key(ip))?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(wait_secs(left))
    }
}

fn check<K: Hash + Eq + Clone>(limiter: &Option<Keyed<K>>, key: &K) -> Result<(), u64> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter
        .check_key(key)
        .map_err(|not_until| wait_secs(not_until.wait_time_from(DefaultClock::default().now())))
}

/// Whole seconds, rounded up, for `Retry-After`.
fn wait_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_state_the_burst_and_the_time_it_takes_to_refill() {
        let limits = Limits::new(&RateLimitConfig::default());
        assert_eq!(
            limits.policy("device").unwrap().header(),
            "\"device\";q=100;w=5"
        );
        assert_eq!(
            limits.policy("pairing").unwrap().header(),
            "\"pairing\";q=10;w=60"
        );
        assert_eq!(
            limits.policy("org_key").unwrap().exhausted(2),
            "\"org_key\";r=0;t=2"
        );
        let off = RateLimitConfig {
            device_rate_per_second: 0,
            ..RateLimitConfig::default()
        };
        assert!(Limits::new(&off).policy("device").is_none());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
