//! Row-level security on PostgreSQL: the database's own wall between
//! organizations, behind the application's.
//!
//! - Every table with an `org_id` column (and `organizations` by its `id`)
//!   shows and accepts only the rows of the organization the transaction
//!   names in `swrm.org_id`; with none named, nothing.
//! - The server runs as role `swrm_app` (created here when missing), which
//!   neither owns the tables nor bypasses row security. The role that runs
//!   the migrations owns everything and may `SET ROLE swrm_app`.
//! - What must look across organizations goes through a few `SECURITY
//!   DEFINER` functions owned by that owner: finding a secret by its hash
//!   (which names the organization), the organization ids, and the
//!   server's own jobs (due webhook deliveries, offline rules, audit
//!   retention, planner statistics). Each answers one narrow question.
//!
//! SQLite, one process with one tenant wall (the application), is untouched.

use sea_orm_migration::{
    prelude::*,
    sea_orm::{ConnectionTrait, DatabaseBackend, Statement},
};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The role the server runs as (see `store::connect`).
pub const APP_ROLE: &str = "swrm_app";

/// The organization a transaction is scoped to, or NULL. A plain SQL
/// function, inlined into each policy, so the planner still uses the
/// `org_id` indexes.
const SCOPED_ORG: &str = "
CREATE OR REPLACE FUNCTION swrm_scoped_org() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('swrm.org_id', true), '')::uuid $$";

/// Creates the role unless it exists (replicas and test databases on one
/// server race here: a duplicate is fine), and lets the owner become it.
const ROLE: &str = "
DO $do$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'swrm_app') THEN
    BEGIN
      CREATE ROLE swrm_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
    EXCEPTION WHEN OTHERS THEN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'swrm_app') THEN
        RAISE EXCEPTION 'cannot create role swrm_app (%); as a superuser run: CREATE ROLE swrm_app NOLOGIN; GRANT swrm_app TO %', SQLERRM, current_user;
      END IF;
    END;
  END IF;
  IF NOT pg_has_role(current_user, 'swrm_app', 'MEMBER') THEN
    BEGIN
      EXECUTE format('GRANT swrm_app TO %I', current_user);
    EXCEPTION WHEN OTHERS THEN
      IF NOT pg_has_role(current_user, 'swrm_app', 'MEMBER') THEN
        RAISE;
      END IF;
    END;
  END IF;
END
$do$";

/// Row security on every tenant table (found by its `org_id` column, so a
/// table added later is covered when this runs again; a test checks that
/// none is missed).
pub(crate) const POLICIES: &str = "
DO $do$
DECLARE t text;
BEGIN
  FOR t IN
    SELECT c.relname FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id' AND NOT a.attisdropped
    WHERE c.relkind = 'r'
      AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('DROP POLICY IF EXISTS org_scope ON %I', t);
    EXECUTE format('CREATE POLICY org_scope ON %I USING (org_id = swrm_scoped_org()) '
                   'WITH CHECK (org_id = swrm_scoped_org())', t);
  END LOOP;
  ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
  DROP POLICY IF EXISTS org_scope ON organizations;
  CREATE POLICY org_scope ON organizations
    USING (id = swrm_scoped_org()) WITH CHECK (id = swrm_scoped_org());
END
$do$";

/// The narrow cross-organization reads, as `(signature, definition)`.
/// `{schema}` is the migrations' schema (a definer function pins its
/// search path, so a caller's objects cannot stand in for the tables).
const DEFINERS: &[(&str, &str)] = &[
    (
        "swrm_device_key_by_hash(h text)",
        "RETURNS SETOF device_keys LANGUAGE sql STABLE
         AS $$ SELECT * FROM device_keys WHERE secret_hash = h $$",
    ),
    (
        "swrm_api_key_by_hash(h text)",
        "RETURNS SETOF api_keys LANGUAGE sql STABLE
         AS $$ SELECT * FROM api_keys WHERE secret_hash = h $$",
    ),
    (
        "swrm_provisioning_token_by_hash(h text)",
        "RETURNS SETOF provisioning_tokens LANGUAGE sql STABLE
         AS $$ SELECT * FROM provisioning_tokens WHERE secret_hash = h $$",
    ),
    (
        "swrm_enrollment_code_by_hash(h text)",
        "RETURNS SETOF enrollment_codes LANGUAGE sql STABLE
         AS $$ SELECT * FROM enrollment_codes WHERE secret_hash = h $$",
    ),
    (
        "swrm_organization_ids(lim integer)",
        "RETURNS SETOF uuid LANGUAGE sql STABLE
         AS $$ SELECT id FROM organizations ORDER BY created_at, id LIMIT lim $$",
    ),
    (
        "swrm_due_webhook_deliveries(now_ms bigint, lim integer)",
        "RETURNS SETOF webhook_deliveries LANGUAGE sql STABLE
         AS $$ SELECT * FROM webhook_deliveries
               WHERE status = 'pending' AND next_attempt_ms <= now_ms
               ORDER BY next_attempt_ms LIMIT lim $$",
    ),
    (
        "swrm_next_webhook_attempt_ms()",
        "RETURNS bigint LANGUAGE sql STABLE
         AS $$ SELECT min(next_attempt_ms) FROM webhook_deliveries WHERE status = 'pending' $$",
    ),
    (
        "swrm_live_alert_rules(kind text)",
        "RETURNS SETOF alert_rules LANGUAGE sql STABLE
         AS $$ SELECT * FROM alert_rules WHERE sensor_type = kind AND deleted_at IS NULL $$",
    ),
    (
        "swrm_purge_audit_events(cutoff timestamptz)",
        "RETURNS bigint LANGUAGE sql
         AS $$ WITH gone AS (DELETE FROM audit_events WHERE at < cutoff RETURNING 1)
               SELECT count(*) FROM gone $$",
    ),
    (
        "swrm_refresh_device_statistics()",
        "RETURNS void LANGUAGE plpgsql
         AS $$ BEGIN ANALYZE devices, provisioning_tokens, device_keys; END $$",
    ),
];

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        if db.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let schema: String = db
            .query_one_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                "SELECT current_schema() AS s",
            ))
            .await?
            .ok_or_else(|| DbErr::Custom("no current schema".into()))?
            .try_get("", "s")?;
        let schema = quote_ident(&schema);
        db.execute_unprepared(ROLE).await?;
        db.execute_unprepared(SCOPED_ORG).await?;
        db.execute_unprepared(POLICIES).await?;
        for (signature, definition) in DEFINERS {
            db.execute_unprepared(&format!(
                "CREATE OR REPLACE FUNCTION {signature} {definition}
                 SECURITY DEFINER SET search_path = {schema}, pg_temp;
                 REVOKE ALL ON FUNCTION {signature} FROM PUBLIC;
                 GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE};"
            ))
            .await?;
        }
        // The runtime role reads and writes rows (row security decides
        // which), and nothing else: no DDL, no migration bookkeeping.
        db.execute_unprepared(&format!(
            "GRANT USAGE ON SCHEMA {schema} TO {APP_ROLE};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {APP_ROLE};
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {APP_ROLE};
             REVOKE ALL ON seaql_migrations FROM {APP_ROLE};
             ALTER DEFAULT PRIVILEGES IN SCHEMA {schema}
               GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP_ROLE};"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        if db.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        for (signature, _) in DEFINERS {
            db.execute_unprepared(&format!("DROP FUNCTION IF EXISTS {signature}"))
                .await?;
        }
        db.execute_unprepared(
            "DO $do$
             DECLARE t text;
             BEGIN
               FOR t IN SELECT tablename FROM pg_policies
                        WHERE schemaname = current_schema() AND policyname = 'org_scope'
               LOOP
                 EXECUTE format('DROP POLICY org_scope ON %I', t);
                 EXECUTE format('ALTER TABLE %I DISABLE ROW LEVEL SECURITY', t);
               END LOOP;
             END
             $do$;
             DROP FUNCTION IF EXISTS swrm_scoped_org();",
        )
        .await?;
        Ok(())
    }
}
