//! An API key's "last used", written at most once a minute per key on each
//! replica, by one request.
//!
//! It is written when a lookup misses the key cache, and a cached API key
//! goes stale after [`API_KEY_TTL`]: at that moment every request in flight
//! with the key misses together. Each used to write the same row, one
//! after the other behind its lock, each waiting for the previous commit
//! (eleven such writes of 25-92 ms in one burst, in PostgreSQL's log during
//! `loadgen waiters`). Now the first of them writes and the others go on.

use chrono::{DateTime, Utc};
use std::{collections::HashMap, sync::Mutex};
use uuid::Uuid;

use super::cache::API_KEY_TTL;

/// Keys remembered before the ones stamped longer ago than the interval
/// are forgotten (they would be due anyway).
const REMEMBERED: usize = 10_000;

#[derive(Default)]
pub struct LastUse {
    stamped: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl LastUse {
    /// Whether the caller should write `key_id`'s last use now: true once
    /// per [`API_KEY_TTL`] per key, to the first caller that asks.
    pub fn due(&self, key_id: Uuid, now: DateTime<Utc>) -> bool {
        let interval = chrono::Duration::from_std(API_KEY_TTL).expect("a minute");
        let mut stamped = self.stamped.lock().expect("not poisoned");
        if stamped.get(&key_id).is_some_and(|at| now - *at < interval) {
            return false;
        }
        if stamped.len() >= REMEMBERED {
            stamped.retain(|_, at| now - *at < interval);
        }
        stamped.insert(key_id, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_interval_per_key() {
        let last = LastUse::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let t = Utc::now();
        assert!(last.due(a, t));
        assert!(!last.due(a, t), "the second caller does not write");
        assert!(!last.due(a, t + chrono::Duration::seconds(59)));
        assert!(last.due(b, t), "another key is its own");
        assert!(last.due(a, t + chrono::Duration::seconds(60)));
    }

    #[test]
    fn concurrent_callers_elect_one_writer() {
        let last = std::sync::Arc::new(LastUse::default());
        let key = Uuid::now_v7();
        let t = Utc::now();
        let writers: usize = (0..16)
            .map(|_| {
                let last = last.clone();
                std::thread::spawn(move || last.due(key, t))
            })
            .map(|h| usize::from(h.join().unwrap()))
            .sum();
        assert_eq!(writers, 1);
    }
}
