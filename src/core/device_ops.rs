//! What a paired device does for itself: heartbeat and bootstrap config.

use chrono::{DateTime, Utc};
use std::{net::IpAddr, sync::Arc};

use super::{Core, devices, orgs, places, sensor_types, validate, writer::Liveness};
use crate::{
    auth::DevicePrincipal,
    error::{Error, Result},
    store::entities::{device, device_group, location, organization},
};

pub struct Heartbeat {
    pub firmware_version: Option<String>,
    pub uptime_seconds: Option<u64>,
    pub ip_address: Option<String>,
    pub hostname: Option<String>,
}

/// Records liveness (in memory, flushed within a second: see
/// `core::liveness`); returns the server time the heartbeat was recorded at.
pub async fn heartbeat(
    core: &Core,
    who: &DevicePrincipal,
    hb: Heartbeat,
    source_ip: IpAddr,
) -> Result<DateTime<Utc>> {
    let firmware_version =
        validate::short_text("firmware_version", hb.firmware_version.as_deref())?;
    let hostname = validate::short_text("hostname", hb.hostname.as_deref())?;
    let reported_ip = match hb.ip_address.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(ip) => Some(
            ip.parse::<IpAddr>()
                .map_err(|_| Error::invalid("ip_address must be an IPv4 or IPv6 address"))?
                .to_string(),
        ),
    };
    let uptime = match hb.uptime_seconds {
        None => None,
        Some(s) => {
            Some(i64::try_from(s).map_err(|_| Error::invalid("uptime_seconds is too large"))?)
        }
    };
    if core
        .liveness
        .failing_for(core.settings.database_timeout * 2)
    {
        return Err(super::liveness::not_recording());
    }
    let now = core.clock.now();
    // Flushed within `liveness::FLUSH_EVERY` (see `core::liveness`).
    core.liveness.record(Liveness {
        org_id: who.org_id,
        device_id: who.device_id,
        at: now,
        source_ip: source_ip.to_string(),
        firmware_version,
        uptime_seconds: uptime,
        reported_ip,
        hostname,
    });
    Ok(now)
}

pub struct DeviceConfig {
    pub device: device::Model,
    pub org: organization::Model,
    pub group: Option<device_group::Model>,
    pub location: Option<location::Model>,
    pub sensor_keys: Vec<String>,
    /// The deployment and model this device should run: `/config`'s
    /// `active_model`, and what `/model` answers.
    pub deployed: Option<(uuid::Uuid, crate::store::entities::model_artifact::Model)>,
}

/// The device's configuration, from memory when nothing it shows changed.
pub async fn config(core: &Core, who: &DevicePrincipal) -> Result<Arc<DeviceConfig>> {
    if let Some(hit) = core.configs.get(who.device_id) {
        return Ok(hit);
    }
    let config = Arc::new(read_config(core, who).await?);
    core.configs.put(config.clone());
    Ok(config)
}

async fn read_config(core: &Core, who: &DevicePrincipal) -> Result<DeviceConfig> {
    let tx = core.store.org_read(who.org_id).await?;
    let device = devices::find_by_id(&tx, who.device_id).await?;
    let location = match device.location_id {
        Some(id) => Some(places::find_location(&tx, id).await?),
        None => None,
    };
    let group = match device.group_id {
        Some(id) => Some(places::find_group(&tx, id).await?),
        None => None,
    };
    let deployed = super::models::deployments::for_device_in(&tx, who.device_id).await?;
    tx.commit().await?;
    let org = orgs::get_org(&core.store, who.org_id).await?;
    // The device's own list, else its group's, else every registered type.
    let configured = device
        .sensor_keys
        .as_deref()
        .or(group.as_ref().and_then(|g| g.sensor_keys.as_deref()))
        .map(validate::tags_from_json)
        .filter(|keys| !keys.is_empty());
    let sensor_keys = match configured {
        Some(keys) => keys,
        None => sensor_types::list(core, who.org_id)
            .await?
            .into_iter()
            .map(|t| t.key)
            .collect(),
    };
    Ok(DeviceConfig {
        device,
        org,
        group,
        location,
        sensor_keys,
        deployed,
    })
}
