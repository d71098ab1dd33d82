//! Caller identity in the configuration: `[server.tls]` (the gRPC port's certificate, reloaded from
//! its files, and the client CA that makes client certificates required) and `[auth]` (JWT
//! verification and the grants). Checked here; `auth::` builds the verifiers from it.

use super::ConfigError;
use serde::Deserialize;
use std::{net::SocketAddr, path::PathBuf};

/// A file costd reads (and re-reads when it changes): `{ file = "/path" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    pub file: PathBuf,
}

/// `[server.tls]`: TLS on the gRPC port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM. Re-read when the file changes (cert-manager rotation).
    pub cert: FileRef,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1). Re-read with the certificate.
    pub key: FileRef,
    /// CA certificates, PEM: when set, every caller must present a client certificate they issued.
    pub client_ca: Option<FileRef>,
}

/// `[auth]`: its presence turns authentication and deny-by-default authorization on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub jwt: Option<JwtConfig>,
    /// Who may see what; an authenticated caller no grant matches is refused.
    #[serde(default)]
    pub grants: Vec<GrantConfig>,
}

/// `[auth.jwt]`: bearer tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// A JWK Set on disk (re-read when a token names a `kid` it lacks and the file changed).
    pub jwks: Option<FileRef>,
    /// A JWK Set fetched over HTTPS (`http://` only on loopback), cached and refreshed.
    pub jwks_url: Option<String>,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of the token's).
    pub audience: String,
    /// Accepted `alg`s; asymmetric only.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u64,
    /// The claim naming the caller.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// How often a fetched JWK Set is fetched again, in seconds.
    #[serde(default = "default_jwks_refresh_seconds")]
    pub jwks_refresh_seconds: u64,
}

/// `[[auth.grants]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// A principal, exactly or as a glob (`spiffe://corp/ns/billing/*`).
    pub principal: String,
    /// Globs over provider account ids.
    pub accounts: Vec<String>,
    #[serde(default)]
    pub jobs: JobVisibility,
}

/// Which jobs a grant's callers see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobVisibility {
    /// Only the jobs they started.
    #[default]
    Own,
    All,
}

/// The JWT algorithms costd verifies: asymmetric ones only, so a public key can never be used as an
/// HMAC secret.
pub const ASYMMETRIC_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(String::from).to_vec()
}

fn default_leeway_seconds() -> u64 {
    30
}

fn default_principal_claim() -> String {
    "sub".to_string()
}

fn default_jwks_refresh_seconds() -> u64 {
    300
}

/// Checks what serde cannot: how callers authenticate, the algorithms, the globs and the health port.
pub fn validate(
    tls: Option<&TlsConfig>,
    auth: Option<&AuthConfig>,
    health_listen: Option<SocketAddr>,
) -> Result<(), ConfigError> {
    let mtls = tls.is_some_and(|tls| tls.client_ca.is_some());
    if health_listen.is_some() && tls.is_none() {
        return Err(ConfigError::new(
            "server.health_listen",
            "needs [server.tls]: without TLS, health is served on the gRPC port in plaintext",
        ));
    }
    let Some(auth) = auth else {
        if mtls {
            return Err(ConfigError::new(
                "server.tls.client_ca",
                "client certificates name callers for [[auth.grants]]; add an [auth] section",
            ));
        }
        return Ok(());
    };
    if auth.jwt.is_none() && !mtls {
        return Err(ConfigError::new(
            "auth",
            "no way to authenticate callers: add [auth.jwt] or server.tls.client_ca",
        ));
    }
    if let Some(jwt) = &auth.jwt {
        validate_jwt(jwt)?;
    }
    for (index, grant) in auth.grants.iter().enumerate() {
        let key = format!("auth.grants[{index}]");
        glob_pattern(&format!("{key}.principal"), &grant.principal)?;
        for (at, account) in grant.accounts.iter().enumerate() {
            glob_pattern(&format!("{key}.accounts[{at}]"), account)?;
        }
    }
    Ok(())
}

fn validate_jwt(jwt: &JwtConfig) -> Result<(), ConfigError> {
    match (&jwt.jwks, &jwt.jwks_url) {
        (Some(_), None) => {}
        (None, Some(url)) => {
            super::parse_base_url(url)
                .map_err(|message| ConfigError::new("auth.jwt.jwks_url", message))?;
        }
        _ => {
            return Err(ConfigError::new(
                "auth.jwt",
                "exactly one of jwks = { file = \"/path\" } or jwks_url is required",
            ));
        }
    }
    if jwt.algorithms.is_empty() {
        return Err(ConfigError::new(
            "auth.jwt.algorithms",
            "at least one algorithm is required",
        ));
    }
    for (index, algorithm) in jwt.algorithms.iter().enumerate() {
        if !ASYMMETRIC_ALGORITHMS.contains(&algorithm.as_str()) {
            return Err(ConfigError::new(
                format!("auth.jwt.algorithms[{index}]"),
                format!(
                    "`{algorithm}` is not accepted (never `none` nor an HMAC); one of {}",
                    ASYMMETRIC_ALGORITHMS.join(", ")
                ),
            ));
        }
    }
    if jwt.jwks_refresh_seconds == 0 {
        return Err(ConfigError::new(
            "auth.jwt.jwks_refresh_seconds",
            "must be at least 1",
        ));
    }
    Ok(())
}

fn glob_pattern(key: &str, text: &str) -> Result<(), ConfigError> {
    if text.is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    glob::Pattern::new(text)
        .map(|_| ())
        .map_err(|e| ConfigError::new(key, format!("not a glob: {e}")))
}
