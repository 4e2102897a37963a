//! What devices push: sensor readings, telemetry and events. Each batch is
//! checked whole before anything is written (all or nothing, the error
//! naming the index), then handed to the group-commit writer; the answer
//! comes after the commit. Readings then go through the alert rules.

use chrono::{DateTime, Utc};
use std::time::Duration;

use super::{
    Core, alerts, new_id,
    sensor_types::{self, OFFLINE_SECONDS},
    writer::{Done, EventRow, Job, ReadingRow, Rows, TelemetryRow},
};
use crate::{
    auth::DevicePrincipal,
    error::{Error, Result},
};

/// How far ahead of the server's clock a device `ts` may be.
pub const MAX_FUTURE: Duration = Duration::from_secs(5 * 60);

pub struct ReadingInput {
    pub sensor_type: String,
    pub value: f64,
    pub unit: Option<String>,
    /// RFC 3339 (JSON Unix milliseconds were converted on the way in).
    pub ts: Option<String>,
    pub seq: Option<u64>,
}

pub struct SensorsOutcome {
    pub accepted: u32,
    pub duplicates: u32,
    pub alerts: Vec<alerts::AlertChange>,
}

pub struct EventInput {
    pub kind: String,
    pub severity: Option<String>,
    pub message: Option<String>,
    /// A JSON object, or none.
    pub data: Option<serde_json::Value>,
    pub ts: Option<String>,
}

/// A device time as Unix milliseconds, within the accepted window.
pub(crate) fn device_ts(
    core: &Core,
    field: &str,
    ts: Option<&str>,
    now: DateTime<Utc>,
) -> Result<i64> {
    let Some(ts) = ts else {
        return Ok(now.timestamp_millis());
    };
    let at = DateTime::parse_from_rfc3339(ts)
        .map_err(|_| {
            Error::invalid(format!(
                "{field} must be an RFC 3339 time or Unix milliseconds"
            ))
        })?
        .with_timezone(&Utc);
    let ahead = chrono::Duration::from_std(MAX_FUTURE).expect("a small duration");
    if at > now + ahead {
        return Err(Error::invalid(format!(
            "{field} is more than 5 minutes in the future"
        )));
    }
    let horizon = core.settings.ts_horizon;
    if at < now - chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::MAX) {
        return Err(Error::invalid(format!(
            "{field} is older than the {}-day horizon",
            horizon.as_secs() / 86_400
        )));
    }
    Ok(at.timestamp_millis())
}

pub(crate) fn deadline(core: &Core) -> Duration {
    core.settings.database_timeout * 2
}

pub async fn push_sensors(
    core: &Core,
    who: &DevicePrincipal,
    readings: Vec<ReadingInput>,
) -> Result<SensorsOutcome> {
    let types = core.sensor_types.for_org(&core.store, who.org_id).await?;
    let now = core.clock.now();
    let mut rows = Vec::with_capacity(readings.len());
    for (i, r) in readings.into_iter().enumerate() {
        let at = |field: &str| format!("readings[{i}].{field}");
        if r.sensor_type == OFFLINE_SECONDS {
            return Err(Error::invalid(format!(
                "{} {OFFLINE_SECONDS:?} is measured by the server, not reported",
                at("sensor_type")
            )));
        }
        let Some(kind) = types.get(&r.sensor_type) else {
            return Err(Error::invalid(format!(
                "{} {:?} is not a registered sensor type",
                at("sensor_type"),
                r.sensor_type
            )));
        };
        let value = match r.unit.as_deref() {
            None => r.value,
            Some(unit) => sensor_types::convert(r.value, unit, &kind.unit).ok_or_else(|| {
                Error::invalid(format!(
                    "{} {unit:?} cannot be converted to {:?}, the unit of {}",
                    at("unit"),
                    kind.unit,
                    kind.key
                ))
            })?,
        };
        if !value.is_finite() {
            return Err(Error::invalid(format!(
                "{} must be a finite number",
                at("value")
            )));
        }
        if let Some(min) = kind.min
            && value < min
        {
            return Err(Error::invalid(format!(
                "{} must be at least {min} {}",
                at("value"),
                kind.unit
            )));
        }
        if let Some(max) = kind.max
            && value > max
        {
            return Err(Error::invalid(format!(
                "{} must be at most {max} {}",
                at("value"),
                kind.unit
            )));
        }
        rows.push(ReadingRow {
            sensor_type: r.sensor_type,
            value,
            ts_ms: device_ts(core, &at("ts"), r.ts.as_deref(), now)?,
            seq: r.seq.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        });
    }
    let evaluated: Vec<alerts::Sample> = rows
        .iter()
        .map(|r| alerts::Sample {
            sensor_type: r.sensor_type.clone(),
            value: r.value,
            ts_ms: r.ts_ms,
        })
        .collect();
    let job = Job::Readings(Rows {
        org_id: who.org_id,
        device_id: who.device_id,
        received_ms: now.timestamp_millis(),
        rows,
    });
    let Done::Readings(stored) = core.writer.write(job, deadline(core)).await? else {
        return Err(Error::Internal("readings answered out of kind".into()));
    };
    let accepted = stored.iter().filter(|s| **s).count();
    // Retried (duplicate) readings are evaluated again: if the first try
    // committed but died before its alerts were, they open now.
    let alerts = alerts::evaluate_readings(core, who, evaluated).await?;
    Ok(SensorsOutcome {
        accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
        duplicates: u32::try_from(stored.len() - accepted).unwrap_or(u32::MAX),
        alerts,
    })
}

/// Stores telemetry values (numbers, strings, booleans: checked on the way
/// in); answers how many were stored.
pub async fn push_telemetry(
    core: &Core,
    who: &DevicePrincipal,
    values: Vec<(String, serde_json::Value)>,
    ts: Option<String>,
) -> Result<u32> {
    let now = core.clock.now();
    let ts_ms = device_ts(core, "ts", ts.as_deref(), now)?;
    let rows: Vec<TelemetryRow> = values
        .into_iter()
        .map(|(key, value)| TelemetryRow {
            key: key.trim().to_owned(),
            value: value.to_string(),
            ts_ms,
        })
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    stored(
        core,
        Job::Telemetry(Rows {
            org_id: who.org_id,
            device_id: who.device_id,
            received_ms: now.timestamp_millis(),
            rows,
        }),
    )
    .await
}

pub async fn push_events(
    core: &Core,
    who: &DevicePrincipal,
    events: Vec<EventInput>,
) -> Result<u32> {
    let now = core.clock.now();
    let mut rows = Vec::with_capacity(events.len());
    let mut swapped = Vec::new();
    for (i, e) in events.into_iter().enumerate() {
        if e.kind.trim() == "model_swap" {
            let id = e.data.as_ref().and_then(|d| d.get("deployment_id"));
            if let Some(id) = id.and_then(|v| v.as_str()).and_then(|v| v.parse().ok()) {
                swapped.push(id);
            }
        }
        let data = match e.data {
            None => None,
            Some(d @ serde_json::Value::Object(_)) => Some(d.to_string()),
            Some(_) => {
                return Err(Error::invalid(format!(
                    "events[{i}].data must be an object"
                )));
            }
        };
        rows.push(EventRow {
            id: new_id(),
            kind: e.kind.trim().to_owned(),
            severity: e.severity.unwrap_or_else(|| "info".into()),
            message: e.message,
            data,
            ts_ms: device_ts(core, &format!("events[{i}].ts"), e.ts.as_deref(), now)?,
        });
    }
    let accepted = stored(
        core,
        Job::Events(Rows {
            org_id: who.org_id,
            device_id: who.device_id,
            received_ms: now.timestamp_millis(),
            rows,
        }),
    )
    .await?;
    // A model_swap with a deployment id: that deployment is active here.
    super::models::deployments::mark_active(core, who, &swapped).await?;
    Ok(accepted)
}

async fn stored(core: &Core, job: Job) -> Result<u32> {
    match core.writer.write(job, deadline(core)).await? {
        Done::Stored(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
        other => Err(Error::Internal(format!("rows answered {other:?}"))),
    }
}
