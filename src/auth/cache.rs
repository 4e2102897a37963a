//! In-memory cache of resolved device keys and API keys, so the hot path
//! (every device request) does not query the database.
//!
//! Entries live at most [`TTL`]; revoking or rotating a key evicts its
//! entries at once, here and (through `bus`, on PostgreSQL) on every replica.
//! The TTL bounds staleness should an event ever be lost.

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
pub struct KeyCache {
    entries: RwLock<HashMap<String, Entry>>,
}

impl KeyCache {
    pub fn get(&self, hash: &str) -> Option<Credential> {
        let entries = self.entries.read().expect("key cache lock");
        let entry = entries.get(hash)?;
        let fresh = entry.cached_at.elapsed() < TTL
            && entry.key_expires_at.is_none_or(|end| Utc::now() < end);
        fresh.then(|| entry.credential.clone())
    }

    pub fn put(&self, hash: String, credential: Credential, key_expires_at: Option<DateTime<Utc>>) {
        let mut entries = self.entries.write().expect("key cache lock");
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            hash,
            Entry {
                credential,
                key_expires_at,
                cached_at: Instant::now(),
            },
        );
    }

    /// Forget every key of this device (revoked or rotated).
    pub fn evict_device(&self, device_id: Uuid) {
        self.entries.write().expect("key cache lock").retain(
            |_, e| !matches!(&e.credential, Credential::Device(d) if d.device_id == device_id),
        );
    }

    /// Forget everything (events may have been missed).
    pub fn clear(&self) {
        self.entries.write().expect("key cache lock").clear();
    }

    /// Forget this API key (deleted).
    pub fn evict_api_key(&self, key_id: Uuid) {
        self.entries
            .write()
            .expect("key cache lock")
            .retain(|_, e| !matches!(&e.credential, Credential::OrgKey(k) if k.key_id == key_id));
    }
}
