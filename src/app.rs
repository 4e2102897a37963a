//! The one `App`: every dependency a handler needs, built once at start and
//! shared as `Arc<App>`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{
    auth::cache::KeyCache, config::Config, core::liveness::LivenessWriter, limits::Limits,
    store::Store,
};

pub struct App {
    pub config: Config,
    pub store: Store,
    /// Resolved device and API keys (see `auth::cache`).
    pub keys: KeyCache,
    pub limits: Limits,
    /// Group-commits heartbeats (see `core::liveness`).
    pub liveness: LivenessWriter,
    /// How many credential checks reached the database (observability, and
    /// the proof that malformed secrets never do).
    pub auth_db_lookups: AtomicU64,
}

impl App {
    pub fn new(config: Config, store: Store) -> Self {
        Self {
            limits: Limits::new(&config.rate_limits),
            liveness: LivenessWriter::spawn(store.clone()),
            config,
            store,
            keys: KeyCache::default(),
            auth_db_lookups: AtomicU64::new(0),
        }
    }

    pub fn count_auth_lookup(&self) {
        self.auth_db_lookups.fetch_add(1, Ordering::Relaxed);
    }

    pub fn auth_db_lookups(&self) -> u64 {
        self.auth_db_lookups.load(Ordering::Relaxed)
    }
}
