//! Entities of what devices send and what it sets off (see the ingest
//! migration). Bulk writes of readings, telemetry and events go through
//! multi-row statements in `core::writer`; these serve reads and updates.

pub mod org_sensor_type {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "org_sensor_types")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub key: String,
        pub unit: String,
        pub description: String,
        pub min: Option<f64>,
        pub max: Option<f64>,
        pub created_at: DateTimeUtc,
    }
    crate::no_relations!();
}

pub mod reading {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "readings")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub org_id: Uuid,
        pub device_id: Uuid,
        pub sensor_type: String,
        pub value: f64,
        pub ts_ms: i64,
        pub received_ms: i64,
        pub seq: Option<i64>,
    }
    crate::no_relations!();
}

pub mod latest_reading {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "latest_readings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub sensor_type: String,
        pub org_id: Uuid,
        pub value: f64,
        pub ts_ms: i64,
    }
    crate::no_relations!();
}

pub mod telemetry {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "telemetry")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub org_id: Uuid,
        pub device_id: Uuid,
        pub key: String,
        /// The value as JSON (a number, a string or a boolean).
        pub value: String,
        pub ts_ms: i64,
        pub received_ms: i64,
    }
    crate::no_relations!();
}

pub mod latest_telemetry {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "latest_telemetry")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub org_id: Uuid,
        pub value: String,
        pub ts_ms: i64,
    }
    crate::no_relations!();
}

pub mod event {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub device_id: Uuid,
        #[sea_orm(column_name = "type")]
        pub kind: String,
        pub severity: String,
        pub message: Option<String>,
        /// JSON object, or null.
        pub data: Option<String>,
        pub ts_ms: i64,
        pub received_ms: i64,
    }
    crate::no_relations!();
}

pub mod alert_rule {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "alert_rules")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub name: String,
        pub sensor_type: String,
        pub op: String,
        pub threshold: f64,
        pub clear_threshold: Option<f64>,
        pub for_seconds: i32,
        pub cooldown_seconds: i32,
        pub severity: String,
        pub device_id: Option<Uuid>,
        pub group_id: Option<Uuid>,
        pub location_id: Option<Uuid>,
        pub created_at: DateTimeUtc,
        pub deleted_at: Option<DateTimeUtc>,
    }
    crate::no_relations!();
}

pub mod alert_state {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "alert_states")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub rule_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: Uuid,
        pub org_id: Uuid,
        /// When the condition started holding (for `for_seconds`).
        pub pending_since_ms: Option<i64>,
        /// No new alert before this (after a resolve).
        pub cooldown_until_ms: Option<i64>,
        /// The newest reading time evaluated (older ones are ignored).
        pub last_ts_ms: Option<i64>,
    }
    crate::no_relations!();
}

pub mod alert {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "alerts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub rule_id: Uuid,
        pub device_id: Uuid,
        pub sensor_type: String,
        pub severity: String,
        pub state: String,
        pub value: f64,
        pub opened_at: DateTimeUtc,
        pub acknowledged_at: Option<DateTimeUtc>,
        pub resolved_at: Option<DateTimeUtc>,
        pub resolved_value: Option<f64>,
    }
    crate::no_relations!();
}

pub mod webhook {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhooks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub url: String,
        pub description: Option<String>,
        /// The signing secret: needed in clear to sign, never shown again.
        pub secret: String,
        pub created_at: DateTimeUtc,
        pub deleted_at: Option<DateTimeUtc>,
    }
    crate::no_relations!();
}

pub mod webhook_delivery {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub webhook_id: Uuid,
        pub event: String,
        pub payload: String,
        pub status: String,
        pub attempts: i32,
        pub next_attempt_ms: Option<i64>,
        pub lease_until_ms: Option<i64>,
        pub last_status_code: Option<i32>,
        pub last_error: Option<String>,
        pub created_at: DateTimeUtc,
        pub delivered_at: Option<DateTimeUtc>,
    }
    crate::no_relations!();
}

pub mod command {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "commands")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub org_id: Uuid,
        pub device_id: Uuid,
        #[sea_orm(column_name = "type")]
        pub kind: String,
        /// JSON object, or null.
        pub payload: Option<String>,
        pub status: String,
        /// Deliveries so far (1 on the first).
        pub attempt: i32,
        pub max_attempts: i32,
        /// Until when the current delivery is the device's to acknowledge.
        pub lease_until_ms: Option<i64>,
        pub expires_ms: i64,
        pub idempotency_key: Option<String>,
        pub deployment_id: Option<Uuid>,
        /// JSON object the device acknowledged with, or null.
        pub result: Option<String>,
        pub message: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    crate::no_relations!();
}
