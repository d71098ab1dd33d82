//! The Atlas Cost Explorer client: create a query (one POST per distinct body, shared through the chunk
//! cache), then poll its token with `?envelope=true` — a bare 102 never reaches a hyper client — with
//! jittered backoff, paced by the organization's token bucket, until the rows are ready.

use super::{
    auth::{Authenticator, TokenSource},
    normalize, wire,
};
use crate::metrics::AtlasPoll;
use crate::{
    config::{AtlasConfig, AtlasSettings},
    deadline::Deadline,
    domain::{
        AccountRef, AtlasId, FetchProgress, Period, UpstreamError, UpstreamErrorKind, UpstreamQuery,
    },
    providers::{
        ChunkData, ChunkFailure, FetchedChunk, ProgressSender, RateLimitReading,
        budget::{BucketShape, OrgBudget, SharedBudgets},
        chunk_outcome,
        http::{FailedCall, UpstreamHttp, UpstreamRequest, UpstreamResponse, retry_after},
    },
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

const CREATE_ROUTE: &str = "/api/atlas/v2/orgs/{orgId}/billing/costExplorer/usage";
const POLL_ROUTE: &str = "/api/atlas/v2/orgs/{orgId}/billing/costExplorer/usage/{token}";

/// What one poll said.
enum Poll {
    Processing,
    /// Boxed: a chunk's columns are larger than the other answers.
    Done(Box<ChunkData>),
    /// The upstream no longer knows the token.
    Gone,
    /// Throttled: ask again after this long.
    Throttled(Duration),
}

/// Reads one Atlas organization's costs.
pub struct AtlasClient {
    pub(crate) account: AccountRef,
    pub(crate) http: Arc<UpstreamHttp>,
    base_url: reqwest::Url,
    org_id: AtlasId,
    auth: Authenticator,
    /// Atlas' Invoices bucket, per organization: both cost-explorer calls draw from it.
    budget: OrgBudget,
    config: AtlasConfig,
    /// Queries another replica created and polled, by body as sent: taken by the next fetch of that
    /// body, which polls on rather than creating the query again.
    resumed: Mutex<HashMap<String, FetchProgress>>,
}

impl AtlasClient {
    pub fn new(
        account: AccountRef,
        http: Arc<UpstreamHttp>,
        base_url: reqwest::Url,
        settings: AtlasSettings,
        config: AtlasConfig,
        shared: Option<&Arc<SharedBudgets>>,
    ) -> Self {
        let shape = BucketShape {
            capacity: NonZeroU32::new(config.bucket_capacity).unwrap_or(NonZeroU32::MIN),
            refill_per_minute: NonZeroU32::new(config.bucket_refill_per_minute)
                .unwrap_or(NonZeroU32::MIN),
        };
        let budget = match shared {
            Some(shared) => shared.organization(settings.org_id.as_str(), shape),
            None => OrgBudget::local(shape, http.metrics().clone()),
        };
        AtlasClient {
            account,
            http,
            base_url,
            org_id: settings.org_id,
            auth: Authenticator::new(settings.credentials),
            budget,
            config,
            resumed: Mutex::default(),
        }
    }

    /// Remembers a query of this organization that another replica created, to poll it on.
    pub fn resume(&self, progress: &FetchProgress) {
        if let Some(query) = &progress.upstream_query
            && query.organization == self.org_id.as_str()
        {
            crate::sync::lock(&self.resumed).insert(query.body.clone(), progress.clone());
        }
    }

    pub fn org_id(&self) -> &str {
        self.org_id.as_str()
    }

    /// Creates the query, polls until its rows are ready, and normalizes them. A token the upstream
    /// forgets is recreated once; a query still processing past the limit fails as retryable.
    pub async fn fetch(
        &self,
        month: Period,
        body: &wire::CreateUsageQuery,
        deadline: Deadline,
        progress: &ProgressSender,
    ) -> Result<FetchedChunk, ChunkFailure> {
        let mut sent = Sent::default();
        let result = self
            .create_and_poll(month, body, deadline, progress, &mut sent)
            .await;
        let Sent {
            requests,
            rate_limit_remaining,
        } = sent;
        chunk_outcome(result, requests, rate_limit_remaining)
    }

    async fn create_and_poll(
        &self,
        month: Period,
        body: &wire::CreateUsageQuery,
        deadline: Deadline,
        progress: &ProgressSender,
        sent: &mut Sent,
    ) -> Result<ChunkData, UpstreamError> {
        // Counted from when Atlas created the query, so a replica that took it over does not start
        // the limit again.
        let limit = chrono::Duration::try_milliseconds(
            i64::try_from(self.config.max_processing_ms).unwrap_or(i64::MAX),
        )
        .unwrap_or(chrono::Duration::MAX);
        let month_name = month.start().format("%Y-%m");
        let body_text = serde_json::to_string(body).unwrap_or_default();
        let report = |polls: u32,
                      note: String,
                      next: Option<Duration>,
                      query: (&str, chrono::DateTime<chrono::Utc>, u16)| {
            progress.send_replace(FetchProgress {
                polls,
                note: format!("atlas org {} {month_name}: {note}", self.org_id),
                next_poll_at: next
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .map(|d| chrono::Utc::now() + d),
                upstream_query: Some(UpstreamQuery {
                    organization: self.org_id.to_string(),
                    body: body_text.clone(),
                    token: query.0.to_string(),
                    created_at: query.1,
                    last_status: query.2,
                }),
            });
        };
        let mut recreated = false;
        let mut resumed = crate::sync::lock(&self.resumed).remove(&body_text);
        'create: loop {
            let initial = Duration::from_millis(self.config.poll_initial_ms);
            let (token, created_at, mut polls, mut delay, mut wait) = match resumed.take() {
                Some(FetchProgress {
                    upstream_query: Some(query),
                    polls,
                    next_poll_at,
                    ..
                }) => {
                    // Polled on where the other replica stopped: its backoff, its next poll time.
                    let delay = initial
                        .mul_f64(1.5f64.powi(polls.min(64) as i32))
                        .min(Duration::from_millis(self.config.poll_max_ms));
                    let wait = next_poll_at
                        .and_then(|at| (at - chrono::Utc::now()).to_std().ok())
                        .unwrap_or_default()
                        .min(delay);
                    (query.token, query.created_at, polls, delay, wait)
                }
                _ => {
                    let token = self.create(body, deadline, sent).await?;
                    let created_at = chrono::Utc::now();
                    report(
                        0,
                        "query created, processing".to_string(),
                        Some(initial),
                        (&token, created_at, 202),
                    );
                    (token, created_at, 0u32, initial, jitter(initial))
                }
            };
            loop {
                tokio::time::sleep(wait).await;
                if chrono::Utc::now() - created_at > limit {
                    return Err(UpstreamError {
                        upstream_retryable: Some(true),
                        ..UpstreamError::new(
                            UpstreamErrorKind::Timeout,
                            format!("still processing after {polls} polls; ask again later"),
                        )
                    });
                }
                polls += 1;
                let polled = self.poll(&token, month, deadline, sent).await;
                self.http.metrics().atlas_poll(match &polled {
                    Ok(Poll::Done(_)) => AtlasPoll::Ready,
                    Ok(Poll::Processing) => AtlasPoll::Processing,
                    Ok(Poll::Throttled(_)) => AtlasPoll::Throttled,
                    Ok(Poll::Gone) => AtlasPoll::Gone,
                    Err(_) => AtlasPoll::Failed,
                });
                match polled? {
                    Poll::Done(normalized) => return Ok(*normalized),
                    Poll::Processing => {
                        delay = delay
                            .mul_f64(1.5)
                            .min(Duration::from_millis(self.config.poll_max_ms));
                        tracing::debug!(
                            polls,
                            next_ms = delay.as_millis() as u64,
                            "atlas query processing"
                        );
                        report(
                            polls,
                            format!(
                                "processing, poll {polls}, next in {} s",
                                delay.as_secs_f64().ceil()
                            ),
                            Some(delay),
                            (&token, created_at, 102),
                        );
                        wait = jitter(delay);
                    }
                    Poll::Throttled(retry) => {
                        delay = retry.max(delay);
                        report(
                            polls,
                            format!(
                                "throttled, poll {polls}, next in {} s",
                                delay.as_secs_f64().ceil()
                            ),
                            Some(delay),
                            (&token, created_at, 429),
                        );
                        wait = jitter(delay);
                    }
                    Poll::Gone if !recreated => {
                        tracing::info!("atlas forgot the query token; creating it again");
                        recreated = true;
                        continue 'create;
                    }
                    Poll::Gone => {
                        return Err(UpstreamError {
                            http_status: Some(404),
                            upstream_code: Some("RESOURCE_NOT_FOUND".into()),
                            ..UpstreamError::new(
                                UpstreamErrorKind::NotFound,
                                "the query token was forgotten twice",
                            )
                        });
                    }
                }
            }
        }
    }

    async fn create(
        &self,
        body: &wire::CreateUsageQuery,
        deadline: Deadline,
        sent: &mut Sent,
    ) -> Result<String, UpstreamError> {
        let problems = normalize::violations(body);
        if !problems.is_empty() {
            let listed: Vec<String> = problems
                .iter()
                .map(|(field, problem)| format!("{field}: {problem}"))
                .collect();
            return Err(UpstreamError::new(
                UpstreamErrorKind::Rejected,
                format!(
                    "not sent, the query breaks Atlas' rules: {}",
                    listed.join("; ")
                ),
            ));
        }
        let bytes = serde_json::to_vec(body)
            .map_err(|e| UpstreamError::new(UpstreamErrorKind::Rejected, e.to_string()))?;
        let url = self.url(&["usage"], false);
        let response = self
            .send(
                Method::POST,
                CREATE_ROUTE,
                url,
                Some(Bytes::from(bytes)),
                deadline,
                sent,
            )
            .await?;
        let status = response.status.as_u16();
        if status != 202 && !response.status.is_success() {
            return Err(error_of(status, &response.body, response.retry_after()));
        }
        let created: wire::CreatedToken = serde_json::from_slice(&response.body)
            .map_err(|e| UpstreamError::malformed(status, e))?;
        if created.token.len() != 64 {
            return Err(UpstreamError::malformed(
                status,
                "the query token is not 64 characters",
            ));
        }
        Ok(created.token)
    }

    async fn poll(
        &self,
        token: &str,
        month: Period,
        deadline: Deadline,
        sent: &mut Sent,
    ) -> Result<Poll, UpstreamError> {
        let url = self.url(&["usage", token], true);
        let response = self
            .send(Method::GET, POLL_ROUTE, url, None, deadline, sent)
            .await?;
        let http_status = response.status.as_u16();
        if !response.status.is_success() {
            return match http_status {
                404 => Ok(Poll::Gone),
                _ => Err(error_of(
                    http_status,
                    &response.body,
                    response.retry_after(),
                )),
            };
        }
        let envelope: wire::Envelope<'_> = serde_json::from_slice(&response.body)
            .map_err(|e| UpstreamError::malformed(http_status, format!("envelope: {e}")))?;
        let content = envelope
            .content
            .map(|c| c.get().as_bytes())
            .unwrap_or(b"{}");
        match envelope.status {
            102 => Ok(Poll::Processing),
            200 => {
                let result: wire::UsageResult = serde_json::from_slice(content)
                    .map_err(|e| UpstreamError::malformed(200, e))?;
                normalize::usage_rows(&self.account, self.org_id.as_str(), month, &result)
                    .map(|normalized| Poll::Done(Box::new(normalized)))
                    .map_err(|problem| UpstreamError::malformed(200, problem))
            }
            404 => Ok(Poll::Gone),
            429 => Ok(Poll::Throttled(
                retry_after(&response.headers).unwrap_or(Duration::from_secs(10)),
            )),
            status => Err(error_of(status, content, retry_after(&response.headers))),
        }
    }

    /// Sends with authorization: answers a Digest challenge, or replaces a refused token, once. A 401
    /// that stays one is reported with Atlas' own error body (its `errorCode`).
    async fn send(
        &self,
        method: Method,
        template: &'static str,
        url: reqwest::Url,
        body: Option<Bytes>,
        deadline: Deadline,
        sent: &mut Sent,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let requests = &mut sent.requests;
        let uri = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        let token_url = self.url_of(&["api", "oauth", "token"]);
        let mut refused: Option<UpstreamResponse> = None;
        for _ in 0..2 {
            self.budget.until_ready().await;
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::ACCEPT,
                HeaderValue::from_static(wire::MEDIA_TYPE),
            );
            if body.is_some() {
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static(wire::MEDIA_TYPE),
                );
            }
            let token_source = TokenSource {
                http: &self.http,
                account: &self.account,
                url: &token_url,
            };
            let authorization = self
                .auth
                .header(
                    &token_source,
                    &method,
                    &uri,
                    body.as_deref(),
                    deadline,
                    requests,
                )
                .await?;
            if let Some(value) = authorization {
                headers.insert(http::header::AUTHORIZATION, value);
            }
            let request = UpstreamRequest {
                provider: self.account.kind,
                account: &self.account.id,
                method: method.clone(),
                url_template: template,
                url: url.clone(),
                headers,
                body: body.clone(),
            };
            let response = self.http.send(request, deadline).await.map_err(
                |FailedCall { error, attempts }| {
                    *requests += attempts;
                    error
                },
            )?;
            *requests += response.attempts;
            if let Some(reading) = RateLimitReading::of(&response) {
                sent.rate_limit_remaining = Some(reading);
            }
            if response.status == http::StatusCode::UNAUTHORIZED
                && self.auth.refused(&response.headers).await
            {
                refused = Some(response);
                continue;
            }
            return Ok(response);
        }
        Err(match refused {
            Some(response) => error_of(401, &response.body, response.retry_after()),
            None => UpstreamError {
                http_status: Some(401),
                ..UpstreamError::new(
                    UpstreamErrorKind::Unauthenticated,
                    "the credentials were refused",
                )
            },
        })
    }

    fn url(&self, tail: &[&str], envelope: bool) -> reqwest::Url {
        let mut segments = vec![
            "api",
            "atlas",
            "v2",
            "orgs",
            self.org_id.as_str(),
            "billing",
            "costExplorer",
        ];
        segments.extend_from_slice(tail);
        let mut url = self.url_of(&segments);
        if envelope {
            url.query_pairs_mut().append_pair("envelope", "true");
        }
        url
    }

    fn url_of(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }
}

/// What one fetch sent: requests (retries and token requests included) and the last word of the
/// organization's rate-limit bucket.
#[derive(Default)]
struct Sent {
    requests: u32,
    rate_limit_remaining: Option<RateLimitReading>,
}

/// ±25 % around `delay`, so many pollers do not move in step.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.75..1.25))
}

/// An Atlas error body (or a bare status) as an upstream error with Atlas' own code.
pub(super) fn error_of(status: u16, body: &[u8], retry_after: Option<Duration>) -> UpstreamError {
    match serde_json::from_slice::<wire::ErrorBody>(body) {
        Ok(error) => {
            let message = error
                .detail
                .or(error.reason)
                .unwrap_or_else(|| format!("HTTP {status}"));
            UpstreamError::from_http(status, error.error_code, message, retry_after)
        }
        Err(_) => UpstreamError::from_http(status, None, format!("HTTP {status}"), retry_after),
    }
}
