//! Configuration: defaults, then an optional TOML file, then `COSTD_*` environment overrides, validated
//! into typed [`Settings`]. Credentials are references (env var or mounted file) resolved into
//! `secrecy` types in `accounts.rs` and nowhere else.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::{collections::HashMap, fmt, net::SocketAddr, path::Path, time::Duration};

/// Path of the TOML file.
pub const ENV_CONFIG_FILE: &str = "COSTD_CONFIG";
/// Overrides `server.listen`.
pub const ENV_LISTEN: &str = "COSTD_LISTEN";
/// Overrides `telemetry.log_level` (an `EnvFilter` directive such as `info,costd=debug`).
pub const ENV_LOG_LEVEL: &str = "COSTD_LOG_LEVEL";
/// Overrides `telemetry.log_format` (`json` or `text`).
pub const ENV_LOG_FORMAT: &str = "COSTD_LOG_FORMAT";
/// Overrides `telemetry.otlp_endpoint`.
pub const ENV_OTLP_ENDPOINT: &str = "COSTD_OTLP_ENDPOINT";
/// The OpenTelemetry standard variable, honoured when `COSTD_OTLP_ENDPOINT` is not set.
pub const ENV_OTEL_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Overrides `server.drain_timeout_ms`.
pub const ENV_DRAIN_TIMEOUT_MS: &str = "COSTD_DRAIN_TIMEOUT_MS";
/// Overrides `metrics.listen`.
pub const ENV_METRICS_LISTEN: &str = "COSTD_METRICS_LISTEN";

const KNOWN_ENV: [&str; 7] = [
    ENV_CONFIG_FILE,
    ENV_LISTEN,
    ENV_LOG_LEVEL,
    ENV_LOG_FORMAT,
    ENV_OTLP_ENDPOINT,
    ENV_DRAIN_TIMEOUT_MS,
    ENV_METRICS_LISTEN,
];

/// A configuration problem, naming the key at fault. Never carries a secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

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
    /// Largest request message accepted, in bytes (RESOURCE_EXHAUSTED beyond).
    pub max_request_bytes: usize,
    /// Calls in progress at once, server-wide (Health excluded); beyond it RESOURCE_EXHAUSTED at once.
    pub max_concurrent_requests: u32,
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
            max_request_bytes: 4 * 1024 * 1024,
            max_concurrent_requests: 1_000,
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
}

fn default_redis_key_prefix() -> String {
    "costd".to_string()
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
    /// A query still processing after this long fails as retryable, in milliseconds.
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
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 256 * 1024 * 1024,
            settlement_lag_hours: 72,
            settled_ttl_seconds: 6 * 3600,
            open_ttl_seconds: 300,
            stale_grace_seconds: 24 * 3600,
        }
    }
}

/// Validated settings the app runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub upstream: UpstreamConfig,
    pub cache: CacheConfig,
    pub atlas: AtlasConfig,
    pub jobs: JobsConfig,
    /// Where jobs live, resolved: the redis URL is a secret from here on.
    pub job_store: JobStoreSettings,
    pub metrics: MetricsConfig,
    pub accounts: Vec<AccountSettings>,
}

/// The job store to build.
#[derive(Debug, Clone)]
pub enum JobStoreSettings {
    Memory,
    Redis {
        /// `redis://` or `rediss://`, perhaps with a password: never logged.
        url: SecretString,
        key_prefix: String,
    },
}

/// Reads the environment into a map, so loading itself stays a pure function of its inputs.
pub fn process_env() -> HashMap<String, String> {
    std::env::vars().collect()
}

impl Settings {
    /// Defaults ← the file named by `COSTD_CONFIG` (if any) ← `COSTD_*` overrides; then validation.
    pub fn load(env: &HashMap<String, String>) -> Result<Settings, ConfigError> {
        let file = match env.get(ENV_CONFIG_FILE) {
            Some(path) => parse_file(Path::new(path))?,
            None => FileConfig::default(),
        };
        Settings::from_file_config(file, env)
    }

    pub fn from_file_config(
        mut file: FileConfig,
        env: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        apply_env(&mut file, env)?;
        let providers = std::mem::take(&mut file.providers)
            .into_iter()
            .enumerate()
            .map(|(index, table)| {
                ProviderAccountConfig::parse(&format!("providers[{index}]"), table)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let referenced: Vec<&str> = providers
            .iter()
            .flat_map(ProviderAccountConfig::secret_refs)
            .chain(file.jobs.redis.as_ref().map(|redis| &redis.url))
            .filter_map(|r| r.env.as_deref())
            .collect();
        if let Some(unknown) = env.keys().find(|name| {
            name.starts_with("COSTD_")
                && !KNOWN_ENV.contains(&name.as_str())
                && !referenced.contains(&name.as_str())
        }) {
            return Err(ConfigError::new(
                unknown.clone(),
                format!("unknown variable; known: {}", KNOWN_ENV.join(", ")),
            ));
        }
        validate_limits(&file)?;
        let mut accounts: Vec<AccountSettings> = Vec::with_capacity(providers.len());
        for (index, account) in providers.iter().enumerate() {
            let resolved = accounts::resolve_account(&format!("providers[{index}]"), account, env)?;
            if accounts.iter().any(|a| a.id == resolved.id) {
                return Err(ConfigError::new(
                    format!("providers[{index}].id"),
                    format!("`{}` is used by another account", resolved.id),
                ));
            }
            accounts.push(resolved);
        }
        let job_store = match (&file.jobs.store, &file.jobs.redis) {
            (JobStoreKind::Redis, Some(redis)) => JobStoreSettings::Redis {
                url: redis_url(&redis.url, env)?,
                key_prefix: redis.key_prefix.clone(),
            },
            _ => JobStoreSettings::Memory,
        };
        Ok(Settings {
            server: file.server,
            telemetry: file.telemetry,
            upstream: file.upstream,
            cache: file.cache,
            atlas: file.atlas,
            jobs: file.jobs,
            job_store,
            metrics: file.metrics,
            accounts,
        })
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.server.drain_timeout_ms)
    }
}

/// The redis URL from its reference, checked for its scheme; no error repeats any of it.
fn redis_url(
    reference: &SecretRef,
    env: &HashMap<String, String>,
) -> Result<SecretString, ConfigError> {
    const KEY: &str = "jobs.redis.url";
    let url = accounts::resolve_secret(KEY, reference, env)?;
    let scheme = url::Url::parse(url.expose_secret())
        .map(|parsed| parsed.scheme().to_string())
        .unwrap_or_default();
    if scheme != "redis" && scheme != "rediss" {
        return Err(ConfigError::new(
            KEY,
            "must be a redis:// or rediss:// URL (its value is not repeated here)",
        ));
    }
    Ok(url)
}

/// Parses a TOML file; the error is one line naming the file, the line and the key.
pub fn parse_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            ENV_CONFIG_FILE,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    parse_toml(&text)
        .map_err(|e| ConfigError::new(e.key, format!("{} (in {})", e.message, path.display())))
}

/// Parses TOML text into the file shape. The error names the key (its dotted path) and the line.
pub fn parse_toml(text: &str) -> Result<FileConfig, ConfigError> {
    let line_of = |error: &toml::de::Error| {
        error
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1))
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| {
        ConfigError::new(
            format!("line {}", line_of(&e).unwrap_or(1)),
            without_values(e.message()),
        )
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = without_values(inner.message());
        let place = line_of(&inner)
            .map(|line| format!(" (line {line})"))
            .unwrap_or_default();
        let key = if path == "." {
            "file".to_string()
        } else {
            path
        };
        ConfigError::new(format!("{key}{place}"), message)
    })
}

/// A parser's message without the values it quotes (`invalid type: string "…"`, `unknown variant
/// `…``): a value written where it does not belong may be a credential, and config errors are
/// printed. Key names (`unknown field `x``) stay: they say what to fix.
pub(crate) fn without_values(message: &str) -> String {
    let message = match message.strip_prefix("unknown variant `") {
        Some(rest) => match rest.split_once('`') {
            Some((_, after)) => format!("unknown variant `…`{after}"),
            None => "unknown variant".to_string(),
        },
        None => message.to_string(),
    };
    let mut shown = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        match (c, quoted) {
            ('"', false) => {
                shown.push_str("\"…\"");
                quoted = true;
            }
            ('"', true) => quoted = false,
            (_, true) => {}
            ('\n', false) => shown.push(' '),
            (c, false) => shown.push(c),
        }
    }
    shown
}

fn apply_env(file: &mut FileConfig, env: &HashMap<String, String>) -> Result<(), ConfigError> {
    if let Some(listen) = env.get(ENV_LISTEN) {
        file.server.listen = listen.parse().map_err(|_| {
            ConfigError::new(
                ENV_LISTEN,
                format!("`{listen}` is not an address like 0.0.0.0:50051"),
            )
        })?;
    }
    if let Some(listen) = env.get(ENV_METRICS_LISTEN) {
        file.metrics.listen = listen.parse().map_err(|_| {
            ConfigError::new(
                ENV_METRICS_LISTEN,
                format!("`{listen}` is not an address like 0.0.0.0:9090"),
            )
        })?;
    }
    if let Some(level) = env.get(ENV_LOG_LEVEL) {
        file.telemetry.log_level = level.clone();
    }
    if let Some(format) = env.get(ENV_LOG_FORMAT) {
        file.telemetry.log_format = match format.as_str() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            _ => {
                return Err(ConfigError::new(
                    ENV_LOG_FORMAT,
                    "expected `json` or `text`",
                ));
            }
        };
    }
    if let Some(endpoint) = env
        .get(ENV_OTLP_ENDPOINT)
        .or_else(|| env.get(ENV_OTEL_ENDPOINT))
    {
        file.telemetry.otlp_endpoint = Some(endpoint.clone()).filter(|e| !e.is_empty());
    }
    if let Some(drain) = env.get(ENV_DRAIN_TIMEOUT_MS) {
        file.server.drain_timeout_ms = drain.parse().map_err(|_| {
            ConfigError::new(
                ENV_DRAIN_TIMEOUT_MS,
                "expected a whole number of milliseconds",
            )
        })?;
    }
    Ok(())
}

fn validate_limits(file: &FileConfig) -> Result<(), ConfigError> {
    let upstream = &file.upstream;
    if upstream.max_attempts == 0 {
        return Err(ConfigError::new(
            "upstream.max_attempts",
            "must be at least 1",
        ));
    }
    if upstream.max_concurrency_per_account == 0 {
        return Err(ConfigError::new(
            "upstream.max_concurrency_per_account",
            "must be at least 1",
        ));
    }
    if upstream.request_timeout_ms == 0 {
        return Err(ConfigError::new(
            "upstream.request_timeout_ms",
            "must be at least 1",
        ));
    }
    for (key, value, range) in [
        (
            "upstream.retry_budget_percent",
            u64::from(upstream.retry_budget_percent),
            0..=100_000,
        ),
        (
            "upstream.retry_budget_min_per_second",
            u64::from(upstream.retry_budget_min_per_second),
            0..=1_000_000,
        ),
        (
            "upstream.breaker_consecutive_failures",
            u64::from(upstream.breaker_consecutive_failures),
            1..=u64::from(u32::MAX),
        ),
        (
            "upstream.breaker_failure_rate_percent",
            u64::from(upstream.breaker_failure_rate_percent),
            1..=100,
        ),
        (
            "upstream.breaker_window",
            upstream.breaker_window as u64,
            1..=10_000,
        ),
        (
            "upstream.breaker_open_ms",
            upstream.breaker_open_ms,
            1..=u64::MAX,
        ),
    ] {
        if !range.contains(&value) {
            return Err(ConfigError::new(
                key,
                format!("must be from {} to {}", range.start(), range.end()),
            ));
        }
    }
    if upstream.breaker_max_open_ms < upstream.breaker_open_ms {
        return Err(ConfigError::new(
            "upstream.breaker_max_open_ms",
            "must be at least breaker_open_ms",
        ));
    }
    if upstream.retry_max_delay_ms < upstream.retry_initial_delay_ms {
        return Err(ConfigError::new(
            "upstream.retry_max_delay_ms",
            "must not be below retry_initial_delay_ms",
        ));
    }
    if upstream.fetch_timeout_ms == 0 {
        return Err(ConfigError::new(
            "upstream.fetch_timeout_ms",
            "must be at least 1",
        ));
    }
    if file.atlas.poll_initial_ms == 0 || file.atlas.poll_max_ms < file.atlas.poll_initial_ms {
        return Err(ConfigError::new(
            "atlas.poll_max_ms",
            "poll_initial_ms must be at least 1 and at most poll_max_ms",
        ));
    }
    if file.atlas.bucket_capacity == 0 || file.atlas.bucket_refill_per_minute == 0 {
        return Err(ConfigError::new(
            "atlas.bucket_capacity",
            "the bucket's capacity and refill must be at least 1",
        ));
    }
    if file.cache.max_bytes == 0 {
        return Err(ConfigError::new("cache.max_bytes", "must be at least 1"));
    }
    if file.server.max_chunks_per_query == 0 {
        return Err(ConfigError::new(
            "server.max_chunks_per_query",
            "must be at least 1",
        ));
    }
    if file.server.max_request_bytes == 0 {
        return Err(ConfigError::new(
            "server.max_request_bytes",
            "must be at least 1",
        ));
    }
    for (key, value) in [
        (
            "server.max_concurrent_requests",
            u64::from(file.server.max_concurrent_requests),
        ),
        (
            "server.max_concurrent_streams",
            u64::from(file.server.max_concurrent_streams),
        ),
        (
            "server.max_connections",
            u64::from(file.server.max_connections),
        ),
        (
            "server.handshake_timeout_ms",
            file.server.handshake_timeout_ms,
        ),
        (
            "server.keepalive_interval_ms",
            file.server.keepalive_interval_ms,
        ),
        (
            "server.keepalive_timeout_ms",
            file.server.keepalive_timeout_ms,
        ),
        (
            "server.max_connection_age_ms",
            file.server.max_connection_age_ms,
        ),
        ("jobs.max_jobs", file.jobs.max_jobs as u64),
    ] {
        if value == 0 {
            return Err(ConfigError::new(key, "must be at least 1"));
        }
    }
    if file.server.max_range_days == 0 {
        return Err(ConfigError::new(
            "server.max_range_days",
            "must be at least 1",
        ));
    }
    match (file.jobs.store, &file.jobs.redis) {
        (JobStoreKind::Memory, _) => {}
        (JobStoreKind::Redis, None) => {
            return Err(ConfigError::new(
                "jobs.redis",
                "required when jobs.store = \"redis\": url = { env = \"VAR\" } or { file = \"/path\" }",
            ));
        }
        (JobStoreKind::Redis, Some(_)) => {}
    }
    tracing_subscriber::EnvFilter::try_new(&file.telemetry.log_level)
        .map_err(|e| ConfigError::new("telemetry.log_level", e.to_string()))?;
    Ok(())
}

mod accounts;

pub use accounts::{
    AccountKind, AccountSettings, AtlasAccountConfig, AtlasCredentials, AtlasCredentialsConfig,
    AtlasSettings, ElasticAccountConfig, ElasticApiVersion, ElasticCredentialsConfig,
    ElasticSettings, ProviderAccountConfig, SecretRef, TeamBillingAccountConfig,
    TeamBillingCredentialsConfig, TeamBillingSettings, parse_base_url,
};
