//! The audit trail: security events (pairing, enrollment, keys and tokens
//! issued, rotated or revoked, enrollment codes), written in the
//! transaction of the change they record.

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
                .table(t("audit_events"))
                .col(pk_uuid(t("id")))
                .col(uuid(t("org_id")))
                .col(string(t("action")))
                .col(string_null(t("actor")))
                .col(string_null(t("target_type")))
                .col(uuid_null(t("target_id")))
                .col(string_null(t("source_ip")))
                .col(integer(t("count")).default(1))
                .col(timestamp_with_time_zone(t("at")))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_audit_events_org")
                        .from(t("audit_events"), t("org_id"))
                        .to(t("organizations"), t("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        for (name, columns) in [
            ("idx_audit_events_org", &["org_id", "id"][..]),
            ("idx_audit_events_at", &["at"][..]),
        ] {
            let mut index = Index::create();
            index.name(name).table(t("audit_events")).if_not_exists();
            for c in columns {
                index.col(t(c));
            }
            m.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(t("audit_events")).to_owned())
            .await
    }
}
