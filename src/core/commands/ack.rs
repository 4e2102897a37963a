//! A device's acknowledgement of a command. It is written by the
//! group-commit writer beside other devices' acks, claims and enqueues: a
//! device acknowledges every command it runs, so at a thousand commands a
//! second acks are as many writes as enqueues. What the ack is refused
//! for (another device's command, an expired one, one already finished)
//! is the job's own answer, so a refused ack never fails its batch.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter,
};
use uuid::Uuid;

use super::{CANCELLED, EXPIRED, FAILED, LEASE, OPEN, RECEIVED, SUCCEEDED};
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

/// Runs `req` in `conn`, a transaction scoped to its organization.
pub(crate) async fn ack_in(conn: &DatabaseTransaction, req: &AckRequest) -> Result<Acked> {
    let found = command::Entity::find_by_id(req.command_id)
        .filter(command::Column::OrgId.eq(req.org_id))
        .one(conn)
        .await?;
    let Some(found) = found.filter(|c| c.device_id == req.device_id) else {
        return Ok(refused(Refused::NotFound, None));
    };
    let expired = found.status == EXPIRED
        || (OPEN.contains(&found.status.as_str())
            && found.expires_ms <= req.now.timestamp_millis());
    if expired {
        let changed = (found.status != EXPIRED).then_some(found.id);
        if changed.is_some() {
            update(conn, found, EXPIRED, None, req.now).await?;
        }
        return Ok(refused(Refused::Expired, changed));
    }
    let (status, lease) = match found.status.as_str() {
        s if s == req.status && s != RECEIVED => {
            // The same final acknowledgement again: the same answer.
            return Ok(Acked {
                answer: Ok(found),
                changed: None,
            });
        }
        SUCCEEDED | FAILED | CANCELLED => {
            let status = found.status.clone();
            return Ok(refused(Refused::Finished(status), None));
        }
        _ if req.status == RECEIVED => (
            RECEIVED,
            Some(req.now.timestamp_millis() + LEASE.as_millis() as i64),
        ),
        _ => (req.status.as_str(), None),
    };
    let mut found = found;
    if status != RECEIVED {
        found.result.clone_from(&req.result);
        found.message.clone_from(&req.message);
    }
    let id = found.id;
    let updated = update(conn, found, status, lease, req.now).await?;
    Ok(Acked {
        answer: Ok(updated),
        changed: Some(id),
    })
}

fn refused(why: Refused, changed: Option<Uuid>) -> Acked {
    Acked {
        answer: Err(why),
        changed,
    }
}

async fn update(
    conn: &DatabaseTransaction,
    c: command::Model,
    status: &str,
    lease_until_ms: Option<i64>,
    now: DateTime<Utc>,
) -> Result<command::Model> {
    let (result, message) = (c.result.clone(), c.message.clone());
    let mut active: command::ActiveModel = c.into();
    active.status = Set(status.into());
    active.lease_until_ms = Set(lease_until_ms);
    active.result = Set(result);
    active.message = Set(message);
    active.updated_at = Set(now);
    Ok(active.update(conn).await?)
}
