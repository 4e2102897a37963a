//! Group commit for everything devices send: heartbeats, readings,
//! telemetry, events, the rows of capture uploads, and the command queue's
//! enqueues and claims. What costs is the commit (a WAL fsync on SQLite, a
//! round trip and fsync on PostgreSQL), so one writer task takes every job
//! queued while the previous batch was committing and writes them in one
//! transaction, as multi-row statements (see [`batch`]). A caller gets its
//! answer only after its own rows have committed, so nothing is acknowledged
//! that could be lost, and at low load nothing waits.
//!
//! A batch that fails for a reason of its own (a row the database refuses)
//! is retried job by job, so one request cannot fail its neighbours; a
//! stalled database fails the whole batch at once with 503.

mod batch;
mod blobs;
pub(crate) mod columns;
mod commands;

use chrono::{DateTime, Utc};
use std::{sync::Arc, time::Duration};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    core::commands::{
        ack::{AckRequest, Acked},
        claim::{ClaimRequest, Claimed},
        handoff::Handoffs,
    },
    error::{Error, Result},
    metrics::Metrics,
    store::{Store, entities::command},
};

/// Most jobs committed together.
const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 8192;

/// One device's liveness, validated.
#[derive(Clone)]
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

impl Liveness {
    /// Folds a later heartbeat of the same device into this one: what the
    /// later one leaves out keeps this one's value.
    pub fn absorb(&mut self, later: &Liveness) {
        self.at = self.at.max(later.at);
        self.source_ip.clone_from(&later.source_ip);
        for (into, from) in [
            (&mut self.firmware_version, &later.firmware_version),
            (&mut self.reported_ip, &later.reported_ip),
            (&mut self.hostname, &later.hostname),
        ] {
            if from.is_some() {
                into.clone_from(from);
            }
        }
        if later.uptime_seconds.is_some() {
            self.uptime_seconds = later.uptime_seconds;
        }
    }
}

/// The latest heartbeats of an organization's devices (see `core::liveness`).
pub struct LivenessRows {
    pub org_id: Uuid,
    pub rows: Vec<Liveness>,
}

pub struct ReadingRow {
    pub sensor_type: String,
    /// In the type's unit.
    pub value: f64,
    pub ts_ms: i64,
    pub seq: Option<i64>,
}

pub struct TelemetryRow {
    pub key: String,
    /// The value as JSON: a number, a string or a boolean.
    pub value: String,
    pub ts_ms: i64,
}

pub struct EventRow {
    pub id: Uuid,
    pub kind: String,
    pub severity: String,
    pub message: Option<String>,
    /// A JSON object, or none.
    pub data: Option<String>,
    pub ts_ms: i64,
}

/// What one request wants written.
pub enum Job {
    Liveness(LivenessRows),
    Readings(Rows<ReadingRow>),
    Telemetry(Rows<TelemetryRow>),
    Events(Rows<EventRow>),
    /// A blob about to be written, recorded first (see `core::blobs`).
    PendingBlob(PendingBlobRow),
    /// A capture whose blob is written: its row, detections, and the end
    /// of the blob's pending record.
    Capture(Box<CaptureRows>),
    /// A command to queue (see `core::commands`).
    Command(Box<command::Model>),
    /// A device's claim of its deliverable commands.
    Claim(ClaimRequest),
    /// A device's acknowledgement of a command.
    Ack(Box<AckRequest>),
}

pub struct PendingBlobRow {
    /// The organization whose blob it is (the batch's scope).
    pub org_id: Uuid,
    pub key: String,
    pub created_ms: i64,
}

pub struct CaptureRows {
    pub row: crate::store::entities::capture::Model,
    pub detections: Vec<crate::store::entities::capture_detection::Model>,
}

/// One device's rows of one request.
pub struct Rows<R> {
    pub org_id: Uuid,
    pub device_id: Uuid,
    pub received_ms: i64,
    pub rows: Vec<R>,
}

impl Job {
    fn org_id(&self) -> Uuid {
        match self {
            Job::Liveness(l) => l.org_id,
            Job::Readings(r) => r.org_id,
            Job::Telemetry(r) => r.org_id,
            Job::Events(r) => r.org_id,
            Job::PendingBlob(p) => p.org_id,
            Job::Capture(c) => c.row.org_id,
            Job::Command(c) => c.org_id,
            Job::Claim(c) => c.org_id,
            Job::Ack(a) => a.org_id,
        }
    }
}

/// What happened to a job's rows.
#[derive(Clone, Debug, PartialEq)]
pub enum Done {
    /// Per reading: stored (`true`) or a duplicate of a stored `seq`.
    Readings(Vec<bool>),
    /// Rows stored.
    Stored(usize),
    /// The command queued, or the one queued earlier with its idempotency
    /// key; none when the device is not the organization's.
    Command(Option<Box<command::Model>>),
    Claimed(Claimed),
    Acked(Box<Acked>),
}

struct Pending {
    job: Job,
    queued_at: std::time::Instant,
    done: oneshot::Sender<Result<Done>>,
}

pub struct Writer {
    queue: mpsc::Sender<Pending>,
}

impl Writer {
    /// Starts the writer on a thread of its own, with its own runtime and
    /// database pool: a batch awaits the database several times, and on the
    /// shared runtime each await would queue behind every request task. It
    /// ends when the writer is dropped.
    pub fn spawn(store: Store, metrics: Arc<Metrics>, handoffs: Arc<Handoffs>) -> Self {
        let (queue, incoming) = mpsc::channel::<Pending>(QUEUE);
        let run = move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the writer's runtime");
            runtime.block_on(write_loop(store, metrics, handoffs, incoming));
        };
        std::thread::Builder::new()
            .name("swrm-writer".into())
            .spawn(run)
            .expect("the writer's thread");
        Self { queue }
    }

    /// Writes `job`; returns once it is committed, or 503 after `deadline`
    /// (the job may still commit; devices retry, and `seq` makes that safe).
    pub async fn write(&self, job: Job, deadline: Duration) -> Result<Done> {
        submit(self.queue.clone(), job, deadline).await
    }

    /// [`Writer::write`] started now and awaited later: the commit runs
    /// while the caller does other work.
    pub fn start(&self, job: Job, deadline: Duration) -> tokio::task::JoinHandle<Result<Done>> {
        tokio::spawn(submit(self.queue.clone(), job, deadline))
    }
}

/// Queues `job` and waits for its commit, within `deadline`.
async fn submit(queue: mpsc::Sender<Pending>, job: Job, deadline: Duration) -> Result<Done> {
    let (done, committed) = oneshot::channel();
    let pending = Pending {
        job,
        queued_at: std::time::Instant::now(),
        done,
    };
    // Waiting for room in the queue counts against the deadline too.
    let wait = async {
        queue
            .send(pending)
            .await
            .map_err(|_| Error::Unavailable("shutting down".into()))?;
        committed
            .await
            .map_err(|_| Error::Internal("the writer stopped".into()))
    };
    match tokio::time::timeout(deadline, wait).await {
        Err(_) => Err(Error::Unavailable(
            "the database is not answering in time; retry shortly".into(),
        )),
        Ok(Err(e) | Ok(Err(e))) => Err(e),
        Ok(Ok(Ok(done))) => Ok(done),
    }
}

/// Commits batches until every sender is gone.
async fn write_loop(
    shared: Store,
    metrics: Arc<Metrics>,
    handoffs: Arc<Handoffs>,
    mut incoming: mpsc::Receiver<Pending>,
) {
    // Two connections: a batch, and a retry job by job.
    let store = loop {
        match shared.another_pool(2).await {
            Ok(store) => break store,
            Err(e) => {
                tracing::warn!(error = %e, "the writer cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut pending = Vec::with_capacity(MAX_BATCH);
    while incoming.recv_many(&mut pending, MAX_BATCH).await > 0 {
        metrics.commit_batch_size.observe(pending.len() as f64);
        let jobs: Vec<&Job> = pending.iter().map(|p| &p.job).collect();
        match batch::write(&store, &jobs, &handoffs).await {
            Ok(done) => {
                for p in &pending {
                    metrics
                        .commit_wait_seconds
                        .observe(p.queued_at.elapsed().as_secs_f64());
                }
                for (p, done) in pending.drain(..).zip(done) {
                    let _ = p.done.send(Ok(done));
                }
            }
            Err(Error::Unavailable(why)) => {
                for p in pending.drain(..) {
                    let _ = p.done.send(Err(Error::Unavailable(why.clone())));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = pending.len(), "write batch failed; retrying job by job");
                for p in pending.drain(..) {
                    let alone = batch::write(&store, &[&p.job], &handoffs)
                        .await
                        .map(|mut d| d.remove(0));
                    let _ = p.done.send(alone);
                }
            }
        }
    }
}
