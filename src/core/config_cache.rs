//! `/config` answers, in memory per device. Whole fleets poll it, and what
//! it shows changes rarely, so it is read from the database once and then
//! served from here until the bus says something it shows changed (the
//! device, its group or location, the organization's sensor types or
//! deployments), on every replica.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};
use uuid::Uuid;

use super::device_ops::DeviceConfig;
use crate::bus::Event;

pub struct ConfigCache {
    entries: RwLock<HashMap<Uuid, Arc<DeviceConfig>>>,
    max_entries: usize,
}

impl ConfigCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: RwLock::default(),
            max_entries: max_entries.max(1),
        }
    }

    pub fn get(&self, device_id: Uuid) -> Option<Arc<DeviceConfig>> {
        self.entries
            .read()
            .expect("config cache")
            .get(&device_id)
            .cloned()
    }

    pub fn put(&self, config: Arc<DeviceConfig>) {
        let mut entries = self.entries.write().expect("config cache");
        if entries.len() >= self.max_entries {
            entries.clear();
        }
        entries.insert(config.device.id, config);
    }

    /// Forgets what `event` may have changed.
    pub fn apply(&self, event: &Event) {
        let mut entries = self.entries.write().expect("config cache");
        match event {
            Event::DeviceChanged { device_id } | Event::DeviceKeysChanged { device_id } => {
                entries.remove(device_id);
            }
            Event::PlacesChanged { org_id }
            | Event::SensorTypesChanged { org_id }
            | Event::DeploymentChanged { org_id } => {
                entries.retain(|_, c| c.org.id != *org_id);
            }
            Event::Resync => entries.clear(),
            Event::ApiKeyChanged { .. }
            | Event::CommandQueued { .. }
            | Event::CommandChanged { .. }
            | Event::WaiterStarted { .. }
            | Event::AlertRulesChanged { .. }
            | Event::AlertChanged { .. } => {}
        }
    }

    pub fn len(&self) -> usize {
        self.entries.read().expect("config cache").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
