//! The command queue. One row per command; its status is a state machine:
//!
//! ```text
//! queued → delivered (leased) → received (lease extended) → succeeded | failed
//!        ↘ cancelled (admin, while queued)     any open state → expired (TTL)
//! ```
//!
//! A delivery leases the command ([`LEASE`]); one not acknowledged within
//! its lease is delivered again as attempt + 1, until `max_attempts`, then
//! it is failed. Past its TTL it is expired and never delivered again.
//! Deliveries are claimed with a conditional update (`attempt` as it was
//! read), so two replicas or two polls never deliver the same attempt.
//! Queueing announces the command on the bus: waiting devices are woken at
//! once, on every replica (see [`delivery`]).

pub mod ack;
pub mod claim;
pub mod delivery;
pub mod handoff;

pub use ack::{Ack, ack};

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend,
    DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect, Statement, Value,
};
use std::{collections::HashSet, time::Duration};
use uuid::Uuid;

use super::{
    Core, devices,
    ingest::deadline,
    new_id,
    page::PageRequest,
    validate,
    writer::{Done, Job, columns::placeholders},
};
use crate::{
    auth::{OrgRead, OrgWrite},
    bus::Event,
    error::{Error, Result},
    store::{
        OrgTx,
        entities::{command, device},
    },
};

pub const QUEUED: &str = "queued";
pub const DELIVERED: &str = "delivered";
pub const RECEIVED: &str = "received";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
pub const EXPIRED: &str = "expired";
pub const CANCELLED: &str = "cancelled";
/// States a command can still leave.
pub const OPEN: [&str; 3] = [QUEUED, DELIVERED, RECEIVED];

/// How long a delivery is the device's to acknowledge.
pub const LEASE: Duration = Duration::from_secs(60);
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

pub struct NewCommand {
    pub kind: String,
    pub payload: Option<serde_json::Value>,
    pub ttl_seconds: Option<u32>,
    pub max_attempts: Option<u32>,
    pub idempotency_key: Option<String>,
    pub deployment_id: Option<Uuid>,
}

/// Queues a command for the device (the `id` of the path); a repeated
/// idempotency key answers the command queued the first time. The row is
/// written by the group-commit writer, so concurrent enqueues share a
/// commit (see `writer::commands`).
pub async fn enqueue(
    core: &Core,
    access: &OrgWrite,
    device: &str,
    input: NewCommand,
) -> Result<command::Model> {
    let device_id = validate::path_id("device", device)?;
    let prepared = prepare(core, access.org_id(), device_id, input)?;
    // The writer checks that the device is the organization's, in the
    // batch's transaction: no transaction of its own for the lookup.
    match core
        .writer
        .write(Job::Command(Box::new(prepared)), deadline(core))
        .await?
    {
        Done::Command(Some(queued)) => Ok(*queued),
        Done::Command(None) => Err(Error::not_found("device")),
        _ => Err(Error::Internal("the writer answered another job".into())),
    }
}

/// [`enqueue`] inside a transaction of the device's organization (a
/// deployment queues one per device).
pub async fn enqueue_in(
    core: &Core,
    tx: &mut OrgTx,
    device_id: Uuid,
    input: NewCommand,
) -> Result<command::Model> {
    let prepared = prepare(core, tx.org_id(), device_id, input)?;
    let (queued, new) = insert(tx.conn(), prepared).await?;
    if new {
        for event in queued_events(&queued) {
            tx.publish(event).await?;
        }
    }
    Ok(queued)
}

/// The row a valid `input` queues (not yet written).
fn prepare(
    core: &Core,
    org_id: Uuid,
    device_id: Uuid,
    input: NewCommand,
) -> Result<command::Model> {
    let key = input
        .idempotency_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    let payload = match input.payload {
        None => None,
        Some(p @ serde_json::Value::Object(_)) => Some(p.to_string()),
        Some(_) => return Err(Error::invalid("payload must be an object")),
    };
    let now = core.clock.now();
    let ttl = input
        .ttl_seconds
        .map_or(DEFAULT_TTL, |s| Duration::from_secs(s.into()));
    Ok(command::Model {
        id: new_id(),
        org_id,
        device_id,
        kind: input.kind.trim().to_owned(),
        payload,
        status: QUEUED.into(),
        attempt: 0,
        max_attempts: i32::try_from(input.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS))
            .unwrap_or(i32::MAX),
        lease_until_ms: None,
        expires_ms: now.timestamp_millis() + ttl.as_millis() as i64,
        idempotency_key: key,
        deployment_id: input.deployment_id,
        result: None,
        message: None,
        created_at: now,
        updated_at: now,
    })
}

/// Whether `device_id` is a device of `org_id`.
pub(crate) async fn device_exists(
    conn: &DatabaseTransaction,
    org_id: Uuid,
    device_id: Uuid,
) -> Result<bool> {
    Ok(device::Entity::find_by_id(device_id)
        .filter(device::Column::OrgId.eq(org_id))
        .select_only()
        .column(device::Column::Id)
        .into_tuple::<Uuid>()
        .one(conn)
        .await?
        .is_some())
}

/// Writes a prepared command unless its idempotency key was used before
/// for the device; answers the stored command and whether it is new.
pub(crate) async fn insert(
    conn: &DatabaseTransaction,
    prepared: command::Model,
) -> Result<(command::Model, bool)> {
    if let Some(key) = &prepared.idempotency_key {
        let earlier = command::Entity::find()
            .filter(command::Column::OrgId.eq(prepared.org_id))
            .filter(command::Column::DeviceId.eq(prepared.device_id))
            .filter(command::Column::IdempotencyKey.eq(key.as_str()))
            .one(conn)
            .await?;
        if let Some(earlier) = earlier {
            return Ok((earlier, false));
        }
    }
    command::Entity::insert(command::ActiveModel::from(prepared.clone()))
        .exec_without_returning(conn)
        .await?;
    Ok((prepared, true))
}

/// Runs `update` (an `UPDATE commands … RETURNING id` whose last `$`
/// placeholder is the command's id) once with each of `rows` (its values),
/// as common table expressions of one PostgreSQL statement; answers the
/// ids updated. Each names its command by primary key, a plan no missing
/// statistics can turn into a scan: a join of the same rows to a list was
/// planned from the organization's index on a table without statistics,
/// and the cached plan kept reading every command of the organization as
/// the table grew (seen with `auto_explain`); a join to an `unnest` of
/// arrays, planned while the table was small, was a cached sequential
/// scan, and cost 0.45 ms a batch where this costs 0.08 ms.
///
/// A statement holds a power of two of updates, at most [`UPDATES_PER_STATEMENT`],
/// the rest padded with updates of the nil id, which match nothing: so
/// there are seven statement texts, each prepared and planned once per
/// connection. With one text per batch size, every batch larger than a
/// handful was planned afresh (5-35 ms each in the slow-statement log of a
/// slower machine), and a writer whose batches grew fell further behind.
pub(crate) async fn update_each_by_id(
    conn: &DatabaseTransaction,
    update: &str,
    rows: Vec<Vec<Value>>,
) -> Result<HashSet<Uuid>> {
    let backend = DatabaseBackend::Postgres;
    let mut updated = HashSet::new();
    for chunk in rows.chunks(UPDATES_PER_STATEMENT) {
        let size = chunk.len().next_power_of_two();
        let mut values: Vec<Value> = chunk.iter().flatten().cloned().collect();
        // The first row's values with the nil id: an update of nothing.
        let mut pad = chunk[0].clone();
        if let Some(id) = pad.last_mut() {
            *id = Uuid::nil().into();
        }
        for _ in chunk.len()..size {
            values.extend(pad.iter().cloned());
        }
        let ctes: Vec<String> = (0..size).map(|k| format!("u{k} AS ({update})")).collect();
        let select = (0..size)
            .map(|k| format!("SELECT id FROM u{k}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let sql = format!("WITH {} {select}", ctes.join(", "));
        let statement =
            Statement::from_sql_and_values(backend, placeholders(backend, &sql, 0), values);
        for row in conn.query_all_raw(statement).await? {
            updated.insert(row.try_get::<Uuid>("", "id")?);
        }
    }
    Ok(updated)
}

/// Most updates [`update_each_by_id`] sends in one statement.
const UPDATES_PER_STATEMENT: usize = 64;

/// What queueing `queued` announces: a wake-up for its device's waiter,
/// and the status change for integrators.
pub(crate) fn queued_events(queued: &command::Model) -> [Event; 2] {
    [
        Event::CommandQueued {
            device_id: queued.device_id,
        },
        Event::CommandChanged {
            org_id: queued.org_id,
            command_id: queued.id,
        },
    ]
}

pub async fn list(
    core: &Core,
    access: &OrgRead,
    device: &str,
    status: Option<&str>,
    page: PageRequest,
) -> Result<(Vec<command::Model>, String)> {
    let tx = core.store.org_read(access.org_id()).await?;
    let device = devices::find(&tx, device).await?;
    let mut select = command::Entity::find()
        .filter(command::Column::OrgId.eq(tx.org_id()))
        .filter(command::Column::DeviceId.eq(device.id));
    if let Some(status) = status.filter(|s| !s.is_empty()) {
        select = select.filter(command::Column::Status.eq(status));
    }
    let out = page
        .fetch(select, command::Column::Id, tx.conn(), |m| m.id)
        .await?;
    tx.commit().await?;
    Ok(out)
}

pub async fn get(core: &Core, access: &OrgRead, id: &str) -> Result<command::Model> {
    let id = validate::path_id("command", id)?;
    let tx = core.store.org_read(access.org_id()).await?;
    let found = find(&tx, id).await?;
    tx.commit().await?;
    Ok(found)
}

async fn find(tx: &OrgTx, id: Uuid) -> Result<command::Model> {
    command::Entity::find_by_id(id)
        .filter(command::Column::OrgId.eq(tx.org_id()))
        .one(tx.conn())
        .await?
        .ok_or_else(|| Error::not_found("command"))
}

/// Cancels a queued command; one already delivered (or done) is 409.
pub async fn cancel(core: &Core, access: &OrgWrite, id: &str) -> Result<command::Model> {
    let id = validate::path_id("command", id)?;
    let mut tx = core.store.org_tx(access.org_id()).await?;
    let found = find(&tx, id).await?;
    if found.status == CANCELLED {
        tx.commit().await?;
        return Ok(found);
    }
    if found.status != QUEUED {
        return Err(Error::FailedPrecondition(format!(
            "only a queued command can be cancelled; this one is {}",
            found.status
        )));
    }
    let updated = set_status(core, &mut tx, found, CANCELLED, None).await?;
    tx.commit().await?;
    Ok(updated)
}

async fn set_status(
    core: &Core,
    tx: &mut OrgTx,
    c: command::Model,
    status: &str,
    lease_until_ms: Option<i64>,
) -> Result<command::Model> {
    let mut active: command::ActiveModel = c.into();
    active.status = Set(status.into());
    active.lease_until_ms = Set(lease_until_ms);
    active.updated_at = Set(core.clock.now());
    let updated = active.update(tx.conn()).await?;
    tx.publish(Event::CommandChanged {
        org_id: updated.org_id,
        command_id: updated.id,
    })
    .await?;
    Ok(updated)
}
