//! Captures: an image a device took, what its model saw in it
//! (detections), and the device's sensor readings at the time. Upload
//! ([`upload`]) streams the image into the blob store; labels ([`labels`])
//! replace or extend the detections later; admins list, get, delete and
//! export them.

pub mod image;
pub mod labels;
pub mod upload;

use bytes::Bytes;
use chrono::DateTime;
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Query},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Core, blobs, page::Cursor, validate};
use crate::{
    auth::{OrgRead, OrgWrite},
    error::{Error, Result},
    store::{
        OrgTx,
        entities::{capture, capture_detection},
    },
};

/// At most this many detections on one capture.
pub const MAX_DETECTIONS: usize = 1000;

/// A detection as a caller gives it.
#[derive(Clone, Debug)]
pub struct DetectionInput {
    pub label: String,
    pub confidence: f64,
    /// [x_min, y_min, x_max, y_max] in pixels.
    pub bbox: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRef {
    pub name: String,
    pub version: Option<String>,
}

/// The `meta` of an upload.
#[derive(Clone, Debug, Default)]
pub struct MetaInput {
    pub detections: Vec<DetectionInput>,
    /// RFC 3339 (Unix milliseconds were converted on the way in).
    pub ts: Option<String>,
    pub capture_id: Option<String>,
    pub model: Option<ModelRef>,
    pub tags: Vec<String>,
}

/// One piece of an upload, in the order it arrived: the meta (at most once,
/// before or after the image) and the image's bytes.
pub enum UploadPart {
    Meta(MetaInput),
    Data(Bytes),
}

/// A sensor's latest reading, as stored with a capture.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SnapshotEntry {
    pub sensor_type: String,
    pub value: f64,
    pub unit: String,
    pub ts_ms: i64,
}

/// A capture with its detections (in order) and sensor snapshot.
#[derive(Clone, Debug)]
pub struct CaptureView {
    pub row: capture::Model,
    pub detections: Vec<capture_detection::Model>,
    pub snapshot: Vec<SnapshotEntry>,
}

impl CaptureView {
    fn new(row: capture::Model, detections: Vec<capture_detection::Model>) -> Self {
        let snapshot = serde_json::from_str(&row.sensor_snapshot).unwrap_or_default();
        Self {
            row,
            detections,
            snapshot,
        }
    }

    pub fn tags(&self) -> Vec<String> {
        validate::tags_from_json(&self.row.tags)
    }

    pub fn model(&self) -> Option<ModelRef> {
        self.row.model_name.clone().map(|name| ModelRef {
            name,
            version: self.row.model_version.clone(),
        })
    }
}

/// Checks detections against the image they are on; errors name the
/// detection (`detections[2].bbox: ...`).
pub fn check_detections(detections: &[DetectionInput], width: u32, height: u32) -> Result<()> {
    if detections.len() > MAX_DETECTIONS {
        return Err(Error::invalid(format!(
            "detections: at most {MAX_DETECTIONS} per capture"
        )));
    }
    for (i, d) in detections.iter().enumerate() {
        let at = |field: &str| format!("detections[{i}].{field}");
        if d.label.trim().is_empty() {
            return Err(Error::invalid(format!("{} must not be empty", at("label"))));
        }
        validate::name(&at("label"), &d.label)?;
        if !(0.0..=1.0).contains(&d.confidence) {
            return Err(Error::invalid(format!(
                "{} must be between 0 and 1",
                at("confidence")
            )));
        }
        let [x_min, y_min, x_max, y_max] = d.bbox[..] else {
            return Err(Error::invalid(format!(
                "{} must be [x_min, y_min, x_max, y_max]",
                at("bbox")
            )));
        };
        let (w, h) = (f64::from(width), f64::from(height));
        let inside = [x_min, y_min, x_max, y_max].iter().all(|v| v.is_finite())
            && 0.0 <= x_min
            && x_min < x_max
            && x_max <= w
            && 0.0 <= y_min
            && y_min < y_max
            && y_max <= h;
        if !inside {
            return Err(Error::invalid(format!(
                "{}: [{x_min}, {y_min}, {x_max}, {y_max}] must satisfy 0 <= x_min < x_max <= {width} \
                 and 0 <= y_min < y_max <= {height} (the image's width and height)",
                at("bbox")
            )));
        }
    }
    Ok(())
}

/// The detection rows of a capture, positions from `first`.
fn detection_rows(
    org_id: Uuid,
    capture_id: Uuid,
    first: i32,
    detections: &[DetectionInput],
    source: &str,
    model: Option<&ModelRef>,
    set_ms: i64,
) -> Vec<capture_detection::Model> {
    detections
        .iter()
        .zip(first..)
        .map(|(d, position)| capture_detection::Model {
            org_id,
            capture_id,
            position,
            label: d.label.trim().to_owned(),
            confidence: d.confidence,
            x_min: d.bbox[0],
            y_min: d.bbox[1],
            x_max: d.bbox[2],
            y_max: d.bbox[3],
            source: source.to_owned(),
            model_name: model.map(|m| m.name.clone()),
            model_version: model.and_then(|m| m.version.clone()),
            set_ms,
        })
        .collect()
}

async fn find_row(tx: &OrgTx, id: Uuid) -> Result<Option<capture::Model>> {
    Ok(capture::Entity::find_by_id((tx.org_id(), id))
        .one(tx.conn())
        .await?)
}

async fn detections_of(tx: &OrgTx, ids: &[Uuid]) -> Result<Vec<capture_detection::Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(capture_detection::Entity::find()
        .filter(capture_detection::Column::OrgId.eq(tx.org_id()))
        .filter(capture_detection::Column::CaptureId.is_in(ids.iter().copied()))
        .order_by_asc(capture_detection::Column::CaptureId)
        .order_by_asc(capture_detection::Column::Position)
        .all(tx.conn())
        .await?)
}

async fn view(tx: &OrgTx, row: capture::Model) -> Result<CaptureView> {
    let detections = detections_of(tx, &[row.id]).await?;
    Ok(CaptureView::new(row, detections))
}

/// Attaches each capture's detections (one query for the page).
async fn views(tx: &OrgTx, rows: Vec<capture::Model>) -> Result<Vec<CaptureView>> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut by_capture: std::collections::HashMap<Uuid, Vec<capture_detection::Model>> =
        std::collections::HashMap::new();
    for d in detections_of(tx, &ids).await? {
        by_capture.entry(d.capture_id).or_default().push(d);
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let detections = by_capture.remove(&row.id).unwrap_or_default();
            CaptureView::new(row, detections)
        })
        .collect())
}

/// What a capture list selects.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub device_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub label: Option<String>,
    pub min_confidence: Option<f64>,
}

fn time_ms(field: &str, v: Option<&str>) -> Result<Option<i64>> {
    v.filter(|v| !v.is_empty())
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_millis())
                .map_err(|_| Error::invalid(format!("{field} must be an RFC 3339 time")))
        })
        .transpose()
}

/// A page of captures, newest first by (taken, id).
pub async fn list(
    core: &Core,
    access: &OrgRead,
    filters: &Filters,
    size: u64,
    after: Option<Cursor>,
) -> Result<(Vec<CaptureView>, String)> {
    let from = time_ms("from", filters.from.as_deref())?;
    let to = time_ms("to", filters.to.as_deref())?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(Error::invalid("from must be before to"));
    }
    let device = validate::opt_uuid("device_id", filters.device_id.as_deref())?;
    let label = filters
        .label
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty());
    let tx = core.store.org_read(access.org_id()).await?;
    let mut select = capture::Entity::find().filter(capture::Column::OrgId.eq(tx.org_id()));
    if let Some(device) = device {
        select = select.filter(capture::Column::DeviceId.eq(device));
    }
    if let Some(from) = from {
        select = select.filter(capture::Column::TakenMs.gte(from));
    }
    if let Some(to) = to {
        select = select.filter(capture::Column::TakenMs.lt(to));
    }
    if label.is_some() || filters.min_confidence.is_some() {
        use capture_detection::Column as D;
        let mut sub = Query::select();
        sub.expr(Expr::val(1))
            .from(capture_detection::Entity)
            .and_where(
                Expr::col((capture_detection::Entity, D::OrgId))
                    .equals((capture::Entity, capture::Column::OrgId)),
            )
            .and_where(
                Expr::col((capture_detection::Entity, D::CaptureId))
                    .equals((capture::Entity, capture::Column::Id)),
            );
        if let Some(label) = label {
            sub.and_where(Expr::col((capture_detection::Entity, D::Label)).eq(label));
        }
        if let Some(min) = filters.min_confidence {
            sub.and_where(Expr::col((capture_detection::Entity, D::Confidence)).gte(min));
        }
        select = select.filter(Expr::exists(sub));
    }
    if let Some(c) = after {
        select = select.filter(
            Condition::any()
                .add(capture::Column::TakenMs.lt(c.key))
                .add(
                    Condition::all()
                        .add(capture::Column::TakenMs.eq(c.key))
                        .add(capture::Column::Id.lt(c.id)),
                ),
        );
    }
    let mut rows = select
        .order_by_desc(capture::Column::TakenMs)
        .order_by_desc(capture::Column::Id)
        .limit(size + 1)
        .all(tx.conn())
        .await?;
    let next = if rows.len() as u64 > size {
        rows.truncate(size as usize);
        rows.last()
            .map(|r| {
                Cursor {
                    key: r.taken_ms,
                    id: r.id,
                }
                .encode()
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    let out = views(&tx, rows).await?;
    tx.commit().await?;
    Ok((out, next))
}

pub async fn get(core: &Core, access: &OrgRead, id: &str) -> Result<CaptureView> {
    let id = validate::path_id("capture", id)?;
    let tx = core.store.org_read(access.org_id()).await?;
    let row = find_row(&tx, id)
        .await?
        .ok_or_else(|| Error::not_found("capture"))?;
    let out = view(&tx, row).await?;
    tx.commit().await?;
    Ok(out)
}

/// Deletes the capture, then its image.
pub async fn delete(core: &Core, access: &OrgWrite, id: &str) -> Result<()> {
    let id = validate::path_id("capture", id)?;
    let tx = core.store.org_tx(access.org_id()).await?;
    let row = find_row(&tx, id)
        .await?
        .ok_or_else(|| Error::not_found("capture"))?;
    capture_detection::Entity::delete_many()
        .filter(capture_detection::Column::OrgId.eq(tx.org_id()))
        .filter(capture_detection::Column::CaptureId.eq(id))
        .exec(tx.conn())
        .await?;
    capture::Entity::delete_by_id((tx.org_id(), id))
        .exec(tx.conn())
        .await?;
    blobs::release(&tx, &row.blob_key).await?;
    tx.commit().await?;
    blobs::discard(core, &row.blob_key).await;
    Ok(())
}
