//! Provider accounts in the configuration: their file shape, their validation per kind, and the
//! resolution of credential references into `secrecy` types.

use super::ConfigError;
use crate::{
    domain::{ProviderAccountId, ProviderKind, parse_decimal},
    providers::{atlas::AtlasCredentials, elastic::ApiVersion},
};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

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

pub(super) fn resolve_account(
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
