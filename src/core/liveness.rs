//! Heartbeats at fleet size. A million devices heartbeating every 30 s is
//! about 33,000 requests a second, and almost every one names a different
//! device: one row update (a random page of a large table) each. So a
//! heartbeat is recorded here, in memory, and answered at once; every
//! [`FLUSH_EVERY`] the latest heartbeat of each device goes to the database
//! in one group-committed batch (one `UPDATE … FROM` per organization, see
//! `writer`). The table holds at most one entry per device, so when the
//! database is slow the backlog coalesces instead of growing.
//!
//! Answers stay correct: this replica's reads of a device (get, list,
//! update) overlay what it has not flushed yet, and every other replica
//! sees the database, at most one flush (plus its commit) behind, against a
//! 90 s `online` threshold. A crash loses at most the last flush interval
//! of `last_seen`, never a reading (readings, telemetry and events are
//! committed before their 2xx). A clean shutdown flushes. While a flush has
//! been failing for longer than the database timeout, heartbeats answer
//! 503, so devices know their liveness is not being recorded.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use uuid::Uuid;

use super::{
    Core,
    writer::{Job, Liveness, LivenessRows},
};
use crate::{
    error::{Error, Result},
    store::entities::device,
};

/// How often heartbeats are written to the database.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct LivenessTable {
    /// Recorded, not yet flushed.
    pending: Mutex<HashMap<Uuid, Liveness>>,
    /// Being flushed now (still overlaid until committed).
    in_flight: Mutex<Arc<HashMap<Uuid, Liveness>>>,
    /// Since when flushes have not succeeded.
    failing_since: Mutex<Option<Instant>>,
    /// Held for a whole flush: flushes run one at a time, so a caller that
    /// flushes before reading (a status filter) also waits for the flush
    /// already under way, and one batch never replaces another in flight.
    flushing: tokio::sync::Mutex<()>,
}

impl LivenessTable {
    /// Records a heartbeat (merged into the device's unflushed one).
    pub fn record(&self, heartbeat: Liveness) {
        let mut pending = self.pending.lock().expect("liveness lock");
        match pending.get_mut(&heartbeat.device_id) {
            Some(earlier) => earlier.absorb(&heartbeat),
            None => {
                pending.insert(heartbeat.device_id, heartbeat);
            }
        }
    }

    /// Heartbeats recorded and not yet committed (at most one per device).
    pub fn backlog(&self) -> usize {
        self.pending.lock().expect("liveness lock").len()
            + self.in_flight.lock().expect("liveness lock").len()
    }

    /// Whether flushes have failed for longer than `patience`.
    pub fn failing_for(&self, patience: Duration) -> bool {
        self.failing_since
            .lock()
            .expect("liveness lock")
            .is_some_and(|since| since.elapsed() > patience)
    }

    /// The device as this replica knows it: the stored row, with the
    /// heartbeats not yet flushed.
    pub fn overlay(&self, stored: &device::Model) -> device::Model {
        let mut device = stored.clone();
        let in_flight = self.in_flight.lock().expect("liveness lock").clone();
        for source in [
            in_flight.get(&device.id).cloned(),
            self.pending
                .lock()
                .expect("liveness lock")
                .get(&device.id)
                .cloned(),
        ]
        .into_iter()
        .flatten()
        {
            lay_over(&mut device, source);
        }
        device
    }

    /// Writes every unflushed heartbeat; on failure they wait for the next
    /// flush (merged with what arrived meanwhile).
    pub async fn flush(&self, core: &Core) -> Result<()> {
        let _one_at_a_time = self.flushing.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().expect("liveness lock"));
        if batch.is_empty() {
            *self.failing_since.lock().expect("liveness lock") = None;
            return Ok(());
        }
        let batch = Arc::new(batch);
        *self.in_flight.lock().expect("liveness lock") = batch.clone();
        let mut by_org: HashMap<Uuid, Vec<Liveness>> = HashMap::new();
        for heartbeat in batch.values() {
            by_org
                .entry(heartbeat.org_id)
                .or_default()
                .push(heartbeat.clone());
        }
        let writes = by_org.into_iter().map(|(org_id, rows)| {
            core.writer.write(
                Job::Liveness(LivenessRows { org_id, rows }),
                core.settings.database_timeout * 2,
            )
        });
        let outcome: Result<Vec<_>> = futures_util::future::join_all(writes)
            .await
            .into_iter()
            .collect();
        let failed = outcome.is_err();
        if failed {
            // Put them back under what arrived since (which is newer).
            let mut pending = self.pending.lock().expect("liveness lock");
            for (id, earlier) in batch.iter() {
                let mut merged = earlier.clone();
                if let Some(later) = pending.get(id) {
                    merged.absorb(later);
                }
                pending.insert(*id, merged);
            }
        }
        *self.in_flight.lock().expect("liveness lock") = Arc::default();
        let mut failing = self.failing_since.lock().expect("liveness lock");
        match (failed, *failing) {
            (false, _) => *failing = None,
            (true, None) => *failing = Some(Instant::now()),
            (true, Some(_)) => {}
        }
        outcome.map(|_| ())
    }
}

/// Lays a heartbeat over the device unless the device was seen later: its
/// time and source address, and whatever else it reported (what it left
/// out keeps the device's value). For unflushed heartbeats and for the
/// stored ones (`devices::with_liveness`) alike.
pub fn lay_over(device: &mut device::Model, heard: Liveness) {
    if device.last_seen_at.is_some_and(|seen| seen > heard.at) {
        return;
    }
    device.last_seen_at = Some(heard.at);
    device.source_ip = Some(heard.source_ip);
    device.firmware_version = heard.firmware_version.or(device.firmware_version.take());
    device.uptime_seconds = heard.uptime_seconds.or(device.uptime_seconds);
    device.reported_ip = heard.reported_ip.or(device.reported_ip.take());
    device.hostname = heard.hostname.or(device.hostname.take());
}

/// Flushes every [`FLUSH_EVERY`] until shutdown (the server flushes once
/// more after its last request).
pub async fn flush_loop(core: Arc<Core>) {
    let mut every = tokio::time::interval(FLUSH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = core.shutdown.cancelled() => return,
        }
        if let Err(e) = core.liveness.flush(&core).await {
            tracing::warn!(error = %e, "heartbeats not flushed; retrying");
        }
    }
}

/// The 503 a heartbeat answers while its flushes fail.
pub fn not_recording() -> Error {
    Error::Unavailable("the database is not answering; heartbeats are not being recorded".into())
}
