//! Server configuration: every flag is also an environment variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::limits::RateLimitConfig;

// One source for each default: the flags and `Config::for_data_dir` use them.
const DEFAULT_HEARTBEAT_INTERVAL_SECONDS: u32 = 30;
const DEFAULT_PROVISIONING_TOKEN_TTL_SECONDS: u64 = 86_400;
const DEFAULT_MAX_JSON_BYTES: usize = 1024 * 1024;
const DEFAULT_HEADER_READ_TIMEOUT_SECONDS: u32 = 30;
const DEFAULT_DATABASE_TIMEOUT_SECONDS: u32 = 5;
const DEFAULT_TS_HORIZON_DAYS: u32 = 30;
const DEFAULT_KEY_CACHE_ENTRIES: usize = 1_000_000;
const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 365;
const DEFAULT_KEY_CACHE_REJECTED_ENTRIES: usize = 65_536;
const DEFAULT_KEY_CACHE_TTL_SECONDS: u64 = 6 * 3600;
const DEFAULT_MAX_CAPTURE_BYTES: u64 = 10 * 1024 * 1024;
const DEFAULT_MAX_MODEL_BYTES: u64 = 2 * 1024 * 1024 * 1024;
const DEFAULT_SNAPSHOT_WINDOW_SECONDS: u32 = 600;

/// Where state lives; shared by `swrm serve` and `swrm admin`.
#[derive(clap::Args, Clone, Debug)]
pub struct StorageArgs {
    /// Folder for the embedded SQLite database (and blobs).
    #[arg(
        long,
        env = "SWRM_DATA_DIR",
        default_value = "./swrm-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`. Default:
    /// `sqlite://<data-dir>/swrm.db`.
    #[arg(long, env = "SWRM_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Longest wait on the database (a connection, a lock, a statement);
    /// past it the request answers 503 `unavailable`.
    #[arg(long, env = "SWRM_DATABASE_TIMEOUT_SECONDS", default_value_t = DEFAULT_DATABASE_TIMEOUT_SECONDS,
          value_parser = clap::value_parser!(u32).range(1..=600), global = true)]
    pub database_timeout_seconds: u32,
}

impl StorageArgs {
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("swrm.db").display()),
        }
    }

    pub fn database_timeout(&self) -> Duration {
        Duration::from_secs(self.database_timeout_seconds.into())
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Address for REST, gRPC and gRPC-web (one port).
    #[arg(long, env = "SWRM_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Base URL devices use to reach this server (for `/config` endpoints).
    /// Default: taken from each request's Host header.
    #[arg(long, env = "SWRM_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How often devices should send a heartbeat; a device is offline after
    /// three missed intervals.
    #[arg(long, env = "SWRM_HEARTBEAT_INTERVAL_SECONDS", default_value_t = DEFAULT_HEARTBEAT_INTERVAL_SECONDS,
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub heartbeat_interval_seconds: u32,
    /// Lifetime of a provisioning token.
    #[arg(long, env = "SWRM_PROVISIONING_TOKEN_TTL_SECONDS", default_value_t = DEFAULT_PROVISIONING_TOKEN_TTL_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub provisioning_token_ttl_seconds: u64,
    /// Largest JSON request body, in bytes.
    #[arg(long, env = "SWRM_MAX_JSON_BYTES", default_value_t = DEFAULT_MAX_JSON_BYTES)]
    pub max_json_bytes: usize,
    /// Seconds a client has to send a request's headers (slow clients and
    /// idle keep-alive connections are closed after it).
    #[arg(long, env = "SWRM_HEADER_READ_TIMEOUT_SECONDS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT_SECONDS,
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub header_read_timeout_seconds: u32,
    /// Connections open at once; past it a new connection gets 429 and is
    /// closed. Long polls and command streams each hold one.
    #[arg(long, env = "SWRM_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// Valid device and API keys held in memory (the fleet's size is enough).
    #[arg(long, env = "SWRM_KEY_CACHE_ENTRIES", default_value_t = DEFAULT_KEY_CACHE_ENTRIES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub key_cache_entries: usize,
    /// Unknown, revoked or expired keys remembered, apart from valid ones.
    #[arg(long, env = "SWRM_KEY_CACHE_REJECTED_ENTRIES", default_value_t = DEFAULT_KEY_CACHE_REJECTED_ENTRIES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub key_cache_rejected_entries: usize,
    /// Safety-net lifetime of a cached valid key, in seconds (each entry's
    /// is shortened by up to a tenth at random). Revocation, rotation,
    /// re-pairing and deletion evict a key at once on every replica; this
    /// only bounds staleness should a bus event be lost.
    #[arg(long, env = "SWRM_KEY_CACHE_TTL_SECONDS", default_value_t = DEFAULT_KEY_CACHE_TTL_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=7 * 86_400))]
    pub key_cache_ttl_seconds: u64,
    /// How old a device `ts` may be, in days (older readings, telemetry and
    /// events are refused with 400).
    #[arg(long, env = "SWRM_TS_HORIZON_DAYS", default_value_t = DEFAULT_TS_HORIZON_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub ts_horizon_days: u32,
    /// How long audit events are kept, in days.
    #[arg(long, env = "SWRM_AUDIT_RETENTION_DAYS", default_value_t = DEFAULT_AUDIT_RETENTION_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub audit_retention_days: u32,
    /// Largest capture image, in bytes (larger uploads get 413).
    #[arg(long, env = "SWRM_MAX_CAPTURE_BYTES", default_value_t = DEFAULT_MAX_CAPTURE_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_capture_bytes: u64,
    /// Largest model artifact, in bytes (larger uploads get 413).
    #[arg(long, env = "SWRM_MAX_MODEL_BYTES", default_value_t = DEFAULT_MAX_MODEL_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_model_bytes: u64,
    /// How far back a capture's sensor snapshot looks for each sensor's
    /// latest reading, in seconds.
    #[arg(long, env = "SWRM_SNAPSHOT_WINDOW_SECONDS", default_value_t = DEFAULT_SNAPSHOT_WINDOW_SECONDS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub snapshot_window_seconds: u32,
    #[command(flatten)]
    pub blobs: crate::blobs::BlobArgs,
    /// Require an owner API key for `GET /metrics` (default: open).
    #[arg(long, env = "SWRM_METRICS_REQUIRE_KEY")]
    pub metrics_require_key: bool,
    #[command(flatten)]
    pub rate_limits: RateLimitConfig,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// Addresses of your load balancers / reverse proxies. Requests from them
    /// are attributed to the client in `X-Forwarded-For` (for rate limits and
    /// the recorded source IP). Comma-separated.
    #[arg(
        long = "trusted-proxy",
        env = "SWRM_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Config {
    /// Defaults for an embedded server in `data_dir` (what tests start from).
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            storage: StorageArgs {
                data_dir: data_dir.into(),
                database_url: None,
                database_timeout_seconds: DEFAULT_DATABASE_TIMEOUT_SECONDS,
            },
            public_url: None,
            heartbeat_interval_seconds: DEFAULT_HEARTBEAT_INTERVAL_SECONDS,
            provisioning_token_ttl_seconds: DEFAULT_PROVISIONING_TOKEN_TTL_SECONDS,
            max_json_bytes: DEFAULT_MAX_JSON_BYTES,
            header_read_timeout_seconds: DEFAULT_HEADER_READ_TIMEOUT_SECONDS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            key_cache_entries: DEFAULT_KEY_CACHE_ENTRIES,
            key_cache_rejected_entries: DEFAULT_KEY_CACHE_REJECTED_ENTRIES,
            key_cache_ttl_seconds: DEFAULT_KEY_CACHE_TTL_SECONDS,
            metrics_require_key: false,
            max_capture_bytes: DEFAULT_MAX_CAPTURE_BYTES,
            max_model_bytes: DEFAULT_MAX_MODEL_BYTES,
            snapshot_window_seconds: DEFAULT_SNAPSHOT_WINDOW_SECONDS,
            blobs: crate::blobs::BlobArgs::default(),
            ts_horizon_days: DEFAULT_TS_HORIZON_DAYS,
            audit_retention_days: DEFAULT_AUDIT_RETENTION_DAYS,
            rate_limits: RateLimitConfig::default(),
            tls: crate::tls::TlsArgs::default(),
            trusted_proxies: Vec::new(),
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_seconds.into())
    }
}
