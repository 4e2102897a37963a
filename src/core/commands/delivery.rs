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
    /// A newer waiter took over: every later wait ends at once.
    replaced: bool,
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
            replaced: false,
        })
    }

    /// Waits until something may be deliverable, `until` (a lease running
    /// out), or the end. A revoked or expired key is `Unauthenticated`.
    /// While it waits, the device's commands may be claimed for it as they
    /// are queued on this replica ([`Wake::Delivered`], see `handoff`).
    pub async fn wait(&mut self, core: &Core, until: Option<Duration>) -> Result<Wake> {
        if self.replaced {
            return Ok(Wake::Done);
        }
        // What the bus said already (a key change, a newer waiter) is dealt
        // with before offering, so nothing is claimed for this waiter first.
        if let Some(signal) = self.watch.pending() {
            return self.on_signal(core, signal).await;
        }
        let deadline = until.map(|d| tokio::time::Instant::now() + d);
        let mut offered = Some(Offered::new(
            &core.handoffs,
            self.who.org_id,
            self.who.device_id,
            self.id,
        ));
        let (woke, handed) = loop {
            let handed = offered.as_mut().map(|o| &mut o.handed);
            match self.wait_for(core, deadline, handed).await {
                Woke::Handed(Some(claimed)) => break (None, Some(claimed)),
                // Voided by the bus (whose word follows on the watch), or the
                // writer's batch failed: wait on, without an offer.
                Woke::Handed(None) => offered = None,
                other => {
                    // Taken as the wait ended: the writer's claim for this
                    // device was committing, and has.
                    let handed = match offered.take() {
                        Some(mut o) if !o.withdraw() => (&mut o.handed).await.ok(),
                        _ => None,
                    };
                    break (Some(other), handed);
                }
            }
        };
        // The bus's word goes first, whether it ended the wait or came
        // beside the hand-off: a changed key is checked before anything is
        // delivered (what was handed stays leased, delivered again later),
        // and a replaced waiter ends once it has delivered what it holds.
        let signal = match woke {
            Some(Woke::Bus(signal)) => Some(signal),
            _ => self.watch.pending(),
        };
        let told = match signal {
            Some(signal) => Some(self.on_signal(core, signal).await?),
            None => None,
        };
        Ok(match (handed, told, woke) {
            (Some(claimed), _, _) => Wake::Delivered(claimed),
            (None, Some(told), _) => told,
            (None, None, Some(Woke::Shutdown)) => Wake::Done,
            (None, None, _) => Wake::Claim,
        })
    }

    async fn wait_for(
        &mut self,
        core: &Core,
        deadline: Option<tokio::time::Instant>,
        handed: Option<&mut oneshot::Receiver<Claimed>>,
    ) -> Woke {
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let handed = async {
            match handed {
                Some(rx) => rx.await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = self.watch.changed() => Woke::Bus(signal),
            () = sleep => Woke::Slept,
            () = core.shutdown.cancelled() => Woke::Shutdown,
            claimed = handed => Woke::Handed(claimed),
        }
    }

    async fn on_signal(&mut self, core: &Core, signal: DeviceSignal) -> Result<Wake> {
        if signal.waiter.is_some_and(|w| w != self.id) {
            self.replaced = true;
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
    let mut next_lease = None;
    let mut claim_first = true;
    loop {
        if claim_first {
            // Boxed: the claim's state is large and lives only while it
            // runs, not for as long as the poll waits.
            let (claimed, lease) = Box::pin(claim(core, &who, false)).await?;
            if !claimed.is_empty() {
                return Ok(claimed);
            }
            next_lease = lease;
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
            // Claimed for, and nothing was deliverable: wait on.
            Wake::Delivered(c) => {
                next_lease = c.next_lease;
                claim_first = false;
            }
            Wake::Claim => claim_first = true,
        }
    }
}
