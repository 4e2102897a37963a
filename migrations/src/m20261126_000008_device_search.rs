//! Device search at fleet size: by tag through `device_tags`, one row per
//! (organization, tag, device) kept beside the device's JSON `tags`, and by
//! name prefix through an index on names in byte order (PostgreSQL: the
//! "C" collation, whatever the database's; SQLite compares bytes already).

use sea_orm_migration::{prelude::*, schema::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn t(name: &str) -> Alias {
    Alias::new(name)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(t("device_tags"))
                .col(uuid(t("org_id")))
                .col(string(t("tag")))
                .col(uuid(t("device_id")))
                .primary_key(
                    Index::create()
                        .col(t("org_id"))
                        .col(t("tag"))
                        .col(t("device_id")),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_device_tags_device")
                        .from(t("device_tags"), t("device_id"))
                        .to(t("devices"), t("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_device_tags_device")
                .table(t("device_tags"))
                .col(t("device_id"))
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        let (backfill, name_index) = match db.get_database_backend() {
            DatabaseBackend::Postgres => (
                "INSERT INTO device_tags (org_id, tag, device_id) \
                 SELECT d.org_id, t.tag, d.id FROM devices d, \
                 json_array_elements_text(d.tags::json) AS t(tag) ON CONFLICT DO NOTHING",
                "CREATE INDEX IF NOT EXISTS idx_devices_org_name \
                 ON devices (org_id, (name COLLATE \"C\"), id)",
            ),
            _ => (
                "INSERT OR IGNORE INTO device_tags (org_id, tag, device_id) \
                 SELECT d.org_id, j.value, d.id FROM devices d, json_each(d.tags) j",
                "CREATE INDEX IF NOT EXISTS idx_devices_org_name ON devices (org_id, name, id)",
            ),
        };
        db.execute_unprepared(backfill).await?;
        db.execute_unprepared(name_index).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS idx_devices_org_name")
            .await?;
        m.drop_table(Table::drop().table(t("device_tags")).to_owned())
            .await
    }
}
