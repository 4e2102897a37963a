//! Enrollment codes for factory self-registration: a shared secret (kept
//! as its SHA-256) that creates devices in its organization with its
//! defaults, up to a quota, until it expires or is revoked.

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
                .table(t("enrollment_codes"))
                .col(pk_uuid(t("id")))
                .col(uuid(t("org_id")))
                .col(string(t("name")))
                .col(string(t("prefix")))
                .col(string_uniq(t("secret_hash")))
                .col(integer_null(t("max_devices")))
                // Claimed by a conditional update, so concurrent enrollments
                // never exceed `max_devices`.
                .col(integer(t("enrolled_devices")).default(0))
                .col(timestamp_with_time_zone_null(t("expires_at")))
                .col(uuid_null(t("group_id")))
                .col(uuid_null(t("location_id")))
                .col(text(t("tags")))
                .col(boolean(t("allow_reenroll")).default(false))
                .col(string_null(t("serial_pattern")))
                .col(timestamp_with_time_zone_null(t("revoked_at")))
                .col(timestamp_with_time_zone(t("created_at")))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_enrollment_codes_org")
                        .from(t("enrollment_codes"), t("org_id"))
                        .to(t("organizations"), t("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_enrollment_codes_group")
                        .from(t("enrollment_codes"), t("group_id"))
                        .to(t("device_groups"), t("id"))
                        .on_delete(ForeignKeyAction::SetNull),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_enrollment_codes_location")
                        .from(t("enrollment_codes"), t("location_id"))
                        .to(t("locations"), t("id"))
                        .on_delete(ForeignKeyAction::SetNull),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_enrollment_codes_org")
                .table(t("enrollment_codes"))
                .col(t("org_id"))
                .col(t("id"))
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(t("enrollment_codes")).to_owned())
            .await
    }
}
