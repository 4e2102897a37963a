//! Store models → protobuf messages. Pure functions, no I/O.

use chrono::{DateTime, Utc};

use crate::{
    core::{self, rfc3339},
    proto,
    store::entities::{api_key, audit_event, device, device_group, location},
};

/// A device as operators see it; its status as of `now`.
pub fn device(
    m: &device::Model,
    interval: std::time::Duration,
    now: DateTime<Utc>,
) -> proto::Device {
    proto::Device {
        id: m.id.to_string(),
        name: m.name.clone(),
        status: core::devices::status(m, interval, now).as_str().to_owned(),
        last_seen_at: m.last_seen_at.map(rfc3339),
        firmware_version: m.firmware_version.clone(),
        uptime_seconds: m.uptime_seconds.map(|s| s.max(0) as u64),
        reported_ip: m.reported_ip.clone(),
        source_ip: m.source_ip.clone(),
        location_id: m.location_id.map(|id| id.to_string()),
        group_id: m.group_id.map(|id| id.to_string()),
        tags: core::validate::tags_from_json(&m.tags),
        created_at: rfc3339(m.created_at),
        serial_number: m.serial_number.clone(),
        hardware_model: m.hardware_model.clone(),
        hostname: m.hostname.clone(),
        sensor_keys: m
            .sensor_keys
            .as_deref()
            .map(core::validate::tags_from_json)
            .unwrap_or_default(),
    }
}

pub fn location(m: &location::Model) -> proto::Location {
    proto::Location {
        id: m.id.to_string(),
        name: m.name.clone(),
        latitude: m.latitude,
        longitude: m.longitude,
        timezone: m.timezone.clone(),
        created_at: rfc3339(m.created_at),
    }
}

/// The location as `/config` shows it to the device.
pub fn config_location(m: &location::Model) -> proto::ConfigLocation {
    proto::ConfigLocation {
        id: m.id.to_string(),
        name: m.name.clone(),
        latitude: m.latitude,
        longitude: m.longitude,
        timezone: m.timezone.clone(),
    }
}

pub fn group(m: &device_group::Model) -> proto::Group {
    proto::Group {
        id: m.id.to_string(),
        name: m.name.clone(),
        description: m.description.clone(),
        created_at: rfc3339(m.created_at),
        sensor_keys: m
            .sensor_keys
            .as_deref()
            .map(core::validate::tags_from_json)
            .unwrap_or_default(),
    }
}

/// An API key as listed: never its secret (`api_key` is only in the create answer).
pub fn api_key(m: &api_key::Model) -> proto::ApiKey {
    proto::ApiKey {
        id: m.id.to_string(),
        api_key: None,
        name: m.name.clone(),
        role: m.role.clone(),
        prefix: m.prefix.clone(),
        created_at: rfc3339(m.created_at),
        last_used_at: m.last_used_at.map(rfc3339),
        revoked_at: m.revoked_at.map(rfc3339),
    }
}

pub fn audit_event(m: &audit_event::Model) -> proto::AuditEvent {
    proto::AuditEvent {
        id: m.id.to_string(),
        action: m.action.clone(),
        actor: m.actor.clone().unwrap_or_default(),
        target_type: m.target_type.clone(),
        target_id: m.target_id.map(|id| id.to_string()),
        source_ip: m.source_ip.clone(),
        count: m.count.max(0) as u32,
        at: rfc3339(m.at),
        detail: m.detail.clone(),
    }
}
