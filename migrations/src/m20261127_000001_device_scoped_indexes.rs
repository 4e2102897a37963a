//! Indexes that lead with the organization and then the column a query
//! narrows by, for the queries that name both.
//!
//! Every tenant query filters by `org_id` (row-level security keys on it
//! too), and one organization may hold the whole fleet. Without statistics
//! SQLite's planner rates `(org_id, id)` and `(device_id, id)` alike for
//! `org_id = ? AND device_id = ? ORDER BY id`, and it took the first: a
//! device's command poll read every command of its organization. An index
//! on `(org_id, device_id, id)` matches two equalities and wins on both
//! databases. The open-commands index is partial; a query reaches it only
//! when it spells the same statuses as literals (see `commands::delivery`).
//!
//! The same audit (every tenant query's plan, without statistics, with the
//! indexes created in either order) found: enrolment's serial-number lookup
//! reading the organization's devices inside its write transaction; alert
//! and audit lists by device, rule, state, target or action reading the
//! organization's history; the offline-rule pass reading every pending
//! state of a rule; a webhook's deletion reading every organization's
//! pending deliveries; the live rules of a sensor type read by a scan.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "DROP INDEX IF EXISTS idx_commands_device",
    "CREATE INDEX IF NOT EXISTS idx_commands_device ON commands (org_id, device_id, id)",
    "DROP INDEX IF EXISTS idx_commands_open",
    "CREATE INDEX IF NOT EXISTS idx_commands_open ON commands (org_id, device_id, id) \
     WHERE status IN ('queued', 'delivered', 'received')",
    "DROP INDEX IF EXISTS idx_devices_org_serial",
    "CREATE INDEX IF NOT EXISTS idx_devices_org_serial ON devices (org_id, serial_number, id)",
    "CREATE INDEX IF NOT EXISTS idx_alerts_org_device ON alerts (org_id, device_id, id)",
    "CREATE INDEX IF NOT EXISTS idx_alerts_org_rule ON alerts (org_id, rule_id, id)",
    "CREATE INDEX IF NOT EXISTS idx_alerts_org_state ON alerts (org_id, state, id)",
    "CREATE INDEX IF NOT EXISTS idx_audit_events_org_target ON audit_events (org_id, target_id, id)",
    "CREATE INDEX IF NOT EXISTS idx_audit_events_org_action ON audit_events (org_id, action, id)",
    "CREATE INDEX IF NOT EXISTS idx_deliveries_webhook_status \
     ON webhook_deliveries (webhook_id, status)",
    "CREATE INDEX IF NOT EXISTS idx_alert_states_pending ON alert_states (rule_id, device_id) \
     WHERE pending_since_ms IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS idx_alert_rules_sensor ON alert_rules (sensor_type) \
     WHERE deleted_at IS NULL",
];

const DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS idx_commands_device",
    "CREATE INDEX IF NOT EXISTS idx_commands_device ON commands (device_id, id)",
    "DROP INDEX IF EXISTS idx_commands_open",
    "CREATE INDEX IF NOT EXISTS idx_commands_open ON commands (device_id, id) \
     WHERE status IN ('queued', 'delivered', 'received')",
    "DROP INDEX IF EXISTS idx_devices_org_serial",
    "CREATE INDEX IF NOT EXISTS idx_devices_org_serial ON devices (org_id, serial_number)",
    "DROP INDEX IF EXISTS idx_alerts_org_device",
    "DROP INDEX IF EXISTS idx_alerts_org_rule",
    "DROP INDEX IF EXISTS idx_alerts_org_state",
    "DROP INDEX IF EXISTS idx_audit_events_org_target",
    "DROP INDEX IF EXISTS idx_audit_events_org_action",
    "DROP INDEX IF EXISTS idx_deliveries_webhook_status",
    "DROP INDEX IF EXISTS idx_alert_states_pending",
    "DROP INDEX IF EXISTS idx_alert_rules_sensor",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for sql in UP {
            m.get_connection().execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for sql in DOWN {
            m.get_connection().execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
