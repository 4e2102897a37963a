//! Claims: a device takes its deliverable commands as new attempts, in
//! queue order. The group-commit writer runs the claims of a batch
//! together, a handful of statements for any number of devices: one read
//! of their open commands, one conditional update of what is delivered.
//! A poll that finds nothing (most of them: a device polls again after
//! each delivery) costs a share of one read, not a round trip of its own;
//! on PostgreSQL the round trips were what bounded the writer.
//!
//! Each command is claimed only if nobody changed it since it was read
//! (its `attempt` and `status` as read), so two replicas or two polls
//! never deliver the same attempt (SQLite has no `FOR UPDATE`).

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, EntityTrait,
    FromQueryResult, QueryFilter, Statement, Value,
};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

use super::{DELIVERED, EXPIRED, FAILED, LEASE, OPEN, QUEUED, update_each_by_id};
use crate::{
    core::writer::columns::{Columns, Kind, placeholders},
    error::Result,
    store::entities::command,
};

/// Most commands one delivery hands over.
pub const MAX_PER_DELIVERY: u64 = 100;
/// Devices whose open commands one statement reads (SQLite: one
/// subquery each).
const DEVICES_PER_READ: usize = 64;

/// A device's claim, as the writer runs it.
pub struct ClaimRequest {
    pub org_id: Uuid,
    pub device_id: Uuid,
    /// Commands delivered but not acknowledged are delivered again at
    /// once (a stream reconnecting) instead of after their lease.
    pub reclaim: bool,
    pub now: DateTime<Utc>,
}

/// What a claim did.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// Delivered now, in queue order.
    pub commands: Vec<command::Model>,
    /// When the earliest lease still held runs out (Unix ms).
    pub next_lease: Option<i64>,
    /// Every command whose status changed (delivered, expired, failed).
    pub changed: Vec<Uuid>,
}

/// What a claim does with one open command.
#[derive(Debug, PartialEq)]
enum Step {
    Deliver,
    /// Leased to the device until then: not delivered again yet.
    Wait(i64),
    /// Ends it, with a message for the admin.
    Finish(&'static str, Option<String>),
}

fn step(c: &command::Model, now_ms: i64, reclaim: bool) -> Step {
    let leased = c.status != QUEUED && c.lease_until_ms.is_some_and(|l| l > now_ms);
    if c.expires_ms <= now_ms {
        Step::Finish(EXPIRED, None)
    } else if leased && !reclaim {
        Step::Wait(c.lease_until_ms.unwrap_or(now_ms))
    } else if c.attempt >= c.max_attempts {
        Step::Finish(
            FAILED,
            Some(format!("not acknowledged after {} deliveries", c.attempt)),
        )
    } else {
        Step::Deliver
    }
}

/// Runs the claims `reqs`, of distinct devices of `org_id`, in `conn` (a
/// transaction scoped to the organization). Also expires and fails what
/// is due. Answers in the order of `reqs`.
pub(crate) async fn claim_devices(
    conn: &DatabaseTransaction,
    org_id: Uuid,
    reqs: &[&ClaimRequest],
) -> Result<Vec<Claimed>> {
    let devices: Vec<Uuid> = reqs.iter().map(|r| r.device_id).collect();
    let mut open = read_open(conn, org_id, &devices).await?;
    let mut out = Vec::with_capacity(reqs.len());
    // The deliveries, to be claimed together: (request, command).
    let mut deliveries: Vec<(usize, command::Model)> = Vec::new();
    for (n, req) in reqs.iter().enumerate() {
        let now_ms = req.now.timestamp_millis();
        let mut claimed = Claimed {
            commands: Vec::new(),
            next_lease: None,
            changed: Vec::new(),
        };
        for c in open.remove(&req.device_id).unwrap_or_default() {
            match step(&c, now_ms, req.reclaim) {
                Step::Deliver => deliveries.push((n, c)),
                Step::Wait(until) => claimed.next_lease = earliest(claimed.next_lease, until),
                Step::Finish(status, message) => {
                    if finish(conn, &c, status, message, req.now).await? {
                        claimed.changed.push(c.id);
                    }
                }
            }
        }
        out.push(claimed);
    }
    let won = deliver(conn, reqs, &deliveries).await?;
    for (n, mut c) in deliveries {
        if !won.contains(&c.id) {
            continue;
        }
        let now = reqs[n].now;
        let lease_until = lease_until(now);
        c.status = DELIVERED.into();
        c.attempt += 1;
        c.lease_until_ms = Some(lease_until);
        c.updated_at = now;
        let claimed = &mut out[n];
        claimed.next_lease = earliest(claimed.next_lease, lease_until);
        claimed.changed.push(c.id);
        claimed.commands.push(c);
    }
    Ok(out)
}

fn earliest(a: Option<i64>, b: i64) -> Option<i64> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn lease_until(now: DateTime<Utc>) -> i64 {
    now.timestamp_millis() + LEASE.as_millis() as i64
}

/// `status IN ('queued', 'delivered', 'received')` spelled as literals:
/// the partial index of open commands serves only a query whose condition
/// matches its own, and bound parameters never do (on SQLite; on
/// PostgreSQL not in a generic plan).
fn open_statuses() -> String {
    let list = OPEN.map(|s| format!("'{s}'")).join(", ");
    format!("status IN ({list})")
}

/// The first [`MAX_PER_DELIVERY`] open commands of each device, by device
/// in queue order. Each device's are a range of the open-commands index:
/// on PostgreSQL a lateral subquery over an array of devices (one text
/// for any number), on SQLite one subquery per device.
async fn read_open(
    conn: &DatabaseTransaction,
    org_id: Uuid,
    devices: &[Uuid],
) -> Result<HashMap<Uuid, Vec<command::Model>>> {
    let backend = conn.get_database_backend();
    let one_device = format!(
        "SELECT * FROM commands WHERE org_id = $ AND device_id = {{device}} AND {} \
         ORDER BY id LIMIT {MAX_PER_DELIVERY}",
        open_statuses()
    );
    let mut rows = Vec::new();
    for chunk in devices.chunks(DEVICES_PER_READ) {
        let statement = if backend == DatabaseBackend::Postgres {
            let sql = format!(
                "SELECT c.* FROM unnest($::uuid[]) AS d(id) CROSS JOIN LATERAL ({}) AS c",
                one_device.replace("{device}", "d.id")
            );
            let ids: Vec<Value> = chunk.iter().map(|&d| d.into()).collect();
            Statement::from_sql_and_values(
                backend,
                placeholders(backend, &sql, 0),
                [
                    Value::Array(sea_orm::sea_query::ArrayType::Uuid, Some(Box::new(ids))),
                    org_id.into(),
                ],
            )
        } else {
            let one = one_device.replace("{device}", "$");
            let sql = (0..chunk.len())
                .map(|n| format!("SELECT * FROM ({one}) AS d{n}"))
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let values = chunk.iter().flat_map(|&d| [org_id.into(), d.into()]);
            Statement::from_sql_and_values(backend, placeholders(backend, &sql, 0), values)
        };
        rows.extend(conn.query_all_raw(statement).await?);
    }
    let mut open: HashMap<Uuid, Vec<command::Model>> = HashMap::new();
    for row in rows {
        let c = command::Model::from_query_result(&row, "")?;
        open.entry(c.device_id).or_default().push(c);
    }
    for commands in open.values_mut() {
        commands.sort_by_key(|c| c.id);
    }
    Ok(open)
}

/// Claims `deliveries` as new attempts, each only if its `attempt` and
/// `status` are still as read; answers the ones claimed.
///
/// SQLite joins a `VALUES` list of them (`UPDATE … FROM`), searching the
/// primary key for each; PostgreSQL is sent one update per command (see
/// [`update_each_by_id`]).
async fn deliver(
    conn: &DatabaseTransaction,
    reqs: &[&ClaimRequest],
    deliveries: &[(usize, command::Model)],
) -> Result<HashSet<Uuid>> {
    if deliveries.is_empty() {
        return Ok(HashSet::new());
    }
    let set = format!(
        "UPDATE commands SET status = '{DELIVERED}', attempt = attempt + 1, \
         lease_until_ms = $, updated_at = $"
    );
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        let rows = deliveries
            .iter()
            .map(|(n, c)| {
                let now = reqs[*n].now;
                vec![
                    lease_until(now).into(),
                    now.into(),
                    c.attempt.into(),
                    c.status.clone().into(),
                    c.id.into(),
                ]
            })
            .collect();
        let update = format!("{set} WHERE attempt = $ AND status = $ AND id = $ RETURNING id");
        return update_each_by_id(conn, &update, rows).await;
    }
    let mut rows = Columns::new(&[Kind::Uuid, Kind::Int, Kind::Text, Kind::Int, Kind::Time]);
    for (n, c) in deliveries {
        let now = reqs[*n].now;
        rows.row(vec![
            c.id.into(),
            i64::from(c.attempt).into(),
            c.status.clone().into(),
            lease_until(now).into(),
            now.into(),
        ]);
    }
    let set = set
        .replacen('$', "v.column4", 1)
        .replacen('$', "v.column5", 1);
    rows.returning_ids(
        conn,
        &format!("{set} FROM "),
        " WHERE commands.id = v.column1 AND commands.attempt = v.column2 \
         AND commands.status = v.column3 RETURNING commands.id",
    )
    .await
}

/// Ends `c` with `status`, if nobody changed it since it was read.
async fn finish(
    conn: &DatabaseTransaction,
    c: &command::Model,
    status: &str,
    message: Option<String>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let updated = command::Entity::update_many()
        .col_expr(command::Column::Status, status.into())
        .col_expr(command::Column::UpdatedAt, now.into())
        .col_expr(command::Column::LeaseUntilMs, Option::<i64>::None.into())
        .col_expr(command::Column::Message, message.into())
        .filter(command::Column::Id.eq(c.id))
        .filter(command::Column::Attempt.eq(c.attempt))
        .filter(command::Column::Status.eq(c.status.as_str()))
        .exec(conn)
        .await?;
    Ok(updated.rows_affected == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(status: &str, attempt: i32, lease: Option<i64>, expires: i64) -> command::Model {
        let now = Utc::now();
        command::Model {
            id: Uuid::now_v7(),
            org_id: Uuid::nil(),
            device_id: Uuid::nil(),
            kind: "ping".into(),
            payload: None,
            status: status.into(),
            attempt,
            max_attempts: 3,
            lease_until_ms: lease,
            expires_ms: expires,
            idempotency_key: None,
            deployment_id: None,
            result: None,
            message: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn a_claim_delivers_waits_for_a_lease_expires_and_fails_as_due() {
        let now = 1_000_000;
        let later = now + 10_000;
        assert_eq!(
            step(&command(QUEUED, 0, None, later), now, false),
            Step::Deliver
        );
        let leased = command(DELIVERED, 1, Some(later), later + 1);
        assert_eq!(step(&leased, now, false), Step::Wait(later));
        assert_eq!(
            step(&leased, now, true),
            Step::Deliver,
            "a reclaim takes it again"
        );
        let lapsed = command(DELIVERED, 1, Some(now), later);
        assert_eq!(step(&lapsed, now, false), Step::Deliver);
        assert_eq!(
            step(&command(QUEUED, 0, None, now), now, false),
            Step::Finish(EXPIRED, None)
        );
        assert!(matches!(
            step(&command(DELIVERED, 3, Some(now), later), now, false),
            Step::Finish(FAILED, Some(_))
        ));
    }
}
