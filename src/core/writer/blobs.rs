//! The capture path's writes in the group commit: a blob's pending record
//! (committed before its bytes are written) and a capture's row with its
//! detections (committed with the record's removal). Uploads arrive
//! concurrently, so their commits share fsyncs like readings do.

use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter};

use super::{Done, Job};
use crate::{
    error::{Error, Result},
    store::entities::{capture, capture_detection, pending_blob},
};

/// Detection rows per `INSERT` (13 parameters each, under SQLite's 32,766).
const DETECTION_CHUNK: usize = 2000;

pub(super) async fn pending_records(
    conn: &DatabaseTransaction,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
) -> Result<()> {
    let mut records = Vec::new();
    for &i in idx {
        if let Job::PendingBlob(p) = jobs[i] {
            records.push(pending_blob::ActiveModel::from(pending_blob::Model {
                blob_key: p.key.clone(),
                created_ms: p.created_ms,
            }));
            done[i] = Some(Done::Stored(1));
        }
    }
    if !records.is_empty() {
        pending_blob::Entity::insert_many(records)
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

pub(super) async fn captures(
    conn: &DatabaseTransaction,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
) -> Result<()> {
    let mut keys = Vec::new();
    let mut rows = Vec::new();
    let mut detections = Vec::new();
    for &i in idx {
        if let Job::Capture(c) = jobs[i] {
            keys.push(c.row.blob_key.clone());
            rows.push(capture::ActiveModel::from(c.row.clone()));
            detections.extend(
                c.detections
                    .iter()
                    .cloned()
                    .map(capture_detection::ActiveModel::from),
            );
            done[i] = Some(Done::Stored(1));
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    // Each blob stops being pending; a record the sweep already took means
    // the blob is gone, and its row must not commit.
    let settled = pending_blob::Entity::delete_many()
        .filter(pending_blob::Column::BlobKey.is_in(keys.iter().cloned()))
        .exec(conn)
        .await?
        .rows_affected;
    if settled != keys.len() as u64 {
        return Err(if keys.len() == 1 {
            crate::core::blobs::swept_before_its_row()
        } else {
            // Retried one by one, which names the late upload.
            Error::Internal("a capture's blob was swept before its row".into())
        });
    }
    capture::Entity::insert_many(rows)
        .exec_without_returning(conn)
        .await?;
    while !detections.is_empty() {
        let rest = detections.split_off(detections.len().min(DETECTION_CHUNK));
        capture_detection::Entity::insert_many(std::mem::replace(&mut detections, rest))
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}
