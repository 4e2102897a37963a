//! sea-orm entities, one module per table of `migrations/`.

mod captures;
mod ingest;
mod models;
pub use captures::*;
pub use ingest::*;
pub use models::*;

#[macro_export]
macro_rules! no_relations {
    () => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod organization {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "organizations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub created_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod api_key {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub name: String,
        pub role: String,
        pub prefix: String,
        pub secret_hash: String,
        pub created_at: DateTimeUtc,
        pub last_used_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
    }
    no_relations!();
}

pub mod location {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "locations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub name: String,
        pub latitude: Option<f64>,
        pub longitude: Option<f64>,
        pub timezone: Option<String>,
        pub created_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod device_group {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "device_groups")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub name: String,
        pub description: Option<String>,
        pub created_at: DateTimeUtc,
        /// JSON array of sensor keys, or null (not configured).
        pub sensor_keys: Option<String>,
    }
    no_relations!();
}

pub mod device {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "devices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub name: String,
        pub serial_number: Option<String>,
        pub hardware_model: Option<String>,
        pub location_id: Option<Uuid>,
        pub group_id: Option<Uuid>,
        /// JSON array of strings.
        pub tags: String,
        pub firmware_version: Option<String>,
        pub uptime_seconds: Option<i64>,
        pub reported_ip: Option<String>,
        pub source_ip: Option<String>,
        pub hostname: Option<String>,
        pub last_seen_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        /// JSON array of sensor keys, or null (not configured).
        pub sensor_keys: Option<String>,
    }
    no_relations!();
}

/// What heartbeats carry, one row per device heard (see migration
/// `000012_device_liveness`); it overrides the same columns of `devices`.
pub mod device_liveness {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "device_liveness")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: Uuid,
        pub org_id: Uuid,
        pub last_seen_at: DateTimeUtc,
        pub source_ip: Option<String>,
        pub firmware_version: Option<String>,
        pub uptime_seconds: Option<i64>,
        pub reported_ip: Option<String>,
        pub hostname: Option<String>,
    }
    no_relations!();
}

pub mod device_key {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "device_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub device_id: Uuid,
        pub secret_hash: String,
        pub created_at: DateTimeUtc,
        /// Set when the key was rotated with a grace period.
        pub expires_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
    }
    no_relations!();
}

pub mod provisioning_token {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "provisioning_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub device_id: Uuid,
        pub secret_hash: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        pub used_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
    }
    no_relations!();
}

pub mod enrollment_code {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "enrollment_codes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub name: String,
        /// The code's first characters, to recognise it in a list.
        pub prefix: String,
        pub secret_hash: String,
        pub max_devices: Option<i32>,
        pub enrolled_devices: i32,
        pub expires_at: Option<DateTimeUtc>,
        pub group_id: Option<Uuid>,
        pub location_id: Option<Uuid>,
        /// JSON array of strings: the tags of every device it enrolls.
        pub tags: String,
        pub allow_reenroll: bool,
        pub serial_pattern: Option<String>,
        pub revoked_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }
    no_relations!();
}

/// One row per tag of a device: what a tag search reads.
pub mod device_tag {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "device_tags")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub org_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub tag: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: Uuid,
    }
    no_relations!();
}

pub mod audit_event {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        /// `device.paired`, `api_key.created`, ... (see `core::audit`).
        pub action: String,
        /// Who: `api_key:<id>`, `device:<id>`, `enrollment_code:<id>`,
        /// `provisioning_token:<id>`.
        pub actor: Option<String>,
        pub target_type: Option<String>,
        pub target_id: Option<Uuid>,
        pub source_ip: Option<String>,
        /// Things the one event covers (devices of a batch, denials or
        /// failures of a window).
        pub count: i32,
        pub at: DateTimeUtc,
        /// The denied operation, or why a credential was refused.
        pub detail: Option<String>,
    }
    no_relations!();
}
