//! JSON details of the contract that serde derives cannot say alone.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, de::Error};

/// A device `ts`: an RFC 3339 string, or Unix milliseconds as a JSON
/// integer, which becomes its RFC 3339 form here so every later step (the
/// checks, the use cases, gRPC alike) sees one format.
pub fn device_ts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ts {
        Text(String),
        Millis(i64),
    }
    Ok(match Option::<Ts>::deserialize(d)? {
        None => None,
        Some(Ts::Text(s)) => Some(s),
        Some(Ts::Millis(ms)) => {
            let t: DateTime<Utc> = DateTime::from_timestamp_millis(ms)
                .filter(|t| t.timestamp() >= 0 && t.timestamp() <= 253_402_300_799)
                .ok_or_else(|| D::Error::custom("Unix milliseconds out of range"))?;
            Some(crate::core::rfc3339(t))
        }
    })
}

/// A `google.protobuf.Struct` field: any JSON object. Numbers in a Struct
/// are doubles, so integers beyond 2^53 become the nearest double instead
/// of being refused (as pbjson alone would).
pub fn free_struct<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<pbjson_types::Struct>, D::Error> {
    let Some(mut value) = Option::<serde_json::Value>::deserialize(d)? else {
        return Ok(None);
    };
    widen(&mut value);
    serde_json::from_value(value)
        .map(Some)
        .map_err(D::Error::custom)
}

/// A `map<string, google.protobuf.Value>` field, numbers as in
/// [`free_struct`].
pub fn free_values<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::HashMap<String, pbjson_types::Value>, D::Error> {
    let mut value = serde_json::Value::deserialize(d)?;
    widen(&mut value);
    serde_json::from_value(value).map_err(D::Error::custom)
}

/// Integers a double cannot hold exactly become doubles.
fn widen(v: &mut serde_json::Value) {
    const EXACT: u64 = 1 << f64::MANTISSA_DIGITS;
    match v {
        serde_json::Value::Number(n) => {
            let big = n.as_u64().is_some_and(|u| u >= EXACT)
                || n.as_i64().is_some_and(|i| i.unsigned_abs() >= EXACT);
            if big && let Some(f) = n.as_f64().and_then(serde_json::Number::from_f64) {
                *n = f;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(widen),
        serde_json::Value::Object(map) => map.values_mut().for_each(widen),
        _ => {}
    }
}
