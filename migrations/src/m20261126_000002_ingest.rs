//! What devices send, and what it sets off: organization sensor types and
//! per-device / per-group sensor lists; readings, telemetry and events
//! (device times as integer Unix milliseconds, so range queries and buckets
//! behave the same on SQLite and PostgreSQL) with the latest value of each
//! series kept beside them; alert rules, their per-device state and alerts;
//! webhooks and their deliveries.

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

fn device_fk(table: &str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{table}_device"))
        .from(t(table), t("device_id"))
        .to(t("devices"), t("id"))
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

/// Plain SQL both databases understand (partial indexes).
const RAW: &[&str] = &[
    // A retried reading (same device and seq) is stored once.
    "CREATE UNIQUE INDEX IF NOT EXISTS uq_readings_device_seq ON readings (device_id, seq) WHERE seq IS NOT NULL",
    // One unresolved alert per rule and device, whichever replica opens it.
    "CREATE UNIQUE INDEX IF NOT EXISTS uq_alerts_open ON alerts (rule_id, device_id) WHERE resolved_at IS NULL",
];

/// (index, table, columns)
const INDEXES: &[(&str, &str, &[&str])] = &[
    (
        "idx_readings_series",
        "readings",
        &["device_id", "sensor_type", "ts_ms"],
    ),
    (
        "idx_telemetry_series",
        "telemetry",
        &["device_id", "key", "ts_ms"],
    ),
    (
        "idx_telemetry_device_ts",
        "telemetry",
        &["device_id", "ts_ms"],
    ),
    ("idx_events_org_ts", "events", &["org_id", "ts_ms", "id"]),
    (
        "idx_events_device_ts",
        "events",
        &["device_id", "ts_ms", "id"],
    ),
    ("idx_alert_rules_org", "alert_rules", &["org_id", "id"]),
    ("idx_alerts_org", "alerts", &["org_id", "id"]),
    ("idx_webhooks_org", "webhooks", &["org_id", "id"]),
    (
        "idx_deliveries_due",
        "webhook_deliveries",
        &["status", "next_attempt_ms"],
    ),
    (
        "idx_deliveries_webhook",
        "webhook_deliveries",
        &["webhook_id", "id"],
    ),
    (
        "idx_devices_org_seen",
        "devices",
        &["org_id", "last_seen_at"],
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(t("org_sensor_types"))
                .col(pk_uuid(t("id")))
                .col(uuid(t("org_id")))
                .col(string(t("key")))
                .col(string(t("unit")))
                .col(string(t("description")))
                .col(double_null(t("min")))
                .col(double_null(t("max")))
                .col(timestamp_with_time_zone(t("created_at")))
                .foreign_key(&mut org_fk("org_sensor_types"))
                .index(Index::create().unique().col(t("org_id")).col(t("key")))
                .to_owned(),
        )
        .await?;
        for table in ["devices", "device_groups"] {
            m.alter_table(
                Table::alter()
                    .table(t(table))
                    .add_column(text_null(t("sensor_keys")))
                    .to_owned(),
            )
            .await?;
        }

        m.create_table(
            Table::create()
                .table(t("readings"))
                .col(big_integer(t("id")).auto_increment().primary_key())
                .col(uuid(t("org_id")))
                .col(uuid(t("device_id")))
                .col(string(t("sensor_type")))
                .col(double(t("value")))
                .col(big_integer(t("ts_ms")))
                .col(big_integer(t("received_ms")))
                .col(big_integer_null(t("seq")))
                .foreign_key(&mut device_fk("readings"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(t("latest_readings"))
                .col(uuid(t("device_id")))
                .col(string(t("sensor_type")))
                .col(uuid(t("org_id")))
                .col(double(t("value")))
                .col(big_integer(t("ts_ms")))
                .primary_key(Index::create().col(t("device_id")).col(t("sensor_type")))
                .foreign_key(&mut device_fk("latest_readings"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(t("telemetry"))
                .col(big_integer(t("id")).auto_increment().primary_key())
                .col(uuid(t("org_id")))
                .col(uuid(t("device_id")))
                .col(string(t("key")))
                .col(text(t("value")))
                .col(big_integer(t("ts_ms")))
                .col(big_integer(t("received_ms")))
                .foreign_key(&mut device_fk("telemetry"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(t("latest_telemetry"))
                .col(uuid(t("device_id")))
                .col(string(t("key")))
                .col(uuid(t("org_id")))
                .col(text(t("value")))
                .col(big_integer(t("ts_ms")))
                .primary_key(Index::create().col(t("device_id")).col(t("key")))
                .foreign_key(&mut device_fk("latest_telemetry"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(t("events"))
                .col(pk_uuid(t("id")))
                .col(uuid(t("org_id")))
                .col(uuid(t("device_id")))
                .col(string(t("type")))
                .col(string(t("severity")))
                .col(text_null(t("message")))
                .col(text_null(t("data")))
                .col(big_integer(t("ts_ms")))
                .col(big_integer(t("received_ms")))
                .foreign_key(&mut device_fk("events"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(t("alert_rules"))
                .col(pk_uuid(t("id")))
                .col(uuid(t("org_id")))
                .col(string(t("name")))
                .col(string(t("sensor_type")))
                .col(string(t("op")))
                .col(double(t("threshold")))
                .col(double_null(t("clear_threshold")))
                .col(integer(t("for_seconds")))
                .col(integer(t("cooldown_seconds")))
                .col(string(t("severity")))
                .col(uuid_null(t("device_id")))
                .col(uuid_null(t("group_id")))
                .col(uuid_null(t("location_id")))
                .col(timestamp_with_time_zone(t("created_at")))
                .col(timestamp_with_time_zone_null(t("deleted_at")))
                .foreign_key(&mut org_fk("alert_rules"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(t("alert_states"))
                .col(uuid(t("rule_id")))
                .col(uuid(t("device_id")))
                .col(uuid(t("org_id")))
                .col(big_integer_null(t("pending_since_ms")))
                .col(big_integer_null(t("cooldown_until_ms")))
                .col(big_integer_null(t("last_ts_ms")))
                .primary_key(Index::create().col(t("rule_id")).col(t("device_id")))
                .foreign_key(&mut device_fk("alert_states"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(t("alerts"))
                .col(pk_uuid(t("id")))
                .col(uuid(t("org_id")))
                .col(uuid(t("rule_id")))
                .col(uuid(t("device_id")))
                .col(string(t("sensor_type")))
                .col(string(t("severity")))
                .col(string(t("state")))
                .col(double(t("value")))
                .col(timestamp_with_time_zone(t("opened_at")))
                .col(timestamp_with_time_zone_null(t("acknowledged_at")))
                .col(timestamp_with_time_zone_null(t("resolved_at")))
                .col(double_null(t("resolved_value")))
                .foreign_key(&mut org_fk("alerts"))
                .foreign_key(&mut device_fk("alerts"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(t("webhooks"))
                .col(pk_uuid(t("id")))
                .col(uuid(t("org_id")))
                .col(text(t("url")))
                .col(string_null(t("description")))
                .col(string(t("secret")))
                .col(timestamp_with_time_zone(t("created_at")))
                .col(timestamp_with_time_zone_null(t("deleted_at")))
                .foreign_key(&mut org_fk("webhooks"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(t("webhook_deliveries"))
                .col(pk_uuid(t("id")))
                .col(uuid(t("org_id")))
                .col(uuid(t("webhook_id")))
                .col(string(t("event")))
                .col(text(t("payload")))
                .col(string(t("status")))
                .col(integer(t("attempts")))
                .col(big_integer_null(t("next_attempt_ms")))
                .col(big_integer_null(t("lease_until_ms")))
                .col(integer_null(t("last_status_code")))
                .col(text_null(t("last_error")))
                .col(timestamp_with_time_zone(t("created_at")))
                .col(timestamp_with_time_zone_null(t("delivered_at")))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_webhook_deliveries_webhook")
                        .from(t("webhook_deliveries"), t("webhook_id"))
                        .to(t("webhooks"), t("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;

        for (name, table, columns) in INDEXES {
            let mut index = Index::create();
            index.name(*name).table(t(table)).if_not_exists();
            for column in *columns {
                index.col(t(column));
            }
            m.create_index(index.to_owned()).await?;
        }
        for sql in RAW {
            m.get_connection().execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "webhook_deliveries",
            "webhooks",
            "alerts",
            "alert_states",
            "alert_rules",
            "events",
            "latest_telemetry",
            "telemetry",
            "latest_readings",
            "readings",
            "org_sensor_types",
        ] {
            m.drop_table(Table::drop().table(t(table)).to_owned())
                .await?;
        }
        for table in ["devices", "device_groups"] {
            m.alter_table(
                Table::alter()
                    .table(t(table))
                    .drop_column(t("sensor_keys"))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
