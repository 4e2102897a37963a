//! Organizations, API keys, locations, groups, devices, device keys and
//! provisioning tokens. Every tenant table carries `org_id`, which is what
//! every query filters on (and what PostgreSQL row-level security will key on).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    OrgId,
    Name,
    Role,
    Prefix,
    SecretHash,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Locations {
    Table,
    Id,
    OrgId,
    Name,
    Latitude,
    Longitude,
    Timezone,
    CreatedAt,
}

#[derive(DeriveIden)]
enum DeviceGroups {
    Table,
    Id,
    OrgId,
    Name,
    Description,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Devices {
    Table,
    Id,
    OrgId,
    Name,
    SerialNumber,
    HardwareModel,
    LocationId,
    GroupId,
    Tags,
    FirmwareVersion,
    UptimeSeconds,
    ReportedIp,
    SourceIp,
    Hostname,
    LastSeenAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum DeviceKeys {
    Table,
    Id,
    OrgId,
    DeviceId,
    SecretHash,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum ProvisioningTokens {
    Table,
    Id,
    OrgId,
    DeviceId,
    SecretHash,
    CreatedAt,
    ExpiresAt,
    UsedAt,
    RevokedAt,
}

fn org_fk(table: impl IntoIden, name: &str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(table, Alias::new("org_id"))
        .to(Organizations::Table, Organizations::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Organizations::Table)
                .col(pk_uuid(Organizations::Id))
                .col(string_uniq(Organizations::Name))
                .col(timestamp_with_time_zone(Organizations::CreatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ApiKeys::Table)
                .col(pk_uuid(ApiKeys::Id))
                .col(uuid(ApiKeys::OrgId))
                .col(string(ApiKeys::Name))
                .col(string(ApiKeys::Role))
                .col(string(ApiKeys::Prefix))
                .col(string_uniq(ApiKeys::SecretHash))
                .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                .col(timestamp_with_time_zone_null(ApiKeys::LastUsedAt))
                .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                .foreign_key(&mut org_fk(ApiKeys::Table, "fk_api_keys_org"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Locations::Table)
                .col(pk_uuid(Locations::Id))
                .col(uuid(Locations::OrgId))
                .col(string(Locations::Name))
                .col(double_null(Locations::Latitude))
                .col(double_null(Locations::Longitude))
                .col(string_null(Locations::Timezone))
                .col(timestamp_with_time_zone(Locations::CreatedAt))
                .foreign_key(&mut org_fk(Locations::Table, "fk_locations_org"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(DeviceGroups::Table)
                .col(pk_uuid(DeviceGroups::Id))
                .col(uuid(DeviceGroups::OrgId))
                .col(string(DeviceGroups::Name))
                .col(string_null(DeviceGroups::Description))
                .col(timestamp_with_time_zone(DeviceGroups::CreatedAt))
                .foreign_key(&mut org_fk(DeviceGroups::Table, "fk_device_groups_org"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Devices::Table)
                .col(pk_uuid(Devices::Id))
                .col(uuid(Devices::OrgId))
                .col(string(Devices::Name))
                .col(string_null(Devices::SerialNumber))
                .col(string_null(Devices::HardwareModel))
                .col(uuid_null(Devices::LocationId))
                .col(uuid_null(Devices::GroupId))
                .col(text(Devices::Tags))
                .col(string_null(Devices::FirmwareVersion))
                .col(big_integer_null(Devices::UptimeSeconds))
                .col(string_null(Devices::ReportedIp))
                .col(string_null(Devices::SourceIp))
                .col(string_null(Devices::Hostname))
                .col(timestamp_with_time_zone_null(Devices::LastSeenAt))
                .col(timestamp_with_time_zone(Devices::CreatedAt))
                .foreign_key(&mut org_fk(Devices::Table, "fk_devices_org"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_devices_location")
                        .from(Devices::Table, Devices::LocationId)
                        .to(Locations::Table, Locations::Id)
                        .on_delete(ForeignKeyAction::SetNull),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_devices_group")
                        .from(Devices::Table, Devices::GroupId)
                        .to(DeviceGroups::Table, DeviceGroups::Id)
                        .on_delete(ForeignKeyAction::SetNull),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_devices_org_serial")
                .table(Devices::Table)
                .col(Devices::OrgId)
                .col(Devices::SerialNumber)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(DeviceKeys::Table)
                .col(pk_uuid(DeviceKeys::Id))
                .col(uuid(DeviceKeys::OrgId))
                .col(uuid(DeviceKeys::DeviceId))
                .col(string_uniq(DeviceKeys::SecretHash))
                .col(timestamp_with_time_zone(DeviceKeys::CreatedAt))
                .col(timestamp_with_time_zone_null(DeviceKeys::ExpiresAt))
                .col(timestamp_with_time_zone_null(DeviceKeys::RevokedAt))
                .foreign_key(&mut org_fk(DeviceKeys::Table, "fk_device_keys_org"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_device_keys_device")
                        .from(DeviceKeys::Table, DeviceKeys::DeviceId)
                        .to(Devices::Table, Devices::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ProvisioningTokens::Table)
                .col(pk_uuid(ProvisioningTokens::Id))
                .col(uuid(ProvisioningTokens::OrgId))
                .col(uuid(ProvisioningTokens::DeviceId))
                .col(string_uniq(ProvisioningTokens::SecretHash))
                .col(timestamp_with_time_zone(ProvisioningTokens::CreatedAt))
                .col(timestamp_with_time_zone(ProvisioningTokens::ExpiresAt))
                .col(timestamp_with_time_zone_null(ProvisioningTokens::UsedAt))
                .col(timestamp_with_time_zone_null(ProvisioningTokens::RevokedAt))
                .foreign_key(&mut org_fk(
                    ProvisioningTokens::Table,
                    "fk_provisioning_tokens_org",
                ))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_provisioning_tokens_device")
                        .from(ProvisioningTokens::Table, ProvisioningTokens::DeviceId)
                        .to(Devices::Table, Devices::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ProvisioningTokens::Table.into_iden(),
            DeviceKeys::Table.into_iden(),
            Devices::Table.into_iden(),
            DeviceGroups::Table.into_iden(),
            Locations::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Organizations::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
