//! Planner statistics that keep up with bulk creation. PostgreSQL plans
//! from statistics; with autovacuum off or behind, a `devices` table grown
//! from a thousand rows to a million keeps plans made for a thousand, and
//! the indexed lookups of pairing (lock a device by id, claim its token)
//! turn into scans: pairing fell to 50/s at a million devices (README,
//! Benchmark). So the server refreshes them itself once it has created
//! many devices: after 10,000, then each time its count has doubled. A
//! refresh samples each table (`ANALYZE`), runs in the background, one at a
//! time, and never fails a request. SQLite plans without statistics unless
//! asked (its plans here are chosen by the queries, see `writer::batch`),
//! so only an import refreshes them there.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use crate::store::Store;

/// Devices created before the first refresh.
const FIRST_REFRESH: u64 = 10_000;

pub struct Statistics {
    created: AtomicU64,
    next_refresh: AtomicU64,
    refreshing: Arc<AtomicBool>,
}

impl Default for Statistics {
    fn default() -> Self {
        Self {
            created: AtomicU64::new(0),
            next_refresh: AtomicU64::new(FIRST_REFRESH),
            refreshing: Arc::default(),
        }
    }
}

impl Statistics {
    /// Counts `n` devices created (committed); refreshes when due.
    pub fn devices_created(&self, store: &Store, n: u64) {
        if !store.is_postgres() {
            return;
        }
        let total = self.created.fetch_add(n, Ordering::Relaxed) + n;
        if total < self.next_refresh.load(Ordering::Relaxed)
            || self.refreshing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.next_refresh.store(total * 2, Ordering::Relaxed);
        let (store, refreshing) = (store.clone(), self.refreshing.clone());
        tokio::spawn(async move {
            if let Err(e) = store.refresh_statistics().await {
                tracing::warn!(error = %e, "planner statistics not refreshed");
            }
            refreshing.store(false, Ordering::Release);
        });
    }
}
