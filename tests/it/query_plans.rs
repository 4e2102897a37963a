//! The plans SQLite chooses for the queries that run per request or per
//! rule pass, on a freshly migrated database (no statistics, as a new
//! server has). Without statistics the planner rates an index on
//! `(org_id, id)` like one on `(device_id, id)`, and one organization may
//! hold the whole fleet: a device's command poll read every command of its
//! organization that way. Each query is written as the server sends it
//! (values bound, except where the code spells literals on purpose), and
//! its plan must search the narrow index, never the organization's.
//! PostgreSQL keeps statistics of its own; SQLite only.

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database, DatabaseBackend, Statement};

const CASES: &[(&str, &str, &str)] = &[
    (
        "a device's claim of its open commands",
        "SELECT * FROM commands WHERE org_id = ? AND device_id = ? \
         AND status IN ('queued', 'delivered', 'received') ORDER BY id LIMIT ?",
        "idx_commands_open",
    ),
    (
        "the claims of a batch (one subquery per device)",
        "SELECT * FROM (SELECT * FROM commands WHERE org_id = ? AND device_id = ? \
         AND status IN ('queued', 'delivered', 'received') ORDER BY id LIMIT 100) AS d0 \
         UNION ALL SELECT * FROM (SELECT * FROM commands WHERE org_id = ? AND device_id = ? \
         AND status IN ('queued', 'delivered', 'received') ORDER BY id LIMIT 100) AS d1",
        "idx_commands_open",
    ),
    (
        "the claims' conditional update",
        "UPDATE commands SET status = 'delivered', attempt = attempt + 1, \
         lease_until_ms = v.column4, updated_at = v.column5 \
         FROM (VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)) AS v \
         WHERE commands.id = v.column1 AND commands.attempt = v.column2 \
         AND commands.status = v.column3 RETURNING commands.id",
        "sqlite_autoindex_commands_1",
    ),
    (
        "a batch's enqueues, each checking its device (a point of (org_id, id))",
        "INSERT INTO commands (id, org_id, device_id, type, payload, status, attempt, \
         max_attempts, expires_ms, created_at, updated_at) \
         SELECT v.column1, v.column2, v.column3, v.column4, NULLIF(v.column5, ''), \
         'queued', 0, v.column6, v.column7, v.column8, v.column8 \
         FROM (VALUES (?, ?, ?, ?, ?, ?, ?, ?)) AS v WHERE EXISTS (SELECT 1 FROM devices AS d \
         WHERE d.id = v.column3 AND d.org_id = v.column2) RETURNING id",
        "idx_devices_org_id",
    ),
    (
        "a batch's acks, read",
        "SELECT * FROM commands WHERE id IN (?, ?)",
        "sqlite_autoindex_commands_1",
    ),
    (
        "a batch's acks, written",
        "UPDATE commands SET status = v.column1, lease_until_ms = v.column2, \
         result = v.column3, message = v.column4, updated_at = v.column5 \
         FROM (VALUES (?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?)) AS v WHERE commands.id = v.column6",
        "sqlite_autoindex_commands_1",
    ),
    (
        "a device's command list",
        "SELECT * FROM commands WHERE org_id = ? AND device_id = ? AND id > ? ORDER BY id LIMIT ?",
        "idx_commands_device",
    ),
    (
        "enrolment's serial-number lookup",
        "SELECT id FROM devices WHERE org_id = ? AND serial_number = ? ORDER BY id LIMIT ?",
        "idx_devices_org_serial",
    ),
    (
        "a device's alerts",
        "SELECT * FROM alerts WHERE org_id = ? AND device_id = ? ORDER BY id LIMIT ?",
        "idx_alerts_org_device",
    ),
    (
        "a rule's open alerts (offline pass)",
        "SELECT device_id FROM alerts WHERE rule_id = ? AND resolved_at IS NULL",
        "uq_alerts_open",
    ),
    (
        "a rule's pending states (offline pass)",
        "SELECT device_id FROM alert_states WHERE rule_id = ? AND pending_since_ms IS NOT NULL",
        "idx_alert_states_pending",
    ),
    (
        "a device's events in a window",
        "SELECT * FROM events WHERE device_id = ? AND ts_ms >= ? AND ts_ms < ? \
         ORDER BY ts_ms, id LIMIT ?",
        "idx_events_device_ts",
    ),
    (
        "a target's audit events",
        "SELECT * FROM audit_events WHERE org_id = ? AND target_id = ? ORDER BY id LIMIT ?",
        "idx_audit_events_org_target",
    ),
];

#[tokio::test]
async fn per_device_queries_search_their_own_index_not_the_organizations() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("plans.db").display()
    );
    let db = Database::connect(&url).await.expect("connect");
    Migrator::up(&db, None).await.expect("migrate");
    for (what, sql, index) in CASES {
        let params = sql.matches('?').count();
        let values: Vec<sea_orm::Value> = (0..params).map(|n| (n as i64 + 1).into()).collect();
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                DatabaseBackend::Sqlite,
                format!("EXPLAIN QUERY PLAN {sql}"),
                values,
            ))
            .await
            .expect("explain");
        let plan: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String>("", "detail").expect("detail"))
            .collect();
        assert!(
            plan.iter()
                .any(|p| p.starts_with("SEARCH") && p.contains(&format!("INDEX {index} "))),
            "{what}: expected a search of {index}, planned {plan:?}"
        );
    }
}
