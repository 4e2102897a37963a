//! Delivering commands to a device: claim what is deliverable (in queue
//! order), else wait for the bus to say something was queued for the
//! device (or for the earliest lease to run out), never on a timer.
//!
//! A device has one waiter at a time: a new poll or stream announces
//! itself on the bus and every earlier one, on any replica, ends. A waiter
//! also ends when the device's keys change (its key may be revoked: the
//! device must authenticate again) and at shutdown.

use sea_orm::EntityTrait;
use std::time::Duration;
use uuid::Uuid;

use super::claim::ClaimRequest;
use crate::{
    auth::DevicePrincipal,
    bus::{DeviceWatch, Event},
    core::{
        Core,
        ingest::deadline,
        new_id,
        writer::{Done, Job},
    },
    error::{Error, Result},
    store::entities::{command, device_key},
};

/// Claims the device's deliverable commands as new attempts, in queue
/// order. With `reclaim`, commands delivered but not acknowledged are
/// delivered again at once (a stream reconnecting) instead of after their
/// lease. Also expires and fails what is due. Returns the claimed commands
/// and when the next lease runs out. The claim is written by the
/// group-commit writer, beside other devices' claims and enqueues.
pub async fn claim(
    core: &Core,
    who: &DevicePrincipal,
    reclaim: bool,
) -> Result<(Vec<command::Model>, Option<i64>)> {
    let job = Job::Claim(ClaimRequest {
        org_id: who.org_id,
        device_id: who.device_id,
        reclaim,
        now: core.clock.now(),
    });
    match core.writer.write(job, deadline(core)).await? {
        Done::Claimed(c) => Ok((c.commands, c.next_lease)),
        _ => Err(Error::Internal("the writer answered another job".into())),
    }
}

/// Why a waiter stopped waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// Something may be deliverable: claim again.
    Claim,
    /// The wait is over (deadline, replaced by a newer waiter, shutdown).
    Done,
}

/// One device's waiter: announces itself (ending earlier ones) and waits
/// for the device's events.
pub struct Waiter {
    id: Uuid,
    watch: DeviceWatch,
    keys_seen: u64,
    who: DevicePrincipal,
}

impl Waiter {
    /// Starts waiting for `who`'s commands, ending its earlier waiter.
    pub async fn start(core: &Core, who: DevicePrincipal) -> Result<Self> {
        // Watch before announcing and claiming, so nothing falls between.
        let watch = core.bus.watch_device(who.device_id);
        let keys_seen = watch.current().keys_changed;
        let id = new_id();
        core.store
            .announce(Event::WaiterStarted {
                device_id: who.device_id,
                waiter: id,
            })
            .await?;
        Ok(Self {
            id,
            watch,
            keys_seen,
            who,
        })
    }

    /// Waits until something may be deliverable, `until` (a lease running
    /// out), or the end. A revoked or expired key is `Unauthenticated`.
    pub async fn wait(&mut self, core: &Core, until: Option<Duration>) -> Result<Wake> {
        let sleep = async {
            match until {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let signal = tokio::select! {
            signal = self.watch.changed() => signal,
            () = sleep => return Ok(Wake::Claim),
            () = core.shutdown.cancelled() => return Ok(Wake::Done),
        };
        if signal.waiter.is_some_and(|w| w != self.id) {
            return Ok(Wake::Done);
        }
        if signal.keys_changed != self.keys_seen {
            self.keys_seen = signal.keys_changed;
            if !Box::pin(key_is_valid(core, &self.who)).await? {
                return Err(Error::Unauthenticated(
                    "the device key was revoked or rotated".into(),
                ));
            }
        }
        Ok(Wake::Claim)
    }
}

async fn key_is_valid(core: &Core, who: &DevicePrincipal) -> Result<bool> {
    let now = core.clock.now();
    let tx = core.store.org_read(who.org_id).await?;
    let key = device_key::Entity::find_by_id(who.key_id)
        .one(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(key.is_some_and(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|e| now < e)))
}

/// The long poll: deliverable commands at once, else waits up to `wait`
/// for one to be queued (an empty list when nothing comes).
pub async fn poll(
    core: &Core,
    who: DevicePrincipal,
    wait: Duration,
) -> Result<Vec<command::Model>> {
    let mut waiter = Waiter::start(core, who).await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Boxed: the claim's state is large and lives only while it runs,
        // not for as long as the poll waits.
        let (claimed, next_lease) = Box::pin(claim(core, &who, false)).await?;
        if !claimed.is_empty() {
            return Ok(claimed);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Vec::new());
        }
        let mut until = deadline - now;
        if let Some(lease) = next_lease {
            let left = lease - core.clock.now().timestamp_millis();
            until = until.min(Duration::from_millis(u64::try_from(left).unwrap_or(0) + 1));
        }
        if waiter.wait(core, Some(until)).await? == Wake::Done {
            return Ok(Vec::new());
        }
    }
}
