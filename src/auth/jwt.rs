//! Bearer JWTs: signature by a JWK Set's key looked up by `kid`, then `iss`, `aud`, `exp`, `nbf` with a
//! small leeway. A verified token is remembered by its SHA-256 until it expires, so a caller sending
//! the same token pays one hash per call, not a signature check.

use super::{Principal, Rejection, SetupError};
use crate::{config::JwtConfig, sync::lock};
use base64::Engine as _;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, JwkSet},
};
use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    path::PathBuf,
    str::FromStr,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Tokens remembered at once; a remembered token costs its hash, a principal and an expiry.
const REMEMBERED_TOKENS: u64 = 100_000;

/// Shortest time between two fetches of a remote JWK Set caused by unknown `kid`s.
const KID_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Where the JWK Set comes from.
enum KeySource {
    File(PathBuf),
    Url {
        url: reqwest::Url,
        http: reqwest::Client,
        refresh: Duration,
    },
}

/// The keys by `kid`, and when they were read.
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    read_at: Option<Instant>,
}

pub struct JwtVerifier {
    source: KeySource,
    keys: Mutex<Keys>,
    /// One fetch at a time; callers that find one running wait for it.
    fetching: tokio::sync::Mutex<()>,
    /// One per accepted algorithm: the library checks every listed algorithm against the key's
    /// family, so a validation lists exactly the token's own.
    validations: HashMap<Algorithm, Validation>,
    principal_claim: String,
    leeway_seconds: u64,
    /// Verified tokens by SHA-256: the principal and the last second (`exp` + leeway) it is valid.
    verified: moka::sync::Cache<[u8; 32], (Principal, u64)>,
}

impl JwtVerifier {
    pub async fn new(config: &JwtConfig, http: reqwest::Client) -> Result<Self, SetupError> {
        let validations = config
            .algorithms
            .iter()
            .filter_map(|name| Algorithm::from_str(name).ok())
            .map(|algorithm| {
                let mut validation = Validation::new(algorithm);
                validation.leeway = config.leeway_seconds;
                validation.validate_nbf = true;
                validation.set_issuer(&[&config.issuer]);
                validation.set_audience(&[&config.audience]);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                (algorithm, validation)
            })
            .collect();
        let source = match (&config.jwks, &config.jwks_url) {
            (Some(file), _) => KeySource::File(file.file.clone()),
            (None, Some(url)) => KeySource::Url {
                url: crate::config::parse_base_url(url).map_err(SetupError::Jwks)?,
                http,
                refresh: Duration::from_secs(config.jwks_refresh_seconds),
            },
            (None, None) => return Err(SetupError::Jwks("no JWK Set configured".into())),
        };
        let verifier = JwtVerifier {
            source,
            keys: Mutex::new(Keys {
                by_kid: HashMap::new(),
                read_at: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
            validations,
            principal_claim: config.principal_claim.clone(),
            leeway_seconds: config.leeway_seconds,
            verified: moka::sync::Cache::builder()
                .max_capacity(REMEMBERED_TOKENS)
                .build(),
        };
        match (&verifier.source, verifier.read_keys().await) {
            // A file is ours to get right: a bad one stops the start.
            (KeySource::File(_), Err(error)) => return Err(SetupError::Jwks(error)),
            // A JWKS endpoint may be down for a while: tokens wait for it, probes do not.
            (KeySource::Url { .. }, Err(error)) => {
                tracing::warn!(%error, "cannot fetch the JWK Set; retrying when a token needs it")
            }
            (_, Ok(())) => {}
        }
        Ok(verifier)
    }

    /// The principal a token names, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Principal, Rejection> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        if let Some((principal, valid_until)) = self.verified.get(&hash) {
            if now <= valid_until {
                return Ok(principal);
            }
            self.verified.invalidate(&hash);
        }
        let (principal, exp) = self.verify_fresh(token).await?;
        self.verified.insert(
            hash,
            (principal.clone(), exp.saturating_add(self.leeway_seconds)),
        );
        Ok(principal)
    }

    async fn verify_fresh(&self, token: &str) -> Result<(Principal, u64), Rejection> {
        if header_alg(token)?.eq_ignore_ascii_case("none") {
            return Err(Rejection::AlgNone);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::MalformedToken)?;
        let validation = self
            .validations
            .get(&header.alg)
            .ok_or(Rejection::AlgorithmNotAllowed)?;
        let kid = header.kid.ok_or(Rejection::UnknownKid)?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                self.refresh_for_unknown_kid().await?;
                self.key(&kid).ok_or(Rejection::UnknownKid)?
            }
        };
        let (key, key_algorithm) = key;
        if key_algorithm.is_some_and(|alg| alg != header.alg) || !same_family(&key, header.alg) {
            return Err(Rejection::AlgorithmNotAllowed);
        }
        self.refresh_if_due().await;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token, &key, validation,
        )
        .map_err(|error| rejection_of(error.kind()))?
        .claims;
        let principal = claims
            .get(&self.principal_claim)
            .and_then(serde_json::Value::as_str)
            .filter(|name| !name.is_empty())
            .ok_or(Rejection::MissingPrincipal)?;
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .ok_or(Rejection::MalformedToken)?;
        Ok((Principal::new(principal), exp))
    }

    fn key(&self, kid: &str) -> Option<(DecodingKey, Option<Algorithm>)> {
        lock(&self.keys).by_kid.get(kid).cloned()
    }

    /// A token names a `kid` not known: the keys may have rotated. Re-read, at most so often.
    async fn refresh_for_unknown_kid(&self) -> Result<(), Rejection> {
        let _fetching = self.fetching.lock().await;
        let read_at = lock(&self.keys).read_at;
        if read_at.is_some_and(|at| at.elapsed() < KID_REFETCH_INTERVAL) {
            return Ok(());
        }
        self.read_keys_locked().await.map_err(|error| {
            tracing::warn!(%error, "cannot read the JWK Set");
            Rejection::KeysUnavailable
        })
    }

    /// A fetched JWK Set is fetched again after its refresh interval; a failed refresh keeps the keys.
    async fn refresh_if_due(&self) {
        let KeySource::Url { refresh, .. } = &self.source else {
            return;
        };
        let due = lock(&self.keys)
            .read_at
            .is_none_or(|at| at.elapsed() >= *refresh);
        if !due {
            return;
        }
        let Ok(_fetching) = self.fetching.try_lock() else {
            return;
        };
        if let Err(error) = self.read_keys_locked().await {
            tracing::warn!(%error, "cannot refresh the JWK Set; keeping the keys held");
        }
    }

    async fn read_keys(&self) -> Result<(), String> {
        let _fetching = self.fetching.lock().await;
        self.read_keys_locked().await
    }

    /// Reads the JWK Set; the caller holds `fetching`. Symmetric keys are never taken.
    async fn read_keys_locked(&self) -> Result<(), String> {
        let text = match &self.source {
            KeySource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            KeySource::Url { url, http, .. } => {
                let response = http
                    .get(url.clone())
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| format!("cannot fetch the JWK Set from {url}: {e}"))?;
                response
                    .text()
                    .await
                    .map_err(|e| format!("cannot read the JWK Set from {url}: {e}"))?
            }
        };
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| format!("not a JWK Set: {e}"))?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            let algorithm = jwk
                .common
                .key_algorithm
                .and_then(|alg| Algorithm::from_str(&alg.to_string()).ok());
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    by_kid.insert(kid, (key, algorithm));
                }
                Err(error) => tracing::warn!(%kid, %error, "skipping an unreadable JWK"),
            }
        }
        *lock(&self.keys) = Keys {
            by_kid,
            read_at: Some(Instant::now()),
        };
        Ok(())
    }
}

/// The header's `alg` as written, read before the library (which has no `none` to name).
fn header_alg(token: &str) -> Result<String, Rejection> {
    let header = token.split('.').next().ok_or(Rejection::MalformedToken)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| Rejection::MalformedToken)?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| Rejection::MalformedToken)?;
    header
        .get("alg")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or(Rejection::MalformedToken)
}

fn same_family(key: &DecodingKey, algorithm: Algorithm) -> bool {
    use jsonwebtoken::AlgorithmFamily as Family;
    let family = match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        Algorithm::EdDSA => Family::Ed,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Family::Rsa,
    };
    key.family() == family
}

fn rejection_of(kind: &ErrorKind) -> Rejection {
    match kind {
        ErrorKind::ExpiredSignature => Rejection::Expired,
        ErrorKind::ImmatureSignature => Rejection::NotYetValid,
        ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
        ErrorKind::InvalidAudience => Rejection::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Rejection::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Rejection::WrongAudience,
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_) => Rejection::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Rejection::AlgorithmNotAllowed,
        _ => Rejection::MalformedToken,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
