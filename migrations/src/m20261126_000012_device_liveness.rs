//! Liveness apart from the device: what heartbeats carry (`last_seen_at`,
//! addresses, firmware, uptime, hostname) in a narrow table of its own.
//!
//! At fleet size nearly every heartbeat names a different device, so the
//! heartbeat flush writes one row per device heard. On `devices` that row
//! is wide and carries the fleet's indexes (organization, name, group,
//! location, serial, last seen); PostgreSQL then writes a new version of
//! the row and an entry in every index for each heartbeat. Here it is a
//! short row with two indexes: the key, and (organization, last seen) for
//! status filters and offline rules. The old `devices` columns stay, unused
//! after the copy below; the index on them goes.

use sea_orm_migration::{prelude::*, schema::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn t(name: &str) -> Alias {
    Alias::new(name)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // No foreign key: devices are never deleted, and a per-row check
        // would cost the flush what the narrow table saves.
        m.create_table(
            Table::create()
                .table(t("device_liveness"))
                .col(pk_uuid(t("device_id")))
                .col(uuid(t("org_id")))
                .col(timestamp_with_time_zone(t("last_seen_at")))
                .col(string_null(t("source_ip")))
                .col(string_null(t("firmware_version")))
                .col(big_integer_null(t("uptime_seconds")))
                .col(string_null(t("reported_ip")))
                .col(string_null(t("hostname")))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_device_liveness_org_seen")
                .table(t("device_liveness"))
                .col(t("org_id"))
                .col(t("last_seen_at"))
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        let postgres = db.get_database_backend() == DatabaseBackend::Postgres;
        if postgres {
            // Room on each page for the next version of a row, from the
            // first row copied below.
            db.execute_unprepared("ALTER TABLE device_liveness SET (fillfactor = 80)")
                .await?;
        }
        db.execute_unprepared(
            "INSERT INTO device_liveness (device_id, org_id, last_seen_at, source_ip, \
             firmware_version, uptime_seconds, reported_ip, hostname) \
             SELECT id, org_id, last_seen_at, source_ip, firmware_version, uptime_seconds, \
             reported_ip, hostname FROM devices WHERE last_seen_at IS NOT NULL",
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("idx_devices_org_seen")
                .table(t("devices"))
                .if_exists()
                .to_owned(),
        )
        .await?;
        if postgres {
            // The new table is a tenant table: the same wall as the others.
            db.execute_unprepared(crate::m20261126_000010_row_security::POLICIES)
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("idx_devices_org_seen")
                .table(t("devices"))
                .col(t("org_id"))
                .col(t("last_seen_at"))
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table(t("device_liveness")).to_owned())
            .await
    }
}
