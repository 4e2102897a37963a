//! Model artifacts (bytes in the blob store), deployments of a model to
//! devices, a group, a location or the whole organization, and one target
//! row per device a deployment reached: the `deploy_model` command queued
//! for it, and when the device reported the model active (`model_swap`).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn t(name: &str) -> Alias {
    Alias::new(name)
}

fn org_fk(table: &str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{table}_org"))
        .from(t(table), t("org_id"))
        .to(t("organizations"), t("id"))
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(t("models"))
                .col(uuid(t("org_id")))
                .col(uuid(t("id")))
                .col(string(t("name")))
                .col(string(t("version")))
                .col(string(t("format")))
                .col(string(t("sha256")))
                .col(big_integer(t("size_bytes")))
                .col(string(t("blob_key")))
                .col(big_integer(t("created_ms")))
                .primary_key(Index::create().col(t("org_id")).col(t("id")))
                .foreign_key(&mut org_fk("models"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(t("deployments"))
                .col(uuid(t("org_id")))
                .col(uuid(t("id")))
                .col(uuid(t("model_id")))
                // JSON array of device ids (a device-list deployment).
                .col(text(t("device_ids")))
                .col(uuid_null(t("group_id")))
                .col(uuid_null(t("location_id")))
                .col(boolean(t("all_devices")))
                // "active" or "superseded".
                .col(string(t("status")))
                .col(big_integer(t("created_ms")))
                .primary_key(Index::create().col(t("org_id")).col(t("id")))
                .foreign_key(&mut org_fk("deployments"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_deployments_model")
                        .from(t("deployments"), (t("org_id"), t("model_id")))
                        .to(t("models"), (t("org_id"), t("id")))
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(t("deployment_targets"))
                .col(uuid(t("org_id")))
                .col(uuid(t("deployment_id")))
                .col(uuid(t("device_id")))
                .col(uuid(t("command_id")))
                // Copied from the deployment: a device's newest target wins.
                .col(big_integer(t("created_ms")))
                .col(big_integer_null(t("active_ms")))
                .col(boolean(t("superseded")))
                .primary_key(
                    Index::create()
                        .col(t("org_id"))
                        .col(t("deployment_id"))
                        .col(t("device_id")),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_deployment_targets_deployment")
                        .from(t("deployment_targets"), (t("org_id"), t("deployment_id")))
                        .to(t("deployments"), (t("org_id"), t("id")))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_deployment_targets_device")
                        .from(t("deployment_targets"), t("device_id"))
                        .to(t("devices"), t("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        for (name, table, columns, unique) in [
            (
                "idx_models_name_version",
                "models",
                &["org_id", "name", "version"][..],
                true,
            ),
            (
                "idx_models_created",
                "models",
                &["org_id", "created_ms", "id"][..],
                false,
            ),
            (
                "idx_deployments_created",
                "deployments",
                &["org_id", "created_ms", "id"][..],
                false,
            ),
            (
                "idx_deployments_model",
                "deployments",
                &["org_id", "model_id"][..],
                false,
            ),
            (
                "idx_deployment_targets_device",
                "deployment_targets",
                &["org_id", "device_id", "created_ms"][..],
                false,
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(t(table)).if_not_exists();
            if unique {
                index.unique();
            }
            for c in columns {
                index.col(t(c));
            }
            m.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in ["deployment_targets", "deployments", "models"] {
            m.drop_table(Table::drop().table(t(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
