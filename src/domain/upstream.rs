//! What the layers say about an upstream beside its records, in terms every provider shares: who a
//! provider account is, how a fetch is going, and what went wrong.

use super::redact::Redactor;
use super::{ProviderAccountId, ProviderKind, Text};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Who a provider account is, as every record and result names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRef {
    pub id: ProviderAccountId,
    pub kind: ProviderKind,
    pub display_name: Text,
}

/// How an upstream fetch is going, for those watching it (asynchronous upstreams report polls).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchProgress {
    /// Polls of an asynchronous query so far.
    pub polls: u32,
    /// What is happening, e.g. "processing, poll 4, next in 8 s".
    pub note: String,
    pub next_poll_at: Option<chrono::DateTime<chrono::Utc>>,
    /// What an asynchronous upstream is working on, when it has a query of its own.
    pub upstream_query: Option<UpstreamQuery>,
}

/// Told, per account, how its upstream work is going.
pub type ProgressObserver<'a> = dyn Fn(&ProviderAccountId, &FetchProgress) + Sync + 'a;

/// An asynchronous upstream query as the job table records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamQuery {
    /// The organization (Atlas) it runs for.
    pub organization: String,
    /// The query body as sent.
    pub body: String,
    /// The upstream's token for it.
    pub token: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The status of the last answer about it (202 created, 102 processing, 429 throttled).
    pub last_status: u16,
}

/// An account's circuit breaker, as `ListProviders` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitReading {
    Closed,
    /// Refusing requests until `until`, after `openings` openings in a row.
    Open {
        until: chrono::DateTime<chrono::Utc>,
        openings: u32,
    },
    /// One probe may go (or is on its way); its outcome closes or reopens the circuit.
    HalfOpen,
}

/// The class of an upstream failure; decides the gRPC code and whether a retry may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpstreamErrorKind {
    /// 401: costd's credentials were refused.
    Unauthenticated,
    /// 403: the credentials lack a permission.
    PermissionDenied,
    /// 404: the account, organization or resource does not exist upstream.
    NotFound,
    /// 400 and other 4xx: the upstream refused the request.
    Rejected,
    /// 429: rate limited.
    RateLimited,
    /// 5xx or a connection failure.
    Unavailable,
    /// No answer before the deadline.
    Timeout,
    /// An answer that does not parse as documented.
    Malformed,
    /// An answer larger than the configured cap.
    TooLarge,
    /// The upstream's API cannot answer this query shape (e.g. Atlas grouping by a dimension without
    /// filter values for it); nothing was sent. The message says what the query needs.
    Unanswerable,
    /// The account's circuit breaker is open after repeated failures; nothing was sent.
    CircuitOpen,
}

impl UpstreamErrorKind {
    /// The `ErrorInfo.reason` for this kind.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamErrorKind::Unauthenticated => "UPSTREAM_UNAUTHENTICATED",
            UpstreamErrorKind::PermissionDenied => "UPSTREAM_PERMISSION_DENIED",
            UpstreamErrorKind::NotFound => "UPSTREAM_NOT_FOUND",
            UpstreamErrorKind::Rejected => "UPSTREAM_REJECTED",
            UpstreamErrorKind::RateLimited => "UPSTREAM_RATE_LIMITED",
            UpstreamErrorKind::Unavailable => "UPSTREAM_UNAVAILABLE",
            UpstreamErrorKind::Timeout => "UPSTREAM_TIMEOUT",
            UpstreamErrorKind::Malformed => "UPSTREAM_MALFORMED_RESPONSE",
            UpstreamErrorKind::TooLarge => "UPSTREAM_RESPONSE_TOO_LARGE",
            UpstreamErrorKind::Unanswerable => "UPSTREAM_CANNOT_ANSWER_QUERY",
            UpstreamErrorKind::CircuitOpen => "UPSTREAM_CIRCUIT_OPEN",
        }
    }

    /// Short lower-case name, as the metrics label it.
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamErrorKind::Unauthenticated => "unauthenticated",
            UpstreamErrorKind::PermissionDenied => "permission_denied",
            UpstreamErrorKind::NotFound => "not_found",
            UpstreamErrorKind::Rejected => "rejected",
            UpstreamErrorKind::RateLimited => "rate_limited",
            UpstreamErrorKind::Unavailable => "unavailable",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Malformed => "malformed",
            UpstreamErrorKind::TooLarge => "too_large",
            UpstreamErrorKind::Unanswerable => "unanswerable",
            UpstreamErrorKind::CircuitOpen => "circuit_open",
        }
    }

    /// The kind an HTTP error status means.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            401 => UpstreamErrorKind::Unauthenticated,
            403 => UpstreamErrorKind::PermissionDenied,
            404 => UpstreamErrorKind::NotFound,
            429 => UpstreamErrorKind::RateLimited,
            // Failed Dependency: the upstream's own backend failed, not our request.
            424 | 500..=599 => UpstreamErrorKind::Unavailable,
            _ => UpstreamErrorKind::Rejected,
        }
    }
}

/// One upstream failure. `message` is the upstream's own words (shortened) or ours. Requests carry
/// credentials only in headers, but an upstream may echo them: every error leaving a provider is
/// [`UpstreamError::redacted`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{}: {message}", kind.reason())]
pub struct UpstreamError {
    pub kind: UpstreamErrorKind,
    /// The HTTP status the upstream answered, when it answered.
    pub http_status: Option<u16>,
    /// The upstream's own error code, e.g. `VALIDATION_ERROR` or `organization.not_found`.
    pub upstream_code: Option<String>,
    pub message: String,
    /// When the upstream said when to come back.
    pub retry_after: Option<Duration>,
    /// The upstream's own word on whether a retry may help, when its error body says.
    pub upstream_retryable: Option<bool>,
}

/// Upstream messages are kept short: they end up in responses and logs.
const MAX_MESSAGE_CHARS: usize = 300;

impl UpstreamError {
    pub fn new(kind: UpstreamErrorKind, message: impl Into<String>) -> Self {
        let message: String = message.into();
        UpstreamError {
            kind,
            http_status: None,
            upstream_code: None,
            message: message.chars().take(MAX_MESSAGE_CHARS).collect(),
            retry_after: None,
            upstream_retryable: None,
        }
    }

    /// An error answer of the upstream, classified by its HTTP status.
    pub fn from_http(
        status: u16,
        upstream_code: Option<String>,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        UpstreamError {
            http_status: Some(status),
            upstream_code,
            retry_after,
            ..UpstreamError::new(UpstreamErrorKind::from_http_status(status), message)
        }
    }

    /// A 2xx answer whose body is not what the document says.
    pub fn malformed(status: u16, what: impl std::fmt::Display) -> Self {
        UpstreamError {
            http_status: Some(status),
            ..UpstreamError::new(
                UpstreamErrorKind::Malformed,
                format!("unexpected response body: {what}"),
            )
        }
    }

    /// The same error with every credential taken out of the upstream's words.
    pub fn redacted(mut self, redactor: &Redactor) -> Self {
        self.message = redactor.clean(&self.message);
        self.upstream_code = self.upstream_code.map(|code| redactor.clean(&code));
        self
    }

    /// Whether asking again later may succeed: the upstream's word when it gave one, else the kind's.
    pub fn is_retryable(&self) -> bool {
        self.upstream_retryable
            .unwrap_or_else(|| self.kind_is_retryable())
    }

    fn kind_is_retryable(&self) -> bool {
        matches!(
            self.kind,
            UpstreamErrorKind::RateLimited
                | UpstreamErrorKind::Unavailable
                | UpstreamErrorKind::Timeout
                | UpstreamErrorKind::CircuitOpen
        )
    }
}
