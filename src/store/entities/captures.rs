//! Entities of the captures migration.

pub mod capture {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "captures")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub org_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub device_id: Uuid,
        pub received_ms: i64,
        pub ts_ms: Option<i64>,
        /// `ts_ms`, else `received_ms`.
        pub taken_ms: i64,
        pub content_type: String,
        pub size_bytes: i64,
        pub width: i32,
        pub height: i32,
        pub sha256: String,
        pub blob_key: String,
        /// JSON array of strings.
        pub tags: String,
        pub model_name: Option<String>,
        pub model_version: Option<String>,
        /// JSON array of `{sensor_type, value, unit, ts_ms}`.
        pub sensor_snapshot: String,
    }
    crate::no_relations!();
}

pub mod capture_detection {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "capture_detections")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub org_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub capture_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub position: i32,
        pub label: String,
        pub confidence: f64,
        pub x_min: f64,
        pub y_min: f64,
        pub x_max: f64,
        pub y_max: f64,
        pub source: String,
        pub model_name: Option<String>,
        pub model_version: Option<String>,
        pub set_ms: i64,
    }
    crate::no_relations!();
}

pub mod pending_blob {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "pending_blobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub blob_key: String,
        pub created_ms: i64,
    }
    crate::no_relations!();
}
