//! Configuration: defaults, then an optional TOML file, then `COSTD_*` environment overrides, validated
//! into typed [`Settings`]. Credentials are references (env var or mounted file) resolved into
//! `secrecy` types in `accounts.rs` and nowhere else.

use secrecy::{ExposeSecret, SecretString};
use std::{collections::HashMap, fmt, path::Path, time::Duration};

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
/// The client commands' bearer token; the server leaves it alone (a shell may hold it for both).
pub const ENV_CLIENT_TOKEN: &str = "COSTD_TOKEN";

const KNOWN_ENV: [&str; 8] = [
    ENV_CONFIG_FILE,
    ENV_LISTEN,
    ENV_LOG_LEVEL,
    ENV_LOG_FORMAT,
    ENV_OTLP_ENDPOINT,
    ENV_DRAIN_TIMEOUT_MS,
    ENV_METRICS_LISTEN,
    ENV_CLIENT_TOKEN,
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
    pub auth: Option<AuthConfig>,
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
        /// How long a job's poller lease lasts unless renewed.
        lease_ttl: Duration,
        /// `jobs.redis.ca`'s certificates (PEM), read at load.
        ca_certificates: Option<Vec<u8>>,
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
        auth::validate(
            file.server.tls.as_ref(),
            file.auth.as_ref(),
            file.server.health_listen,
        )?;
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
                lease_ttl: Duration::from_millis(redis.lease_ttl_ms),
                ca_certificates: redis.ca.as_ref().map(redis_ca).transpose()?,
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
            auth: file.auth,
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

/// `jobs.redis.ca` read: PEM with at least one certificate, all of them well-formed.
fn redis_ca(reference: &FileRef) -> Result<Vec<u8>, ConfigError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    const KEY: &str = "jobs.redis.ca";
    let pem = std::fs::read(&reference.file).map_err(|e| {
        ConfigError::new(
            KEY,
            format!("cannot read {}: {e}", reference.file.display()),
        )
    })?;
    let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match certificates {
        Ok(certificates) if !certificates.is_empty() => Ok(pem),
        _ => Err(ConfigError::new(
            KEY,
            format!("{} holds no PEM certificate", reference.file.display()),
        )),
    }
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

/// The lease TTLs a replica can keep renewed, in milliseconds.
const LEASE_TTL_MS: std::ops::RangeInclusive<u64> = 1_000..=600_000;

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
    if let Some(redis) = &file.jobs.redis
        && !LEASE_TTL_MS.contains(&redis.lease_ttl_ms)
    {
        // Below a second a renewal (every third of it) could not outlast one slow store call.
        return Err(ConfigError::new(
            "jobs.redis.lease_ttl_ms",
            format!(
                "must be from {} to {}",
                LEASE_TTL_MS.start(),
                LEASE_TTL_MS.end()
            ),
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
    if file.server.max_queue_delay_us > 0 && file.server.queue_delay_interval_ms == 0 {
        return Err(ConfigError::new(
            "server.queue_delay_interval_ms",
            "must be at least 1 while server.max_queue_delay_us sheds",
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
mod auth;
mod sections;

pub use accounts::{
    AccountKind, AccountSettings, AtlasAccountConfig, AtlasCredentials, AtlasCredentialsConfig,
    AtlasSettings, ElasticAccountConfig, ElasticApiVersion, ElasticCredentialsConfig,
    ElasticSettings, ProviderAccountConfig, SecretRef, TeamBillingAccountConfig,
    TeamBillingCredentialsConfig, TeamBillingSettings, parse_base_url,
};
pub use auth::{
    ASYMMETRIC_ALGORITHMS, AuthConfig, FileRef, GrantConfig, JobVisibility, JwtConfig, TlsConfig,
};
pub use sections::{
    AtlasConfig, CacheConfig, FileConfig, JobStoreKind, JobsConfig, LogFormat, MetricsConfig,
    RedisConfig, ServerConfig, TelemetryConfig, UpstreamConfig,
};
