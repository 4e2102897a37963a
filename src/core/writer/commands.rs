//! The command queue's writes in the group commit: queueing commands,
//! devices' acknowledgements, and their claims of what they can be
//! delivered. Each used to commit alone, three commits per command; at a
//! thousand commands a second on SQLite the transactions queued for the
//! write lock in the busy handler's sleeps and delivery took seconds at
//! p99. Here they share the batch's commit, and as few statements as the
//! batch allows: enqueues as one `INSERT … SELECT` that checks each device
//! is the organization's, claims as one read and one conditional update
//! for every device (see `commands::claim`). On PostgreSQL a statement is
//! a round trip, and one per job bounded the writer at a few thousand
//! jobs a second.
//!
//! Within a batch, enqueues run first, then acks, then claims: a claim
//! sees every command queued and every ack made in its batch. All of a
//! batch's jobs were submitted concurrently and answer together, so no
//! caller can tell this order from the one they came in. A device's queue
//! stays in order (ordered by id, taken when the command was submitted).
//! Events (wake the device's waiter, tell integrators) go out at commit.
//! A job refused for a reason of its own (an unknown device, an expired
//! command) answers so, and never fails the batch.

use sea_orm::DatabaseTransaction;
use std::collections::HashSet;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    Done, Job,
    columns::{Columns, Kind},
};
use crate::{
    bus::Event,
    core::commands::{
        ack::{self, AckRequest},
        claim::{self, ClaimRequest, Claimed},
        device_exists,
        handoff::Handoffs,
        insert, queued_events,
    },
    error::Result,
    store::{BatchTx, entities::command},
};

pub(super) async fn run(
    tx: &mut BatchTx,
    org: Uuid,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
    handoffs: &Handoffs,
) -> Result<()> {
    let queued_for = enqueues(tx, org, jobs, idx, done).await?;
    acks(tx, org, jobs, idx, done).await?;
    // Devices waiting here for what was just queued: claimed for in this
    // batch, handed over at its commit (see `commands::handoff`).
    let mut handed = Vec::new();
    for device_id in queued_for {
        if let Some(to) = handoffs.take(org, device_id) {
            let req = ClaimRequest {
                org_id: org,
                device_id,
                reclaim: false,
                now: handoffs.now(),
            };
            handed.push((to, req));
        }
    }
    claims(tx, org, jobs, idx, done, handed).await
}

/// Tells integrators (and the admin watch stream) that these commands'
/// status changed, at the batch's commit.
fn changed(tx: &mut BatchTx, org: Uuid, commands: impl IntoIterator<Item = Uuid>) {
    for command_id in commands {
        tx.publish(Event::CommandChanged {
            org_id: org,
            command_id,
        });
    }
}

/// Queues the batch's commands; answers the devices that have a new one
/// (once each).
async fn enqueues(
    tx: &mut BatchTx,
    org: Uuid,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
) -> Result<HashSet<Uuid>> {
    let mut queued_for: HashSet<Uuid> = HashSet::new();
    let mut plain = Vec::new();
    for &i in idx {
        let Job::Command(prepared) = jobs[i] else {
            continue;
        };
        if prepared.idempotency_key.is_none() && prepared.deployment_id.is_none() {
            plain.push(i);
            continue;
        }
        // An idempotency key is looked up first (and two enqueues with the
        // same key may share a batch): one at a time, in order.
        let conn = tx.scope(org).await?;
        if !device_exists(conn, org, prepared.device_id).await? {
            done[i] = Some(Done::Command(None));
            continue;
        }
        let (queued, new) = insert(conn, (**prepared).clone()).await?;
        if new {
            newly_queued(tx, &mut queued_for, &queued);
        }
        done[i] = Some(Done::Command(Some(Box::new(queued))));
    }
    if !plain.is_empty() {
        insert_plain_jobs(tx, org, jobs, &plain, done, &mut queued_for).await?;
    }
    Ok(queued_for)
}

/// A command just queued: its events go out at the commit, and its device
/// may be waiting for it here.
fn newly_queued(tx: &mut BatchTx, queued_for: &mut HashSet<Uuid>, queued: &command::Model) {
    queued_for.insert(queued.device_id);
    queued_events(queued)
        .into_iter()
        .for_each(|e| tx.publish(e));
}

async fn insert_plain_jobs(
    tx: &mut BatchTx,
    org: Uuid,
    jobs: &[&Job],
    plain: &[usize],
    done: &mut [Option<Done>],
    queued_for: &mut HashSet<Uuid>,
) -> Result<()> {
    let stored = insert_plain(tx.scope(org).await?, jobs, plain).await?;
    for &i in plain {
        let Job::Command(prepared) = jobs[i] else {
            continue;
        };
        if !stored.contains(&prepared.id) {
            done[i] = Some(Done::Command(None));
            continue;
        }
        newly_queued(tx, queued_for, prepared);
        done[i] = Some(Done::Command(Some(prepared.clone())));
    }
    Ok(())
}

/// Inserts commands without an idempotency key or a deployment, each only
/// if its device is the organization's; answers the ids inserted.
async fn insert_plain(
    conn: &DatabaseTransaction,
    jobs: &[&Job],
    plain: &[usize],
) -> Result<HashSet<Uuid>> {
    let mut rows = Columns::new(&[
        Kind::Uuid,
        Kind::Uuid,
        Kind::Uuid,
        Kind::Text,
        Kind::Text,
        Kind::Int,
        Kind::Int,
        Kind::Time,
    ]);
    for &i in plain {
        let Job::Command(c) = jobs[i] else { continue };
        rows.row(vec![
            c.id.into(),
            c.org_id.into(),
            c.device_id.into(),
            c.kind.clone().into(),
            super::columns::text(&c.payload),
            i64::from(c.max_attempts).into(),
            c.expires_ms.into(),
            c.created_at.into(),
        ]);
    }
    rows.returning_ids(
        conn,
        &format!(
            "INSERT INTO commands (id, org_id, device_id, type, payload, status, attempt, \
             max_attempts, expires_ms, created_at, updated_at) \
             SELECT v.column1, v.column2, v.column3, v.column4, NULLIF(v.column5, ''), \
             '{}', 0, v.column6, v.column7, v.column8, v.column8 FROM ",
            crate::core::commands::QUEUED
        ),
        " WHERE EXISTS (SELECT 1 FROM devices AS d WHERE d.id = v.column3 \
         AND d.org_id = v.column2) RETURNING id",
    )
    .await
}

async fn acks(
    tx: &mut BatchTx,
    org: Uuid,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
) -> Result<()> {
    let (at, reqs): (Vec<usize>, Vec<&AckRequest>) = idx
        .iter()
        .filter_map(|&i| match jobs[i] {
            Job::Ack(req) => Some((i, &**req)),
            _ => None,
        })
        .unzip();
    if reqs.is_empty() {
        return Ok(());
    }
    let acked = ack::ack_all(tx.scope(org).await?, &reqs).await?;
    for (i, acked) in at.into_iter().zip(acked) {
        changed(tx, org, acked.changed);
        done[i] = Some(Done::Acked(Box::new(acked)));
    }
    Ok(())
}

/// Claims in rounds of distinct devices: a device claiming twice in one
/// batch (a new waiter replacing an old one, or its own claim beside one
/// the writer makes for it) claims again after its first claim is written.
/// `handed`: the claims made for waiting devices, answered through their
/// hand-off once the batch commits.
async fn claims(
    tx: &mut BatchTx,
    org: Uuid,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
    handed: Vec<(oneshot::Sender<Claimed>, ClaimRequest)>,
) -> Result<()> {
    let (senders, handed_reqs): (Vec<_>, Vec<_>) = handed.into_iter().unzip();
    let mut rest: Vec<(For, &ClaimRequest)> = idx
        .iter()
        .filter_map(|&i| match jobs[i] {
            Job::Claim(req) => Some((For::Job(i), req)),
            _ => None,
        })
        .chain(senders.into_iter().map(For::Handoff).zip(&handed_reqs))
        .collect();
    while !rest.is_empty() {
        let mut devices = HashSet::new();
        let (round, later): (Vec<_>, Vec<_>) = rest
            .into_iter()
            .partition(|(_, req)| devices.insert(req.device_id));
        let reqs: Vec<&ClaimRequest> = round.iter().map(|(_, req)| *req).collect();
        let claimed = claim::claim_devices(tx.scope(org).await?, org, &reqs).await?;
        for ((to, _), claimed) in round.into_iter().zip(claimed) {
            changed(tx, org, claimed.changed.iter().copied());
            match to {
                For::Job(i) => done[i] = Some(Done::Claimed(claimed)),
                For::Handoff(sender) => {
                    tx.after_commit(move || {
                        let _ = sender.send(claimed);
                    });
                }
            }
        }
        rest = later;
    }
    Ok(())
}

/// Whom a claim answers.
enum For {
    /// A job of the batch.
    Job(usize),
    /// A waiting device, through its hand-off.
    Handoff(oneshot::Sender<Claimed>),
}
