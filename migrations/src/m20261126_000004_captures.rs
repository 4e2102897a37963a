//! Captures (an image in the blob store, what the device saw, a sensor
//! snapshot), their detections (one row each, so captures can be found by
//! label and confidence), and the blobs pending a row: written before the
//! blob, removed in the transaction that commits the row naming it, so a
//! crash in between leaves a record the sweep acts on.

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
                .table(t("captures"))
                .col(uuid(t("org_id")))
                .col(uuid(t("id")))
                .col(uuid(t("device_id")))
                .col(big_integer(t("received_ms")))
                .col(big_integer_null(t("ts_ms")))
                // `ts`, else `received_ms`: what lists order and filter by.
                .col(big_integer(t("taken_ms")))
                .col(string(t("content_type")))
                .col(big_integer(t("size_bytes")))
                .col(integer(t("width")))
                .col(integer(t("height")))
                .col(string(t("sha256")))
                .col(string(t("blob_key")))
                .col(text(t("tags")))
                .col(string_null(t("model_name")))
                .col(string_null(t("model_version")))
                .col(text(t("sensor_snapshot")))
                .primary_key(Index::create().col(t("org_id")).col(t("id")))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_captures_org")
                        .from(t("captures"), t("org_id"))
                        .to(t("organizations"), t("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_captures_device")
                        .from(t("captures"), t("device_id"))
                        .to(t("devices"), t("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(t("capture_detections"))
                .col(uuid(t("org_id")))
                .col(uuid(t("capture_id")))
                .col(integer(t("position")))
                .col(string(t("label")))
                .col(double(t("confidence")))
                .col(double(t("x_min")))
                .col(double(t("y_min")))
                .col(double(t("x_max")))
                .col(double(t("y_max")))
                .col(string(t("source")))
                .col(string_null(t("model_name")))
                .col(string_null(t("model_version")))
                .col(big_integer(t("set_ms")))
                .primary_key(
                    Index::create()
                        .col(t("org_id"))
                        .col(t("capture_id"))
                        .col(t("position")),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_capture_detections_capture")
                        .from(t("capture_detections"), (t("org_id"), t("capture_id")))
                        .to(t("captures"), (t("org_id"), t("id")))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(t("pending_blobs"))
                .col(string(t("blob_key")).primary_key())
                .col(big_integer(t("created_ms")))
                .to_owned(),
        )
        .await?;
        for (name, table, columns) in [
            (
                "idx_captures_taken",
                "captures",
                &["org_id", "taken_ms", "id"][..],
            ),
            (
                "idx_captures_device",
                "captures",
                &["org_id", "device_id", "taken_ms", "id"][..],
            ),
            (
                "idx_capture_detections_label",
                "capture_detections",
                &["org_id", "label", "confidence"][..],
            ),
            (
                "idx_pending_blobs_created",
                "pending_blobs",
                &["created_ms"][..],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(t(table)).if_not_exists();
            for c in columns {
                index.col(t(c));
            }
            m.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in ["pending_blobs", "capture_detections", "captures"] {
            m.drop_table(Table::drop().table(t(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
