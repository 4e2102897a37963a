//! The few reads that must look across organizations, each a narrow
//! question. On PostgreSQL the server's role sees no row of any
//! organization it has not scoped its transaction to (row-level security),
//! so these go through the `SECURITY DEFINER` functions of migration
//! `000010_row_security`; on SQLite they are the same queries, plain.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, Statement, Value,
};
use uuid::Uuid;

use super::{
    Store,
    entities::{
        alert_rule, api_key, audit_event, device_key, enrollment_code, organization,
        provisioning_token, webhook_delivery,
    },
};
use crate::error::Result;

impl Store {
    /// A row of `E` by its secret's hash, in whichever organization holds
    /// it: the one read that finds the caller's organization.
    async fn by_secret_hash<E: EntityTrait>(
        &self,
        function: &str,
        column: E::Column,
        hash: &str,
    ) -> Result<Option<E::Model>> {
        let found = if self.is_postgres() {
            E::find()
                .from_raw_sql(pg(&format!("SELECT * FROM {function}($1)"), [hash.into()]))
                .one(&self.db)
                .await?
        } else {
            E::find().filter(column.eq(hash)).one(&self.db).await?
        };
        Ok(found)
    }

    pub async fn device_key_by_hash(&self, hash: &str) -> Result<Option<device_key::Model>> {
        self.by_secret_hash::<device_key::Entity>(
            "swrm_device_key_by_hash",
            device_key::Column::SecretHash,
            hash,
        )
        .await
    }

    pub async fn api_key_by_hash(&self, hash: &str) -> Result<Option<api_key::Model>> {
        self.by_secret_hash::<api_key::Entity>(
            "swrm_api_key_by_hash",
            api_key::Column::SecretHash,
            hash,
        )
        .await
    }

    pub async fn provisioning_token_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<provisioning_token::Model>> {
        self.by_secret_hash::<provisioning_token::Entity>(
            "swrm_provisioning_token_by_hash",
            provisioning_token::Column::SecretHash,
            hash,
        )
        .await
    }

    pub async fn enrollment_code_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<enrollment_code::Model>> {
        self.by_secret_hash::<enrollment_code::Entity>(
            "swrm_enrollment_code_by_hash",
            enrollment_code::Column::SecretHash,
            hash,
        )
        .await
    }

    /// The first `limit` organizations' ids, oldest first.
    pub async fn organization_ids(&self, limit: u32) -> Result<Vec<Uuid>> {
        if self.is_postgres() {
            #[derive(FromQueryResult)]
            struct Row {
                id: Uuid,
            }
            let rows = Row::find_by_statement(pg(
                "SELECT swrm_organization_ids AS id FROM swrm_organization_ids($1)",
                [i32::try_from(limit).unwrap_or(i32::MAX).into()],
            ))
            .all(&self.db)
            .await?;
            return Ok(rows.into_iter().map(|r| r.id).collect());
        }
        Ok(organization::Entity::find()
            .order_by_asc(organization::Column::CreatedAt)
            .order_by_asc(organization::Column::Id)
            .limit(u64::from(limit))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|o| o.id)
            .collect())
    }

    /// Webhook deliveries of every organization due by `now_ms`, the
    /// earliest first.
    pub async fn due_webhook_deliveries(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<webhook_delivery::Model>> {
        let due = if self.is_postgres() {
            webhook_delivery::Entity::find()
                .from_raw_sql(pg(
                    "SELECT * FROM swrm_due_webhook_deliveries($1, $2)",
                    [
                        now_ms.into(),
                        i32::try_from(limit).unwrap_or(i32::MAX).into(),
                    ],
                ))
                .all(&self.db)
                .await?
        } else {
            webhook_delivery::Entity::find()
                .filter(webhook_delivery::Column::Status.eq(crate::core::webhooks::PENDING))
                .filter(webhook_delivery::Column::NextAttemptMs.lte(now_ms))
                .order_by_asc(webhook_delivery::Column::NextAttemptMs)
                .limit(u64::from(limit))
                .all(&self.db)
                .await?
        };
        Ok(due)
    }

    /// When the earliest pending webhook delivery is due (Unix ms).
    pub async fn next_webhook_attempt_ms(&self) -> Result<Option<i64>> {
        if self.is_postgres() {
            #[derive(FromQueryResult)]
            struct Row {
                at: Option<i64>,
            }
            let row = Row::find_by_statement(pg("SELECT swrm_next_webhook_attempt_ms() AS at", []))
                .one(&self.db)
                .await?;
            return Ok(row.and_then(|r| r.at));
        }
        Ok(webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::Status.eq(crate::core::webhooks::PENDING))
            .filter(webhook_delivery::Column::NextAttemptMs.is_not_null())
            .order_by_asc(webhook_delivery::Column::NextAttemptMs)
            .one(&self.db)
            .await?
            .and_then(|d| d.next_attempt_ms))
    }

    /// The live alert rules of every organization on `sensor_type`.
    pub async fn live_alert_rules(&self, sensor_type: &str) -> Result<Vec<alert_rule::Model>> {
        let rules = if self.is_postgres() {
            alert_rule::Entity::find()
                .from_raw_sql(pg(
                    "SELECT * FROM swrm_live_alert_rules($1)",
                    [sensor_type.into()],
                ))
                .all(&self.db)
                .await?
        } else {
            alert_rule::Entity::find()
                .filter(alert_rule::Column::SensorType.eq(sensor_type))
                .filter(alert_rule::Column::DeletedAt.is_null())
                .all(&self.db)
                .await?
        };
        Ok(rules)
    }

    /// Deletes every organization's audit events older than `cutoff`;
    /// answers how many.
    pub async fn purge_audit_events(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        if self.is_postgres() {
            #[derive(FromQueryResult)]
            struct Row {
                gone: i64,
            }
            let row = Row::find_by_statement(pg(
                "SELECT swrm_purge_audit_events($1) AS gone",
                [cutoff.into()],
            ))
            .one(&self.db)
            .await?;
            return Ok(row.map_or(0, |r| u64::try_from(r.gone).unwrap_or(0)));
        }
        let done = audit_event::Entity::delete_many()
            .filter(audit_event::Column::At.lt(cutoff))
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected)
    }

    /// Refreshes the planner's statistics of the device tables after a bulk
    /// import. PostgreSQL plans from statistics, and a table that grew from
    /// a thousand rows to a million under plans made for a thousand (with
    /// autovacuum off or not yet run) turns indexed lookups into scans;
    /// SQLite's `PRAGMA optimize` does the same where it judges it useful.
    /// (Only the tables' owner may `ANALYZE` them, hence the function.)
    pub async fn refresh_statistics(&self) -> Result<()> {
        let sql = if self.is_postgres() {
            "SELECT swrm_refresh_device_statistics()"
        } else {
            "PRAGMA optimize"
        };
        self.db.execute_unprepared(sql).await?;
        Ok(())
    }
}

fn pg<const N: usize>(sql: &str, values: [Value; N]) -> Statement {
    Statement::from_sql_and_values(DatabaseBackend::Postgres, sql, values)
}
