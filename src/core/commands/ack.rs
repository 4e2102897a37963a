//! A device's acknowledgement of a command. It is written by the
//! group-commit writer beside other devices' acks, claims and enqueues: a
//! device acknowledges every command it runs, so at a thousand commands a
//! second acks are as many writes as enqueues, and a batch's acks are one
//! read and one write, not two statements each. What the ack is refused
//! for (another device's command, an expired one, one already finished)
//! is the job's own answer, so a refused ack never fails its batch.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseTransaction, FromQueryResult, Statement, Value,
    sea_query::ArrayType,
};
use std::collections::HashMap;
use uuid::Uuid;

use super::{CANCELLED, EXPIRED, FAILED, LEASE, OPEN, RECEIVED, SUCCEEDED, update_each_by_id};
use crate::{
    auth::DevicePrincipal,
    core::{
        Core,
        ingest::deadline,
        validate,
        writer::{Done, Job},
    },
    error::{Error, Result},
    store::entities::command,
};

/// Acknowledgements one statement reads or writes.
const ACKS_PER_STATEMENT: usize = 100;

pub struct Ack {
    /// "succeeded" (default), "failed" or "received".
    pub status: Option<String>,
    pub message: Option<String>,
    pub result: Option<serde_json::Value>,
}

/// An acknowledgement, as the writer runs it.
pub struct AckRequest {
    pub org_id: Uuid,
    pub device_id: Uuid,
    pub command_id: Uuid,
    pub status: String,
    pub message: Option<String>,
    /// JSON.
    pub result: Option<String>,
    pub now: DateTime<Utc>,
}

/// Why an acknowledgement was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum Refused {
    /// No such command, or another device's.
    NotFound,
    Expired,
    /// Already succeeded, failed or cancelled (the status).
    Finished(String),
}

impl From<Refused> for Error {
    fn from(r: Refused) -> Self {
        match r {
            Refused::NotFound => Error::not_found("command"),
            Refused::Expired => Error::FailedPrecondition("the command expired".into()),
            Refused::Finished(status) => {
                Error::FailedPrecondition(format!("the command is already {status}"))
            }
        }
    }
}

/// What an acknowledgement did.
#[derive(Clone, Debug, PartialEq)]
pub struct Acked {
    pub answer: std::result::Result<command::Model, Refused>,
    /// The command, when its status changed.
    pub changed: Option<Uuid>,
}

/// The device acknowledges a command: repeating the same acknowledgement
/// answers the same; an expired command is 409; another device's is 404.
pub async fn ack(core: &Core, who: &DevicePrincipal, id: &str, ack: Ack) -> Result<command::Model> {
    let command_id = validate::path_id("command", id)?;
    let job = Job::Ack(Box::new(AckRequest {
        org_id: who.org_id,
        device_id: who.device_id,
        command_id,
        status: ack.status.unwrap_or_else(|| SUCCEEDED.into()),
        message: ack.message,
        result: ack.result.map(|r| r.to_string()),
        now: core.clock.now(),
    }));
    match core.writer.write(job, deadline(core)).await? {
        Done::Acked(acked) => Ok(acked.answer?),
        _ => Err(Error::Internal("the writer answered another job".into())),
    }
}

/// Runs the acknowledgements `reqs` of `org_id`, in order, in `conn` (a
/// transaction scoped to the organization): one read of the commands they
/// name, then one write of those whose status changed. A command
/// acknowledged twice in the batch answers the second from the first.
pub(crate) async fn ack_all(
    conn: &DatabaseTransaction,
    reqs: &[&AckRequest],
) -> Result<Vec<Acked>> {
    let ids: Vec<Uuid> = reqs.iter().map(|r| r.command_id).collect();
    let mut found: HashMap<Uuid, command::Model> = read(conn, &ids)
        .await?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    let mut changed: Vec<Uuid> = Vec::new();
    let mut out = Vec::with_capacity(reqs.len());
    for req in reqs {
        let acked = decide(found.get_mut(&req.command_id), req);
        if let Some(id) = acked.changed
            && !changed.contains(&id)
        {
            changed.push(id);
        }
        out.push(acked);
    }
    let rows: Vec<&command::Model> = changed.iter().filter_map(|id| found.get(id)).collect();
    write(conn, &rows).await?;
    Ok(out)
}

/// What `req` does to `found` (the command as this batch has it so far):
/// answers it and updates `found` in place.
fn decide(found: Option<&mut command::Model>, req: &AckRequest) -> Acked {
    let Some(found) = found.filter(|c| c.device_id == req.device_id && c.org_id == req.org_id)
    else {
        return refused(Refused::NotFound, None);
    };
    let expired = found.status == EXPIRED
        || (OPEN.contains(&found.status.as_str())
            && found.expires_ms <= req.now.timestamp_millis());
    if expired {
        let changed = (found.status != EXPIRED).then_some(found.id);
        if changed.is_some() {
            set(found, EXPIRED, None, req.now);
        }
        return refused(Refused::Expired, changed);
    }
    let (status, lease) = match found.status.as_str() {
        s if s == req.status && s != RECEIVED => {
            // The same final acknowledgement again: the same answer.
            return Acked {
                answer: Ok(found.clone()),
                changed: None,
            };
        }
        SUCCEEDED | FAILED | CANCELLED => {
            let status = found.status.clone();
            return refused(Refused::Finished(status), None);
        }
        _ if req.status == RECEIVED => (
            RECEIVED,
            Some(req.now.timestamp_millis() + LEASE.as_millis() as i64),
        ),
        _ => (req.status.as_str(), None),
    };
    if status != RECEIVED {
        found.result.clone_from(&req.result);
        found.message.clone_from(&req.message);
    }
    set(found, status, lease, req.now);
    Acked {
        answer: Ok(found.clone()),
        changed: Some(found.id),
    }
}

fn set(c: &mut command::Model, status: &str, lease_until_ms: Option<i64>, now: DateTime<Utc>) {
    c.status = status.into();
    c.lease_until_ms = lease_until_ms;
    // As PostgreSQL keeps it, so the answer now and a repeat's agree.
    c.updated_at = now.trunc_subsecs(6);
}

fn refused(why: Refused, changed: Option<Uuid>) -> Acked {
    Acked {
        answer: Err(why),
        changed,
    }
}

/// The commands `ids` (those of the transaction's organization), each by
/// its primary key. On PostgreSQL a lateral subquery per id that cannot be
/// flattened (`OFFSET 0`): a plan cached without statistics joined a list
/// to the organization's index instead (see [`update_each_by_id`]).
async fn read(conn: &DatabaseTransaction, ids: &[Uuid]) -> Result<Vec<command::Model>> {
    let backend = conn.get_database_backend();
    let mut rows = Vec::new();
    for chunk in ids.chunks(ACKS_PER_STATEMENT) {
        let values: Vec<Value> = chunk.iter().map(|&id| id.into()).collect();
        let statement = if backend == DatabaseBackend::Postgres {
            Statement::from_sql_and_values(
                backend,
                "SELECT c.* FROM unnest($1::uuid[]) AS a(id) CROSS JOIN LATERAL \
                 (SELECT * FROM commands WHERE id = a.id OFFSET 0) AS c",
                [Value::Array(ArrayType::Uuid, Some(Box::new(values)))],
            )
        } else {
            let list = vec!["?"; chunk.len()].join(", ");
            Statement::from_sql_and_values(
                backend,
                format!("SELECT * FROM commands WHERE id IN ({list})"),
                values,
            )
        };
        rows.extend(conn.query_all_raw(statement).await?);
    }
    rows.iter()
        .map(|row| Ok(command::Model::from_query_result(row, "")?))
        .collect()
}

/// Writes the new state of `rows`: on PostgreSQL one primary-key update
/// each (see [`update_each_by_id`]); on SQLite one `UPDATE … FROM (VALUES
/// …)`.
async fn write(conn: &DatabaseTransaction, rows: &[&command::Model]) -> Result<()> {
    let backend = conn.get_database_backend();
    if backend == DatabaseBackend::Postgres {
        let values = rows.iter().map(|c| columns(c).to_vec()).collect();
        update_each_by_id(
            conn,
            "UPDATE commands SET status = $, lease_until_ms = $, result = $, \
             message = $, updated_at = $ WHERE id = $ RETURNING id",
            values,
        )
        .await?;
        return Ok(());
    }
    for chunk in rows.chunks(ACKS_PER_STATEMENT) {
        let list = vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let values: Vec<Value> = chunk.iter().flat_map(|c| columns(c)).collect();
        let sql = format!(
            "UPDATE commands SET status = v.column1, lease_until_ms = v.column2, \
             result = v.column3, message = v.column4, updated_at = v.column5 \
             FROM (VALUES {list}) AS v WHERE commands.id = v.column6"
        );
        conn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
    Ok(())
}

/// The columns an acknowledgement changes, then the id.
fn columns(c: &command::Model) -> [Value; 6] {
    [
        c.status.clone().into(),
        c.lease_until_ms.into(),
        c.result.clone().into(),
        c.message.clone().into(),
        c.updated_at.into(),
        c.id.into(),
    ]
}
