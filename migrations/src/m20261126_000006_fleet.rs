//! Device lists filtered at fleet size: a group's or a location's devices
//! in id order, so keyset pages walk the index and never sort the group.
//! (The `online` / `offline` / `never_seen` filters read a range of
//! `idx_devices_org_seen`, from the ingest migration.)

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (index, columns of `devices`)
const INDEXES: &[(&str, &[&str])] = &[
    ("idx_devices_org_group_id", &["org_id", "group_id", "id"]),
    (
        "idx_devices_org_location_id",
        &["org_id", "location_id", "id"],
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (name, columns) in INDEXES {
            let mut index = Index::create();
            index
                .name(*name)
                .table(Alias::new("devices"))
                .if_not_exists();
            for column in *columns {
                index.col(Alias::new(*column));
            }
            m.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (name, _) in INDEXES {
            m.drop_index(
                Index::drop()
                    .name(*name)
                    .table(Alias::new("devices"))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
