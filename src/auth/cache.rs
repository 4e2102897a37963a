//! In-memory cache of resolved device keys and API keys, so the hot path
//! (every device request) does not query the database.
//!
//! Valid keys and rejections live in separate bounded maps: a flood of
//! forged well-formed keys fills (and, when full, empties) only the
//! rejection map, never pushing out a valid key.
//!
//! A valid key stays until it is revoked, rotated, re-paired or deleted:
//! those evict its entries at once, here and on every replica, through the
//! bus (see `App::new`), and a replica that loses the bus clears the whole
//! cache. The time-to-live (`--key-cache-ttl-seconds`, default 6 h) is only a
//! safety net should an event ever be lost; it is far longer than the
//! heartbeat interval, so a fleet's keys are looked up once, not every
//! interval, and each entry's is shortened by up to a tenth at random, so
//! keys cached together (a fleet reconnecting) do not expire together.
//! Rejections live [`REJECTED_TTL`] and are pruned periodically.
//!
//! Memory: about 250 bytes per valid key (the digest, the principal, the
//! owner index, and the hash tables' spare room), so the default million
//! entries is a few hundred MB at most; `examples/loadgen fleet` measures it.
//!
//! A lookup that read the database before a revocation committed must not
//! put its stale answer back after the eviction: every eviction bumps a
//! generation, and [`KeyCache::put`] drops answers read under an older one.

use chrono::{DateTime, Utc};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};
use uuid::Uuid;

use super::{Credential, Refusal};
use crate::core::audit::Actor;
use crate::metrics::Metrics;

/// An unknown key stays unknown (secrets are random), but a key created a
/// moment later must not be refused for long.
pub const REJECTED_TTL: Duration = Duration::from_secs(30);
/// API keys are few, and their "last used" is recorded on a lookup, so
/// they are looked up again after at most a minute.
pub const API_KEY_TTL: Duration = Duration::from_secs(60);

/// The SHA-256 of a secret: the cache key (the database stores its hex).
pub type Digest = [u8; 32];

struct Entry {
    credential: Credential,
    /// The key's own end (a rotated key's grace), if any.
    key_expires_at: Option<DateTime<Utc>>,
    /// When the safety-net time-to-live runs out (jittered).
    stale_at: Instant,
}

/// A cached key past its own end (a rotated key's grace).
fn expired(credential: &Credential) -> Refusal {
    const WHY: &str = "device key revoked or expired";
    match credential {
        Credential::Device(d) => Refusal::of(WHY, d.org_id, Actor::DeviceKey(d.key_id)),
        _ => Refusal::unknown(WHY),
    }
}

struct Rejection {
    refusal: Refusal,
    cached_at: Instant,
}

#[derive(Default)]
struct Inner {
    valid: HashMap<Digest, Entry>,
    /// Which cached digests belong to a device or an API key, so evicting
    /// one does not scan the cache.
    by_owner: HashMap<Uuid, Vec<Digest>>,
    rejected: HashMap<Digest, Rejection>,
    generation: u64,
}

pub struct KeyCache {
    inner: RwLock<Inner>,
    max_valid: usize,
    max_rejected: usize,
    ttl: Duration,
    metrics: Arc<Metrics>,
}

/// The cache generation a database lookup started under.
#[derive(Clone, Copy, Debug)]
pub struct Generation(u64);

fn owner(credential: &Credential) -> Option<Uuid> {
    match credential {
        Credential::Device(d) => Some(d.device_id),
        Credential::OrgKey(k) => Some(k.key_id),
        _ => None,
    }
}

impl KeyCache {
    pub fn new(
        max_valid: usize,
        max_rejected: usize,
        ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: RwLock::default(),
            max_valid: max_valid.max(1),
            max_rejected: max_rejected.max(1),
            ttl,
            metrics,
        }
    }

    /// A fresh cached answer for this secret, if any, as of `now`.
    pub fn get(&self, digest: &Digest, now: DateTime<Utc>) -> Option<Credential> {
        let inner = self.inner.read().expect("key cache lock");
        let found = if let Some(entry) = inner.valid.get(digest) {
            if Instant::now() >= entry.stale_at {
                None
            } else if entry.key_expires_at.is_some_and(|end| now >= end) {
                Some(Credential::Rejected(expired(&entry.credential)))
            } else {
                Some(entry.credential.clone())
            }
        } else {
            inner
                .rejected
                .get(digest)
                .filter(|r| r.cached_at.elapsed() < REJECTED_TTL)
                .map(|r| Credential::Rejected(r.refusal))
        };
        drop(inner);
        match found {
            Some(_) => self.metrics.key_cache_hits.inc(),
            None => self.metrics.key_cache_misses.inc(),
        };
        found
    }

    /// Read before a database lookup; pass to [`KeyCache::put`].
    pub fn generation(&self) -> Generation {
        Generation(self.inner.read().expect("key cache lock").generation)
    }

    /// Caches a lookup's answer unless an eviction happened since `seen`.
    pub fn put(
        &self,
        seen: Generation,
        digest: Digest,
        credential: Credential,
        key_expires_at: Option<DateTime<Utc>>,
    ) {
        let mut inner = self.inner.write().expect("key cache lock");
        if inner.generation != seen.0 {
            return;
        }
        let cached_at = Instant::now();
        if let Credential::Rejected(refusal) = credential {
            if inner.rejected.len() >= self.max_rejected {
                // Forged keys only ever push out other rejections.
                let dropped = inner.rejected.len();
                inner.rejected.clear();
                self.metrics.key_cache_evictions.inc_by(dropped as u64);
            }
            inner
                .rejected
                .insert(digest, Rejection { refusal, cached_at });
            return;
        }
        let Some(owner) = owner(&credential) else {
            return;
        };
        remove_valid(&mut inner, &digest);
        if inner.valid.len() >= self.max_valid {
            self.make_room(&mut inner);
        }
        inner.by_owner.entry(owner).or_default().push(digest);
        let ttl = match credential {
            Credential::OrgKey(_) => self.ttl.min(API_KEY_TTL),
            _ => self.ttl,
        };
        // The safety net, shortened by up to a tenth at random.
        let jitter = ttl.mul_f64(rand::random::<f64>() / 10.0);
        inner.valid.insert(
            digest,
            Entry {
                credential,
                key_expires_at,
                stale_at: cached_at + (ttl - jitter),
            },
        );
    }

    /// Full of valid keys (the fleet outgrew `--key-cache-entries`): drops
    /// the stale entries and an arbitrary sixteenth of the rest (in hash
    /// order, so unrelated keys), looked up again on their next request.
    /// One pass over the map per sixteenth of its size keeps the cost per
    /// insert constant, and the cache never empties at once.
    fn make_room(&self, inner: &mut Inner) {
        let now = Instant::now();
        let mut quota = (self.max_valid / 16).max(1);
        let mut victims = Vec::new();
        for (digest, entry) in &inner.valid {
            if entry.stale_at <= now {
                victims.push(*digest);
            } else if quota > 0 {
                quota -= 1;
                victims.push(*digest);
            }
        }
        for digest in &victims {
            remove_valid(inner, digest);
        }
        self.metrics
            .key_cache_evictions
            .inc_by(victims.len() as u64);
    }

    /// Forget every key of this device (revoked, rotated or re-paired), or
    /// this API key (deleted).
    pub fn evict_owner(&self, owner: Uuid) {
        let mut inner = self.inner.write().expect("key cache lock");
        inner.generation += 1;
        let digests = inner.by_owner.remove(&owner).unwrap_or_default();
        for digest in &digests {
            inner.valid.remove(digest);
        }
        self.metrics
            .key_cache_evictions
            .inc_by(digests.len() as u64);
    }

    /// Forget everything (events may have been missed).
    pub fn clear(&self) {
        let mut inner = self.inner.write().expect("key cache lock");
        inner.generation += 1;
        let dropped = inner.valid.len() + inner.rejected.len();
        inner.valid.clear();
        inner.by_owner.clear();
        inner.rejected.clear();
        self.metrics.key_cache_evictions.inc_by(dropped as u64);
    }

    /// Drops expired rejections. Valid keys are not scanned here (a pass
    /// over a million entries would stall every request behind the lock):
    /// a stale one is looked up again on its next use, and room is made
    /// when the cache is full.
    pub fn prune(&self) {
        let mut inner = self.inner.write().expect("key cache lock");
        let before = inner.rejected.len();
        inner
            .rejected
            .retain(|_, r| r.cached_at.elapsed() < REJECTED_TTL);
        let dropped = before - inner.rejected.len();
        self.metrics.key_cache_evictions.inc_by(dropped as u64);
        self.metrics.key_cache_entries.set(self.len_locked(&inner));
    }

    /// Valid and rejected entries held.
    pub fn len(&self) -> usize {
        let inner = self.inner.read().expect("key cache lock");
        inner.valid.len() + inner.rejected.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len_locked(&self, inner: &Inner) -> i64 {
        (inner.valid.len() + inner.rejected.len()) as i64
    }
}

fn remove_valid(inner: &mut Inner, digest: &Digest) {
    let Some(entry) = inner.valid.remove(digest) else {
        return;
    };
    if let Some(owner) = owner(&entry.credential)
        && let Some(list) = inner.by_owner.get_mut(&owner)
    {
        list.retain(|d| d != digest);
        if list.is_empty() {
            inner.by_owner.remove(&owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::DevicePrincipal;

    fn device(id: Uuid) -> Credential {
        Credential::Device(DevicePrincipal {
            org_id: Uuid::now_v7(),
            device_id: id,
            key_id: Uuid::now_v7(),
        })
    }

    fn cache(max_valid: usize, max_rejected: usize) -> KeyCache {
        KeyCache::new(
            max_valid,
            max_rejected,
            Duration::from_secs(3600),
            Arc::new(Metrics::new()),
        )
    }

    #[test]
    fn a_lookup_that_raced_an_eviction_is_not_cached() {
        let cache = cache(10, 10);
        let id = Uuid::now_v7();
        let h = [1; 32];
        let seen = cache.generation();
        // The revocation commits and evicts while the lookup is in flight.
        cache.evict_owner(id);
        cache.put(seen, h, device(id), None);
        assert!(cache.get(&h, Utc::now()).is_none());
        // A lookup started after the eviction is cached.
        let seen = cache.generation();
        cache.put(seen, h, device(id), None);
        assert!(matches!(
            cache.get(&h, Utc::now()),
            Some(Credential::Device(_))
        ));
        cache.evict_owner(id);
        assert!(cache.get(&h, Utc::now()).is_none());
    }

    #[test]
    fn a_key_past_its_grace_is_rejected_from_the_cache() {
        let cache = cache(10, 10);
        let seen = cache.generation();
        let past = Utc::now() - chrono::Duration::seconds(1);
        cache.put(seen, [2; 32], device(Uuid::now_v7()), Some(past));
        assert!(matches!(
            cache.get(&[2; 32], Utc::now()),
            Some(Credential::Rejected(_))
        ));
    }

    #[test]
    fn forged_keys_never_push_out_a_valid_one() {
        let cache = cache(10, 100);
        let valid = [7; 32];
        cache.put(cache.generation(), valid, device(Uuid::now_v7()), None);
        for i in 0..10_000u32 {
            let mut forged = [0; 32];
            forged[..4].copy_from_slice(&i.to_be_bytes());
            cache.put(
                cache.generation(),
                forged,
                Credential::Rejected(Refusal::unknown("unknown device key")),
                None,
            );
        }
        assert!(matches!(
            cache.get(&valid, Utc::now()),
            Some(Credential::Device(_))
        ));
        assert!(cache.len() <= 101, "bounded: {}", cache.len());
    }

    #[test]
    fn evicting_a_device_forgets_all_its_keys_and_nothing_else() {
        let cache = cache(10, 10);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        cache.put(cache.generation(), [1; 32], device(a), None);
        cache.put(cache.generation(), [2; 32], device(a), None);
        cache.put(cache.generation(), [3; 32], device(b), None);
        cache.evict_owner(a);
        assert!(cache.get(&[1; 32], Utc::now()).is_none());
        assert!(cache.get(&[2; 32], Utc::now()).is_none());
        assert!(cache.get(&[3; 32], Utc::now()).is_some());
    }

    #[test]
    fn a_full_cache_of_valid_keys_stays_bounded_and_never_empties() {
        let cache = cache(64, 3);
        for i in 0..1000u32 {
            let mut digest = [0; 32];
            digest[..4].copy_from_slice(&i.to_be_bytes());
            cache.put(cache.generation(), digest, device(Uuid::now_v7()), None);
            assert!(cache.len() <= 64, "bounded: {}", cache.len());
            assert!(i < 64 || cache.len() >= 60, "emptied: {}", cache.len());
        }
        // The last key put is always kept.
        let mut last = [0; 32];
        last[..4].copy_from_slice(&999u32.to_be_bytes());
        assert!(cache.get(&last, Utc::now()).is_some());
    }

    #[test]
    fn entries_go_stale_after_the_jittered_time_to_live() {
        let cache = KeyCache::new(10, 10, Duration::from_millis(50), Arc::new(Metrics::new()));
        cache.put(cache.generation(), [9; 32], device(Uuid::now_v7()), None);
        assert!(cache.get(&[9; 32], Utc::now()).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&[9; 32], Utc::now()).is_none());
    }
}
