//! Provider accounts in the configuration: each kind's file shape, parsed in one place into typed
//! settings, and the resolution of credential references into `secrecy` types. Nothing here imports
//! a provider: the providers read the settings made here.

use super::ConfigError;
use crate::domain::{AtlasId, IdError, ProviderAccountId, ProviderKind, UpstreamId, parse_decimal};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, de::DeserializeOwned};
use std::{collections::HashMap, num::NonZeroU32, path::PathBuf};

/// Where a credential comes from: exactly one of an environment variable or a mounted file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// One provider account as written in the file. `kind` picks the shape, so a key of another kind is
/// an unknown key like any other.
///
/// Not serde's internally tagged enum: serde buffers such content before choosing the variant, which
/// loses the path of a bad key inside it, and every configuration error names its key.
#[derive(Debug, Clone)]
pub enum ProviderAccountConfig {
    TeamBilling(TeamBillingAccountConfig),
    Elastic(ElasticAccountConfig),
    Atlas(AtlasAccountConfig),
}

/// `kind = "team_billing"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamBillingAccountConfig {
    /// Unique id used in queries and results.
    pub id: String,
    pub display_name: Option<String>,
    /// Upstream base URL; `http://` only for loopback addresses. Unset: the upstream's public URL.
    pub base_url: Option<String>,
    /// Most requests per second costd sends this account, across all queries. Unset: no rate, only
    /// `upstream.max_concurrency_per_account` (and, for Atlas, its organization bucket).
    pub requests_per_second: Option<NonZeroU32>,
    /// The team whose costs to read.
    pub team_id: Option<String>,
    /// A fixed pricing sheet; unset means the upstream's latest effective one.
    pub pricing_sheet_id: Option<String>,
    #[serde(default)]
    pub credentials: TeamBillingCredentialsConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamBillingCredentialsConfig {
    pub token: Option<SecretRef>,
}

/// `kind = "elastic"`; `id`, `display_name`, `base_url` and `requests_per_second` as for team billing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticAccountConfig {
    pub id: String,
    pub display_name: Option<String>,
    pub base_url: Option<String>,
    pub requests_per_second: Option<NonZeroU32>,
    /// The organization whose costs to read.
    pub organization_id: Option<String>,
    /// `v2` (default) or `v1`.
    pub api_version: Option<ElasticApiVersion>,
    /// USD per ECU as an exact decimal string, e.g. "1.0" (the default) or "0.9725".
    pub usd_per_ecu: Option<String>,
    #[serde(default)]
    pub credentials: ElasticCredentialsConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticCredentialsConfig {
    pub api_key: Option<SecretRef>,
}

/// `kind = "atlas"`; `id`, `display_name`, `base_url` and `requests_per_second` as for team billing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtlasAccountConfig {
    pub id: String,
    pub display_name: Option<String>,
    pub base_url: Option<String>,
    pub requests_per_second: Option<NonZeroU32>,
    /// The organization id (24 lowercase hex digits).
    pub org_id: Option<String>,
    #[serde(default)]
    pub credentials: AtlasCredentialsConfig,
}

/// An API key pair (`public_key`, `private_key`) or a service account (`client_id`, `client_secret`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtlasCredentialsConfig {
    pub public_key: Option<SecretRef>,
    pub private_key: Option<SecretRef>,
    pub client_id: Option<SecretRef>,
    pub client_secret: Option<SecretRef>,
}

impl ProviderAccountConfig {
    /// Parses one `[[providers]]` table by its `kind`; errors name the key under `key`.
    pub fn parse(key: &str, mut table: toml::Table) -> Result<Self, ConfigError> {
        let kind = match table.remove("kind") {
            Some(toml::Value::String(kind)) => kind,
            Some(_) => return Err(ConfigError::new(format!("{key}.kind"), "must be a string")),
            None => {
                return Err(ConfigError::new(
                    format!("{key}.kind"),
                    IdError::ProviderKind.to_string(),
                ));
            }
        };
        let provider: ProviderKind = kind
            .parse()
            .map_err(|e: IdError| ConfigError::new(format!("{key}.kind"), e.to_string()))?;
        Ok(match provider {
            ProviderKind::TeamBilling => {
                ProviderAccountConfig::TeamBilling(parse_kind(key, table)?)
            }
            ProviderKind::Elastic => ProviderAccountConfig::Elastic(parse_kind(key, table)?),
            ProviderKind::Atlas => ProviderAccountConfig::Atlas(parse_kind(key, table)?),
        })
    }

    /// The credential references it makes, so their `COSTD_*` variables are known ones.
    pub fn secret_refs(&self) -> Vec<&SecretRef> {
        match self {
            ProviderAccountConfig::TeamBilling(account) => {
                account.credentials.token.iter().collect()
            }
            ProviderAccountConfig::Elastic(account) => account.credentials.api_key.iter().collect(),
            ProviderAccountConfig::Atlas(account) => {
                let credentials = &account.credentials;
                [
                    &credentials.public_key,
                    &credentials.private_key,
                    &credentials.client_id,
                    &credentials.client_secret,
                ]
                .into_iter()
                .flatten()
                .collect()
            }
        }
    }
}

fn parse_kind<T: DeserializeOwned>(key: &str, table: toml::Table) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(table).map_err(|error| {
        let path = error.path().to_string();
        let place = if path == "." {
            key.to_string()
        } else {
            format!("{key}.{path}")
        };
        // Upstream text and values written inline (a credential where a reference belongs) are echoed
        // by the parser's own messages; under `credentials` only the shape is said.
        let message = if path.starts_with("credentials") {
            "expected { env = \"VAR\" } or { file = \"/path\" }; credentials are never written inline"
                .to_string()
        } else {
            super::without_values(&error.into_inner().to_string())
        };
        ConfigError::new(place, message)
    })
}

/// A validated provider account with its resolved credentials.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub id: ProviderAccountId,
    pub display_name: String,
    pub base_url: reqwest::Url,
    /// Most requests per second to this account, across all queries.
    pub requests_per_second: Option<NonZeroU32>,
    pub kind: AccountKind,
}

impl AccountSettings {
    pub fn provider(&self) -> ProviderKind {
        match self.kind {
            AccountKind::TeamBilling(_) => ProviderKind::TeamBilling,
            AccountKind::Elastic(_) => ProviderKind::Elastic,
            AccountKind::Atlas(_) => ProviderKind::Atlas,
        }
    }
}

/// Kind-specific settings. `SecretString` never prints its value.
#[derive(Debug, Clone)]
pub enum AccountKind {
    TeamBilling(TeamBillingSettings),
    Elastic(ElasticSettings),
    Atlas(AtlasSettings),
}

impl AccountKind {
    /// Every credential of the account, in each form it is sent (Basic sends `id:secret` in base64),
    /// so upstream text can be searched for them.
    pub fn secrets(&self) -> Vec<SecretString> {
        match self {
            AccountKind::TeamBilling(team) => vec![team.token.clone()],
            AccountKind::Elastic(elastic) => vec![elastic.api_key.clone()],
            AccountKind::Atlas(atlas) => match &atlas.credentials {
                AtlasCredentials::Digest { private_key, .. } => vec![private_key.clone()],
                AtlasCredentials::ServiceAccount {
                    client_id,
                    client_secret,
                } => {
                    use base64::Engine as _;
                    let basic = base64::engine::general_purpose::STANDARD
                        .encode(format!("{client_id}:{}", client_secret.expose_secret()));
                    vec![client_secret.clone(), SecretString::from(basic)]
                }
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct TeamBillingSettings {
    pub team_id: UpstreamId,
    pub token: SecretString,
    pub pricing_sheet_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ElasticSettings {
    pub organization_id: UpstreamId,
    pub api_key: SecretString,
    pub api_version: ElasticApiVersion,
    /// Exact, at most 5 decimal places, so ECU amounts (at most 4) convert to whole nanos.
    pub usd_per_ecu: Decimal,
}

#[derive(Debug, Clone)]
pub struct AtlasSettings {
    pub org_id: AtlasId,
    pub credentials: AtlasCredentials,
}

/// Which Elastic API an account reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElasticApiVersion {
    V1,
    V2,
}

/// The credentials of one Atlas account.
#[derive(Debug, Clone)]
pub enum AtlasCredentials {
    /// API key pair: the public key is the Digest username, the private key its password.
    Digest {
        public_key: String,
        private_key: SecretString,
    },
    /// Service account: OAuth2 client credentials.
    ServiceAccount {
        client_id: String,
        client_secret: SecretString,
    },
}

pub(super) fn resolve_account(
    key: &str,
    account: &ProviderAccountConfig,
    env: &HashMap<String, String>,
) -> Result<AccountSettings, ConfigError> {
    let secrets = Secrets { key, env };
    let (id, display_name, base_url, requests_per_second, kind) = match account {
        ProviderAccountConfig::TeamBilling(team) => (
            &team.id,
            &team.display_name,
            &team.base_url,
            team.requests_per_second,
            AccountKind::TeamBilling(TeamBillingSettings {
                team_id: upstream_id(key, "team_id", &team.team_id)?,
                token: secrets.take("token", &team.credentials.token)?,
                pricing_sheet_id: team.pricing_sheet_id.clone(),
            }),
        ),
        ProviderAccountConfig::Elastic(elastic) => (
            &elastic.id,
            &elastic.display_name,
            &elastic.base_url,
            elastic.requests_per_second,
            AccountKind::Elastic(ElasticSettings {
                organization_id: upstream_id(key, "organization_id", &elastic.organization_id)?,
                api_key: secrets.take("api_key", &elastic.credentials.api_key)?,
                api_version: elastic.api_version.unwrap_or(ElasticApiVersion::V2),
                usd_per_ecu: parse_usd_per_ecu(
                    &format!("{key}.usd_per_ecu"),
                    elastic.usd_per_ecu.as_deref(),
                )?,
            }),
        ),
        ProviderAccountConfig::Atlas(atlas) => {
            let org_id = AtlasId::parse(required(key, "org_id", &atlas.org_id)?)
                .map_err(|e| ConfigError::new(format!("{key}.org_id"), e.to_string()))?;
            (
                &atlas.id,
                &atlas.display_name,
                &atlas.base_url,
                atlas.requests_per_second,
                AccountKind::Atlas(AtlasSettings {
                    org_id,
                    credentials: atlas_credentials(&secrets, &atlas.credentials)?,
                }),
            )
        }
    };
    let id = ProviderAccountId::parse(id)
        .map_err(|e| ConfigError::new(format!("{key}.id"), e.to_string()))?;
    let base_url = parse_base_url(base_url.as_deref().unwrap_or(default_base_url(&kind)))
        .map_err(|m| ConfigError::new(format!("{key}.base_url"), m))?;
    Ok(AccountSettings {
        display_name: display_name.clone().unwrap_or_else(|| id.to_string()),
        id,
        base_url,
        requests_per_second,
        kind,
    })
}

fn atlas_credentials(
    secrets: &Secrets<'_>,
    credentials: &AtlasCredentialsConfig,
) -> Result<AtlasCredentials, ConfigError> {
    if credentials.public_key.is_some() || credentials.private_key.is_some() {
        if let Some(name) = [
            ("client_id", &credentials.client_id),
            ("client_secret", &credentials.client_secret),
        ]
        .into_iter()
        .find_map(|(name, reference)| reference.as_ref().map(|_| name))
        {
            return Err(ConfigError::new(
                format!("{}.credentials.{name}", secrets.key),
                "an API key pair and a service account are two ways in: give one",
            ));
        }
        return Ok(AtlasCredentials::Digest {
            public_key: secrets
                .take("public_key", &credentials.public_key)?
                .expose_secret()
                .to_string(),
            private_key: secrets.take("private_key", &credentials.private_key)?,
        });
    }
    if credentials.client_id.is_some() || credentials.client_secret.is_some() {
        return Ok(AtlasCredentials::ServiceAccount {
            client_id: secrets
                .take("client_id", &credentials.client_id)?
                .expose_secret()
                .to_string(),
            client_secret: secrets.take("client_secret", &credentials.client_secret)?,
        });
    }
    Err(ConfigError::new(
        format!("{}.credentials", secrets.key),
        "an API key pair (public_key, private_key) or a service account (client_id, client_secret)",
    ))
}

/// The public URL of each upstream, used when an account sets no `base_url`.
fn default_base_url(kind: &AccountKind) -> &'static str {
    match kind {
        AccountKind::TeamBilling(_) => "https://api.catalyzed.ai",
        AccountKind::Elastic(elastic) => match elastic.api_version {
            ElasticApiVersion::V1 => "https://api.elastic-cloud.com",
            ElasticApiVersion::V2 => "https://billing.elastic-cloud.com",
        },
        AccountKind::Atlas(_) => "https://cloud.mongodb.com",
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

fn upstream_id(key: &str, name: &str, value: &Option<String>) -> Result<UpstreamId, ConfigError> {
    UpstreamId::parse(required(key, name, value)?)
        .map_err(|e| ConfigError::new(format!("{key}.{name}"), e.to_string()))
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

/// Resolves one account's credential references.
struct Secrets<'a> {
    key: &'a str,
    env: &'a HashMap<String, String>,
}

impl Secrets<'_> {
    fn take(&self, name: &str, reference: &Option<SecretRef>) -> Result<SecretString, ConfigError> {
        let key = format!("{}.credentials.{name}", self.key);
        let Some(reference) = reference else {
            return Err(ConfigError::new(
                key,
                "required: { env = \"VAR\" } or { file = \"/path\" }",
            ));
        };
        resolve_secret(&key, reference, self.env)
    }
}

/// A credential's value from its reference, for the key `key` names.
pub(super) fn resolve_secret(
    key: &str,
    reference: &SecretRef,
    env: &HashMap<String, String>,
) -> Result<SecretString, ConfigError> {
    let value = match (&reference.env, &reference.file) {
        (Some(var), None) => env.get(var).cloned().ok_or_else(|| {
            ConfigError::new(key, format!("environment variable `{var}` is not set"))
        })?,
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(key, format!("cannot read {}: {}", path.display(), e.kind()))
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
