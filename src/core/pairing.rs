//! Pairing: a one-time provisioning token becomes a persistent device key.

use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::{Core, devices, validate};
use crate::{
    auth::secret::{self, SecretKind},
    bus::Event,
    error::{Error, Result},
    store::entities::{device, device_key, provisioning_token},
};

pub struct PairInput {
    pub token: String,
    pub hardware_model: Option<String>,
    pub serial_number: Option<String>,
    pub firmware_version: Option<String>,
}

pub struct Paired {
    pub device_id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub api_key: String,
}

const REJECTED: &str = "provisioning token is unknown, already used, revoked or expired";

pub async fn pair(core: &Core, input: PairInput) -> Result<Paired> {
    if secret::parse(&input.token) != Some(SecretKind::ProvisioningToken) {
        return Err(Error::Unauthenticated(
            "malformed provisioning token".into(),
        ));
    }
    let hardware_model = validate::short_text("hardware_model", input.hardware_model.as_deref())?;
    let serial_number = validate::short_text("serial_number", input.serial_number.as_deref())?;
    let firmware_version =
        validate::short_text("firmware_version", input.firmware_version.as_deref())?;

    let hash = secret::hash(&input.token);
    core.count_auth_lookup();
    let token = provisioning_token::Entity::find()
        .filter(provisioning_token::Column::SecretHash.eq(&hash))
        .one(core.store.unscoped())
        .await?
        .ok_or_else(|| Error::Unauthenticated(REJECTED.into()))?;

    let now = core.clock.now();
    let mut tx = core.store.org_tx(token.org_id).await?;
    // Lock the device first, as every key operation does, so that pairing and
    // a concurrent new token or rotation cannot deadlock.
    let device = devices::lock_by_id(&tx, token.device_id).await?;
    // Claim the token with a conditional update, so two concurrent pairings
    // with the same token cannot both succeed.
    let claimed = provisioning_token::Entity::update_many()
        .col_expr(provisioning_token::Column::UsedAt, Some(now).into())
        .filter(provisioning_token::Column::Id.eq(token.id))
        .filter(provisioning_token::Column::OrgId.eq(tx.org_id()))
        .filter(provisioning_token::Column::UsedAt.is_null())
        .filter(provisioning_token::Column::RevokedAt.is_null())
        .filter(provisioning_token::Column::ExpiresAt.gt(now))
        .exec(tx.conn())
        .await?;
    if claimed.rows_affected != 1 {
        return Err(Error::Unauthenticated(REJECTED.into()));
    }

    // A re-paired device (new SD card, factory reset) keeps one live key.
    device_key::Entity::update_many()
        .col_expr(device_key::Column::RevokedAt, Some(now).into())
        .filter(device_key::Column::DeviceId.eq(device.id))
        .filter(device_key::Column::RevokedAt.is_null())
        .exec(tx.conn())
        .await?;
    let api_key = devices::insert_device_key(core, &tx, device.id).await?;

    let mut active: device::ActiveModel = device.clone().into();
    if hardware_model.is_some() {
        active.hardware_model = Set(hardware_model);
    }
    if serial_number.is_some() {
        active.serial_number = Set(serial_number);
    }
    if firmware_version.is_some() {
        active.firmware_version = Set(firmware_version);
    }
    let device = active.update(tx.conn()).await?;
    tx.publish(Event::DeviceKeysChanged {
        device_id: device.id,
    })
    .await?;
    tx.commit().await?;
    Ok(Paired {
        device_id: device.id,
        org_id: device.org_id,
        name: device.name,
        api_key,
    })
}
