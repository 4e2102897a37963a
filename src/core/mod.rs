//! Use cases: the rules of swrm, free of transport types. gRPC handlers, the
//! REST adapter (through gRPC), the CLI and background jobs all call these,
//! each with the one [`Core`] built at start.

pub mod alerts;
pub mod api_keys;
pub mod audit;
pub mod audit_tally;
pub mod blob_upload;
pub mod blobs;
pub mod captures;
pub mod clock;
pub mod commands;
pub mod config_cache;
pub mod device_batch;
pub mod device_import;
pub mod device_ops;
pub mod device_tags;
pub mod devices;
pub mod enrollment;
pub mod ingest;
pub mod liveness;
pub mod models;
pub mod orgs;
pub mod page;
pub mod pairing;
pub mod places;
pub mod queries;
pub mod sensor_types;
pub mod statistics;
pub mod validate;
pub mod webhooks;
pub mod writer;

use chrono::{DateTime, SecondsFormat, Utc};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

use crate::{blobs::BlobStore, bus::Bus, metrics::Metrics, store::Store};
pub use clock::Clock;

/// What every use case may need, built once at start and held by the
/// transports, the CLI and background tasks.
pub struct Core {
    pub store: Store,
    /// Events of committed changes (see `bus`).
    pub bus: Bus,
    pub clock: Clock,
    pub settings: Settings,
    /// Group-commits what devices send (see [`writer`]).
    pub writer: writer::Writer,
    /// Devices waiting here for commands, which the writer may claim for
    /// as it queues them (see [`commands::handoff`]).
    pub handoffs: Arc<commands::handoff::Handoffs>,
    /// Heartbeats not yet flushed (see [`liveness`]).
    pub liveness: liveness::LivenessTable,
    /// Role denials and authentication failures, counted per minute.
    pub audit_tally: audit_tally::AuditTally,
    /// Devices created, for refreshing the planner's statistics.
    pub statistics: statistics::Statistics,
    /// Group-commits pairings (see [`pairing::Pairings`]).
    pub pairings: pairing::Pairings,
    /// Built-in and organization sensor types, in memory per organization.
    pub sensor_types: Arc<sensor_types::Registry>,
    /// Each organization's alert rules, in memory for the ingest path.
    pub alert_rules: Arc<alerts::RulesCache>,
    /// `/config` answers per device.
    pub configs: Arc<config_cache::ConfigCache>,
    /// Cancelled when the server starts shutting down: every long-lived
    /// stream and poll ends at once instead of holding the drain.
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    /// Capture images and model artifacts.
    pub blobs: Arc<dyn BlobStore>,
}

/// Settings the use cases follow (from the server's configuration).
#[derive(Clone, Debug)]
pub struct Settings {
    /// What devices are told; a device is offline after three missed.
    pub heartbeat_interval: Duration,
    pub provisioning_token_ttl: Duration,
    /// Longest wait on the database before a request answers 503.
    pub database_timeout: Duration,
    /// How old a device `ts` may be (the retention horizon).
    pub ts_horizon: Duration,
    /// Largest capture image, in bytes.
    pub max_capture_bytes: u64,
    /// Largest model artifact, in bytes.
    pub max_model_bytes: u64,
    /// How far back a capture's sensor snapshot looks.
    pub snapshot_window: Duration,
    /// Lifetime of signed download URLs.
    pub signed_url_ttl: Duration,
    /// How long a blob may wait for its row before the sweep removes it.
    pub orphan_grace: Duration,
    /// How long audit events are kept.
    pub audit_retention: Duration,
}

impl Core {
    pub fn new(store: Store, clock: Clock, settings: Settings, blobs: Arc<dyn BlobStore>) -> Self {
        let metrics = Arc::new(Metrics::new());
        let sensor_types = Arc::new(sensor_types::Registry::default());
        let alert_rules = Arc::new(alerts::RulesCache::default());
        let configs = Arc::new(config_cache::ConfigCache::new(1_000_000));
        let handoffs = Arc::new(commands::handoff::Handoffs::new(clock.clone()));
        let (registry, rules, config, offers) = (
            sensor_types.clone(),
            alert_rules.clone(),
            configs.clone(),
            handoffs.clone(),
        );
        store.bus().subscribe(move |event| {
            config.apply(event);
            match event {
                crate::bus::Event::DeviceKeysChanged { device_id } => {
                    offers.forget(Some(*device_id), None);
                }
                crate::bus::Event::WaiterStarted { device_id, waiter } => {
                    offers.forget(Some(*device_id), Some(*waiter));
                }
                crate::bus::Event::SensorTypesChanged { org_id } => {
                    registry.forget(Some(*org_id));
                }
                crate::bus::Event::AlertRulesChanged { org_id } => rules.forget(Some(*org_id)),
                crate::bus::Event::Resync => {
                    registry.forget(None);
                    rules.forget(None);
                    offers.forget(None, None);
                }
                _ => {}
            }
        });
        Self {
            bus: store.bus().clone(),
            writer: writer::Writer::spawn(store.clone(), metrics.clone(), handoffs.clone()),
            handoffs,
            liveness: liveness::LivenessTable::default(),
            audit_tally: audit_tally::AuditTally::default(),
            statistics: statistics::Statistics::default(),
            pairings: pairing::Pairings::new(
                store.clone(),
                clock.clone(),
                settings.database_timeout * 2,
            ),
            sensor_types,
            alert_rules,
            configs,
            store,
            clock,
            settings,
            shutdown: CancellationToken::new(),
            metrics,
            blobs,
        }
    }

    /// Counts a credential check that reached the database (the proof that
    /// malformed secrets never do).
    pub fn count_auth_lookup(&self) {
        self.metrics.auth_db_lookups.inc();
    }

    pub fn auth_db_lookups(&self) -> u64 {
        self.metrics.auth_db_lookups.get()
    }
}

/// RFC 3339 UTC with millisecond precision, the one time format on the wire.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// [`rfc3339`] of a time stored as Unix milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(rfc3339)
        .unwrap_or_default()
}

/// A new time-ordered id.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}
