//! The embedded default: costd wired to the sandbox upstreams on loopback, one account per seeded team
//! and Atlas and Elastic organization.

use crate::{
    config::{
        AccountKind, AccountSettings, AtlasConfig, AtlasCredentials, AtlasSettings, CacheConfig,
        ElasticApiVersion, ElasticSettings, JobStoreSettings, JobsConfig, LogFormat, MetricsConfig,
        ServerConfig, Settings, TeamBillingSettings, TelemetryConfig, UpstreamConfig,
    },
    domain::{AtlasId, ProviderAccountId, UpstreamId},
    sandbox::SandboxHandle,
};
use secrecy::SecretString;
use std::net::SocketAddr;

/// Settings for a costd that reads every seeded team of `sandbox`, listening on `listen`.
pub fn settings(sandbox: &SandboxHandle, listen: SocketAddr) -> Result<Settings, String> {
    let base_url = reqwest::Url::parse(&sandbox.base_url()).map_err(|e| e.to_string())?;
    let accounts = sandbox
        .dataset()
        .teams()
        .iter()
        .map(|team| {
            let id = ProviderAccountId::parse(&team.id.replace('_', "-"))
                .map_err(|e| format!("{}: {e}", team.id))?;
            Ok(AccountSettings {
                id,
                display_name: team.name.to_string(),
                base_url: base_url.clone(),
                requests_per_second: None,
                kind: AccountKind::TeamBilling(TeamBillingSettings {
                    team_id: UpstreamId::parse(team.id).map_err(|e| format!("{}: {e}", team.id))?,
                    token: SecretString::from(team.token.clone()),
                    pricing_sheet_id: None,
                }),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut accounts = accounts;
    // Atlas: API keys (Digest) for every organization but the second, which uses its service account,
    // so the demo shows both ways in.
    for (index, org) in sandbox.atlas().dataset().orgs().iter().enumerate() {
        let id = account_id("atlas", org.name, "")?;
        let credentials = if index == 1 {
            AtlasCredentials::ServiceAccount {
                client_id: org.service_account.client_id.clone(),
                client_secret: SecretString::from(org.service_account.client_secret.clone()),
            }
        } else {
            AtlasCredentials::Digest {
                public_key: org.api_key.public_key.clone(),
                private_key: SecretString::from(org.api_key.private_key.clone()),
            }
        };
        accounts.push(AccountSettings {
            id,
            display_name: org.name.to_string(),
            base_url: base_url.clone(),
            requests_per_second: None,
            kind: AccountKind::Atlas(AtlasSettings {
                org_id: AtlasId::parse(org.id).map_err(|e| format!("{}: {e}", org.id))?,
                credentials,
            }),
        });
    }
    // Elastic: a v2 account per organization, and the first organization once more through v1, so the
    // two APIs can be compared on the same data.
    for (index, org) in sandbox
        .dataset()
        .elastic()
        .organizations()
        .iter()
        .enumerate()
    {
        let versions: &[(ElasticApiVersion, &str)] = if index == 0 {
            &[(ElasticApiVersion::V2, ""), (ElasticApiVersion::V1, "-v1")]
        } else {
            &[(ElasticApiVersion::V2, "")]
        };
        let organization_id = UpstreamId::parse(org.id).map_err(|e| format!("{}: {e}", org.id))?;
        for (api_version, suffix) in versions {
            let id = account_id("elastic", org.name, suffix)?;
            accounts.push(AccountSettings {
                id,
                display_name: org.name.to_string(),
                base_url: base_url.clone(),
                requests_per_second: None,
                kind: AccountKind::Elastic(ElasticSettings {
                    organization_id: organization_id.clone(),
                    api_key: SecretString::from(org.api_key.clone()),
                    api_version: *api_version,
                    usd_per_ecu: rust_decimal::Decimal::ONE,
                }),
            });
        }
    }
    Ok(Settings {
        server: ServerConfig {
            listen,
            ..ServerConfig::default()
        },
        telemetry: TelemetryConfig {
            log_format: LogFormat::Text,
            ..TelemetryConfig::default()
        },
        upstream: UpstreamConfig::default(),
        cache: CacheConfig::default(),
        atlas: AtlasConfig::default(),
        jobs: JobsConfig::default(),
        job_store: JobStoreSettings::Memory,
        // Any free port beside the API; `costd demo` names its own.
        metrics: MetricsConfig {
            listen: SocketAddr::new(listen.ip(), 0),
            ..MetricsConfig::default()
        },
        accounts,
    })
}

/// `{prefix}-{first word of the name}{suffix}`, e.g. `atlas-kestrel` for "Kestrel Freight".
fn account_id(prefix: &str, name: &str, suffix: &str) -> Result<ProviderAccountId, String> {
    let short = name
        .split_whitespace()
        .next()
        .unwrap_or("org")
        .to_lowercase();
    ProviderAccountId::parse(&format!("{prefix}-{short}{suffix}"))
        .map_err(|e| format!("{name}: {e}"))
}
