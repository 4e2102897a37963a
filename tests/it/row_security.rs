//! Row-level security on PostgreSQL, the second wall between organizations:
//! the server's own connections, with no organization named, see no
//! tenant row at all, and scoped to one organization see and write only
//! its rows. On SQLite (no row security) these tests have nothing to check
//! and return at once.

use crate::common::{self, TestServer};
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait,
};
use serde_json::json;

/// The tables the server may read outside any organization: migration
/// bookkeeping (not granted at all) and blobs being written (no owner yet).
const NOT_TENANT: &[&str] = &["seaql_migrations", "pending_blobs"];

/// The owner's connection (the login the tests connect as, which ran the
/// migrations): row security does not apply to it, so it sees every row.
async fn owner(s: &TestServer) -> Option<DatabaseConnection> {
    let url = s.database_url.as_ref()?;
    Some(Database::connect(url).await.expect("owner connects"))
}

async fn scalar(db: &impl ConnectionTrait, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("a row");
    row.try_get_by_index(0).expect("an integer")
}

async fn text(db: &impl ConnectionTrait, sql: &str) -> String {
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("a row");
    row.try_get_by_index(0).expect("text")
}

/// Every table of the schema holding an `org_id` column, plus `organizations`.
async fn tenant_tables(db: &impl ConnectionTrait) -> Vec<String> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT c.relname::text FROM pg_class c \
             WHERE c.relkind = 'r' \
               AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) \
             ORDER BY 1",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .filter(|t| !NOT_TENANT.contains(&t.as_str()))
        .collect()
}

/// Two organizations, each with paired devices that sent readings, an
/// enrollment code, a command and an API key: rows in most tenant tables.
async fn two_busy_organizations(s: &TestServer) -> String {
    let other = s.other_org("globex").await;
    for key in [s.owner_key.clone(), other.clone()] {
        for n in 0..2 {
            let (id, device_key) = s.paired_device_as(&key, &format!("cam-{n}")).await;
            let sent = s
                .post(
                    "/api/public/v1/sensors",
                    Some(&device_key),
                    json!({"readings": [{"sensor_type": "temperature", "value": 21.5}]}),
                )
                .await;
            assert!(sent.status.is_success(), "{}", sent.body);
            let queued = s
                .post(
                    &format!("/api/v1/devices/{id}/commands"),
                    Some(&key),
                    json!({"type": "reboot"}),
                )
                .await;
            assert!(queued.status.is_success(), "{}", queued.body);
        }
        let code = s
            .post(
                "/api/v1/enrollment-codes",
                Some(&key),
                json!({"name": "line 1", "max_devices": 5}),
            )
            .await;
        assert!(code.status.is_success(), "{}", code.body);
    }
    other
}

#[tokio::test]
async fn the_server_runs_as_a_role_that_neither_owns_the_tables_nor_bypasses_row_security() {
    let s = common::start().await;
    if s.database_url.is_none() {
        return;
    }
    let pool = s.app.core.store.unscoped();
    assert_eq!(text(pool, "SELECT current_user::text").await, "swrm_app");
    assert_eq!(
        scalar(
            pool,
            "SELECT count(*) FROM pg_roles WHERE rolname = current_user \
             AND NOT rolsuper AND NOT rolbypassrls"
        )
        .await,
        1,
        "the server's role must be neither superuser nor BYPASSRLS"
    );
    assert_eq!(
        scalar(
            pool,
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() \
             AND tableowner = current_user"
        )
        .await,
        0,
        "the server's role owns no table (an owner skips row security)"
    );
    // No DDL either.
    let ddl = pool
        .execute_unprepared("ALTER TABLE devices DISABLE ROW LEVEL SECURITY")
        .await;
    assert!(ddl.is_err(), "the server's role altered a table");
}

#[tokio::test]
async fn every_tenant_table_has_row_security_keyed_on_the_organization() {
    let s = common::start().await;
    let Some(owner) = owner(&s).await else { return };
    let tables = tenant_tables(&owner).await;
    assert!(tables.len() >= 25, "{tables:?}");
    for table in &tables {
        let secured = scalar(
            &owner,
            &format!(
                "SELECT count(*) FROM pg_class c JOIN pg_policies p ON p.tablename = c.relname \
                 WHERE c.relname = '{table}' AND c.relrowsecurity \
                   AND p.schemaname = current_schema() AND p.policyname = 'org_scope'"
            ),
        )
        .await;
        assert_eq!(secured, 1, "{table} has no org_scope row security");
    }
}

#[tokio::test]
async fn an_unscoped_query_sees_no_row_of_any_organization() {
    let s = common::start().await;
    let Some(owner) = owner(&s).await else { return };
    two_busy_organizations(&s).await;
    let pool = s.app.core.store.unscoped();
    let mut seen_by_owner = 0;
    for table in tenant_tables(&owner).await {
        let all = scalar(&owner, &format!("SELECT count(*) FROM {table}")).await;
        seen_by_owner += all;
        let unscoped = scalar(pool, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(
            unscoped, 0,
            "{table}: {unscoped} of {all} rows seen unscoped"
        );
        // Nor can an unscoped statement change or remove them.
        let hit = pool
            .execute_unprepared(&format!("DELETE FROM {table}"))
            .await
            .map(|r| r.rows_affected())
            .unwrap_or(0);
        assert_eq!(hit, 0, "{table}: an unscoped DELETE removed rows");
    }
    assert!(
        seen_by_owner >= 30,
        "the fixture made rows: {seen_by_owner}"
    );
    // The server's own reads of those rows, scoped, still work.
    let listed = s.get("/api/v1/devices", Some(&s.owner_key)).await;
    assert_eq!(listed.body["devices"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_transaction_scoped_to_one_organization_sees_and_writes_only_its_rows() {
    let s = common::start().await;
    let Some(owner) = owner(&s).await else { return };
    two_busy_organizations(&s).await;
    let ours = s.org_id().await;
    let theirs = uuid::Uuid::parse_str(
        &text(
            &owner,
            &format!("SELECT id::text FROM organizations WHERE id <> '{ours}'"),
        )
        .await,
    )
    .unwrap();

    let tx = s.app.core.store.org_tx(ours).await.unwrap();
    let conn = tx.conn();
    for table in [
        "devices",
        "readings",
        "commands",
        "enrollment_codes",
        "api_keys",
    ] {
        let foreign = scalar(
            conn,
            &format!("SELECT count(*) FROM {table} WHERE org_id <> '{ours}'"),
        )
        .await;
        assert_eq!(
            foreign, 0,
            "{table}: foreign rows seen from a scoped transaction"
        );
        let own = scalar(conn, &format!("SELECT count(*) FROM {table}")).await;
        assert!(own > 0, "{table}: the organization's own rows are visible");
    }
    assert_eq!(scalar(conn, "SELECT count(*) FROM organizations").await, 1);
    // Writes aimed at the other organization touch nothing, and a row
    // claiming to be theirs is refused.
    let renamed = conn
        .execute_unprepared(&format!(
            "UPDATE devices SET name = 'hijacked' WHERE org_id = '{theirs}'"
        ))
        .await
        .unwrap();
    assert_eq!(renamed.rows_affected(), 0);
    drop(tx);
    let tx = s.app.core.store.org_tx(ours).await.unwrap();
    let planted = tx
        .conn()
        .execute_unprepared(&format!(
            "INSERT INTO locations (id, org_id, name, created_at) \
             VALUES ('{}', '{theirs}', 'planted', now())",
            uuid::Uuid::now_v7()
        ))
        .await;
    let refused = planted.expect_err("a row for another organization was written");
    assert!(
        refused.to_string().contains("row-level security"),
        "{refused}"
    );
    drop(tx);
    assert_eq!(
        scalar(
            &owner,
            "SELECT count(*) FROM devices WHERE name = 'hijacked'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn only_the_narrow_lookups_look_across_organizations() {
    let s = common::start().await;
    let Some(owner) = owner(&s).await else { return };
    let rows = owner
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT p.proname::text FROM pg_proc p \
             WHERE p.prosecdef AND p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) \
             ORDER BY 1",
        ))
        .await
        .unwrap();
    let definers: Vec<String> = rows
        .iter()
        .map(|r| r.try_get_by_index(0).unwrap())
        .collect();
    assert_eq!(
        definers,
        [
            "swrm_api_key_by_hash",
            "swrm_device_key_by_hash",
            "swrm_due_webhook_deliveries",
            "swrm_enrollment_code_by_hash",
            "swrm_live_alert_rules",
            "swrm_next_webhook_attempt_ms",
            "swrm_organization_ids",
            "swrm_provisioning_token_by_hash",
            "swrm_purge_audit_events",
            "swrm_refresh_device_statistics",
        ]
    );
    // A lookup answers for the one secret asked about: an unknown hash
    // finds nothing, even though the table has rows.
    let pool = s.app.core.store.unscoped();
    assert_eq!(
        scalar(pool, "SELECT count(*) FROM swrm_api_key_by_hash('00')").await,
        0
    );
    assert!(
        s.app
            .core
            .store
            .api_key_by_hash(&swrm::auth::secret::hash(&s.owner_key))
            .await
            .unwrap()
            .is_some()
    );
    // And a transaction that names no organization, on a pooled
    // connection that served another organization a moment ago, sees
    // nothing: the scope is per transaction, never left on the session.
    let ours = s.org_id().await;
    let tx = s.app.core.store.org_read(ours).await.unwrap();
    assert_eq!(scalar(tx.conn(), "SELECT count(*) FROM api_keys").await, 1);
    tx.commit().await.unwrap();
    for _ in 0..8 {
        let plain = pool.begin().await.unwrap();
        assert_eq!(scalar(&plain, "SELECT count(*) FROM api_keys").await, 0);
        plain.commit().await.unwrap();
    }
}
