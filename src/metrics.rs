//! Prometheus metrics, served at `GET /metrics` (OpenMetrics text). One
//! registry per server, so tests running many servers in one process each
//! see their own. Label values are static strings (route templates, never
//! raw paths or ids), so the number of series stays bounded.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Transport {
    rest,
    grpc,
    grpc_web,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub transport: Transport,
    /// HTTP status (REST), or the gRPC status name when the answer's head
    /// carries it (errors before the first message; `ok` otherwise).
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub transport: Transport,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BucketLabels {
    /// `pairing`, `device`, `org_key`, `anonymous` or `failed_lookups`.
    pub bucket: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `idle` or `in_use`.
    pub state: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram>,
    pub commit_batch_size: Histogram,
    pub commit_wait_seconds: Histogram,
    pub key_cache_hits: Counter,
    pub key_cache_misses: Counter,
    pub key_cache_evictions: Counter,
    pub key_cache_entries: Gauge,
    pub auth_db_lookups: Counter,
    pub api_key_last_use_writes: Counter,
    pub rate_limited: Family<BucketLabels, Counter>,
    pub db_connections: Family<PoolLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("swrm");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests answered, by route, transport and status",
            requests.clone(),
        );
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 0.1 ms to ~6.5 s.
            Histogram::new(exponential_buckets(0.0001, 2.0, 17))
        });
        registry.register(
            "request_duration_seconds",
            "Time to answer a request (to its first byte for streams)",
            request_seconds.clone(),
        );
        let commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "group_commit_batch_size",
            "Writes (readings, telemetry, events, heartbeat flushes, capture rows) committed together in one transaction",
            commit_batch_size.clone(),
        );
        let commit_wait_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 17));
        registry.register(
            "group_commit_wait_seconds",
            "Time from a write's arrival at the writer to its commit",
            commit_wait_seconds.clone(),
        );
        let key_cache_hits = Counter::default();
        registry.register(
            "key_cache_hits",
            "Credential checks answered from memory",
            key_cache_hits.clone(),
        );
        let key_cache_misses = Counter::default();
        registry.register(
            "key_cache_misses",
            "Credential checks not in memory",
            key_cache_misses.clone(),
        );
        let key_cache_evictions = Counter::default();
        registry.register(
            "key_cache_evictions",
            "Cached credentials dropped (revoked, rotated, full, or a resync)",
            key_cache_evictions.clone(),
        );
        let key_cache_entries = Gauge::default();
        registry.register(
            "key_cache_entries",
            "Credentials held in memory",
            key_cache_entries.clone(),
        );
        let auth_db_lookups = Counter::default();
        registry.register(
            "auth_db_lookups",
            "Credential checks that reached the database",
            auth_db_lookups.clone(),
        );
        let api_key_last_use_writes = Counter::default();
        registry.register(
            "api_key_last_use_writes",
            "Writes of an API key's last use (at most one a minute per key)",
            api_key_last_use_writes.clone(),
        );
        let rate_limited = Family::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by bucket",
            rate_limited.clone(),
        );
        let db_connections = Family::default();
        registry.register(
            "db_connections",
            "Database pool connections by state (at scrape time)",
            db_connections.clone(),
        );
        Self {
            registry,
            requests,
            request_seconds,
            commit_batch_size,
            commit_wait_seconds,
            key_cache_hits,
            key_cache_misses,
            key_cache_evictions,
            key_cache_entries,
            auth_db_lookups,
            api_key_last_use_writes,
            rate_limited,
            db_connections,
        }
    }

    pub fn rate_limited(&self, bucket: &'static str) {
        self.rate_limited
            .get_or_create(&BucketLabels { bucket })
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
