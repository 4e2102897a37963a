//! What an aggregated audit event was about: the operation a role was
//! denied, or why a credential was refused.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("audit_events"))
                .add_column(string_null(Alias::new("detail")))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("audit_events"))
                .drop_column(Alias::new("detail"))
                .to_owned(),
        )
        .await
    }
}
