//! Locations and groups: where devices are and how they are managed together.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::{Core, new_id, page::PageRequest, validate};
use crate::{
    auth::{OrgRead, OrgWrite},
    error::{Error, Result},
    store::{
        OrgTx,
        entities::{device_group, location},
    },
};

pub struct NewLocation {
    pub name: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub timezone: Option<String>,
}

pub async fn create_location(
    core: &Core,
    access: &OrgWrite,
    input: NewLocation,
) -> Result<location::Model> {
    let name = validate::name("name", &input.name)?;
    if let Some(lat) = input.latitude
        && !(-90.0..=90.0).contains(&lat)
    {
        return Err(Error::invalid("latitude must be between -90 and 90"));
    }
    if let Some(lon) = input.longitude
        && !(-180.0..=180.0).contains(&lon)
    {
        return Err(Error::invalid("longitude must be between -180 and 180"));
    }
    let timezone = validate::short_text("timezone", input.timezone.as_deref())?;
    let tx = core.store.org_tx(access.org_id()).await?;
    let model = location::Entity::insert(location::ActiveModel {
        id: Set(new_id()),
        org_id: Set(tx.org_id()),
        name: Set(name),
        latitude: Set(input.latitude),
        longitude: Set(input.longitude),
        timezone: Set(timezone),
        created_at: Set(core.clock.now()),
    })
    .exec_with_returning(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(model)
}

pub async fn list_locations(
    core: &Core,
    access: &OrgRead,
    page: PageRequest,
) -> Result<(Vec<location::Model>, String)> {
    let tx = core.store.org_read(access.org_id()).await?;
    let select = location::Entity::find().filter(location::Column::OrgId.eq(tx.org_id()));
    let out = page
        .fetch(select, location::Column::Id, tx.conn(), |m| m.id)
        .await?;
    tx.commit().await?;
    Ok(out)
}

pub async fn create_group(
    core: &Core,
    access: &OrgWrite,
    name: &str,
    description: Option<&str>,
) -> Result<device_group::Model> {
    let name = validate::name("name", name)?;
    let description = validate::short_text("description", description)?;
    let tx = core.store.org_tx(access.org_id()).await?;
    let model = device_group::Entity::insert(device_group::ActiveModel {
        id: Set(new_id()),
        org_id: Set(tx.org_id()),
        name: Set(name),
        description: Set(description),
        created_at: Set(core.clock.now()),
        sensor_keys: Set(None),
    })
    .exec_with_returning(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(model)
}

pub async fn list_groups(
    core: &Core,
    access: &OrgRead,
    page: PageRequest,
) -> Result<(Vec<device_group::Model>, String)> {
    let tx = core.store.org_read(access.org_id()).await?;
    let select = device_group::Entity::find().filter(device_group::Column::OrgId.eq(tx.org_id()));
    let out = page
        .fetch(select, device_group::Column::Id, tx.conn(), |m| m.id)
        .await?;
    tx.commit().await?;
    Ok(out)
}

pub struct GroupUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    /// `Some(vec![])`: every registered type.
    pub sensor_keys: Option<Vec<String>>,
}

pub async fn update_group(
    core: &Core,
    access: &OrgWrite,
    id: &str,
    update: GroupUpdate,
) -> Result<device_group::Model> {
    let id = validate::path_id("group", id)?;
    // Checked before the write transaction: the sensor type registry may
    // need a connection of its own.
    let sensor_list = match &update.sensor_keys {
        Some(keys) => Some(super::devices::sensor_keys(core, access.org_id(), keys).await?),
        None => None,
    };
    let mut tx = core.store.org_tx(access.org_id()).await?;
    let group = find_group(&tx, id).await?;
    let mut active: device_group::ActiveModel = group.into();
    if let Some(name) = &update.name {
        active.name = Set(validate::name("name", name)?);
    }
    if let Some(description) = &update.description {
        active.description = Set(validate::short_text("description", Some(description))?);
    }
    if let Some(keys) = sensor_list {
        active.sensor_keys = Set(keys);
    }
    let group = sea_orm::ActiveModelTrait::update(active, tx.conn()).await?;
    tx.publish(crate::bus::Event::PlacesChanged {
        org_id: tx.org_id(),
    })
    .await?;
    tx.commit().await?;
    Ok(group)
}

/// The location with this id in the transaction's organization, or 404.
pub async fn find_location(tx: &OrgTx, id: Uuid) -> Result<location::Model> {
    location::Entity::find_by_id(id)
        .filter(location::Column::OrgId.eq(tx.org_id()))
        .one(tx.conn())
        .await?
        .ok_or_else(|| Error::not_found("location"))
}

/// The group with this id in the transaction's organization, or 404.
pub async fn find_group(tx: &OrgTx, id: Uuid) -> Result<device_group::Model> {
    device_group::Entity::find_by_id(id)
        .filter(device_group::Column::OrgId.eq(tx.org_id()))
        .one(tx.conn())
        .await?
        .ok_or_else(|| Error::not_found("group"))
}
