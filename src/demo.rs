//! The embedded default: costd wired to the sandbox upstreams on loopback, one account per seeded team.

use crate::{
    config::{
        AccountKind, AccountSettings, CacheConfig, LogFormat, ServerConfig, Settings,
        TelemetryConfig, UpstreamConfig,
    },
    domain::ProviderAccountId,
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
                kind: AccountKind::TeamBilling {
                    team_id: team.id.to_string(),
                    token: SecretString::from(team.token.clone()),
                    pricing_sheet_id: None,
                },
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
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
        accounts,
    })
}
