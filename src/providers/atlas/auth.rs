//! Atlas authentication: HTTP Digest with API keys (challenge cached, nonce count advanced per request)
//! or a service account's OAuth2 client-credentials token (cached until shortly before it expires,
//! fetched again once when the upstream refuses it).

use crate::{
    config::AtlasCredentials,
    deadline::Deadline,
    domain::{AccountRef, UpstreamError, UpstreamErrorKind},
    providers::http::{FailedCall, UpstreamHttp, UpstreamRequest},
    sync::lock,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::{sync::Mutex, time::Duration};
use tokio::time::Instant;

/// How long before its stated expiry a service-account token is replaced.
const TOKEN_EARLY_REFRESH: Duration = Duration::from_secs(60);

/// Where a service account gets its tokens.
pub struct TokenSource<'a> {
    pub http: &'a UpstreamHttp,
    pub account: &'a AccountRef,
    pub url: &'a reqwest::Url,
}

/// Authorization state shared by every request of one account.
pub struct Authenticator {
    credentials: AtlasCredentials,
    /// The last Digest challenge; `respond` advances its nonce count.
    challenge: Mutex<Option<digest_auth::WwwAuthenticateHeader>>,
    /// The current service-account token and when to stop using it.
    /// An async mutex held while a new token is fetched, so concurrent requests wait for one token
    /// instead of each fetching their own.
    token: tokio::sync::Mutex<Option<(SecretString, Instant)>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

impl Authenticator {
    pub fn new(credentials: AtlasCredentials) -> Self {
        Authenticator {
            credentials,
            challenge: Mutex::new(None),
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// The `Authorization` header for a request, when one can be made without a round trip first.
    pub async fn header(
        &self,
        token_source: &TokenSource<'_>,
        method: &Method,
        uri: &str,
        body: Option<&[u8]>,
        deadline: Deadline,
        requests: &mut u32,
    ) -> Result<Option<HeaderValue>, UpstreamError> {
        match &self.credentials {
            AtlasCredentials::Digest {
                public_key,
                private_key,
            } => {
                let mut challenge = lock(&self.challenge);
                let Some(prompt) = challenge.as_mut() else {
                    return Ok(None);
                };
                let context = digest_auth::AuthContext::new_with_method(
                    public_key.as_str(),
                    private_key.expose_secret(),
                    uri,
                    body,
                    if *method == Method::POST {
                        digest_auth::HttpMethod::POST
                    } else {
                        digest_auth::HttpMethod::GET
                    },
                );
                let answer = prompt.respond(&context).map_err(|e| {
                    UpstreamError::new(
                        UpstreamErrorKind::Unauthenticated,
                        format!("cannot answer the Digest challenge: {e}"),
                    )
                })?;
                Ok(Some(sensitive(&answer.to_header_string())?))
            }
            AtlasCredentials::ServiceAccount { .. } => {
                let token = self.service_token(token_source, deadline, requests).await?;
                Ok(Some(sensitive(&format!(
                    "Bearer {}",
                    token.expose_secret()
                ))?))
            }
        }
    }

    /// Learns from a 401: a new Digest challenge, or a service-account token to drop. Returns whether
    /// asking again may now succeed.
    pub async fn refused(&self, headers: &HeaderMap) -> bool {
        match &self.credentials {
            AtlasCredentials::Digest { .. } => {
                let challenge = headers
                    .get_all(http::header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find(|v| v.trim_start().to_ascii_lowercase().starts_with("digest"))
                    .and_then(|v| digest_auth::parse(v).ok());
                let learned = challenge.is_some();
                *lock(&self.challenge) = challenge;
                learned
            }
            AtlasCredentials::ServiceAccount { .. } => {
                *self.token.lock().await = None;
                true
            }
        }
    }

    async fn service_token(
        &self,
        TokenSource {
            http,
            account,
            url: token_url,
        }: &TokenSource<'_>,
        deadline: Deadline,
        requests: &mut u32,
    ) -> Result<SecretString, UpstreamError> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let AtlasCredentials::ServiceAccount {
            client_id,
            client_secret,
        } = &self.credentials
        else {
            return Err(UpstreamError::new(
                UpstreamErrorKind::Unauthenticated,
                "not a service account",
            ));
        };
        let basic = STANDARD.encode(format!("{client_id}:{}", client_secret.expose_secret()));
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            sensitive(&format!("Basic {basic}"))?,
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let request = UpstreamRequest {
            provider: account.kind,
            account: &account.id,
            method: Method::POST,
            url_template: "/api/oauth/token",
            url: (*token_url).clone(),
            headers,
            body: Some(Bytes::from_static(b"grant_type=client_credentials")),
        };
        let response =
            http.send(request, deadline)
                .await
                .map_err(|FailedCall { error, attempts }| {
                    *requests += attempts;
                    error
                })?;
        *requests += response.attempts;
        if !response.status.is_success() {
            return Err(super::client::error_of(
                response.status.as_u16(),
                &response.body,
                response.retry_after(),
            ));
        }
        let answer: TokenAnswer = serde_json::from_slice(&response.body).map_err(|e| {
            UpstreamError::malformed(response.status.as_u16(), format!("token answer: {e}"))
        })?;
        let token = SecretString::from(answer.access_token);
        let lifetime = Duration::from_secs(answer.expires_in).saturating_sub(TOKEN_EARLY_REFRESH);
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }
}

/// A credential-bearing header value, marked so no debug output shows it.
fn sensitive(text: &str) -> Result<HeaderValue, UpstreamError> {
    crate::providers::http::sensitive_value(text).ok_or_else(|| {
        UpstreamError::new(
            UpstreamErrorKind::Unauthenticated,
            "the credential cannot be sent in a header",
        )
    })
}
