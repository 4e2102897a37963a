//! Entities of the models migration.

pub mod model_artifact {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "models")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub org_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub version: String,
        pub format: String,
        pub sha256: String,
        pub size_bytes: i64,
        pub blob_key: String,
        pub created_ms: i64,
    }
    crate::no_relations!();
}

pub mod deployment {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "deployments")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub org_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub model_id: Uuid,
        /// JSON array of device ids.
        pub device_ids: String,
        pub group_id: Option<Uuid>,
        pub location_id: Option<Uuid>,
        pub all_devices: bool,
        /// `active` or `superseded`.
        pub status: String,
        pub created_ms: i64,
    }
    crate::no_relations!();
}

pub mod deployment_target {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "deployment_targets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub org_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub deployment_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: Uuid,
        pub command_id: Uuid,
        pub created_ms: i64,
        pub active_ms: Option<i64>,
        pub superseded: bool,
    }
    crate::no_relations!();
}
