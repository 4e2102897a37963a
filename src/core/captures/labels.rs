//! Labels: detections set on a capture after upload (cloud inference, a
//! human, the device's second thoughts), replacing the capture's or added
//! to them. Each detection keeps who set it, with which model, and when.

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

use super::{DetectionInput, MAX_DETECTIONS, ModelRef, check_detections, detection_rows, find_row};
use crate::{
    auth::DevicePrincipal,
    core::{Core, validate},
    error::{Error, Result},
    store::entities::capture_detection,
};

pub struct LabelsInput {
    pub capture_id: String,
    pub detections: Vec<DetectionInput>,
    /// "replace" (default) or "append".
    pub mode: Option<String>,
    /// Who set them; default "device".
    pub source: Option<String>,
    pub model: Option<ModelRef>,
}

/// Sets the detections of one of this device's captures; answers all of
/// the capture's detections, in order.
pub async fn set(
    core: &Core,
    who: &DevicePrincipal,
    input: LabelsInput,
) -> Result<Vec<capture_detection::Model>> {
    let append = match input.mode.as_deref().map(str::trim) {
        None | Some("") | Some("replace") => false,
        Some("append") => true,
        Some(other) => {
            return Err(Error::invalid(format!(
                "mode must be \"replace\" or \"append\", not {other:?}"
            )));
        }
    };
    let source =
        validate::short_text("source", input.source.as_deref())?.unwrap_or_else(|| "device".into());
    let model = match input.model {
        Some(m) => Some(ModelRef {
            name: validate::name("model.name", &m.name)?,
            version: validate::short_text("model.version", m.version.as_deref())?,
        }),
        None => None,
    };
    // Not a UUID, or not this device's: the same 404.
    let id = validate::path_id("capture", input.capture_id.trim())?;
    let tx = core.store.org_tx(who.org_id).await?;
    let row = find_row(&tx, id)
        .await?
        .filter(|r| r.device_id == who.device_id)
        .ok_or_else(|| Error::not_found("capture"))?;
    let width = u32::try_from(row.width).unwrap_or(0);
    let height = u32::try_from(row.height).unwrap_or(0);
    check_detections(&input.detections, width, height)?;
    let current = capture_detection::Entity::find()
        .filter(capture_detection::Column::OrgId.eq(who.org_id))
        .filter(capture_detection::Column::CaptureId.eq(id))
        .order_by_desc(capture_detection::Column::Position)
        .one(tx.conn())
        .await?
        .map(|d| d.position + 1)
        .unwrap_or(0);
    let first = if append {
        let count = capture_detection::Entity::find()
            .filter(capture_detection::Column::OrgId.eq(who.org_id))
            .filter(capture_detection::Column::CaptureId.eq(id))
            .count(tx.conn())
            .await?;
        if count as usize + input.detections.len() > MAX_DETECTIONS {
            return Err(Error::invalid(format!(
                "detections: the capture would have more than {MAX_DETECTIONS}"
            )));
        }
        current
    } else {
        capture_detection::Entity::delete_many()
            .filter(capture_detection::Column::OrgId.eq(who.org_id))
            .filter(capture_detection::Column::CaptureId.eq(id))
            .exec(tx.conn())
            .await?;
        0
    };
    let rows = detection_rows(
        who.org_id,
        id,
        first,
        &input.detections,
        &source,
        model.as_ref(),
        core.clock.now().timestamp_millis(),
    );
    if !rows.is_empty() {
        capture_detection::Entity::insert_many(
            rows.into_iter().map(capture_detection::ActiveModel::from),
        )
        .exec_without_returning(tx.conn())
        .await?;
    }
    let all = capture_detection::Entity::find()
        .filter(capture_detection::Column::OrgId.eq(who.org_id))
        .filter(capture_detection::Column::CaptureId.eq(id))
        .order_by_asc(capture_detection::Column::Position)
        .all(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(all)
}
