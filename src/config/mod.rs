//! Configuration: defaults, then an optional TOML file, then `COSTD_*` environment overrides, validated
//! into typed [`Settings`]. Credentials are references (env var or mounted file) resolved into
//! `secrecy` types here and nowhere else.

use crate::{
    domain::{ProviderAccountId, ProviderKind, parse_decimal},
    providers::{atlas::AtlasCredentials, elastic::ApiVersion},
};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

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

const KNOWN_ENV: [&str; 6] = [
    ENV_CONFIG_FILE,
    ENV_LISTEN,
    ENV_LOG_LEVEL,
    ENV_LOG_FORMAT,
    ENV_OTLP_ENDPOINT,
    ENV_DRAIN_TIMEOUT_MS,
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
    pub providers: Vec<ProviderAccountConfig>,
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
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_level: "info".to_string(),
            log_format: LogFormat::Json,
            otlp_endpoint: None,
            service_name: "costd".to_string(),
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
        }
    }
}

/// The job table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// How long a finished job can still be read, in seconds.
    pub retention_seconds: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            retention_seconds: 3600,
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

/// Where a credential comes from: exactly one of an environment variable or a mounted file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// One provider account as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderAccountConfig {
    /// `team_billing`, `elastic` or `atlas`.
    pub kind: String,
    /// Unique id used in queries and results.
    pub id: String,
    pub display_name: Option<String>,
    /// Upstream base URL; `http://` only for loopback addresses. Unset: the upstream's public URL.
    pub base_url: Option<String>,
    /// Named credential references; which names a kind needs is checked per kind.
    #[serde(default)]
    pub credentials: BTreeMap<String, SecretRef>,
    /// team_billing: the team whose costs to read.
    pub team_id: Option<String>,
    /// team_billing: a fixed pricing sheet; unset means the upstream's latest effective one.
    pub pricing_sheet_id: Option<String>,
    /// elastic: the organization whose costs to read.
    pub organization_id: Option<String>,
    /// elastic: `v2` (default) or `v1`.
    pub api_version: Option<String>,
    /// elastic: USD per ECU as an exact decimal string, e.g. "1.0" (the default) or "0.9725".
    pub usd_per_ecu: Option<String>,
    /// atlas: the organization id (24 lowercase hex digits).
    pub org_id: Option<String>,
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
    pub accounts: Vec<AccountSettings>,
}

/// A validated provider account with its resolved credentials.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub id: ProviderAccountId,
    pub display_name: String,
    pub base_url: reqwest::Url,
    pub kind: AccountKind,
}

impl AccountSettings {
    pub fn provider(&self) -> ProviderKind {
        match self.kind {
            AccountKind::TeamBilling { .. } => ProviderKind::TeamBilling,
            AccountKind::Elastic { .. } => ProviderKind::Elastic,
            AccountKind::Atlas { .. } => ProviderKind::Atlas,
        }
    }
}

/// Kind-specific settings. `SecretString` never prints its value.
#[derive(Debug, Clone)]
pub enum AccountKind {
    TeamBilling {
        team_id: String,
        token: SecretString,
        pricing_sheet_id: Option<String>,
    },
    Elastic {
        organization_id: String,
        api_key: SecretString,
        api_version: ApiVersion,
        /// Exact, at most 5 decimal places, so ECU amounts (at most 4) convert to whole nanos.
        usd_per_ecu: Decimal,
    },
    Atlas {
        org_id: String,
        credentials: AtlasCredentials,
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
        let referenced: Vec<&str> = file
            .providers
            .iter()
            .flat_map(|p| p.credentials.values())
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
        let mut accounts: Vec<AccountSettings> = Vec::with_capacity(file.providers.len());
        for (index, account) in file.providers.iter().enumerate() {
            let resolved = resolve_account(&format!("providers[{index}]"), account, env)?;
            if accounts.iter().any(|a| a.id == resolved.id) {
                return Err(ConfigError::new(
                    format!("providers[{index}].id"),
                    format!("`{}` is used by another account", resolved.id),
                ));
            }
            accounts.push(resolved);
        }
        Ok(Settings {
            server: file.server,
            telemetry: file.telemetry,
            upstream: file.upstream,
            cache: file.cache,
            atlas: file.atlas,
            jobs: file.jobs,
            accounts,
        })
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.server.drain_timeout_ms)
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
            e.message().replace('\n', " "),
        )
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.message().replace('\n', " ");
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

fn apply_env(file: &mut FileConfig, env: &HashMap<String, String>) -> Result<(), ConfigError> {
    if let Some(listen) = env.get(ENV_LISTEN) {
        file.server.listen = listen.parse().map_err(|_| {
            ConfigError::new(
                ENV_LISTEN,
                format!("`{listen}` is not an address like 0.0.0.0:50051"),
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
    if file.server.max_range_days == 0 {
        return Err(ConfigError::new(
            "server.max_range_days",
            "must be at least 1",
        ));
    }
    tracing_subscriber::EnvFilter::try_new(&file.telemetry.log_level)
        .map_err(|e| ConfigError::new("telemetry.log_level", e.to_string()))?;
    Ok(())
}

fn resolve_account(
    key: &str,
    account: &ProviderAccountConfig,
    env: &HashMap<String, String>,
) -> Result<AccountSettings, ConfigError> {
    let id = ProviderAccountId::parse(&account.id)
        .map_err(|e| ConfigError::new(format!("{key}.id"), e.to_string()))?;
    let provider: ProviderKind = account.kind.parse().map_err(|e: crate::domain::IdError| {
        ConfigError::new(format!("{key}.kind"), e.to_string())
    })?;
    let kind = match provider {
        ProviderKind::TeamBilling => {
            let credentials = Credentials::new(key, &account.credentials, env, &["token"])?;
            let team_id = required(key, "team_id", &account.team_id)?;
            if !is_url_segment(team_id) {
                return Err(ConfigError::new(
                    format!("{key}.team_id"),
                    "must be 1 to 128 characters of letters, digits, '-', '_' and '.'",
                ));
            }
            AccountKind::TeamBilling {
                team_id: team_id.to_string(),
                token: credentials.take("token")?,
                pricing_sheet_id: account.pricing_sheet_id.clone(),
            }
        }
        ProviderKind::Elastic => {
            let organization_id = required(key, "organization_id", &account.organization_id)?;
            if !is_url_segment(organization_id) {
                return Err(ConfigError::new(
                    format!("{key}.organization_id"),
                    "must be 1 to 128 characters of letters, digits, '-', '_' and '.'",
                ));
            }
            let api_version = match account.api_version.as_deref() {
                None | Some("v2") => ApiVersion::V2,
                Some("v1") => ApiVersion::V1,
                Some(_) => {
                    return Err(ConfigError::new(
                        format!("{key}.api_version"),
                        "expected `v1` or `v2`",
                    ));
                }
            };
            let credentials = Credentials::new(key, &account.credentials, env, &["api_key"])?;
            AccountKind::Elastic {
                organization_id: organization_id.to_string(),
                api_key: credentials.take("api_key")?,
                api_version,
                usd_per_ecu: parse_usd_per_ecu(
                    &format!("{key}.usd_per_ecu"),
                    account.usd_per_ecu.as_deref(),
                )?,
            }
        }
        ProviderKind::Atlas => {
            let org_id = required(key, "org_id", &account.org_id)?;
            if !crate::providers::atlas::normalize::is_atlas_id(org_id) {
                return Err(ConfigError::new(
                    format!("{key}.org_id"),
                    "must be 24 lowercase hexadecimal digits",
                ));
            }
            let credentials = Credentials::new(
                key,
                &account.credentials,
                env,
                &["public_key", "private_key", "client_id", "client_secret"],
            )?;
            let credentials = if account.credentials.contains_key("public_key")
                || account.credentials.contains_key("private_key")
            {
                AtlasCredentials::Digest {
                    public_key: credentials.take("public_key")?.expose_secret().to_string(),
                    private_key: credentials.take("private_key")?,
                }
            } else if account.credentials.contains_key("client_id")
                || account.credentials.contains_key("client_secret")
            {
                AtlasCredentials::ServiceAccount {
                    client_id: credentials.take("client_id")?.expose_secret().to_string(),
                    client_secret: credentials.take("client_secret")?,
                }
            } else {
                return Err(ConfigError::new(
                    format!("{key}.credentials"),
                    "an API key pair (public_key, private_key) or a service account (client_id, client_secret)",
                ));
            };
            AccountKind::Atlas {
                org_id: org_id.to_string(),
                credentials,
            }
        }
    };
    forbid_foreign_fields(key, provider, account)?;
    let base_url = account
        .base_url
        .as_deref()
        .unwrap_or(default_base_url(&kind));
    let base_url =
        parse_base_url(base_url).map_err(|m| ConfigError::new(format!("{key}.base_url"), m))?;
    Ok(AccountSettings {
        display_name: account
            .display_name
            .clone()
            .unwrap_or_else(|| account.id.clone()),
        id,
        base_url,
        kind,
    })
}

/// Kind-specific keys set on an account of another kind are mistakes, not noise.
fn forbid_foreign_fields(
    key: &str,
    provider: ProviderKind,
    account: &ProviderAccountConfig,
) -> Result<(), ConfigError> {
    let kind_specific = [
        (
            "team_id",
            ProviderKind::TeamBilling,
            account.team_id.is_some(),
        ),
        (
            "pricing_sheet_id",
            ProviderKind::TeamBilling,
            account.pricing_sheet_id.is_some(),
        ),
        (
            "organization_id",
            ProviderKind::Elastic,
            account.organization_id.is_some(),
        ),
        (
            "api_version",
            ProviderKind::Elastic,
            account.api_version.is_some(),
        ),
        (
            "usd_per_ecu",
            ProviderKind::Elastic,
            account.usd_per_ecu.is_some(),
        ),
    ];
    match kind_specific
        .iter()
        .find(|(_, owner, set)| *set && *owner != provider)
    {
        Some((name, _, _)) => Err(ConfigError::new(
            format!("{key}.{name}"),
            format!("not a setting of kind `{provider}`"),
        )),
        None => Ok(()),
    }
}

/// The public URL of each upstream, used when an account sets no `base_url`.
fn default_base_url(kind: &AccountKind) -> &'static str {
    match kind {
        AccountKind::TeamBilling { .. } => "https://api.catalyzed.ai",
        AccountKind::Elastic {
            api_version: ApiVersion::V1,
            ..
        } => "https://api.elastic-cloud.com",
        AccountKind::Elastic {
            api_version: ApiVersion::V2,
            ..
        } => "https://billing.elastic-cloud.com",
        AccountKind::Atlas { .. } => "https://cloud.mongodb.com",
    }
}

/// An exchange rate given as a decimal string (TOML floats are binary and would not be exact).
fn parse_usd_per_ecu(key: &str, text: Option<&str>) -> Result<Decimal, ConfigError> {
    let Some(text) = text else {
        return Ok(Decimal::ONE);
    };
    let rate = parse_decimal(text.trim()).map_err(|e| ConfigError::new(key, e.to_string()))?;
    if rate <= Decimal::ZERO {
        return Err(ConfigError::new(key, "must be positive"));
    }
    // ECU amounts have at most 4 decimal places; 4 + 5 keeps every USD amount a whole number of nanos.
    if rate.normalize().scale() > 5 {
        return Err(ConfigError::new(
            key,
            "at most 5 decimal places, so every converted amount is exact to the nano",
        ));
    }
    Ok(rate)
}

fn required<'a>(key: &str, name: &str, value: &'a Option<String>) -> Result<&'a str, ConfigError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ConfigError::new(format!("{key}.{name}"), "required for this kind"))
}

fn is_url_segment(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && text != "."
        && text != ".."
}

/// `https://` anywhere; `http://` only to loopback, where there is no network to protect a token on.
pub fn parse_base_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err("`http://` is only allowed for loopback addresses; use https".to_string()),
        other => Err(format!("unsupported scheme `{other}`")),
    }
}

/// The credential references of one account, checked against the names its kind takes.
struct Credentials<'a> {
    key: &'a str,
    refs: &'a BTreeMap<String, SecretRef>,
    env: &'a HashMap<String, String>,
}

impl<'a> Credentials<'a> {
    /// A name the kind does not take is refused first: it is usually a misspelling of one it does.
    fn new(
        key: &'a str,
        refs: &'a BTreeMap<String, SecretRef>,
        env: &'a HashMap<String, String>,
        expected: &[&str],
    ) -> Result<Self, ConfigError> {
        if let Some(name) = refs.keys().find(|name| !expected.contains(&name.as_str())) {
            return Err(ConfigError::new(
                format!("{key}.credentials.{name}"),
                format!(
                    "not a credential of this kind (expected: {})",
                    expected.join(", ")
                ),
            ));
        }
        Ok(Credentials { key, refs, env })
    }

    fn take(&self, name: &str) -> Result<SecretString, ConfigError> {
        let key = format!("{}.credentials.{name}", self.key);
        let Some(reference) = self.refs.get(name) else {
            return Err(ConfigError::new(
                key,
                "required: { env = \"VAR\" } or { file = \"/path\" }",
            ));
        };
        let value = match (&reference.env, &reference.file) {
            (Some(var), None) => self.env.get(var).cloned().ok_or_else(|| {
                ConfigError::new(&key, format!("environment variable `{var}` is not set"))
            })?,
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    &key,
                    format!("cannot read {}: {}", path.display(), e.kind()),
                )
            })?,
            _ => return Err(ConfigError::new(key, "set exactly one of `env` or `file`")),
        };
        // Mounted secrets usually end with a newline that is not part of the credential.
        let value = value.trim_end_matches(['\n', '\r']).to_string();
        if value.is_empty() {
            return Err(ConfigError::new(key, "the credential is empty"));
        }
        Ok(SecretString::from(value))
    }
}

#[cfg(test)]
mod tests;
