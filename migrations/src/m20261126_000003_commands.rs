//! The command queue: one row per command, its state machine in `status`
//! (queued → delivered → received → succeeded | failed, or expired,
//! cancelled), the lease of its current delivery, and an optional
//! idempotency key so a retried enqueue does not queue twice.

use sea_orm_migration::{prelude::*, schema::*};

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
                .table(t("commands"))
                .col(pk_uuid(t("id")))
                .col(uuid(t("org_id")))
                .col(uuid(t("device_id")))
                .col(string(t("type")))
                .col(text_null(t("payload")))
                .col(string(t("status")))
                .col(integer(t("attempt")))
                .col(integer(t("max_attempts")))
                .col(big_integer_null(t("lease_until_ms")))
                .col(big_integer(t("expires_ms")))
                .col(string_null(t("idempotency_key")))
                .col(uuid_null(t("deployment_id")))
                .col(text_null(t("result")))
                .col(text_null(t("message")))
                .col(timestamp_with_time_zone(t("created_at")))
                .col(timestamp_with_time_zone(t("updated_at")))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_commands_org")
                        .from(t("commands"), t("org_id"))
                        .to(t("organizations"), t("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_commands_device")
                        .from(t("commands"), t("device_id"))
                        .to(t("devices"), t("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        for (name, columns) in [
            ("idx_commands_device", &["device_id", "id"][..]),
            ("idx_commands_org", &["org_id", "id"][..]),
        ] {
            let mut index = Index::create();
            index.name(name).table(t("commands")).if_not_exists();
            for c in columns {
                index.col(t(c));
            }
            m.create_index(index.to_owned()).await?;
        }
        // The device's open commands, in order: what every poll reads.
        m.get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS idx_commands_open ON commands (device_id, id) \
                 WHERE status IN ('queued', 'delivered', 'received')",
            )
            .await?;
        m.get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS uq_commands_idempotency \
                 ON commands (device_id, idempotency_key) WHERE idempotency_key IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(t("commands")).to_owned())
            .await
    }
}
