//! Delivery in the enqueue's own commit. A device waiting on this replica
//! (a long poll, a stream) offers itself here while it waits; the
//! group-commit writer, queueing a command for it, claims for the device
//! in the same batch and hands the claimed commands over once the batch
//! commits. Otherwise delivery took two commits in a row: the enqueue's,
//! then the claim the waiter made when the bus said a command was queued.
//!
//! Nothing is lost either way. An offer the writer took but could not
//! honour (its batch failed) drops the sender, and the waiter claims as
//! usual. A waiter gone between the claim and the hand-off (its client left
//! during that commit) leaves the commands leased: they are delivered again
//! when the lease runs out, as any delivery that was not acknowledged.

use chrono::{DateTime, Utc};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::claim::Claimed;
use crate::core::Clock;

/// An offer for as long as its waiter waits: withdrawn when dropped (a
/// client that leaves mid-wait drops its waiter), so no claim is made for
/// a device nobody listens for.
pub struct Offered {
    handoffs: Arc<Handoffs>,
    device_id: Uuid,
    waiter: Uuid,
    pub handed: oneshot::Receiver<Claimed>,
}

impl Offered {
    pub fn new(handoffs: &Arc<Handoffs>, org_id: Uuid, device_id: Uuid, waiter: Uuid) -> Self {
        Self {
            handed: handoffs.offer(org_id, device_id, waiter),
            handoffs: handoffs.clone(),
            device_id,
            waiter,
        }
    }

    /// See [`Handoffs::withdraw`].
    pub fn withdraw(&self) -> bool {
        self.handoffs.withdraw(self.device_id, self.waiter)
    }
}

impl Drop for Offered {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// The devices waiting on this replica, each with where its commands go.
#[derive(Default)]
pub struct Handoffs {
    offers: Mutex<HashMap<Uuid, Offer>>,
    /// The time a hand-off's claim is made at (leases, expiry).
    clock: Clock,
    /// Offers the writer has taken.
    taken: AtomicU64,
}

struct Offer {
    waiter: Uuid,
    org_id: Uuid,
    to: oneshot::Sender<Claimed>,
}

impl Handoffs {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }

    /// Now, by the clock the rest of the server uses.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Offers the writer has taken so far (each one a claim made in the
    /// batch that queued the device's command).
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// `waiter` waits for `device_id`'s commands: the writer may claim for
    /// it. Replaces the device's earlier offer (a newer waiter ends the
    /// older one; the older one's receiver then fails).
    pub fn offer(&self, org_id: Uuid, device_id: Uuid, waiter: Uuid) -> oneshot::Receiver<Claimed> {
        let (to, from) = oneshot::channel();
        let offer = Offer { waiter, org_id, to };
        self.offers
            .lock()
            .expect("handoff lock")
            .insert(device_id, offer);
        from
    }

    /// Withdraws `waiter`'s offer; `false` when it is no longer there: the
    /// writer took it (its claim is committing: the receiver answers
    /// shortly) or a newer waiter replaced it (the receiver fails).
    pub fn withdraw(&self, device_id: Uuid, waiter: Uuid) -> bool {
        let mut offers = self.offers.lock().expect("handoff lock");
        match offers.get(&device_id) {
            Some(o) if o.waiter == waiter => {
                offers.remove(&device_id);
                true
            }
            _ => false,
        }
    }

    /// The writer takes `device_id`'s offer, if the device waits here (and
    /// its waiter is still listening).
    pub fn take(&self, org_id: Uuid, device_id: Uuid) -> Option<oneshot::Sender<Claimed>> {
        let mut offers = self.offers.lock().expect("handoff lock");
        let offer = offers.get(&device_id)?;
        if offer.org_id != org_id || offer.to.is_closed() {
            return None;
        }
        self.taken.fetch_add(1, Ordering::Relaxed);
        offers.remove(&device_id).map(|o| o.to)
    }

    /// Drops offers the bus makes void before their waiters hear of it:
    /// the device's keys changed (its waiter must check its key before
    /// anything more is delivered), or a newer waiter (`replaced_by`), here
    /// or on another replica, took over. `None` device: every offer (the
    /// bus lost events).
    pub fn forget(&self, device_id: Option<Uuid>, replaced_by: Option<Uuid>) {
        let mut offers = self.offers.lock().expect("handoff lock");
        match device_id {
            None => offers.clear(),
            Some(device) => {
                if offers
                    .get(&device)
                    .is_some_and(|o| replaced_by != Some(o.waiter))
                {
                    offers.remove(&device);
                }
            }
        }
    }

    /// Devices waiting with an offer.
    pub fn len(&self) -> usize {
        self.offers.lock().expect("handoff lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed() -> Claimed {
        Claimed {
            commands: Vec::new(),
            next_lease: None,
            changed: Vec::new(),
        }
    }

    #[test]
    fn a_dropped_offer_is_withdrawn() {
        let h = Arc::new(Handoffs::default());
        let (org, device) = (Uuid::now_v7(), Uuid::now_v7());
        let offered = Offered::new(&h, org, device, Uuid::now_v7());
        assert_eq!(h.len(), 1);
        drop(offered);
        assert!(h.is_empty());
    }

    #[test]
    fn an_offer_is_taken_once_by_its_own_organization_and_withdrawn_only_by_its_waiter() {
        let h = Handoffs::default();
        let (org, other_org, device) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        let mut old = h.offer(org, device, first);
        let mut new = h.offer(org, device, second);
        assert!(
            old.try_recv().is_err(),
            "the replaced offer's sender is gone"
        );
        assert!(
            !h.withdraw(device, first),
            "only the newer waiter's offer is there"
        );
        assert!(
            h.take(other_org, device).is_none(),
            "another organization's device"
        );
        let to = h.take(org, device).expect("the waiting device's offer");
        assert!(h.take(org, device).is_none(), "taken once");
        assert!(!h.withdraw(device, second), "taken: not withdrawn");
        to.send(claimed()).unwrap();
        assert_eq!(new.try_recv().unwrap(), claimed());
        let _third = h.offer(org, device, first);
        assert!(h.withdraw(device, first));
        assert!(h.is_empty());
        // A waiter that stopped listening is not claimed for.
        drop(h.offer(org, device, first));
        assert!(h.take(org, device).is_none());
        // The bus voids offers: a key change, a newer waiter, lost events.
        let _offer = h.offer(org, device, first);
        h.forget(Some(device), Some(first));
        assert_eq!(h.len(), 1, "its own announcement keeps it");
        h.forget(Some(device), Some(second));
        assert!(h.is_empty(), "replaced");
        let _offer = h.offer(org, device, first);
        h.forget(Some(device), None);
        assert!(h.is_empty(), "keys changed");
        let _offer = h.offer(org, device, first);
        h.forget(None, None);
        assert!(h.is_empty(), "resync");
    }
}
