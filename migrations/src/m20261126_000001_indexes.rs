//! Indexes for the columns queries walk: a device's keys and tokens (every
//! pair, rotate and revoke), a location's or group's devices (and their
//! `ON DELETE SET NULL`), and each organization's lists, in id order for
//! keyset pagination.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (index, table, columns)
const INDEXES: &[(&str, &str, &[&str])] = &[
    ("idx_device_keys_device", "device_keys", &["device_id"]),
    (
        "idx_provisioning_tokens_device",
        "provisioning_tokens",
        &["device_id"],
    ),
    ("idx_devices_org_id", "devices", &["org_id", "id"]),
    ("idx_devices_location", "devices", &["location_id"]),
    ("idx_devices_group", "devices", &["group_id"]),
    ("idx_api_keys_org_id", "api_keys", &["org_id", "id"]),
    ("idx_locations_org_id", "locations", &["org_id", "id"]),
    (
        "idx_device_groups_org_id",
        "device_groups",
        &["org_id", "id"],
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, columns) in INDEXES {
            let mut index = Index::create();
            index.name(*name).table(Alias::new(*table)).if_not_exists();
            for column in *columns {
                index.col(Alias::new(*column));
            }
            m.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, _) in INDEXES {
            m.drop_index(
                Index::drop()
                    .name(*name)
                    .table(Alias::new(*table))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
