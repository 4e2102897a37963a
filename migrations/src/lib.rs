//! The swrm schema: one set of migrations for SQLite and PostgreSQL, run by
//! `swrm serve` at start.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_foundation;
mod m20261126_000001_indexes;
mod m20261126_000002_ingest;
mod m20261126_000003_commands;
mod m20261126_000004_captures;
mod m20261126_000005_models;
mod m20261126_000006_fleet;
mod m20261126_000007_enrollment;
mod m20261126_000008_device_search;
mod m20261126_000009_audit;
mod m20261126_000010_row_security;
mod m20261126_000011_audit_detail;
mod m20261126_000012_device_liveness;
mod m20261127_000001_device_scoped_indexes;

pub use m20261126_000010_row_security::APP_ROLE;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_foundation::Migration),
            Box::new(m20261126_000001_indexes::Migration),
            Box::new(m20261126_000002_ingest::Migration),
            Box::new(m20261126_000003_commands::Migration),
            Box::new(m20261126_000004_captures::Migration),
            Box::new(m20261126_000005_models::Migration),
            Box::new(m20261126_000006_fleet::Migration),
            Box::new(m20261126_000007_enrollment::Migration),
            Box::new(m20261126_000008_device_search::Migration),
            Box::new(m20261126_000009_audit::Migration),
            Box::new(m20261126_000010_row_security::Migration),
            Box::new(m20261126_000011_audit_detail::Migration),
            Box::new(m20261126_000012_device_liveness::Migration),
            Box::new(m20261127_000001_device_scoped_indexes::Migration),
        ]
    }
}
