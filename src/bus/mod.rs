//! The typed event bus. Use cases announce what changed (a device's keys,
//! an API key, a command queued for a device, a deployment) from inside
//! the transaction that changed it (`OrgTx::publish`); the events are
//! delivered when that transaction commits:
//!
//! - in this process, to synchronous handlers (the key cache evicts before
//!   the request that revoked a key has even answered) and to per-device
//!   watchers (a long poll waiting for "anything for device D");
//! - on PostgreSQL, to every other replica through `NOTIFY` sent in the same
//!   transaction ([`postgres`]); a replica's listener delivers them there.
//!
//! After the listener (re)connects, events may have been missed: subscribers
//! get [`Event::Resync`] and must re-read whatever they keep.

pub mod postgres;

use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
};
use tokio::sync::watch;
use uuid::Uuid;

/// Something that changed, named by id; subscribers re-read what they need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A device's keys were revoked, rotated or replaced by pairing.
    DeviceKeysChanged { device_id: Uuid },
    /// An organization API key was deleted.
    ApiKeyChanged { key_id: Uuid },
    /// A command was queued for the device (its waiters claim it).
    CommandQueued { device_id: Uuid },
    /// A command's status changed (admin watchers re-read it).
    CommandChanged { org_id: Uuid, command_id: Uuid },
    /// A device started waiting for commands (a poll or a stream) here:
    /// its earlier waiter, on any replica, ends.
    WaiterStarted { device_id: Uuid, waiter: Uuid },
    /// A device's own settings changed (name, group, location, tags).
    DeviceChanged { device_id: Uuid },
    /// A model deployment of the organization changed.
    DeploymentChanged { org_id: Uuid },
    /// A group or location of the organization changed (what `/config`
    /// shows of them, or a group's sensor list).
    PlacesChanged { org_id: Uuid },
    /// The organization's own sensor types changed.
    SensorTypesChanged { org_id: Uuid },
    /// The organization's alert rules changed.
    AlertRulesChanged { org_id: Uuid },
    /// An alert opened, was acknowledged or resolved (webhooks and
    /// watchers re-read it).
    AlertChanged { org_id: Uuid, alert_id: Uuid },
    /// Events may have been missed (the cross-replica listener reconnected):
    /// forget or re-read everything derived from the database.
    Resync,
}

impl Event {
    /// The organization this event concerns, if it names one.
    pub fn org(&self) -> Option<Uuid> {
        match self {
            Event::DeploymentChanged { org_id }
            | Event::PlacesChanged { org_id }
            | Event::SensorTypesChanged { org_id }
            | Event::AlertRulesChanged { org_id }
            | Event::AlertChanged { org_id, .. }
            | Event::CommandChanged { org_id, .. } => Some(*org_id),
            Event::DeviceKeysChanged { .. }
            | Event::ApiKeyChanged { .. }
            | Event::CommandQueued { .. }
            | Event::DeviceChanged { .. }
            | Event::WaiterStarted { .. }
            | Event::Resync => None,
        }
    }

    /// The device this event concerns, if it concerns one device.
    pub fn device(&self) -> Option<Uuid> {
        match self {
            Event::DeviceKeysChanged { device_id }
            | Event::CommandQueued { device_id }
            | Event::DeviceChanged { device_id }
            | Event::WaiterStarted { device_id, .. } => Some(*device_id),
            Event::ApiKeyChanged { .. }
            | Event::DeploymentChanged { .. }
            | Event::PlacesChanged { .. }
            | Event::SensorTypesChanged { .. }
            | Event::AlertRulesChanged { .. }
            | Event::AlertChanged { .. }
            | Event::CommandChanged { .. }
            | Event::Resync => None,
        }
    }
}

type Handler = Box<dyn Fn(&Event) + Send + Sync>;

/// The bus of one process. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tells this process's NOTIFYs apart from other replicas'.
    replica: Uuid,
    /// Whether events cross replicas (PostgreSQL).
    shared: bool,
    handlers: RwLock<Vec<Handler>>,
    devices: Mutex<HashMap<Uuid, watch::Sender<DeviceSignal>>>,
    /// Whether the cross-replica listener is connected.
    listening: watch::Sender<bool>,
    /// Every delivered event, for subscribers that filter for themselves
    /// (rare events: alerts, deployments).
    all: tokio::sync::broadcast::Sender<Event>,
}

impl Bus {
    /// `shared`: the database is PostgreSQL, so events also go to other replicas.
    pub fn new(shared: bool) -> Self {
        Bus {
            inner: Arc::new(Inner {
                replica: Uuid::now_v7(),
                shared,
                handlers: RwLock::default(),
                devices: Mutex::default(),
                listening: watch::channel(false).0,
                all: tokio::sync::broadcast::channel(1024).0,
            }),
        }
    }

    pub fn replica(&self) -> Uuid {
        self.inner.replica
    }

    pub fn is_shared(&self) -> bool {
        self.inner.shared
    }

    /// Calls `handler` for every event delivered here, synchronously, at
    /// commit (keep it short: it runs on the committing task).
    pub fn subscribe(&self, handler: impl Fn(&Event) + Send + Sync + 'static) {
        self.inner
            .handlers
            .write()
            .expect("bus handlers")
            .push(Box::new(handler));
    }

    /// Every event delivered here from now on. A receiver that falls more
    /// than 1,024 events behind is told it lagged (re-read everything).
    pub fn subscribe_all(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.all.subscribe()
    }

    /// Wakes on any event for `device_id` (and on [`Event::Resync`]).
    pub fn watch_device(&self, device_id: Uuid) -> DeviceWatch {
        let mut devices = self.inner.devices.lock().expect("bus devices");
        let sender = devices
            .entry(device_id)
            .or_insert_with(|| watch::channel(DeviceSignal::default()).0);
        DeviceWatch {
            receiver: sender.subscribe(),
            device_id,
            bus: self.clone(),
        }
    }

    /// Delivers committed events to this process's subscribers.
    pub fn deliver(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let handlers = self.inner.handlers.read().expect("bus handlers");
        for event in events {
            for handler in handlers.iter() {
                handler(event);
            }
        }
        drop(handlers);
        for event in events {
            let _ = self.inner.all.send(*event);
        }
        let devices = self.inner.devices.lock().expect("bus devices");
        for event in events {
            match (event, event.device()) {
                (Event::Resync, _) => devices.values().for_each(|w| {
                    w.send_modify(|s| {
                        s.events += 1;
                        s.keys_changed += 1;
                    })
                }),
                (_, Some(id)) => {
                    if let Some(w) = devices.get(&id) {
                        w.send_modify(|s| s.note(event));
                    }
                }
                (_, None) => {}
            }
        }
    }

    /// Returns once other replicas' events reach this one (at once when
    /// there are no other replicas).
    pub async fn until_listening(&self) {
        if !self.inner.shared {
            return;
        }
        let mut rx = self.inner.listening.subscribe();
        let _ = rx.wait_for(|l| *l).await;
    }

    pub(crate) fn set_listening(&self, on: bool) {
        self.inner.listening.send_replace(on);
    }

    /// How many devices have a waiter (for metrics and tests).
    pub fn watched_devices(&self) -> usize {
        self.inner.devices.lock().expect("bus devices").len()
    }
}

/// What happened to a device, as counters a waiter compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceSignal {
    /// Every event for the device.
    pub events: u64,
    /// Its keys changed (or events may have been missed).
    pub keys_changed: u64,
    /// The latest device waiter to start, on any replica.
    pub waiter: Option<Uuid>,
}

impl DeviceSignal {
    fn note(&mut self, event: &Event) {
        self.events += 1;
        match event {
            Event::DeviceKeysChanged { .. } => self.keys_changed += 1,
            Event::WaiterStarted { waiter, .. } => self.waiter = Some(*waiter),
            _ => {}
        }
    }
}

/// A waiter for one device's events. Dropping the last one for a device
/// frees its slot, so the registry holds only devices being waited on.
pub struct DeviceWatch {
    receiver: watch::Receiver<DeviceSignal>,
    device_id: Uuid,
    bus: Bus,
}

impl DeviceWatch {
    /// Returns at the next event for the device after this watch was made
    /// (or after the previous `changed`), with the device's signal.
    pub async fn changed(&mut self) -> DeviceSignal {
        // The sender lives in the registry while any watch exists.
        let _ = self.receiver.changed().await;
        *self.receiver.borrow_and_update()
    }

    /// The device's signal, if an event came that `changed` has not yet
    /// returned (marking it seen).
    pub fn pending(&mut self) -> Option<DeviceSignal> {
        if self.receiver.has_changed().unwrap_or(false) {
            Some(*self.receiver.borrow_and_update())
        } else {
            None
        }
    }

    /// The device's signal now.
    pub fn current(&self) -> DeviceSignal {
        *self.receiver.borrow()
    }
}

impl Drop for DeviceWatch {
    fn drop(&mut self) {
        let mut devices = self.bus.inner.devices.lock().expect("bus devices");
        // Our receiver still counts until it is dropped after this body.
        if let Some(w) = devices.get(&self.device_id)
            && w.receiver_count() <= 1
        {
            devices.remove(&self.device_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn events_round_trip_as_json() {
        let id = Uuid::now_v7();
        for e in [
            Event::DeviceKeysChanged { device_id: id },
            Event::ApiKeyChanged { key_id: id },
            Event::CommandQueued { device_id: id },
            Event::DeploymentChanged { org_id: id },
            Event::Resync,
        ] {
            let text = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), e);
        }
    }

    #[tokio::test]
    async fn handlers_and_device_watchers_hear_committed_events() {
        let bus = Bus::new(false);
        let heard = Arc::new(AtomicUsize::new(0));
        let h = heard.clone();
        bus.subscribe(move |_| {
            h.fetch_add(1, Ordering::Relaxed);
        });
        let device = Uuid::now_v7();
        let mut watch = bus.watch_device(device);
        let other = Uuid::now_v7();
        bus.deliver(&[Event::CommandQueued { device_id: other }]);
        bus.deliver(&[Event::CommandQueued { device_id: device }]);
        tokio::time::timeout(std::time::Duration::from_secs(1), watch.changed())
            .await
            .expect("woken by its device's event");
        assert_eq!(heard.load(Ordering::Relaxed), 2);
        assert_eq!(bus.watched_devices(), 1);
        drop(watch);
        assert_eq!(bus.watched_devices(), 0, "the slot is freed");
    }
}
