//! Opening the database. Migrations run first, on a connection of their own
//! without time limits, and on PostgreSQL under an advisory lock, so
//! replicas starting at the same moment take turns instead of racing to
//! create the same tables. Then the pool the server uses: every wait on it
//! (a connection, a lock, a statement) is bounded by the database timeout,
//! so a stalled database answers 503 quickly instead of queueing requests.
//! On PostgreSQL the migrations run as the connecting login (the owner of
//! the tables), and the pool as `swrm_app`, under row-level security.

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    sqlx::sqlite::SqliteJournalMode,
};
use std::time::Duration;

use crate::error::{Error, Result};

/// `pg_advisory_lock` key of schema migrations ("swrmmigr").
const MIGRATION_LOCK: i64 = 0x7377_726d_6d69_6772;

/// Prepared statements kept per connection. The group-commit writer's
/// multi-row statements differ by row count (a few hundred texts); with
/// sqlx's default of 100 they would be prepared again and again.
const STATEMENT_CACHE: usize = 1024;

pub async fn open(url: &str, timeout: Duration) -> Result<DatabaseConnection> {
    ensure_sqlite_dir(url)?;
    migrate(url).await?;
    pool(url, timeout, 0, true).await
}

/// The bounded-wait pool (`max_connections` 0: sqlx's default). With
/// `ping_on_acquire`, each connection taken from the pool is checked with a
/// round trip first (sqlx's default): a connection the server dropped is
/// replaced before a request uses it. Without, a dead connection fails its
/// first statement instead, for a caller that retries.
pub async fn pool(
    url: &str,
    timeout: Duration,
    max_connections: u32,
    ping_on_acquire: bool,
) -> Result<DatabaseConnection> {
    let mut opts = ConnectOptions::new(url.to_owned());
    if max_connections > 0 {
        opts.max_connections(max_connections);
    }
    opts.test_before_acquire(ping_on_acquire);
    let millis = timeout.as_millis().to_string();
    opts.sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(timeout)
        .map_sqlx_sqlite_opts(move |o| {
            sqlite(o)
                .busy_timeout(timeout)
                .statement_cache_capacity(STATEMENT_CACHE)
        })
        .map_sqlx_postgres_opts(move |o| {
            // The server's queries run as the role row security applies to
            // (the migrations made it and let this login become it).
            o.statement_cache_capacity(STATEMENT_CACHE).options([
                ("statement_timeout", millis.as_str()),
                ("lock_timeout", millis.as_str()),
                ("role", migration::APP_ROLE),
            ])
        });
    Database::connect(opts)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot open database: {e}")))
}

fn sqlite(
    o: sea_orm::sqlx::sqlite::SqliteConnectOptions,
) -> sea_orm::sqlx::sqlite::SqliteConnectOptions {
    o.create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .pragma("wal_autocheckpoint", AUTOCHECKPOINT_PAGES.to_string())
}

/// WAL pages at which a committing connection checkpoints by itself. The
/// checkpoint loop (`Store::checkpoint_loop`) normally runs first, off the
/// request path; this bound only holds the WAL's size if it falls behind.
/// At SQLite's default (1,000 pages) the commit that crossed it, usually
/// the group-commit writer's, copied the WAL into the database file and
/// synced it while its batch waited (1-4 ms a time at 1,000 commands/s,
/// several times a second).
const AUTOCHECKPOINT_PAGES: u32 = 20_000;

async fn migrate(url: &str) -> Result<()> {
    let mut opts = ConnectOptions::new(url.to_owned());
    // One connection: the session that holds the lock runs the migrations.
    opts.sqlx_logging(false)
        .max_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .map_sqlx_sqlite_opts(|o| sqlite(o).busy_timeout(Duration::from_secs(30)));
    let db = Database::connect(opts)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot open database: {e}")))?;
    let postgres = db.get_database_backend() == DatabaseBackend::Postgres;
    if postgres {
        db.execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            .await?;
    }
    let migrated = Migrator::up(&db, None).await;
    if postgres {
        db.execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            .await?;
    }
    db.close().await?;
    Ok(migrated?)
}

fn ensure_sqlite_dir(url: &str) -> Result<()> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(dir) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Internal(format!("create {}: {e}", dir.display())))?;
        }
    }
    Ok(())
}
