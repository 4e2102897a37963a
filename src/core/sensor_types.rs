//! Sensor types: the built-in registry, each organization's own types, and
//! the unit conversions readings may need. The ingest path resolves a type
//! per reading, so each organization's set is kept in memory and dropped
//! when it changes (through the bus, on every replica).

use chrono::Utc;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};
use uuid::Uuid;

use super::{Core, new_id, validate};
use crate::{
    auth::{OrgRead, OrgWrite},
    bus::Event,
    error::{Error, Result},
    store::{Store, entities::org_sensor_type},
};

pub struct SensorTypeDef {
    pub key: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
}

const fn t(key: &'static str, unit: &'static str, description: &'static str) -> SensorTypeDef {
    SensorTypeDef {
        key,
        unit,
        description,
    }
}

pub const BUILT_IN: &[SensorTypeDef] = &[
    t("temperature", "C", "Air temperature in degrees Celsius"),
    t("humidity", "%", "Relative humidity"),
    t("pressure", "hPa", "Barometric pressure"),
    t("co2", "ppm", "Carbon dioxide concentration"),
    t("tvoc", "ppb", "Total volatile organic compounds"),
    t("pm1", "ug/m3", "Particulate matter up to 1 um"),
    t("pm2_5", "ug/m3", "Particulate matter up to 2.5 um"),
    t("pm10", "ug/m3", "Particulate matter up to 10 um"),
    t("light", "lux", "Illuminance"),
    t("noise", "dBA", "A-weighted sound level"),
    t("voltage", "V", "Supply voltage"),
    t("current", "A", "Supply current"),
    t("power", "W", "Power draw"),
    t("battery", "%", "Battery charge"),
    t("soil_moisture", "%", "Volumetric soil moisture"),
    t("wind_speed", "m/s", "Wind speed"),
    t("rainfall", "mm", "Rainfall since the last reading"),
    t("cpu_temp", "C", "Processor temperature"),
    t("gpu_temp", "C", "GPU temperature"),
    t("cpu_usage", "%", "Processor load"),
    t("memory_usage", "%", "Memory in use"),
    t("disk_usage", "%", "Disk space in use"),
    t("inference_fps", "fps", "Model inference frames per second"),
    t("inference_latency", "ms", "Model inference latency"),
    t("people_count", "count", "People detected in view"),
    t("vehicle_count", "count", "Vehicles detected in view"),
];

/// Seconds since a device's last heartbeat: alert rules may watch it, the
/// server measures it, devices cannot report it.
pub const OFFLINE_SECONDS: &str = "offline_seconds";

/// Most sensor types one organization may define.
pub const MAX_ORG_TYPES: usize = 1000;

/// A sensor type as ingest sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct SensorType {
    pub key: String,
    pub unit: String,
    pub description: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub built_in: bool,
}

/// `value` in `from` expressed in `to`, when the conversion is unambiguous.
pub fn convert(value: f64, from: &str, to: &str) -> Option<f64> {
    let (from, to) = (canonical(from), canonical(to));
    if from == to {
        return Some(value);
    }
    // (from, to, factor, offset): to = from * factor + offset
    const LINEAR: &[(&str, &str, f64, f64)] = &[
        ("F", "C", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
        ("K", "C", 1.0, -273.15),
        ("Pa", "hPa", 0.01, 0.0),
        ("kPa", "hPa", 10.0, 0.0),
        ("mbar", "hPa", 1.0, 0.0),
        ("bar", "hPa", 1000.0, 0.0),
        ("mV", "V", 0.001, 0.0),
        ("mA", "A", 0.001, 0.0),
        ("mW", "W", 0.001, 0.0),
        ("kW", "W", 1000.0, 0.0),
        ("s", "ms", 1000.0, 0.0),
        ("us", "ms", 0.001, 0.0),
        ("km/h", "m/s", 1.0 / 3.6, 0.0),
        ("cm", "mm", 10.0, 0.0),
    ];
    // Each entry also converts back (from = (to - offset) / factor).
    LINEAR.iter().find_map(|(f, t, factor, offset)| {
        if *f == from && *t == to {
            Some(value * factor + offset)
        } else if *f == to && *t == from {
            Some((value - offset) / factor)
        } else {
            None
        }
    })
}

/// Spellings of the same unit.
fn canonical(unit: &str) -> &str {
    match unit.trim() {
        "°C" | "degC" | "celsius" | "Celsius" => "C",
        "°F" | "degF" | "fahrenheit" | "Fahrenheit" => "F",
        "kelvin" | "Kelvin" => "K",
        "lx" => "lux",
        "µg/m3" | "µg/m³" | "ug/m³" => "ug/m3",
        "µs" => "us",
        "sec" => "s",
        "kph" => "km/h",
        other => other,
    }
}

/// Built-in types plus each organization's own, in memory per organization.
#[derive(Default)]
pub struct Registry {
    by_org: RwLock<HashMap<Uuid, Arc<HashMap<String, SensorType>>>>,
}

impl Registry {
    /// Drops an organization's cached set (its types changed), or all.
    pub fn forget(&self, org: Option<Uuid>) {
        let mut by_org = self.by_org.write().expect("sensor type registry");
        match org {
            Some(org) => {
                by_org.remove(&org);
            }
            None => by_org.clear(),
        }
    }

    /// Every type a device of `org_id` may report, keyed by `key`.
    pub async fn for_org(
        &self,
        store: &Store,
        org_id: Uuid,
    ) -> Result<Arc<HashMap<String, SensorType>>> {
        if let Some(set) = self
            .by_org
            .read()
            .expect("sensor type registry")
            .get(&org_id)
        {
            return Ok(set.clone());
        }
        let mut set: HashMap<String, SensorType> = BUILT_IN
            .iter()
            .map(|b| {
                (
                    b.key.to_owned(),
                    SensorType {
                        key: b.key.into(),
                        unit: b.unit.into(),
                        description: b.description.into(),
                        min: None,
                        max: None,
                        built_in: true,
                    },
                )
            })
            .collect();
        let tx = store.org_read(org_id).await?;
        let own = org_sensor_type::Entity::find()
            .filter(org_sensor_type::Column::OrgId.eq(org_id))
            .order_by_asc(org_sensor_type::Column::Key)
            .all(tx.conn())
            .await?;
        tx.commit().await?;
        for m in own {
            set.insert(m.key.clone(), own_type(m));
        }
        let set = Arc::new(set);
        self.by_org
            .write()
            .expect("sensor type registry")
            .insert(org_id, set.clone());
        Ok(set)
    }
}

fn own_type(m: org_sensor_type::Model) -> SensorType {
    SensorType {
        key: m.key,
        unit: m.unit,
        description: m.description,
        min: m.min,
        max: m.max,
        built_in: false,
    }
}

/// Built-ins first, then the organization's own by key.
pub async fn list(core: &Core, org_id: Uuid) -> Result<Vec<SensorType>> {
    let set = core.sensor_types.for_org(&core.store, org_id).await?;
    let mut own: Vec<SensorType> = set.values().filter(|t| !t.built_in).cloned().collect();
    own.sort_by(|a, b| a.key.cmp(&b.key));
    let mut all: Vec<SensorType> = BUILT_IN
        .iter()
        .filter_map(|b| set.get(b.key).cloned())
        .collect();
    all.extend(own);
    Ok(all)
}

pub async fn list_for_admin(core: &Core, access: &OrgRead) -> Result<Vec<SensorType>> {
    list(core, access.org_id()).await
}

pub struct NewSensorType {
    pub key: String,
    pub unit: String,
    pub description: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

pub async fn create(core: &Core, access: &OrgWrite, input: NewSensorType) -> Result<SensorType> {
    if input.key == OFFLINE_SECONDS || BUILT_IN.iter().any(|b| b.key == input.key) {
        return Err(Error::AlreadyExists(format!(
            "sensor type {:?} is built in",
            input.key
        )));
    }
    if let (Some(min), Some(max)) = (input.min, input.max)
        && min > max
    {
        return Err(Error::invalid("min must not be greater than max"));
    }
    let unit = validate::name("unit", &input.unit)?;
    let description = validate::short_text("description", input.description.as_deref())?;
    let mut tx = core.store.org_tx(access.org_id()).await?;
    let count = org_sensor_type::Entity::find()
        .filter(org_sensor_type::Column::OrgId.eq(tx.org_id()))
        .all(tx.conn())
        .await?
        .len();
    if count >= MAX_ORG_TYPES {
        return Err(Error::FailedPrecondition(format!(
            "an organization may define at most {MAX_ORG_TYPES} sensor types"
        )));
    }
    let model = org_sensor_type::Entity::insert(org_sensor_type::ActiveModel {
        id: Set(new_id()),
        org_id: Set(tx.org_id()),
        key: Set(input.key.clone()),
        unit: Set(unit),
        description: Set(description.unwrap_or_default()),
        min: Set(input.min),
        max: Set(input.max),
        created_at: Set(Utc::now()),
    })
    .exec_with_returning(tx.conn())
    .await
    .map_err(|e| match Error::from(e) {
        Error::AlreadyExists(_) => {
            Error::AlreadyExists(format!("sensor type {:?} already exists", input.key))
        }
        other => other,
    })?;
    tx.publish(Event::SensorTypesChanged {
        org_id: tx.org_id(),
    })
    .await?;
    tx.commit().await?;
    Ok(own_type(model))
}

pub async fn delete(core: &Core, access: &OrgWrite, key: &str) -> Result<()> {
    let mut tx = core.store.org_tx(access.org_id()).await?;
    let done = org_sensor_type::Entity::delete_many()
        .filter(org_sensor_type::Column::OrgId.eq(tx.org_id()))
        .filter(org_sensor_type::Column::Key.eq(key))
        .exec(tx.conn())
        .await?;
    if done.rows_affected == 0 {
        return Err(Error::not_found("sensor type"));
    }
    tx.publish(Event::SensorTypesChanged {
        org_id: tx.org_id(),
    })
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::convert;

    #[test]
    fn conversions_are_the_unambiguous_ones() {
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-9;
        assert!(close(convert(212.0, "F", "C"), 100.0));
        assert!(close(convert(32.0, "°F", "C"), 0.0));
        assert!(close(convert(273.15, "K", "C"), 0.0));
        assert!(close(convert(101_325.0, "Pa", "hPa"), 1013.25));
        assert!(close(convert(101.325, "kPa", "hPa"), 1013.25));
        assert!(close(convert(21.5, "C", "C"), 21.5));
        assert!(close(convert(100.0, "C", "F"), 212.0));
        assert!(close(convert(1000.0, "mm", "cm"), 100.0));
        assert_eq!(convert(1.0, "F", "hPa"), None);
        assert_eq!(convert(1.0, "furlongs", "C"), None);
    }
}
