//! Delivering commands to a device: claim what is deliverable (in queue
//! order), else wait for the bus to say something was queued for the
//! device (or for the earliest lease to run out), never on a timer. A
//! command queued on this replica for a device waiting here is claimed in
//! the enqueue's own commit and handed over (see `handoff`).
//!
//! A device has one waiter at a time: a new poll or stream announces
//! itself on the bus and every earlier one, on any replica, ends. A waiter
//! also ends when the device's keys change (its key may be revoked: the
//! device must authenticate again) and at shutdown.

use sea_orm::EntityTrait;
use std::time::Duration;
use uuid::Uuid;

use tokio::sync::oneshot;

use super::{
    claim::{ClaimRequest, Claimed},
    handoff::Offered,
};
use crate::{
    auth::DevicePrincipal,
    bus::{DeviceSignal, DeviceWatch, Event},
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
#[derive(Debug, PartialEq)]
pub enum Wake {
    /// Something may be deliverable: claim again.
    Claim,
    /// The writer claimed for the device as it queued a command (see
    /// `handoff`): these are delivered now.
    Delivered(Claimed),
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
    /// While it waits, the device's commands may be claimed for it as they
    /// are queued on this replica ([`Wake::Delivered`], see `handoff`).
    pub async fn wait(&mut self, core: &Core, until: Option<Duration>) -> Result<Wake> {
        let mut offered =
            Offered::new(&core.handoffs, self.who.org_id, self.who.device_id, self.id);
        let woke = self.wait_for(core, until, &mut offered.handed).await;
        if let Woke::Handed(Some(claimed)) = woke {
            return Ok(Wake::Delivered(claimed));
        }
        if !matches!(woke, Woke::Handed(_))
            && !offered.withdraw()
            && let Ok(claimed) = (&mut offered.handed).await
        {
            // Taken as the wait ended: the writer's claim for this device
            // was committing, and has.
            return Ok(Wake::Delivered(claimed));
        }
        match woke {
            Woke::Slept => Ok(Wake::Claim),
            Woke::Shutdown => Ok(Wake::Done),
            // No hand-off after all (the writer's batch failed, or a newer
            // waiter replaced this one): as the bus says.
            Woke::Handed(_) => self.on_signal(core, self.watch.current()).await,
            Woke::Bus(signal) => self.on_signal(core, signal).await,
        }
    }

    async fn wait_for(
        &mut self,
        core: &Core,
        until: Option<Duration>,
        handed: &mut oneshot::Receiver<Claimed>,
    ) -> Woke {
        let sleep = async {
            match until {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = self.watch.changed() => Woke::Bus(signal),
            () = sleep => Woke::Slept,
            () = core.shutdown.cancelled() => Woke::Shutdown,
            claimed = handed => Woke::Handed(claimed.ok()),
        }
    }

    async fn on_signal(&mut self, core: &Core, signal: DeviceSignal) -> Result<Wake> {
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

/// What ended a wait.
enum Woke {
    Bus(DeviceSignal),
    Slept,
    Shutdown,
    /// The writer's hand-off: claimed commands, or none (it could not).
    Handed(Option<Claimed>),
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
        match waiter.wait(core, Some(until)).await? {
            Wake::Done => return Ok(Vec::new()),
            Wake::Delivered(c) if !c.commands.is_empty() => return Ok(c.commands),
            Wake::Delivered(_) | Wake::Claim => {}
        }
    }
}
