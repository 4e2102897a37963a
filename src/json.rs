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
