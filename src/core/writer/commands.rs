//! The command queue's writes in the group commit: queueing a command, a
//! device's claim of what it can be delivered, and its acknowledgements.
//! Each used to commit alone, three commits per command; at a thousand
//! commands a second on SQLite the transactions queued for the write lock
//! in the busy handler's sleeps and delivery took seconds at p99. Here they
//! share the batch's commit. They run in the order they were submitted, so
//! a claim sees every command queued before it and a device's queue stays
//! in order; their events (wake the device's waiter, tell integrators) go
//! out at commit. A job refused for a reason of its own (an unknown device,
//! an expired command) answers so, and never fails the batch.

use uuid::Uuid;

use super::{Done, Job};
use crate::{
    bus::Event,
    core::commands::{ack, delivery, device_exists, insert, queued_events},
    error::Result,
    store::BatchTx,
};

pub(super) async fn run(
    tx: &mut BatchTx,
    org: Uuid,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
) -> Result<()> {
    for &i in idx {
        match jobs[i] {
            Job::Command(prepared) => {
                let conn = tx.scope(org).await?;
                if !device_exists(conn, org, prepared.device_id).await? {
                    done[i] = Some(Done::Command(None));
                    continue;
                }
                let (queued, new) = insert(conn, (**prepared).clone()).await?;
                if new {
                    for event in queued_events(&queued) {
                        tx.publish(event).await?;
                    }
                }
                done[i] = Some(Done::Command(Some(Box::new(queued))));
            }
            Job::Claim(req) => {
                let conn = tx.scope(org).await?;
                let claimed = delivery::claim_in(conn, req).await?;
                for &command_id in &claimed.changed {
                    tx.publish(Event::CommandChanged {
                        org_id: org,
                        command_id,
                    })
                    .await?;
                }
                done[i] = Some(Done::Claimed(claimed));
            }
            Job::Ack(req) => {
                let conn = tx.scope(org).await?;
                let acked = ack::ack_in(conn, req).await?;
                if let Some(command_id) = acked.changed {
                    tx.publish(Event::CommandChanged {
                        org_id: org,
                        command_id,
                    })
                    .await?;
                }
                done[i] = Some(Done::Acked(Box::new(acked)));
            }
            _ => {}
        }
    }
    Ok(())
}
