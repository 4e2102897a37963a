use serde::{Deserialize, Deserializer};

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
        Some(Ts::Millis(ms)) => Some(ms.to_string()),
    })
}
