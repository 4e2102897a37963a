//! Use cases: the rules of swrm, free of transport types. gRPC handlers, the
//! REST adapter (through gRPC), the CLI and background jobs all call these.

pub mod api_keys;
pub mod device_ops;
pub mod devices;
pub mod liveness;
pub mod orgs;
pub mod page;
pub mod pairing;
pub mod places;
pub mod sensor_types;
pub mod validate;

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 UTC with millisecond precision, the one time format on the wire.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A new time-ordered id.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}
