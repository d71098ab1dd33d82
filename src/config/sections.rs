//! The file's sections, as written: each with its defaults and `deny_unknown_fields`. What they
//! mean together, and the checks across them, is `mod.rs`'s business.

use super::{AuthConfig, FileRef, SecretRef, TlsConfig};
use serde::Deserialize;
use std::net::SocketAddr;

/// The file's shape. Every section is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub atlas: AtlasConfig,
    #[serde(default)]
    pub jobs: JobsConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Authentication and grants; absent, costd serves anyone who connects (and says so).
    pub auth: Option<AuthConfig>,
    /// Each parsed by its `kind` in `accounts.rs` (see [`ProviderAccountConfig::parse`]).
    #[serde(default)]
    pub providers: Vec<toml::Table>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the gRPC listener.
    pub listen: SocketAddr,
    /// How long in-flight calls may finish after a stop signal, in milliseconds.
    pub drain_timeout_ms: u64,
    /// Time kept back from the caller's deadline to build the answer, in milliseconds.
    pub deadline_margin_ms: u64,
    /// Longest date range one query may cover, in days.
    pub max_range_days: u32,
    /// Most upstream chunks (account × period × request) one query may need.
    pub max_chunks_per_query: usize,
    /// Most rows one report may have.
    pub max_rows: usize,
    /// TLS on the gRPC port.
    pub tls: Option<TlsConfig>,
    /// With TLS on: a plaintext listener serving only `grpc.health.v1.Health`, for probes.
    pub health_listen: Option<SocketAddr>,
    /// Largest request message accepted, in bytes (RESOURCE_EXHAUSTED beyond).
    pub max_request_bytes: usize,
    /// Calls in progress at once, server-wide (Health excluded); beyond it RESOURCE_EXHAUSTED at once.
    pub max_concurrent_requests: u32,
    /// Shed new calls (Health excluded) while ready work has waited longer than this for the
    /// runtime, sample after sample, for `queue_delay_interval_ms`; in microseconds, 0 for never.
    pub max_queue_delay_us: u64,
    /// How long the wait must stay above `max_queue_delay_us` before calls are shed, in milliseconds.
    pub queue_delay_interval_ms: u64,
    /// How long an overload refusal is held when its connection was refused before, sooner than any
    /// RetryInfo delay: a caller that retries at once waits in its refusal rather than ahead of the
    /// calls admitted. In milliseconds, 0 for never.
    pub early_retry_hold_ms: u64,
    /// HTTP/2 streams one connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Open connections at once; one beyond it is closed as soon as it is accepted.
    pub max_connections: u32,
    /// How long a new connection has to send the HTTP/2 preface before it is closed, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// How often an HTTP/2 PING checks an open connection, in milliseconds.
    pub keepalive_interval_ms: u64,
    /// How long a PING may go unanswered before the connection is closed, in milliseconds.
    pub keepalive_timeout_ms: u64,
    /// Age at which a connection is asked to go away (GOAWAY), so clients rebalance across replicas;
    /// its calls then get `drain_timeout_ms` to finish. In milliseconds.
    pub max_connection_age_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            drain_timeout_ms: 10_000,
            deadline_margin_ms: 200,
            max_range_days: 731,
            max_chunks_per_query: 5_000,
            max_rows: 200_000,
            tls: None,
            health_listen: None,
            max_request_bytes: 4 * 1024 * 1024,
            max_concurrent_requests: 1_000,
            // Ten milliseconds behind for a tenth of a second: a cached answer takes a fraction of a
            // millisecond, so callers are by then waiting tens of times longer than the work.
            max_queue_delay_us: 10_000,
            queue_delay_interval_ms: 100,
            // Refusals of callers that retry at once every 4 ms, not back to back; the refusal's p99
            // stays near 5 ms, half the 10 ms it may take (benches/overload.rs: 2 ms helped less,
            // 6 ms little more and once came within 1 ms of the limit).
            early_retry_hold_ms: 4,
            max_concurrent_streams: 200,
            max_connections: 5_000,
            handshake_timeout_ms: 5_000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            max_connection_age_ms: 30 * 60 * 1_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// An `EnvFilter` directive.
    pub log_level: String,
    pub log_format: LogFormat,
    /// OTLP/gRPC collector endpoint, e.g. `http://otel-collector:4317`. Unset: no trace export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans.
    pub service_name: String,
    /// Longest wait, at shutdown, for the last spans to reach the collector, in milliseconds.
    pub flush_timeout_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_level: "info".to_string(),
            log_format: LogFormat::Json,
            otlp_endpoint: None,
            service_name: "costd".to_string(),
            flush_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Longest single upstream request, in milliseconds (shortened to the caller's deadline).
    pub request_timeout_ms: u64,
    /// Tries per upstream call, the first included.
    pub max_attempts: u32,
    /// First retry delay, in milliseconds; doubles per retry, with jitter.
    pub retry_initial_delay_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub retry_max_delay_ms: u64,
    /// Largest upstream response body accepted, in bytes.
    pub max_response_bytes: u64,
    /// Concurrent upstream calls per provider account.
    pub max_concurrency_per_account: usize,
    /// Longest one chunk's fetch may take, retries included, in milliseconds. The fetch runs on its own,
    /// so a caller with a shorter deadline does not cut it short for the others.
    pub fetch_timeout_ms: u64,
    /// Retries allowed per account, as a percentage of its recent calls (gRFC A6 retry throttling).
    pub retry_budget_percent: u32,
    /// Retries per second an account may always make, whatever its recent calls.
    pub retry_budget_min_per_second: u32,
    /// Failed requests in a row (no answer, timeout, 5xx) that open an account's circuit.
    pub breaker_consecutive_failures: u32,
    /// Share of the last `breaker_window` requests, in percent, whose failure opens the circuit.
    pub breaker_failure_rate_percent: u32,
    pub breaker_window: usize,
    /// How long an open circuit refuses, times the openings in a row, in milliseconds.
    pub breaker_open_ms: u64,
    /// The longest it refuses, in milliseconds.
    pub breaker_max_open_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            request_timeout_ms: 30_000,
            max_attempts: 5,
            retry_initial_delay_ms: 1_000,
            retry_max_delay_ms: 32_000,
            max_response_bytes: 256 * 1024 * 1024,
            max_concurrency_per_account: 8,
            fetch_timeout_ms: 120_000,
            retry_budget_percent: 20,
            retry_budget_min_per_second: 1,
            breaker_consecutive_failures: 5,
            breaker_failure_rate_percent: 50,
            breaker_window: 20,
            breaker_open_ms: 30_000,
            breaker_max_open_ms: 300_000,
        }
    }
}

/// The job table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// How long a finished job can still be read, in seconds.
    pub retention_seconds: u64,
    /// Where jobs live: `memory` (one replica) or `redis` (shared by several replicas).
    pub store: JobStoreKind,
    /// The redis job store; required when `store = "redis"`.
    pub redis: Option<RedisConfig>,
    /// Jobs held at once, running or finished within retention; beyond it RESOURCE_EXHAUSTED.
    pub max_jobs: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            retention_seconds: 3600,
            store: JobStoreKind::Memory,
            redis: None,
            max_jobs: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStoreKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The connection URL, which may carry a password: a credential reference like a provider's.
    pub url: SecretRef,
    /// Prefix of every key costd writes, so several deployments can share one redis.
    #[serde(default = "default_redis_key_prefix")]
    pub key_prefix: String,
    /// How long a replica's lease on a running job (its poller's right to poll the job's upstream
    /// tokens) lasts unless renewed: a dead replica's jobs are taken over within about 1.25x this.
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// CA certificates, PEM, that a `rediss://` server's chain must lead to (a private CA); without
    /// it, the web's roots.
    pub ca: Option<FileRef>,
}

fn default_redis_key_prefix() -> String {
    "costd".to_string()
}

fn default_lease_ttl_ms() -> u64 {
    10_000
}

/// The Prometheus scrape endpoint (`/metrics`), on its own port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
        }
    }
}

/// How costd polls Atlas' asynchronous queries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AtlasConfig {
    /// First wait before polling a new query, in milliseconds; grows ×1.5 per poll, with jitter.
    pub poll_initial_ms: u64,
    /// Longest wait between polls, in milliseconds.
    pub poll_max_ms: u64,
    /// A query still processing this long after Atlas created it (on whichever replica) fails as
    /// retryable, in milliseconds.
    pub max_processing_ms: u64,
    /// Atlas' Invoices token bucket per organization: capacity.
    pub bucket_capacity: u32,
    /// ... and refill per minute.
    pub bucket_refill_per_minute: u32,
}

impl Default for AtlasConfig {
    fn default() -> Self {
        AtlasConfig {
            poll_initial_ms: 1_000,
            poll_max_ms: 30_000,
            max_processing_ms: 600_000,
            bucket_capacity: 500,
            bucket_refill_per_minute: 100,
        }
    }
}

/// The chunk cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Memory budget of cached records, in bytes (by estimate).
    pub max_bytes: u64,
    /// How long after a period ends its costs are taken as final, in hours.
    pub settlement_lag_hours: u64,
    /// How long a settled chunk is fresh, in seconds.
    pub settled_ttl_seconds: u64,
    /// How long a chunk of an open (unsettled) period is fresh, in seconds.
    pub open_ttl_seconds: u64,
    /// How long past freshness a chunk may still be served, marked stale, when its refresh fails.
    pub stale_grace_seconds: u64,
    /// With replicas sharing redis (`jobs.store = "redis"`): how long a settled chunk stays in the
    /// tier they share, in seconds; 0 turns the tier off.
    pub shared_ttl_seconds: u64,
    /// The largest settled chunk written to the shared tier, in encoded bytes.
    pub shared_max_chunk_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 256 * 1024 * 1024,
            settlement_lag_hours: 72,
            settled_ttl_seconds: 6 * 3600,
            open_ttl_seconds: 300,
            stale_grace_seconds: 24 * 3600,
            shared_ttl_seconds: 6 * 3600,
            shared_max_chunk_bytes: 32 * 1024 * 1024,
        }
    }
}
