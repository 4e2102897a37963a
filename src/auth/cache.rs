//! In-memory cache of resolved device keys and API keys, so the hot path
//! (every device request) does not query the database.
//!
//! Entries live at most [`TTL`]; revoking or rotating a key evicts its
//! entries at once, here and (through `bus`, on PostgreSQL) on every replica.
//! The TTL bounds staleness should an event ever be lost.
//!
//! Rejections are cached too: an unknown hash stays unknown (new secrets are
//! random), and a revoked or expired key never comes back.
//!
//! A lookup that read the database before a revocation committed must not
//! put its stale answer back after the eviction: every eviction bumps a
//! generation, and [`KeyCache::put`] drops answers read under an older one.

use chrono::{DateTime, Utc};
use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};
use uuid::Uuid;

use super::Credential;

pub const TTL: Duration = Duration::from_secs(30);
const MAX_ENTRIES: usize = 100_000;

struct Entry {
    credential: Credential,
    /// The key's own end (a rotated key's grace), if any.
    key_expires_at: Option<DateTime<Utc>>,
    cached_at: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    generation: u64,
}

#[derive(Default)]
pub struct KeyCache {
    inner: RwLock<Inner>,
}

/// The cache generation a database lookup started under.
#[derive(Clone, Copy, Debug)]
pub struct Generation(u64);

impl KeyCache {
    /// A fresh cached answer for this secret hash, if any, as of `now`.
    pub fn get(&self, hash: &str, now: DateTime<Utc>) -> Option<Credential> {
        let inner = self.inner.read().expect("key cache lock");
        let entry = inner.entries.get(hash)?;
        if entry.cached_at.elapsed() >= TTL {
            return None;
        }
        if entry.key_expires_at.is_some_and(|end| now >= end) {
            return Some(Credential::Rejected("device key revoked or expired"));
        }
        Some(entry.credential.clone())
    }

    /// Read before a database lookup; pass to [`KeyCache::put`].
    pub fn generation(&self) -> Generation {
        Generation(self.inner.read().expect("key cache lock").generation)
    }

    /// Caches a lookup's answer unless an eviction happened since `seen`.
    pub fn put(
        &self,
        seen: Generation,
        hash: String,
        credential: Credential,
        key_expires_at: Option<DateTime<Utc>>,
    ) {
        let mut inner = self.inner.write().expect("key cache lock");
        if inner.generation != seen.0 {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner.entries.insert(
            hash,
            Entry {
                credential,
                key_expires_at,
                cached_at: Instant::now(),
            },
        );
    }

    fn evict(&self, doomed: impl Fn(&Credential) -> bool) {
        let mut inner = self.inner.write().expect("key cache lock");
        inner.generation += 1;
        inner.entries.retain(|_, e| !doomed(&e.credential));
    }

    /// Forget every key of this device (revoked, rotated or re-paired).
    pub fn evict_device(&self, device_id: Uuid) {
        self.evict(|c| matches!(c, Credential::Device(d) if d.device_id == device_id));
    }

    /// Forget this API key (deleted).
    pub fn evict_api_key(&self, key_id: Uuid) {
        self.evict(|c| matches!(c, Credential::OrgKey(k) if k.key_id == key_id));
    }

    /// Forget everything (events may have been missed).
    pub fn clear(&self) {
        self.evict(|_| true);
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

    #[test]
    fn a_lookup_that_raced_an_eviction_is_not_cached() {
        let cache = KeyCache::default();
        let id = Uuid::now_v7();
        let seen = cache.generation();
        // The revocation commits and evicts while the lookup is in flight.
        cache.evict_device(id);
        cache.put(seen, "h".into(), device(id), None);
        assert!(cache.get("h", Utc::now()).is_none());
        // A lookup started after the eviction is cached.
        let seen = cache.generation();
        cache.put(seen, "h".into(), device(id), None);
        assert!(matches!(
            cache.get("h", Utc::now()),
            Some(Credential::Device(_))
        ));
        cache.evict_device(id);
        assert!(cache.get("h", Utc::now()).is_none());
    }

    #[test]
    fn a_key_past_its_grace_is_rejected_from_the_cache() {
        let cache = KeyCache::default();
        let id = Uuid::now_v7();
        let seen = cache.generation();
        let past = Utc::now() - chrono::Duration::seconds(1);
        cache.put(seen, "h".into(), device(id), Some(past));
        assert!(matches!(
            cache.get("h", Utc::now()),
            Some(Credential::Rejected(_))
        ));
    }
}
