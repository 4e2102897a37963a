//! Capture upload: the one path REST multipart and the gRPC client stream
//! both feed. The image streams into the blob store as it arrives, hashed
//! and measured on the way and recognised by its first bytes; the row
//! commits only after the blob is durable.

use bytes::Bytes;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use tokio_stream::{Stream, StreamExt};
use uuid::Uuid;

use super::{
    CaptureView, MetaInput, SnapshotEntry, UploadPart, check_detections, detection_rows, find_row,
    image::{DimensionProbe, ImageKind, SNIFF_BYTES, not_an_image},
    view,
};
use crate::{
    auth::DevicePrincipal,
    core::{
        Core,
        blob_upload::{BlobUpload, too_large},
        ingest, new_id, validate,
        writer::{CaptureRows, Job},
    },
    error::{Error, Result},
    failpoint,
    store::entities::{capture, capture_detection, latest_reading},
};

/// The stored capture, and whether this upload stored it (`false`: the
/// `capture_id` was already uploaded, nothing was stored twice).
pub struct Uploaded {
    pub view: CaptureView,
    pub created: bool,
}

/// What the image turned out to be.
struct ImageFacts {
    kind: ImageKind,
    key: String,
    size: u64,
    width: u32,
    height: u32,
    sha256: String,
}

/// The image as it streams in.
struct Incoming {
    limit: u64,
    /// Bytes received so far.
    size: u64,
    /// The first bytes, until the format is known.
    head: Vec<u8>,
    kind: Option<ImageKind>,
    /// The blob, once the format (and so the key) is known.
    blob: Option<BlobUpload>,
    probe: DimensionProbe,
}

impl Incoming {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            size: 0,
            head: Vec::new(),
            kind: None,
            blob: None,
            probe: DimensionProbe::default(),
        }
    }

    async fn push(&mut self, core: &Core, who: &DevicePrincipal, bytes: Bytes) -> Result<()> {
        self.size += bytes.len() as u64;
        self.probe.feed(&bytes);
        if let Some(blob) = self.blob.as_mut() {
            return blob.push(core, bytes).await;
        }
        if self.size > self.limit {
            return Err(too_large("image", self.limit));
        }
        self.head.extend_from_slice(&bytes);
        if self.head.len() < SNIFF_BYTES {
            return Ok(());
        }
        let kind = ImageKind::sniff(&self.head)?;
        // Short keys: some S3-compatible servers keep per-object files
        // named after bucket and key, within the filesystem's 255 bytes.
        let key = format!(
            "captures/{}/{}.{}",
            who.org_id.simple(),
            new_id().simple(),
            kind.extension()
        );
        self.kind = Some(kind);
        let blob = self
            .blob
            .insert(BlobUpload::new(who.org_id, key, "image", self.limit));
        blob.push(core, Bytes::from(std::mem::take(&mut self.head)))
            .await
    }

    /// Ends the stream: the blob is durable under its key.
    async fn finish(&mut self) -> Result<ImageFacts> {
        if self.size == 0 {
            return Err(Error::invalid(
                "image is required (the image part, or data chunks)",
            ));
        }
        let (Some(kind), Some(blob)) = (self.kind, self.blob.as_mut()) else {
            return Err(not_an_image());
        };
        let (width, height) = std::mem::take(&mut self.probe).finish()?;
        let (size, sha256) = blob.finish().await?;
        Ok(ImageFacts {
            kind,
            key: blob.key().to_owned(),
            size,
            width,
            height,
            sha256,
        })
    }

    /// Removes whatever was stored of this upload.
    async fn abandon(&mut self, core: &Core) {
        if let Some(blob) = self.blob.as_mut() {
            blob.abandon(core).await;
        }
    }
}

/// Stores one capture from `parts`.
pub async fn upload<S>(core: &Core, who: &DevicePrincipal, parts: S) -> Result<Uploaded>
where
    S: Stream<Item = Result<UploadPart>> + Unpin + Send,
{
    let mut image = Incoming::new(core.settings.max_capture_bytes);
    let outcome = receive_and_store(core, who, parts, &mut image).await;
    match outcome {
        Ok(Stored::Created(view)) => Ok(Uploaded {
            view,
            created: true,
        }),
        Ok(Stored::AlreadyThere(view)) => {
            image.abandon(core).await;
            Ok(Uploaded {
                view,
                created: false,
            })
        }
        Err(e) => {
            image.abandon(core).await;
            Err(e)
        }
    }
}

enum Stored {
    Created(CaptureView),
    AlreadyThere(CaptureView),
}

async fn receive_and_store<S>(
    core: &Core,
    who: &DevicePrincipal,
    mut parts: S,
    image: &mut Incoming,
) -> Result<Stored>
where
    S: Stream<Item = Result<UploadPart>> + Unpin + Send,
{
    let mut meta: Option<MetaInput> = None;
    let mut capture_id: Option<Uuid> = None;
    while let Some(part) = parts.next().await {
        match part? {
            UploadPart::Meta(m) => {
                if meta.is_some() {
                    return Err(Error::invalid("meta was given twice"));
                }
                capture_id = validate::opt_uuid("capture_id", m.capture_id.as_deref())?;
                // Known already: answer before the image is sent at all.
                if let (Some(id), 0) = (capture_id, image.size)
                    && let Some(found) = existing(core, who, id).await?
                {
                    return Ok(Stored::AlreadyThere(found));
                }
                meta = Some(m);
            }
            UploadPart::Data(bytes) => image.push(core, who, bytes).await?,
        }
    }
    let meta = meta.unwrap_or_default();
    let now = core.clock.now();
    let ts_ms = match meta.ts.as_deref() {
        Some(ts) => Some(ingest::device_ts(core, "ts", Some(ts), now)?),
        None => None,
    };
    let tags = validate::tags(&meta.tags)?;
    let model = match &meta.model {
        Some(m) => Some(super::ModelRef {
            name: validate::name("model.name", &m.name)?,
            version: validate::short_text("model.version", m.version.as_deref())?,
        }),
        None => None,
    };
    // The snapshot is read while the image is made durable (fsyncs, or
    // the object store's last request): neither waits for the other.
    let (facts, snapshot) = tokio::join!(image.finish(), sensor_snapshot(core, who, now));
    let facts = facts?;
    check_detections(&meta.detections, facts.width, facts.height)?;
    if let Some(id) = capture_id
        && let Some(found) = existing(core, who, id).await?
    {
        return Ok(Stored::AlreadyThere(found));
    }
    let snapshot = snapshot?;
    failpoint::hit("capture-before-row");
    let id = capture_id.unwrap_or_else(new_id);
    let received_ms = now.timestamp_millis();
    let row = capture::Model {
        org_id: who.org_id,
        id,
        device_id: who.device_id,
        received_ms,
        ts_ms,
        taken_ms: ts_ms.unwrap_or(received_ms),
        content_type: facts.kind.content_type().to_owned(),
        size_bytes: i64::try_from(facts.size).unwrap_or(i64::MAX),
        width: i32::try_from(facts.width).unwrap_or(i32::MAX),
        height: i32::try_from(facts.height).unwrap_or(i32::MAX),
        sha256: facts.sha256,
        blob_key: facts.key.clone(),
        tags: validate::tags_to_json(&tags),
        model_name: model.as_ref().map(|m| m.name.clone()),
        model_version: model.as_ref().and_then(|m| m.version.clone()),
        sensor_snapshot: serde_json::to_string(&snapshot).expect("snapshot serializes"),
    };
    let detections = detection_rows(
        who.org_id,
        id,
        0,
        &meta.detections,
        "device",
        model.as_ref(),
        received_ms,
    );
    match insert(core, row, detections).await {
        Ok(view) => Ok(Stored::Created(view)),
        // The same capture_id, uploaded at the same moment by a retry.
        Err(Error::AlreadyExists(_)) if capture_id.is_some() => existing(core, who, id)
            .await?
            .map(Stored::AlreadyThere)
            .ok_or_else(|| Error::Unavailable("capture upload raced; retry".into())),
        Err(e) => Err(e),
    }
}

/// Commits the row, its detections and the end of the blob's pending
/// record, through the group commit (concurrent uploads share a commit).
async fn insert(
    core: &Core,
    row: capture::Model,
    detections: Vec<capture_detection::Model>,
) -> Result<CaptureView> {
    let rows = CaptureRows {
        row: row.clone(),
        detections: detections.clone(),
    };
    core.writer
        .write(Job::Capture(Box::new(rows)), ingest::deadline(core))
        .await?;
    Ok(CaptureView::new(row, detections))
}

/// The stored capture `id` of this device's organization, if any. Another
/// device's is a conflict (ids are per organization); another
/// organization's is invisible.
async fn existing(core: &Core, who: &DevicePrincipal, id: Uuid) -> Result<Option<CaptureView>> {
    let tx = core.store.org_read(who.org_id).await?;
    let Some(row) = find_row(&tx, id).await? else {
        tx.commit().await?;
        return Ok(None);
    };
    if row.device_id != who.device_id {
        return Err(Error::AlreadyExists(
            "capture_id is already used by another device of this organization".into(),
        ));
    }
    let out = view(&tx, row).await?;
    tx.commit().await?;
    Ok(Some(out))
}

/// This device's latest reading of each sensor type within the snapshot
/// window, in the type's unit.
async fn sensor_snapshot(
    core: &Core,
    who: &DevicePrincipal,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<SnapshotEntry>> {
    let window = chrono::Duration::from_std(core.settings.snapshot_window).unwrap_or_default();
    let since = (now - window).timestamp_millis();
    let tx = core.store.org_read(who.org_id).await?;
    let rows = latest_reading::Entity::find()
        .filter(latest_reading::Column::DeviceId.eq(who.device_id))
        .filter(latest_reading::Column::OrgId.eq(who.org_id))
        .filter(latest_reading::Column::TsMs.gte(since))
        .order_by_asc(latest_reading::Column::SensorType)
        .all(tx.conn())
        .await?;
    tx.commit().await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let types = core.sensor_types.for_org(&core.store, who.org_id).await?;
    Ok(rows
        .into_iter()
        .map(|r| SnapshotEntry {
            unit: types
                .get(&r.sensor_type)
                .map(|t| t.unit.clone())
                .unwrap_or_default(),
            sensor_type: r.sensor_type,
            value: r.value,
            ts_ms: r.ts_ms,
        })
        .collect())
}
