//! Indexes that lead with the organization and then the device, for the
//! queries that name both.
//!
//! Every tenant query filters by `org_id` (row-level security keys on it
//! too), and one organization may hold the whole fleet. Without statistics
//! SQLite's planner rates `(org_id, id)` and `(device_id, id)` alike for
//! `org_id = ? AND device_id = ? ORDER BY id`, and it took the first: a
//! device's command poll read every command of its organization. An index
//! on `(org_id, device_id, id)` matches two equalities and wins on both
//! databases. The open-commands index is partial; a query reaches it only
//! when it spells the same statuses as literals (see `commands::delivery`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "DROP INDEX IF EXISTS idx_commands_device",
    "CREATE INDEX IF NOT EXISTS idx_commands_device ON commands (org_id, device_id, id)",
    "DROP INDEX IF EXISTS idx_commands_open",
    "CREATE INDEX IF NOT EXISTS idx_commands_open ON commands (org_id, device_id, id) \
     WHERE status IN ('queued', 'delivered', 'received')",
];

const DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS idx_commands_device",
    "CREATE INDEX IF NOT EXISTS idx_commands_device ON commands (device_id, id)",
    "DROP INDEX IF EXISTS idx_commands_open",
    "CREATE INDEX IF NOT EXISTS idx_commands_open ON commands (device_id, id) \
     WHERE status IN ('queued', 'delivered', 'received')",
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
