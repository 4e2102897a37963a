//! Storage: sea-orm over SQLite (embedded default) or PostgreSQL.
//!
//! Tenant data is only reached through an [`OrgTx`]: a transaction that knows
//! the caller's organization. On PostgreSQL it also sets `swrm.org_id` for the
//! transaction, so row-level security can key on it without touching queries.
//! Events published in an `OrgTx` reach the bus when it commits, and not at
//! all if it does not. Row-level security (migration `000010`) is keyed on
//! it: a query outside an `OrgTx` sees no organization's rows.

mod connect;
mod definer;
pub mod entities;

use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use std::time::Duration;
use uuid::Uuid;

use crate::{
    bus::{self, Bus, Event},
    error::Result,
};

/// How often SQLite's WAL is checkpointed (see [`Store::checkpoint_loop`]).
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    bus: Bus,
    /// Where it connected, with its wait bound (for pools of its own).
    url: std::sync::Arc<str>,
    timeout: Duration,
}

impl Store {
    /// Connects, creating the SQLite file if needed, and runs migrations.
    /// `timeout` bounds every wait on the database (see `connect`).
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self> {
        let db = connect::open(url, timeout).await?;
        let bus = Bus::new(db.get_database_backend() == DatabaseBackend::Postgres);
        Ok(Self {
            db,
            bus,
            url: url.into(),
            timeout,
        })
    }

    /// Another pool on the same database, created on the calling runtime
    /// (a PostgreSQL connection serves the runtime that opened it), on the
    /// same bus. No migrations: for the group-commit writer's own thread.
    /// Its connections are not pinged when taken (a round trip per batch,
    /// a quarter of a small batch's time on PostgreSQL): a dead one fails
    /// its batch, which the writer retries job by job on a fresh one.
    pub async fn another_pool(&self, connections: u32) -> Result<Self> {
        let db = connect::pool(&self.url, self.timeout, connections, false).await?;
        Ok(Self {
            db,
            bus: self.bus.clone(),
            url: self.url.clone(),
            timeout: self.timeout,
        })
    }

    pub fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == DatabaseBackend::Postgres
    }

    /// The bus events committed through this store are delivered on.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The pool, outside any organization: for tables that belong to no
    /// organization (pending blobs). Tenant data goes through
    /// [`Store::org_tx`]; on PostgreSQL row-level security shows a query
    /// here no tenant row at all, and the cross-organization lookups go
    /// through `definer`.
    pub fn unscoped(&self) -> &DatabaseConnection {
        &self.db
    }

    /// A transaction that will write. On SQLite it takes the write lock at
    /// `BEGIN` (IMMEDIATE), so a read followed by a write cannot fail with
    /// SQLITE_BUSY when another connection wrote in between; waiting for the
    /// lock honours the busy timeout instead.
    pub async fn org_tx(&self, org_id: Uuid) -> Result<OrgTx> {
        self.begin_scoped(org_id, SqliteTransactionMode::Immediate)
            .await
    }

    /// A read-only transaction (deferred on SQLite: readers never wait).
    pub async fn org_read(&self, org_id: Uuid) -> Result<OrgTx> {
        self.begin_scoped(org_id, SqliteTransactionMode::Deferred)
            .await
    }

    async fn begin_scoped(&self, org_id: Uuid, mode: SqliteTransactionMode) -> Result<OrgTx> {
        let tx = self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(mode),
                ..Default::default()
            })
            .await?;
        set_org(&tx, org_id).await?;
        Ok(OrgTx {
            tx,
            org_id,
            bus: self.bus.clone(),
            events: Vec::new(),
        })
    }

    /// A write transaction spanning organizations (batched writes); each
    /// statement must go through [`BatchTx::scope`].
    pub async fn batch_tx(&self) -> Result<BatchTx> {
        let tx = self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?;
        Ok(BatchTx {
            tx,
            scoped: None,
            bus: self.bus.clone(),
            events: Vec::new(),
            on_commit: Vec::new(),
        })
    }

    /// Announces `event` now, outside any transaction: to this process, and
    /// on PostgreSQL to every other replica.
    pub async fn announce(&self, event: Event) -> Result<()> {
        if self.bus.is_shared() {
            // One statement in autocommit, its own transaction: one round
            // trip where BEGIN, the notification and COMMIT were three
            // (every long poll and stream announces itself).
            bus::postgres::notify(&self.db, self.bus.replica(), event).await?;
        }
        self.bus.deliver(&[event]);
        Ok(())
    }

    /// Connections in the pool: (open, idle).
    pub fn pool_connections(&self) -> (u32, usize) {
        match self.db.get_database_backend() {
            DatabaseBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => {
                let pool = self.db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
        }
    }

    /// SQLite: copies the WAL into the database file every
    /// [`CHECKPOINT_EVERY`], on a pool connection of its own, so no
    /// committing request does it (see `connect::AUTOCHECKPOINT_PAGES`). A
    /// passive checkpoint waits for no reader or writer. PostgreSQL
    /// checkpoints by itself: returns at once.
    pub async fn checkpoint_loop(self) {
        if self.is_postgres() {
            return;
        }
        let mut every = tokio::time::interval(CHECKPOINT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = self
                .db
                .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
                .await
            {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
            }
        }
    }

    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }
}

/// A transaction scoped to one organization.
pub struct OrgTx {
    tx: DatabaseTransaction,
    org_id: Uuid,
    bus: Bus,
    /// Published here, delivered at commit.
    events: Vec<Event>,
}

/// A transaction whose statements belong to different organizations.
pub struct BatchTx {
    tx: DatabaseTransaction,
    scoped: Option<Uuid>,
    bus: Bus,
    /// Published here, delivered at commit (as in an [`OrgTx`]).
    events: Vec<Event>,
    /// Run once it has committed (dropped, not run, if it does not).
    on_commit: Vec<Box<dyn FnOnce() + Send>>,
}

impl BatchTx {
    /// The connection for a statement of `org_id`'s (on PostgreSQL,
    /// `swrm.org_id` is switched when the organization changes).
    pub async fn scope(&mut self, org_id: Uuid) -> Result<&DatabaseTransaction> {
        if self.scoped != Some(org_id) {
            set_org(&self.tx, org_id).await?;
            self.scoped = Some(org_id);
        }
        Ok(&self.tx)
    }

    /// Publishes `event` with the batch: to other replicas in the
    /// transaction (PostgreSQL, all of the batch's events together just
    /// before it commits), here once it commits.
    pub fn publish(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Runs `then` once the batch has committed, before its events are
    /// delivered; never if it does not commit.
    pub fn after_commit(&mut self, then: impl FnOnce() + Send + 'static) {
        self.on_commit.push(Box::new(then));
    }

    pub async fn commit(self) -> Result<()> {
        if self.bus.is_shared() && !self.events.is_empty() {
            bus::postgres::notify_all(&self.tx, self.bus.replica(), &self.events).await?;
        }
        self.tx.commit().await?;
        self.on_commit.into_iter().for_each(|then| then());
        self.bus.deliver(&self.events);
        Ok(())
    }
}

/// Scopes the rest of the transaction to `org_id` (PostgreSQL).
async fn set_org(tx: &DatabaseTransaction, org_id: Uuid) -> Result<()> {
    if tx.get_database_backend() == DatabaseBackend::Postgres {
        tx.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT set_config('swrm.org_id', $1, true)",
            [org_id.to_string().into()],
        ))
        .await?;
    }
    Ok(())
}

impl OrgTx {
    pub fn org_id(&self) -> Uuid {
        self.org_id
    }
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.tx
    }

    /// Announces `event` when (and only if) this transaction commits: to
    /// this process at commit, and on PostgreSQL to every other replica.
    pub async fn publish(&mut self, event: Event) -> Result<()> {
        if self.bus.is_shared() {
            bus::postgres::notify(&self.tx, self.bus.replica(), event).await?;
        }
        self.events.push(event);
        Ok(())
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        self.bus.deliver(&self.events);
        Ok(())
    }
}
