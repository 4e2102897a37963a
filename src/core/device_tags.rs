//! `device_tags`: one row per tag of a device, beside the device's JSON
//! `tags`, so a tag search reads an index instead of every device. Every
//! write of a device's tags goes through here, in the same transaction.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::validate;
use crate::{
    error::Result,
    store::{
        OrgTx,
        entities::{device, device_tag},
    },
};

/// Tag rows per statement: three parameters each stays under SQLite's
/// 32,766 bind parameters.
const CHUNK: usize = 5000;

/// The tag rows of new devices.
pub async fn insert(tx: &OrgTx, devices: &[device::Model]) -> Result<()> {
    let rows: Vec<device_tag::ActiveModel> = devices
        .iter()
        .flat_map(|d| {
            validate::tags_from_json(&d.tags)
                .into_iter()
                .map(move |tag| {
                    device_tag::ActiveModel::from(device_tag::Model {
                        org_id: d.org_id,
                        tag,
                        device_id: d.id,
                    })
                })
        })
        .collect();
    for chunk in rows.chunks(CHUNK) {
        device_tag::Entity::insert_many(chunk.to_vec())
            .exec(tx.conn())
            .await?;
    }
    Ok(())
}

/// The tag rows of a device whose tags were replaced.
pub async fn replace(tx: &OrgTx, device: &device::Model) -> Result<()> {
    device_tag::Entity::delete_many()
        .filter(device_tag::Column::DeviceId.eq(device.id))
        .exec(tx.conn())
        .await?;
    insert(tx, std::slice::from_ref(device)).await
}
