//! The upstream HTTP layer every provider uses: one reqwest client, a timeout from the caller's deadline,
//! jittered exponential retries on connect errors, timeouts, 429 and 5xx that honour `Retry-After`, a
//! response size cap, and one span per request attempt carrying the caller's trace context upstream.

use crate::{
    config::UpstreamConfig,
    deadline::Deadline,
    domain::{ProviderAccountId, ProviderKind, Redactor, UpstreamError, UpstreamErrorKind},
    metrics::Metrics,
    providers::gate::{Gates, Health},
    telemetry,
};
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode};
use std::{borrow::Cow, sync::Arc, time::Duration};
use tracing::{Instrument, field::Empty};

/// One logical upstream call; the layer may send it several times.
pub struct UpstreamRequest<'a> {
    pub provider: ProviderKind,
    pub account: &'a ProviderAccountId,
    pub method: Method,
    /// The route with placeholders, e.g. `/teams/{teamId}/billing/cost`: the span name and `url.template`.
    pub url_template: &'static str,
    pub url: reqwest::Url,
    /// Credentials go here, marked sensitive so no debug output shows them.
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
}

/// The final answer of the upstream, whatever its status; the provider reads its own error bodies.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Requests sent, retries included.
    pub attempts: u32,
}

impl UpstreamResponse {
    /// `Retry-After` as a delay, from seconds or an HTTP date.
    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers)
    }

    /// Requests left in the upstream's rate-limit window, when it says: `RateLimit-Remaining` (Atlas,
    /// the IETF draft) or the older `X-RateLimit-Remaining`.
    pub fn rate_limit_remaining(&self) -> Option<i64> {
        rate_limit_remaining(&self.headers)
    }
}

/// A failed call, with how many requests it took.
#[derive(Debug)]
pub struct FailedCall {
    pub error: UpstreamError,
    pub attempts: u32,
}

/// The shared client. Cheap to share behind an `Arc`.
pub struct UpstreamHttp {
    client: reqwest::Client,
    request_timeout: Duration,
    max_attempts: u32,
    backoff: ExponentialBuilder,
    max_response_bytes: u64,
    metrics: Arc<Metrics>,
    redactor: Arc<Redactor>,
    gates: Gates,
}

impl UpstreamHttp {
    /// `redactor` knows every configured credential: upstream words pass through it on their way out.
    /// Every request passes its account's gate in `gates`.
    pub fn new(
        config: &UpstreamConfig,
        metrics: Arc<Metrics>,
        redactor: Arc<Redactor>,
        gates: Gates,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("costd/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_millis(config.request_timeout_ms.min(10_000)))
            .build()?;
        let backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(config.retry_initial_delay_ms))
            .with_max_delay(Duration::from_millis(config.retry_max_delay_ms))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Ok(UpstreamHttp {
            client,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            max_attempts: config.max_attempts,
            backoff,
            max_response_bytes: config.max_response_bytes,
            metrics,
            redactor,
            gates,
        })
    }

    /// Each account's gate (its circuit, for `ListProviders`).
    pub fn gates(&self) -> &Gates {
        &self.gates
    }

    /// Takes credentials out of upstream text.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Where providers record what only they can tell (e.g. what an Atlas poll answered).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Sends `request`, retrying what may succeed later, until an answer, a final error or the deadline.
    pub async fn send(
        &self,
        request: UpstreamRequest<'_>,
        deadline: Deadline,
    ) -> Result<UpstreamResponse, FailedCall> {
        let mut delays = self.backoff.build();
        let mut attempt = 0u32;
        let gate = self.gates.of(request.account);
        let provider = request.provider.as_str();
        gate.call_started();
        loop {
            attempt += 1;
            if deadline.is_expired() {
                return Err(FailedCall {
                    error: deadline_passed(),
                    attempts: attempt - 1,
                });
            }
            let entered = match deadline.remaining() {
                Some(left) => tokio::time::timeout(left, gate.enter(self.gates.now()))
                    .await
                    .unwrap_or_else(|_| Err(deadline_passed())),
                None => gate.enter(self.gates.now()).await,
            };
            let permit = match entered {
                Ok(permit) => permit,
                Err(refused) => {
                    if refused.kind == UpstreamErrorKind::CircuitOpen {
                        self.metrics.upstream_circuit_refused(provider);
                    }
                    return Err(FailedCall {
                        error: refused,
                        attempts: attempt - 1,
                    });
                }
            };
            let span = attempt_span(&request, attempt);
            let outcome = self
                .send_once(&request, deadline.cap(self.request_timeout), &span)
                .instrument(span.clone())
                .await;
            drop(permit);
            if gate.record(health_of(&outcome), self.gates.now()) {
                self.metrics.upstream_circuit_opened(provider);
                tracing::warn!(
                    provider_account = %request.account,
                    "upstream circuit opened after repeated failures"
                );
            }
            if let Ok(response) = &outcome
                && response.status == StatusCode::TOO_MANY_REQUESTS
                && let Some(wait) = retry_after(&response.headers)
            {
                gate.pause(wait);
            }
            let retry_in = match &outcome {
                Ok(response) if is_retryable_status(response.status) => {
                    let backoff = delays.next().unwrap_or(self.request_timeout);
                    Some(retry_after(&response.headers).map_or(backoff, |wait| wait.max(backoff)))
                }
                Err(error) if error.is_retryable() => delays.next(),
                _ => None,
            };
            let fits = |wait: Duration| deadline.remaining().is_none_or(|left| wait < left);
            let retry_in = retry_in.filter(|wait| attempt < self.max_attempts && fits(*wait));
            // The budget is asked last: only a retry that would otherwise go spends it.
            let budgeted = retry_in.is_some() && {
                let allowed = gate.may_retry();
                if !allowed {
                    self.metrics.upstream_retry_refused(provider);
                }
                allowed
            };
            match retry_in {
                Some(wait) if budgeted => {
                    self.metrics
                        .upstream_retry(request.provider.as_str(), request.url_template);
                    tracing::debug!(
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "retrying upstream call"
                    );
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    return match outcome {
                        Ok(mut response) => {
                            response.attempts = attempt;
                            Ok(response)
                        }
                        Err(error) => Err(FailedCall {
                            error,
                            attempts: attempt,
                        }),
                    };
                }
            }
        }
    }

    async fn send_once(
        &self,
        request: &UpstreamRequest<'_>,
        timeout: Duration,
        span: &tracing::Span,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let mut headers = request.headers.clone();
        telemetry::inject_trace_context(span, &mut headers);
        let mut builder = self
            .client
            .request(request.method.clone(), request.url.clone())
            .headers(headers)
            .timeout(timeout);
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let started = std::time::Instant::now();
        let result = match builder.send().await {
            Ok(response) => self.read(response).await,
            Err(error) => Err(transport_error(error)),
        };
        self.metrics.upstream_request(
            request.provider.as_str(),
            request.url_template,
            outcome_label(&result),
            started.elapsed(),
        );
        match &result {
            Ok(response) => {
                span.record(
                    "http.response.status_code",
                    i64::from(response.status.as_u16()),
                );
                if response.status.is_client_error() || response.status.is_server_error() {
                    span.record("error.type", response.status.as_str());
                    span.record("otel.status_code", "ERROR");
                }
            }
            Err(error) => {
                span.record("error.type", error.kind.reason());
                span.record("otel.status_code", "ERROR");
                if let Some(status) = error.http_status {
                    span.record("http.response.status_code", i64::from(status));
                }
            }
        }
        result
    }

    async fn read(
        &self,
        mut response: reqwest::Response,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let status = response.status();
        let too_large = || UpstreamError {
            http_status: Some(status.as_u16()),
            ..UpstreamError::new(
                UpstreamErrorKind::TooLarge,
                format!("response body exceeds {} bytes", self.max_response_bytes),
            )
        };
        if response
            .content_length()
            .is_some_and(|len| len > self.max_response_bytes)
        {
            return Err(too_large());
        }
        let headers = std::mem::take(response.headers_mut());
        let mut body = BytesMut::new();
        // A body cut short (the connection closed before its Content-Length, or mid-chunk) is the
        // network's failure, not a malformed answer: retryable like any transport error.
        while let Some(chunk) = response.chunk().await.map_err(|_| UpstreamError {
            http_status: Some(status.as_u16()),
            ..UpstreamError::new(
                UpstreamErrorKind::Unavailable,
                "the connection closed before the whole body arrived",
            )
        })? {
            if (body.len() + chunk.len()) as u64 > self.max_response_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(UpstreamResponse {
            status,
            headers,
            body: body.freeze(),
            attempts: 1,
        })
    }
}

/// A header value carrying a credential, marked sensitive so no debug output shows it; `None` when the
/// text cannot be a header value (the request then goes without, and the upstream's 401 says so).
pub fn sensitive_value(text: &str) -> Option<http::HeaderValue> {
    let mut value = http::HeaderValue::from_str(text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// `Accept: application/json` and `Authorization: {scheme} {secret}`.
pub fn credential_headers(scheme: &str, secret: &secrecy::SecretString) -> HeaderMap {
    use secrecy::ExposeSecret;
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    if let Some(value) = sensitive_value(&format!("{scheme} {}", secret.expose_secret())) {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    headers
}

/// One span per request sent, named and attributed after the OpenTelemetry HTTP client conventions.
/// Integers are recorded as `i64`: tracing-opentelemetry exports unsigned values as text.
fn attempt_span(request: &UpstreamRequest<'_>, attempt: u32) -> tracing::Span {
    let span = tracing::info_span!(
        "upstream request",
        otel.name = %format_args!("{} {}", request.method, request.url_template),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = %request.method,
        url.template = request.url_template,
        server.address = request.url.host_str().unwrap_or_default(),
        server.port = i64::from(request.url.port_or_known_default().unwrap_or_default()),
        http.request.resend_count = i64::from(attempt - 1),
        http.response.status_code = Empty,
        error.type = Empty,
        costd.provider = request.provider.as_str(),
        costd.account = request.account.as_str(),
        costd.attempt = i64::from(attempt),
    );
    span
}

/// The HTTP status, or for a request that got none, what happened instead (`timeout`, `unavailable`).
fn outcome_label(result: &Result<UpstreamResponse, UpstreamError>) -> Cow<'static, str> {
    match result {
        Ok(response) => Cow::Owned(response.status.as_u16().to_string()),
        Err(error) => match error.http_status {
            Some(status) => Cow::Owned(status.to_string()),
            None => Cow::Borrowed(error.kind.label()),
        },
    }
}

/// How an attempt counts for the account's circuit breaker.
fn health_of(outcome: &Result<UpstreamResponse, UpstreamError>) -> Health {
    match outcome {
        Ok(response) if response.status == StatusCode::TOO_MANY_REQUESTS => Health::Neutral,
        Ok(response) if response.status.is_server_error() => Health::Failed,
        Ok(_) => Health::Answered,
        Err(error)
            if matches!(
                error.kind,
                UpstreamErrorKind::Unavailable | UpstreamErrorKind::Timeout
            ) =>
        {
            Health::Failed
        }
        Err(_) => Health::Answered,
    }
}

fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

fn deadline_passed() -> UpstreamError {
    UpstreamError::new(
        UpstreamErrorKind::Timeout,
        "the caller's deadline passed before an answer",
    )
}

/// A reqwest failure without its URL: messages stay free of anything a URL might carry.
fn transport_error(error: reqwest::Error) -> UpstreamError {
    let kind = if error.is_timeout() {
        UpstreamErrorKind::Timeout
    } else if error.is_body() || error.is_decode() {
        UpstreamErrorKind::Malformed
    } else {
        UpstreamErrorKind::Unavailable
    };
    let what = if error.is_timeout() {
        "no answer before the timeout".to_string()
    } else if error.is_connect() {
        "cannot connect".to_string()
    } else {
        error.without_url().to_string()
    };
    UpstreamError::new(kind, what)
}

/// `RateLimit-Remaining`, else `X-RateLimit-Remaining`, as a count; a value that is not one is ignored.
pub fn rate_limit_remaining(headers: &HeaderMap) -> Option<i64> {
    ["ratelimit-remaining", "x-ratelimit-remaining"]
        .iter()
        .find_map(|name| headers.get(*name))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_remaining_reads_both_header_spellings() {
        let mut headers = HeaderMap::new();
        assert_eq!(rate_limit_remaining(&headers), None);
        headers.insert("x-ratelimit-remaining", "17".parse().unwrap());
        assert_eq!(rate_limit_remaining(&headers), Some(17));
        headers.insert("RateLimit-Remaining", " 42 ".parse().unwrap());
        assert_eq!(
            rate_limit_remaining(&headers),
            Some(42),
            "the standard name wins"
        );
        headers.insert("RateLimit-Remaining", "many".parse().unwrap());
        assert_eq!(rate_limit_remaining(&headers), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            retry_after(&headers),
            None,
            "a date in the past means no wait"
        );
        headers.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
