//! The one place where costd's errors become gRPC statuses with google.rpc details.

use crate::{
    auth::{Principal, Rejection},
    domain::{AccountRef, UpstreamError, UpstreamErrorKind},
    engine::EngineError,
    export::ExportError,
    jobs::{JobsFull, StartError, StoreError},
};
use prost::Message;
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The ErrorInfo domain of costd's own errors.
pub const COSTD_DOMAIN: &str = "costd";

/// `NOT_FOUND` for a job name: unknown and expired jobs answer alike.
pub fn job_not_found(name: &str) -> Status {
    Status::not_found(format!("{name} does not exist or has expired"))
}

/// How soon a caller turned away by a limit may try again: a call in progress usually ends sooner.
const OVERLOAD_RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// How soon a caller turned away by a stopping server may try again (another replica, or this one
/// restarted): about the time a rolling update takes to replace it.
const STOPPING_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// How many RetryInfo delays an overload refusal chooses from.
const OVERLOAD_RETRY_STEPS: u32 = 8;
// A refusal picks one of them at random: there must be one.
const _: () = assert!(OVERLOAD_RETRY_STEPS > 0);

/// The RetryInfo delays of overload refusals: half to one and a half times
/// [`OVERLOAD_RETRY_AFTER`], in even steps, so callers turned away together come back apart. Few
/// enough that a layer refusing many calls can make each refusal once (`server::admission`), so that
/// HPACK finds its headers in the connection's table rather than coding a new value every time.
pub fn overload_retry_delays() -> impl Iterator<Item = std::time::Duration> {
    (0..OVERLOAD_RETRY_STEPS).map(overload_retry_delay)
}

fn overload_retry_delay(step: u32) -> std::time::Duration {
    let steps = f64::from(OVERLOAD_RETRY_STEPS);
    OVERLOAD_RETRY_AFTER.mul_f64(0.5 + (f64::from(step) + 0.5) / steps)
}

/// `RESOURCE_EXHAUSTED` with RetryInfo: a server-wide limit (`limit`, its config key) is reached.
pub fn overloaded(limit: &str, allowed: u64) -> Status {
    let step = rand::random_range(0..OVERLOAD_RETRY_STEPS);
    overloaded_after(limit, allowed, overload_retry_delay(step))
}

/// [`overloaded`], naming `retry_after` (one of [`overload_retry_delays`]).
pub fn overloaded_after(limit: &str, allowed: u64, retry_after: std::time::Duration) -> Status {
    over_limit(
        limit,
        allowed,
        format!("the server is at its limit of {allowed} ({limit}); try again shortly"),
        retry_after,
    )
}

/// `RESOURCE_EXHAUSTED` with RetryInfo `retry_after` (one of [`overload_retry_delays`]): ready work
/// has waited longer than `target` (`server.max_queue_delay_us`) for the runtime for a whole
/// interval.
pub fn delayed_after(target: std::time::Duration, retry_after: std::time::Duration) -> Status {
    let limit = "server.max_queue_delay_us";
    let allowed = u64::try_from(target.as_micros()).unwrap_or(u64::MAX);
    over_limit(
        limit,
        allowed,
        format!(
            "the server is busy: calls have waited over {allowed} microseconds for a CPU ({limit}); \
             try again shortly"
        ),
        retry_after,
    )
}

fn over_limit(
    limit: &str,
    allowed: u64,
    message: String,
    retry_after: std::time::Duration,
) -> Status {
    let mut details = ErrorDetails::with_error_info(
        "SERVER_OVERLOADED",
        COSTD_DOMAIN,
        HashMap::from([
            ("limit".to_string(), limit.to_string()),
            ("allowed".to_string(), allowed.to_string()),
        ]),
    );
    details.set_retry_info(Some(retry_after));
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

/// `UNAVAILABLE` with RetryInfo: the server is stopping and takes no new work; a stream it ends says
/// the same.
pub fn stopping() -> Status {
    let mut details =
        ErrorDetails::with_error_info("SERVER_STOPPING", COSTD_DOMAIN, HashMap::new());
    details.set_retry_info(Some(STOPPING_RETRY_AFTER));
    Status::with_error_details(
        Code::Unavailable,
        "the server is stopping; retry on another replica or after it restarts",
        details,
    )
}

/// `RESOURCE_EXHAUSTED` with RetryInfo: the job table holds `jobs.max_jobs` jobs.
pub fn jobs_full(full: &JobsFull) -> Status {
    overloaded("jobs.max_jobs", full.max_jobs as u64)
}

/// A job that could not be started: the table is full, or the store failed.
pub fn job_start(error: &StartError) -> Status {
    match error {
        StartError::Full(full) => jobs_full(full),
        StartError::Store(error) => job_store(error),
    }
}

/// How soon a caller may try a job call again after the job store failed.
const JOB_STORE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A job store failure: `UNAVAILABLE` with RetryInfo (ErrorInfo `JOB_STORE_UNAVAILABLE`), except a
/// stored job this build cannot read (`INTERNAL`) or one a newer costd stored (`FAILED_PRECONDITION`,
/// `JOB_STORE_FORMAT_NEWER`). Never names the store's address.
pub fn job_store(error: &StoreError) -> Status {
    let (code, reason) = match error {
        StoreError::Unavailable(_) | StoreError::Contended => {
            (Code::Unavailable, "JOB_STORE_UNAVAILABLE")
        }
        StoreError::Unreadable => (Code::Internal, "JOB_STORE_UNREADABLE"),
        StoreError::NewerFormat { .. } => (Code::FailedPrecondition, "JOB_STORE_FORMAT_NEWER"),
    };
    let mut details = ErrorDetails::with_error_info(reason, COSTD_DOMAIN, HashMap::new());
    if code == Code::Unavailable {
        details.set_retry_info(Some(JOB_STORE_RETRY));
    }
    Status::with_error_details(code, error.to_string(), details)
}

/// `INVALID_ARGUMENT` listing the violations at once (BadRequest). Details ride in trailers, which
/// clients cap (C-core refuses ~8 KB of metadata and the caller then loses everything): the first
/// violations that fit [`DETAILS_BUDGET`] are listed, then one more saying how many were left out.
pub fn invalid_argument(mut violations: Vec<FieldViolation>) -> Status {
    let mut spent = 0;
    let listed = violations
        .iter()
        .take_while(|v| {
            spent += v.field.len() + v.description.len() + VIOLATION_OVERHEAD;
            spent <= DETAILS_BUDGET
        })
        .count();
    let left_out = violations.len() - listed;
    violations.truncate(listed);
    let mut summary = String::new();
    for v in &violations {
        let part = format!("{}: {}", v.field, v.description);
        if summary.len() + part.len() > MESSAGE_BUDGET {
            break;
        }
        if !summary.is_empty() {
            summary.push_str("; ");
        }
        summary.push_str(&part);
    }
    if left_out > 0 {
        violations.push(FieldViolation::new(
            "request",
            format!("{left_out} more violations are not listed"),
        ));
    }
    let total = listed + left_out;
    let message = match total {
        1 => format!("invalid request: {summary}"),
        _ => format!("invalid request ({total} violations): {summary}"),
    };
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request(violations),
    )
}

/// Bytes of violations listed in a BadRequest. The details travel base64-encoded and repeat the
/// message; with the message's own header, an error's metadata stays under 8 KB.
const DETAILS_BUDGET: usize = 3 * 1024;
/// Bytes of violations repeated in the status message.
const MESSAGE_BUDGET: usize = 512;
/// What protobuf framing adds to each violation, roughly.
const VIOLATION_OVERHEAD: usize = 8;

pub fn engine(error: &EngineError) -> Status {
    let (code, reason, metadata) = match error {
        EngineError::Arithmetic(_) => (Code::Internal, "ARITHMETIC", HashMap::new()),
        EngineError::TooManyChunks { planned, limit } => (
            Code::ResourceExhausted,
            "QUERY_TOO_LARGE",
            HashMap::from([
                (
                    "limit".to_string(),
                    "server.max_chunks_per_query".to_string(),
                ),
                ("allowed".to_string(), limit.to_string()),
                ("needed".to_string(), planned.to_string()),
            ]),
        ),
        EngineError::TooManyRows { rows, limit } => (
            Code::ResourceExhausted,
            "QUERY_TOO_LARGE",
            HashMap::from([
                ("limit".to_string(), "server.max_rows".to_string()),
                ("allowed".to_string(), limit.to_string()),
                ("needed".to_string(), rows.to_string()),
            ]),
        ),
    };
    Status::with_error_details(
        code,
        error.to_string(),
        ErrorDetails::with_error_info(reason, COSTD_DOMAIN, metadata),
    )
}

/// An export that stopped part way: the stream ends with this status after the bytes sent so far.
/// `INTERNAL`: costd could not write its own records (a value the format cannot hold exactly is
/// refused rather than rounded).
pub fn export(error: &ExportError) -> Status {
    let reason = match error {
        ExportError::Inexact { .. } => "EXPORT_VALUE_NOT_EXACT",
        ExportError::Parquet(_) | ExportError::Csv(_) => "EXPORT_WRITER_FAILED",
        ExportError::Stopped => "EXPORT_STOPPED",
    };
    Status::with_error_details(
        Code::Internal,
        error.to_string(),
        ErrorDetails::with_error_info(reason, COSTD_DOMAIN, HashMap::new()),
    )
}

/// `INTERNAL`: an answer could not be encoded (prost refuses only a buffer too small to hold it).
pub fn encoding(error: prost::EncodeError) -> Status {
    Status::internal(format!("cannot encode the answer: {error}"))
}

/// `INVALID_ARGUMENT`: the request's bytes are not a message of its type.
pub fn undecodable_request(error: prost::DecodeError) -> Status {
    invalid_argument(vec![FieldViolation::new(
        "request",
        format!("not a valid protobuf message: {error}"),
    )])
}

/// `RESOURCE_EXHAUSTED`: the request message is larger than the server accepts; sending it again
/// will not help, so no RetryInfo.
pub fn request_too_large(limit: usize) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("the request is larger than {limit} bytes, the most this server accepts"),
        ErrorDetails::with_error_info(
            "REQUEST_TOO_LARGE",
            COSTD_DOMAIN,
            HashMap::from([
                ("limit".to_string(), "server.max_request_bytes".to_string()),
                ("allowed".to_string(), limit.to_string()),
            ]),
        ),
    )
}

/// `INTERNAL`: a remembered answer's stored bytes did not decode (they were encoded by costd itself).
pub fn own_answer_unreadable(error: prost::DecodeError) -> Status {
    Status::internal(format!("cannot read a remembered answer: {error}"))
}

/// The gRPC code a caller sees for an upstream failure.
pub fn upstream_code(kind: UpstreamErrorKind) -> Code {
    match kind {
        UpstreamErrorKind::Unauthenticated | UpstreamErrorKind::PermissionDenied => {
            Code::PermissionDenied
        }
        UpstreamErrorKind::NotFound => Code::NotFound,
        UpstreamErrorKind::Rejected => Code::InvalidArgument,
        UpstreamErrorKind::RateLimited | UpstreamErrorKind::TooLarge => Code::ResourceExhausted,
        UpstreamErrorKind::Unavailable | UpstreamErrorKind::CircuitOpen => Code::Unavailable,
        UpstreamErrorKind::Timeout => Code::DeadlineExceeded,
        UpstreamErrorKind::Malformed => Code::Unknown,
        UpstreamErrorKind::Unanswerable => Code::FailedPrecondition,
    }
}

/// An upstream failure of one account as a `google.rpc.Status`: ErrorInfo (reason, domain = provider,
/// metadata with the account, the HTTP status and the upstream's own code) and RetryInfo when a retry
/// may help.
pub fn upstream_failure(account: &AccountRef, error: &UpstreamError) -> tonic_types::Status {
    let mut metadata = HashMap::from([("provider_account".to_string(), account.id.to_string())]);
    if let Some(status) = error.http_status {
        metadata.insert("http_status".to_string(), status.to_string());
    }
    if let Some(code) = &error.upstream_code {
        metadata.insert("upstream_code".to_string(), code.clone());
    }
    let mut details =
        ErrorDetails::with_error_info(error.kind.reason(), account.kind.as_str(), metadata);
    if error.is_retryable() {
        details.set_retry_info(error.retry_after);
    }
    let message = match error.http_status {
        Some(status) => format!(
            "{}: upstream answered {status}: {}",
            account.id, error.message
        ),
        None => format!("{}: {}", account.id, error.message),
    };
    to_rpc_status(Status::with_error_details(
        upstream_code(error.kind),
        message,
        details,
    ))
}

/// The `google.rpc.Status` a `tonic::Status` carries, for embedding in messages.
pub fn to_rpc_status(status: Status) -> tonic_types::Status {
    // with_error_details always encodes a google.rpc.Status; an empty one means no details were set.
    tonic_types::Status::decode(status.details()).unwrap_or_else(|_| tonic_types::Status {
        code: status.code() as i32,
        message: status.message().to_string(),
        details: Vec::new(),
    })
}

/// `UNAUTHENTICATED` naming why the credentials were refused (never repeating them), with ErrorInfo.
pub fn unauthenticated(rejection: Rejection) -> Status {
    Status::with_error_details(
        Code::Unauthenticated,
        rejection.message(),
        ErrorDetails::with_error_info(
            rejection.reason().to_ascii_uppercase(),
            COSTD_DOMAIN,
            HashMap::new(),
        ),
    )
}

/// `PERMISSION_DENIED`: authenticated, but no `[[auth.grants]]` entry matches the principal.
pub fn no_grant(principal: &Principal) -> Status {
    Status::with_error_details(
        Code::PermissionDenied,
        format!("no grant for principal `{principal}`"),
        ErrorDetails::with_error_info("NO_GRANT", COSTD_DOMAIN, HashMap::new()),
    )
}

/// `PERMISSION_DENIED` naming the accounts a query asked for outside the caller's grant.
pub fn accounts_not_granted(accounts: &[String]) -> Status {
    let listed = accounts.join(", ");
    Status::with_error_details(
        Code::PermissionDenied,
        format!("not granted: provider accounts {listed}"),
        ErrorDetails::with_error_info(
            "ACCOUNTS_NOT_GRANTED",
            COSTD_DOMAIN,
            HashMap::from([("provider_accounts".to_string(), listed)]),
        ),
    )
}

/// `PERMISSION_DENIED`: the caller's grant matches no configured account, so it can ask for nothing.
pub fn no_granted_accounts() -> Status {
    Status::with_error_details(
        Code::PermissionDenied,
        "the caller's grant covers no configured provider account",
        ErrorDetails::with_error_info("ACCOUNTS_NOT_GRANTED", COSTD_DOMAIN, HashMap::new()),
    )
}

/// `PERMISSION_DENIED`: a call reached a handler without the access the guard attaches; deny.
pub fn no_access() -> Status {
    Status::permission_denied("the call carries no caller identity")
}
