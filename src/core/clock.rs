//! The time use cases see. The system clock in production; tests drive a
//! manual one instead of sleeping on the wall clock.

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Mutex<DateTime<Utc>>>>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that stands still at `start` until [`Clock::advance`]d.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self {
            manual: Some(Arc::new(Mutex::new(start))),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual {
            None => Utc::now(),
            Some(t) => *t.lock().expect("clock"),
        }
    }

    /// Moves a manual clock forward. Panics on the system clock.
    pub fn advance(&self, by: std::time::Duration) {
        let t = self.manual.as_ref().expect("only a manual clock advances");
        let mut t = t.lock().expect("clock");
        *t += chrono::Duration::from_std(by).expect("a sane duration");
    }
}
