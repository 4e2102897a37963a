//! Blobs and the rows that name them. A blob is written before its row
//! commits, so a row never names a missing blob; the gap is covered by
//! `pending_blobs`: a key is recorded there before its blob is written, and
//! the transaction that commits the row removes the record. A record left
//! behind (a crash, a client gone mid-upload, a deleted row) is swept: the
//! blob is removed once the record is older than the grace period.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use std::time::Duration;

use super::{
    Core,
    writer::{Done, Job, PendingBlobRow},
};
use crate::{
    blobs::{BlobWriter, BoxFuture, SignedUrl},
    error::{Error, Result},
    store::{OrgTx, entities::pending_blob},
};
use uuid::Uuid;

/// Opens the writer of `key` (a blob of `org_id`'s) and records it as
/// pending, through the group commit. The record commits while the bytes
/// arrive; the object appears under its key (`finish`) only once the record
/// is committed, so a crash never leaves a blob nothing records. (Before
/// `finish` there is only a partial write: a temporary file, or an
/// unfinished multipart upload.)
pub async fn begin(core: &Core, org_id: Uuid, key: &str) -> Result<Box<dyn BlobWriter>> {
    let record = PendingBlobRow {
        org_id,
        key: key.to_owned(),
        created_ms: core.clock.now().timestamp_millis(),
    };
    let recorded = core
        .writer
        .start(Job::PendingBlob(record), super::ingest::deadline(core));
    match core.blobs.create(key).await {
        Ok(inner) => Ok(Box::new(RecordedWriter { inner, recorded })),
        Err(e) => {
            let _ = settled(recorded).await;
            Err(e)
        }
    }
}

struct RecordedWriter {
    inner: Box<dyn BlobWriter>,
    recorded: tokio::task::JoinHandle<Result<Done>>,
}

async fn settled(recorded: tokio::task::JoinHandle<Result<Done>>) -> Result<()> {
    recorded
        .await
        .map_err(|e| Error::Internal(format!("pending record: {e}")))?
        .map(|_| ())
}

impl BlobWriter for RecordedWriter {
    fn write(&mut self, chunk: bytes::Bytes) -> BoxFuture<'_, ()> {
        self.inner.write(chunk)
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, ()> {
        let Self { inner, recorded } = *self;
        Box::pin(async move {
            match settled(recorded).await {
                Ok(()) => inner.finish().await,
                Err(e) => {
                    let _ = inner.abort().await;
                    Err(e)
                }
            }
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        let Self { inner, recorded } = *self;
        Box::pin(async move {
            // Settled first, so the caller's discard finds the record.
            let _ = settled(recorded).await;
            inner.abort().await
        })
    }
}

/// In the transaction that commits the row naming `key`: the blob is no
/// longer pending. Fails if the sweep already took it (an upload that
/// outlasted the grace period), so the row is not committed.
pub async fn settle(tx: &OrgTx, key: &str) -> Result<()> {
    let gone = pending_blob::Entity::delete_many()
        .filter(pending_blob::Column::BlobKey.eq(key))
        .exec(tx.conn())
        .await?;
    if gone.rows_affected != 1 {
        return Err(swept_before_its_row());
    }
    Ok(())
}

/// The sweep took a blob's record (and the blob) before its row committed.
pub fn swept_before_its_row() -> Error {
    Error::Unavailable("the upload took longer than the orphan grace period; retry".into())
}

/// In the transaction that deletes the row naming `key`: marks the blob
/// for removal at once (a crash before [`discard`] leaves it to the sweep).
pub async fn release(tx: &OrgTx, key: &str) -> Result<()> {
    let record = pending_blob::ActiveModel {
        blob_key: Set(key.to_owned()),
        created_ms: Set(0),
    };
    pending_blob::Entity::insert(record)
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(pending_blob::Column::BlobKey)
                .update_column(pending_blob::Column::CreatedMs)
                .to_owned(),
        )
        .exec_without_returning(tx.conn())
        .await?;
    Ok(())
}

/// Removes a blob no row names, then its record. On failure the record
/// stays for the sweep to retry.
pub async fn discard(core: &Core, key: &str) {
    match core.blobs.delete(key).await {
        Ok(()) => {
            let forgotten = pending_blob::Entity::delete_many()
                .filter(pending_blob::Column::BlobKey.eq(key))
                .exec(core.store.unscoped())
                .await;
            if let Err(e) = forgotten {
                tracing::warn!(error = %e, "could not clear a pending blob record");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not remove a blob; the sweep will retry"),
    }
}

/// Abandons a write in progress: the partial object and its record.
pub async fn abandon(core: &Core, key: &str, writer: Box<dyn BlobWriter>) {
    if let Err(e) = writer.abort().await {
        tracing::warn!(error = %e, "could not abort a blob write");
    }
    discard(core, key).await;
}

/// A signed download URL of `key` and when it expires.
pub async fn signed_url(core: &Core, key: &str) -> Result<(SignedUrl, DateTime<Utc>)> {
    let now = core.clock.now();
    let expires_at =
        now + chrono::Duration::from_std(core.settings.signed_url_ttl).unwrap_or_default();
    let url = core.blobs.signed_url(key, expires_at, now).await?;
    Ok((url, expires_at))
}

/// One pass of the sweep: removes the blobs of records older than the
/// grace period (at most `limit`), and partial writes as old. Returns how
/// many blobs it removed.
pub async fn sweep_once(core: &Core, limit: u64) -> Result<u64> {
    let now = core.clock.now();
    let before = now - chrono::Duration::from_std(core.settings.orphan_grace).unwrap_or_default();
    let stale = pending_blob::Entity::find()
        .filter(pending_blob::Column::CreatedMs.lt(before.timestamp_millis()))
        .order_by_asc(pending_blob::Column::CreatedMs)
        .limit(limit)
        .all(core.store.unscoped())
        .await?;
    let mut removed = 0;
    for record in stale {
        // Claim the record first: an upload settling it at the same moment
        // then fails instead of committing a row whose blob is going.
        let claimed = pending_blob::Entity::delete_many()
            .filter(pending_blob::Column::BlobKey.eq(&record.blob_key))
            .filter(pending_blob::Column::CreatedMs.eq(record.created_ms))
            .exec(core.store.unscoped())
            .await?;
        if claimed.rows_affected != 1 {
            continue;
        }
        if let Err(e) = core.blobs.delete(&record.blob_key).await {
            tracing::warn!(error = %e, "could not remove an orphan blob; will retry");
            pending_blob::Entity::insert(pending_blob::ActiveModel::from(record))
                .exec_without_returning(core.store.unscoped())
                .await?;
            continue;
        }
        removed += 1;
    }
    removed += core.blobs.sweep_partials(before).await?;
    Ok(removed)
}

/// Sweeps every `interval` until shutdown.
pub async fn sweep_loop(core: std::sync::Arc<Core>, interval: Duration) {
    loop {
        loop {
            match sweep_once(&core, 1000).await {
                Ok(n) if n >= 1000 => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(removed = n, "orphan blobs swept");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "orphan sweep failed");
                    break;
                }
            }
        }
        tokio::select! {
            () = core.shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
