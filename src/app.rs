//! The one `App` the transports share: the [`Core`] the use cases run on,
//! plus what only the transports need (configuration, the key cache, rate
//! limits). Built once at start and shared as `Arc<App>`.

use std::sync::Arc;

use crate::{
    auth::cache::KeyCache,
    blobs::BlobStore,
    bus::Event,
    config::Config,
    core::{Clock, Core, Settings},
    limits::Limits,
    store::Store,
};

pub struct App {
    pub config: Config,
    pub core: Arc<Core>,
    /// Resolved device and API keys (see `auth::cache`), kept current by
    /// the bus.
    pub keys: Arc<KeyCache>,
    /// Which API keys' last use this replica wrote lately.
    pub last_use: crate::auth::last_use::LastUse,
    pub limits: Limits,
}

impl App {
    pub fn new(config: Config, store: Store, clock: Clock, blobs: Arc<dyn BlobStore>) -> Self {
        let settings = settings(&config);
        let core = Arc::new(Core::new(store, clock, settings, blobs));
        let keys = Arc::new(KeyCache::new(
            config.key_cache_entries,
            config.key_cache_rejected_entries,
            std::time::Duration::from_secs(config.key_cache_ttl_seconds),
            core.metrics.clone(),
        ));
        let cache = keys.clone();
        core.bus.subscribe(move |event| match event {
            Event::DeviceKeysChanged { device_id } => cache.evict_owner(*device_id),
            Event::ApiKeyChanged { key_id } => cache.evict_owner(*key_id),
            Event::Resync => cache.clear(),
            _ => {}
        });
        Self {
            last_use: Default::default(),
            limits: Limits::new(&config.rate_limits),
            config,
            core,
            keys,
        }
    }

    /// Credential checks that reached the database.
    pub fn auth_db_lookups(&self) -> u64 {
        self.core.auth_db_lookups()
    }
}

/// What `core` needs of the configuration.
pub fn settings(config: &Config) -> Settings {
    Settings {
        heartbeat_interval: config.heartbeat_interval(),
        provisioning_token_ttl: std::time::Duration::from_secs(
            config.provisioning_token_ttl_seconds,
        ),
        database_timeout: config.storage.database_timeout(),
        ts_horizon: std::time::Duration::from_secs(u64::from(config.ts_horizon_days) * 86_400),
        max_capture_bytes: config.max_capture_bytes,
        max_model_bytes: config.max_model_bytes,
        snapshot_window: std::time::Duration::from_secs(config.snapshot_window_seconds.into()),
        signed_url_ttl: std::time::Duration::from_secs(config.blobs.signed_url_seconds.into()),
        orphan_grace: std::time::Duration::from_secs(config.blobs.orphan_grace_seconds.into()),
        audit_retention: std::time::Duration::from_secs(
            u64::from(config.audit_retention_days) * 86_400,
        ),
    }
}
