//! Atlas answers on the wire: the documented error body, the `envelope` wrapping, the bare 102, rate-limit and media-type headers.

use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::Value;

use crate::sandbox::RateLimit;
use crate::sandbox::atlas::auth::AuthFailure;
use crate::sandbox::atlas::query::FieldViolation;
use crate::sandbox::atlas::state::AtlasState;
use crate::sandbox::atlas::{BARE_PROCESSING, MEDIA_TYPE};
use crate::sandbox::conn::ConnKill;

/// An answer before rendering: enveloped or not, bare 102 or not, is decided last.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// JSON text; empty for "processing".
    pub(crate) body: String,
    pub(crate) headers: HeaderMap,
    /// Success bodies are typed `MEDIA_TYPE` unless this is set (OAuth answers plain JSON).
    pub(crate) plain_json: bool,
}

/// Marks an enveloped response, whose HTTP status must stay 200 even after a status fault.
#[derive(Clone, Copy)]
struct Enveloped;

/// The documented error body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    error: u16,
    error_code: &'a str,
    reason: &'a str,
    detail: &'a str,
    parameters: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bad_request_detail: Option<BadRequestDetail>,
}

#[derive(Serialize)]
struct BadRequestDetail {
    fields: Vec<FieldViolation>,
}

impl Answer {
    pub(crate) fn json(status: StatusCode, body: String) -> Self {
        Self {
            status,
            body,
            headers: HeaderMap::new(),
            plain_json: false,
        }
    }

    /// The documented error body with the status's usual `errorCode`.
    pub(crate) fn error(status: StatusCode, detail: &str) -> Self {
        error_answer(status, error_code(status), detail, Vec::new(), None)
    }
}

/// Turns an answer into a response: wrapped as `{"status","content"}` when the caller
/// asked for the envelope, else with its own status and Atlas's content types.
pub(crate) fn render(answer: Answer, envelope: bool) -> Response {
    let Answer {
        status,
        body,
        headers,
        plain_json,
    } = answer;
    // Authentication sits in front of the API: a 401 stays a real 401, so that Digest
    // clients still see their challenge.
    let enveloped = envelope && status != StatusCode::UNAUTHORIZED;
    let (status, content_type, body) = if enveloped {
        let content = if body.is_empty() { "{}" } else { body.as_str() };
        let status_code = status.as_u16();
        let wrapped = format!(r#"{{"status":{status_code},"content":{content}}}"#);
        (StatusCode::OK, MEDIA_TYPE, wrapped)
    } else if status.is_success() && !plain_json {
        (status, MEDIA_TYPE, body)
    } else {
        (status, "application/json", body)
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().extend(headers);
    let content_type = HeaderValue::from_static(content_type);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    if enveloped {
        response.extensions_mut().insert(Enveloped);
    }
    response
}

/// A bare 102: hyper will not send a 1xx as a final response (it turns it into a 500),
/// so the connection writes these raw bytes in place of the response, then closes.
pub(crate) fn bare_processing(conn: Option<&ConnKill>) -> Response {
    let mut response = Response::new(Body::empty());
    match conn {
        // The 200 is never written: the stream swaps it for the raw bytes.
        Some(conn) => conn.replace_response(BARE_PROCESSING.to_vec()),
        // Without the sandbox's listener (a router driven in-process) the status says it.
        None => *response.status_mut() = StatusCode::PROCESSING,
    }
    response
}

/// A status fault on an enveloped call keeps HTTP 200: the status belongs in the body.
pub(crate) fn settle(mut response: Response) -> Response {
    if response.extensions().get::<Enveloped>().is_some() {
        *response.status_mut() = StatusCode::OK;
    }
    response
}

/// The answer to a `Fault::Status` in Atlas's shape.
pub(crate) fn status_answer(atlas: &AtlasState, status: StatusCode) -> Answer {
    if status == StatusCode::UNAUTHORIZED {
        return unauthorized(atlas, atlas.now(), AuthFailure::Invalid);
    }
    let detail = "The sandbox injected this error.";
    // A 429 not from the token bucket uses Atlas's older, generic rate-limit code.
    error_answer(status, error_code(status), detail, Vec::new(), None)
}

pub(crate) fn unauthorized(atlas: &AtlasState, now: Instant, failure: AuthFailure) -> Answer {
    let stale = failure == AuthFailure::Stale;
    let mut answer = Answer::error(
        StatusCode::UNAUTHORIZED,
        "You are not authorized for this resource.",
    );
    let challenge = atlas.auth.challenge(atlas.entropy(), now, stale);
    answer.headers.insert(header::WWW_AUTHENTICATE, challenge);
    answer
}

pub(crate) fn method_not_allowed(allow: &'static str) -> Answer {
    let mut answer = Answer::error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.");
    let allow = HeaderValue::from_static(allow);
    answer.headers.insert(header::ALLOW, allow);
    answer
}

pub(crate) fn invalid_fields(fields: &[(&str, &str)]) -> Answer {
    let fields = fields.iter().map(|&(field, description)| FieldViolation {
        field: field.to_owned(),
        description: description.to_owned(),
    });
    validation_error(fields.collect())
}

pub(crate) fn validation_error(fields: Vec<FieldViolation>) -> Answer {
    let detail = format!("The request has {} invalid field(s).", fields.len());
    let status = StatusCode::BAD_REQUEST;
    let details = Some(BadRequestDetail { fields });
    error_answer(status, "VALIDATION_ERROR", &detail, Vec::new(), details)
}

/// The documented bucket-exhausted answer: 429, `Retry-After`, and the limit's parameters.
pub(crate) fn rate_limited(limit: RateLimit, retry_after_secs: u64) -> Answer {
    let set = "api/atlas/v2/orgs/{orgId}/billing/costExplorer/usage";
    let (capacity, refill) = (limit.capacity, limit.refill_amount);
    let period = limit.refill_period.as_secs();
    let detail = format!(
        "Rate limit exceeded for {set}. Please retry after {retry_after_secs} seconds. \
         Request capacity: {capacity}. Refill rate: {refill} per {period} seconds."
    );
    let parameters = vec![
        Value::from(set),
        Value::from(retry_after_secs),
        Value::from(capacity),
        Value::from(refill),
        Value::from(period),
    ];
    let status = StatusCode::TOO_MANY_REQUESTS;
    let answer = error_answer(
        status,
        "RATE_LIMITED_TOKEN_BUCKET",
        &detail,
        parameters,
        None,
    );
    let mut answer = with_headers(answer, rate_headers(capacity, 0));
    let retry_after = HeaderValue::from(retry_after_secs);
    answer.headers.insert(header::RETRY_AFTER, retry_after);
    answer
}

fn error_answer(
    status: StatusCode,
    error_code: &str,
    detail: &str,
    parameters: Vec<Value>,
    bad_request_detail: Option<BadRequestDetail>,
) -> Answer {
    let body = ErrorBody {
        error: status.as_u16(),
        error_code,
        reason: status.canonical_reason().unwrap_or("Error"),
        detail,
        parameters,
        bad_request_detail,
    };
    // Only strings, integers and string lists: serialising cannot fail.
    Answer::json(status, serde_json::to_string(&body).unwrap_or_default())
}

fn error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "VALIDATION_ERROR",
        401 => "USER_UNAUTHORIZED",
        403 => "ORG_ACCESS_DENIED",
        404 => "RESOURCE_NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        406 => "NOT_ACCEPTABLE",
        415 => "UNSUPPORTED_MEDIA_TYPE",
        429 => "RATE_LIMITED",
        503 => "SERVICE_UNAVAILABLE",
        _ => "UNEXPECTED_ERROR",
    }
}

pub(crate) fn rate_headers(limit: u32, remaining: u32) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("ratelimit-limit", HeaderValue::from(limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
    headers
}

pub(crate) fn with_headers(mut answer: Answer, headers: HeaderMap) -> Answer {
    answer.headers.extend(headers);
    answer
}

pub(crate) enum Accept {
    /// Names the documented versioned media type.
    Versioned,
    /// No `Accept`, or only generic JSON: served as the one version there is.
    Generic,
    /// CSV, another version, or anything else: 406 (the emulator produces JSON only).
    Refused,
}

pub(crate) fn accept(headers: &HeaderMap) -> Accept {
    let Some(value) = headers.get(header::ACCEPT) else {
        return Accept::Generic;
    };
    let Ok(value) = value.to_str() else {
        return Accept::Refused;
    };
    let ranges: Vec<String> = value.split(',').map(media_type).collect();
    if ranges.iter().any(|r| r == MEDIA_TYPE) {
        Accept::Versioned
    } else if ranges
        .iter()
        .any(|r| matches!(r.as_str(), "application/json" | "application/*" | "*/*"))
    {
        Accept::Generic
    } else {
        Accept::Refused
    }
}

pub(crate) fn json_content_type(headers: &HeaderMap) -> bool {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    value
        .map(media_type)
        .is_some_and(|t| t == MEDIA_TYPE || t == "application/json")
}

/// The media type of a header value or `Accept` range, without parameters, lowercased.
fn media_type(value: &str) -> String {
    let essence = value.split(';').next().unwrap_or_default();
    essence.trim().to_ascii_lowercase()
}
