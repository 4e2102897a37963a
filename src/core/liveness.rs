//! Heartbeats with group commit. Each heartbeat is one small UPDATE; what
//! costs is the commit (a WAL fsync on SQLite, a round trip and fsync on
//! PostgreSQL). One writer task takes every heartbeat queued while the
//! previous batch was committing and writes them in one transaction. A caller
//! still gets its answer only after its own update has committed, so nothing
//! is acknowledged that could be lost, and at low load nothing waits.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    error::{Error, Result},
    metrics::Metrics,
    store::{Store, entities::device},
};

/// Most heartbeats committed together.
const MAX_BATCH: usize = 512;
/// Heartbeats waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 8192;

/// One device's liveness, validated.
pub struct Liveness {
    pub org_id: Uuid,
    pub device_id: Uuid,
    pub at: DateTime<Utc>,
    pub source_ip: String,
    pub firmware_version: Option<String>,
    pub uptime_seconds: Option<i64>,
    pub reported_ip: Option<String>,
    pub hostname: Option<String>,
}

struct Pending {
    update: Liveness,
    queued_at: std::time::Instant,
    /// `Ok(false)`: no such device (deleted since its key was checked).
    done: oneshot::Sender<Result<bool>>,
}

pub struct LivenessWriter {
    queue: mpsc::Sender<Pending>,
}

impl LivenessWriter {
    /// Starts the writer task; it ends when the writer is dropped.
    pub fn spawn(store: Store, metrics: Arc<Metrics>) -> Self {
        let (queue, mut incoming) = mpsc::channel::<Pending>(QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while incoming.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let updates: Vec<&Liveness> = batch.iter().map(|p| &p.update).collect();
                metrics.commit_batch_size.observe(updates.len() as f64);
                match write(&store, &updates).await {
                    Ok(found) => {
                        for pending in &batch {
                            metrics
                                .commit_wait_seconds
                                .observe(pending.queued_at.elapsed().as_secs_f64());
                        }
                        for (pending, found) in batch.drain(..).zip(found) {
                            let _ = pending.done.send(Ok(found));
                        }
                    }
                    Err(Error::Unavailable(why)) => {
                        // A stalled database fails the whole batch at once;
                        // retrying each alone would make everyone wait again.
                        for pending in batch.drain(..) {
                            let _ = pending.done.send(Err(Error::Unavailable(why.clone())));
                        }
                    }
                    Err(e) => {
                        // One bad statement must not fail strangers' heartbeats:
                        // retry each on its own.
                        tracing::warn!(error = %e, heartbeats = batch.len(), "heartbeat batch failed; retrying one by one");
                        for pending in batch.drain(..) {
                            let alone = write(&store, &[&pending.update])
                                .await
                                .map(|found| found[0]);
                            let _ = pending.done.send(alone);
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Records the heartbeat; returns once it is committed, or 503 after
    /// `deadline` (the heartbeat may still commit; a retry is harmless).
    pub async fn record(&self, update: Liveness, deadline: std::time::Duration) -> Result<()> {
        let (done, committed) = oneshot::channel();
        let pending = Pending {
            update,
            queued_at: std::time::Instant::now(),
            done,
        };
        // Waiting for room in the queue counts against the deadline too.
        let wait = async {
            self.queue
                .send(pending)
                .await
                .map_err(|_| Error::Unavailable("shutting down".into()))?;
            committed
                .await
                .map_err(|_| Error::Internal("heartbeat writer stopped".into()))
        };
        match tokio::time::timeout(deadline, wait).await {
            Err(_) => Err(Error::Unavailable(
                "the database is not answering in time; retry shortly".into(),
            )),
            Ok(Err(e) | Ok(Err(e))) => Err(e),
            Ok(Ok(Ok(true))) => Ok(()),
            Ok(Ok(Ok(false))) => Err(Error::Unauthenticated("device no longer exists".into())),
        }
    }
}

/// One transaction for the batch; each update scoped to its organization.
async fn write(store: &Store, batch: &[&Liveness]) -> Result<Vec<bool>> {
    let mut tx = store.batch_tx().await?;
    let mut found = Vec::with_capacity(batch.len());
    for hb in batch {
        let conn = tx.scope(hb.org_id).await?;
        let mut update = device::Entity::update_many()
            .col_expr(device::Column::LastSeenAt, Some(hb.at).into())
            .col_expr(device::Column::SourceIp, Some(hb.source_ip.clone()).into());
        if let Some(v) = &hb.firmware_version {
            update = update.col_expr(device::Column::FirmwareVersion, Some(v.clone()).into());
        }
        if let Some(v) = hb.uptime_seconds {
            update = update.col_expr(device::Column::UptimeSeconds, Some(v).into());
        }
        if let Some(v) = &hb.reported_ip {
            update = update.col_expr(device::Column::ReportedIp, Some(v.clone()).into());
        }
        if let Some(v) = &hb.hostname {
            update = update.col_expr(device::Column::Hostname, Some(v.clone()).into());
        }
        let done = update
            .filter(device::Column::Id.eq(hb.device_id))
            .filter(device::Column::OrgId.eq(hb.org_id))
            .exec(conn)
            .await?;
        found.push(done.rows_affected > 0);
    }
    tx.commit().await?;
    Ok(found)
}
