//! Fault injection: per-scope queues of misbehaviours, applied by one request pipeline all emulators share.

use crate::sync::lock;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::sandbox::recorder::Incoming;
use crate::sandbox::{Scope, Shared};

/// One misbehaviour of an emulated upstream, consumed by one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer `code` with the upstream's error body for it, plus `Retry-After` (seconds) if set.
    Status {
        code: StatusCode,
        retry_after: Option<u64>,
    },
    /// Wait this long, then answer normally.
    Latency(Duration),
    /// 200 whose body is not JSON.
    MalformedBody,
    /// 200 whose JSON body is cut in the middle (Content-Length matches the cut body).
    TruncatedBody,
    /// 200 that announces the whole body's Content-Length, sends half of it, then closes the connection.
    BodyCutShort,
    /// Answer `code` with the upstream's error body, whose words repeat the request's Authorization
    /// header, as a careless upstream might.
    EchoAuthorization(StatusCode),
    /// 200 whose totals disagree with their parts (what exactly is per upstream).
    InconsistentTotals,
    /// Never answer; the request ends when the client gives up or the sandbox shuts down.
    Hang,
    /// Close the connection without any response.
    DropConnection,
}

/// How an emulator should build its normal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    Normal,
    InconsistentTotals,
}

#[derive(Default)]
struct ScopeFaults {
    queue: VecDeque<Fault>,
    persistent: Option<Fault>,
}

/// All scopes' faults.
#[derive(Default)]
pub(crate) struct FaultBook {
    scopes: Mutex<HashMap<Scope, ScopeFaults>>,
}

impl FaultBook {
    fn lock(&self) -> MutexGuard<'_, HashMap<Scope, ScopeFaults>> {
        lock(&self.scopes)
    }

    pub(crate) fn push(&self, scope: &Scope, fault: Fault) {
        self.lock()
            .entry(scope.clone())
            .or_default()
            .queue
            .push_back(fault);
    }

    pub(crate) fn set_persistent(&self, scope: &Scope, fault: Fault) {
        self.lock().entry(scope.clone()).or_default().persistent = Some(fault);
    }

    pub(crate) fn clear(&self, scope: &Scope) {
        self.lock().remove(scope);
    }

    pub(crate) fn clear_all(&self) {
        self.lock().clear();
    }

    pub(crate) fn pending(&self, scope: &Scope) -> usize {
        self.lock().get(scope).map_or(0, |f| f.queue.len())
    }

    /// Queued faults go first; the persistent one applies whenever the queue is empty.
    fn take(&self, scope: &Scope) -> Option<Fault> {
        let mut scopes = self.lock();
        let faults = scopes.get_mut(scope)?;
        faults
            .queue
            .pop_front()
            .or_else(|| faults.persistent.clone())
    }
}

impl Shared {
    /// The request pipeline every emulator handler runs: record, take this scope's
    /// next fault, then answer through `error` (status faults) or `normal`.
    pub(crate) async fn exchange<E, N, Fut>(
        &self,
        scope: Scope,
        incoming: Incoming,
        error: E,
        normal: N,
    ) -> Response
    where
        E: FnOnce(StatusCode) -> Response,
        N: FnOnce(Variant) -> Fut,
        Fut: Future<Output = Response>,
    {
        self.recorder.record(&scope, &incoming);
        let _in_flight = self.recorder.enter(&scope);
        let Some(fault) = self.faults.take(&scope) else {
            return normal(Variant::Normal).await;
        };
        tracing::debug!(upstream = scope.upstream, key = %scope.key, ?fault, "sandbox fault");
        match fault {
            Fault::Status { code, retry_after } => {
                let mut response = error(code);
                *response.status_mut() = code;
                if let Some(secs) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                response
            }
            Fault::Latency(delay) => {
                let mut shutdown = self.shutdown.subscribe();
                // Shutdown cuts the delay short so it never holds up a graceful stop.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|stopping| *stopping) => {}
                }
                normal(Variant::Normal).await
            }
            Fault::MalformedBody => json_response(
                StatusCode::OK,
                Body::from(r#"{"status": ok, "data": [1, 2,,]"#),
            ),
            Fault::TruncatedBody => truncate(normal(Variant::Normal).await).await,
            Fault::BodyCutShort => cut_short(normal(Variant::Normal).await).await,
            Fault::EchoAuthorization(code) => {
                let sent = incoming.authorization.clone().unwrap_or_default();
                let mut response = echo(error(code), &sent).await;
                *response.status_mut() = code;
                response
            }
            Fault::InconsistentTotals => normal(Variant::InconsistentTotals).await,
            Fault::Hang => {
                let mut shutdown = self.shutdown.subscribe();
                let _ = shutdown.wait_for(|stopping| *stopping).await;
                cut(&incoming)
            }
            Fault::DropConnection => cut(&incoming),
        }
    }
}

/// Kills the request's connection; the returned response is never written.
fn cut(incoming: &Incoming) -> Response {
    match &incoming.conn {
        Some(conn) => {
            conn.kill();
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        // Without our listener there is no connection to cut; a 502 is the nearest thing.
        None => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// Keeps status and headers but sends only the first half of the body.
async fn truncate(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes.slice(..bytes.len() / 2)))
}

/// Sends the first half of the body under the whole body's Content-Length, then fails the body, so
/// the server closes the connection mid-message.
async fn cut_short(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let half = bytes.slice(..bytes.len() / 2);
    let frames: [Result<bytes::Bytes, std::io::Error>; 2] = [
        Ok(half),
        Err(std::io::Error::other("the sandbox cuts this body short")),
    ];
    Response::from_parts(parts, Body::from_stream(futures::stream::iter(frames)))
}

/// The error body with `sent` appended to every message-like string in it.
async fn echo(response: Response, sent: &str) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    fn append(value: &mut serde_json::Value, sent: &str) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    match value {
                        serde_json::Value::String(text)
                            if ["message", "detail", "reason", "error"].contains(&key.as_str()) =>
                        {
                            text.push_str(&format!(" (request had Authorization: {sent})"));
                        }
                        other => append(other, sent),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| append(v, sent)),
            _ => {}
        }
    }
    append(&mut json, sent);
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(json.to_string()))
}

pub(crate) fn json_response(status: StatusCode, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http::StatusCode;
    use serde_json::Value;

    use crate::sandbox::testkit::{
        JAN_2025, client_with_timeout, cost_url, get_cost, json, period, start, within,
    };
    use crate::sandbox::{Fault, Scope};

    const ACME: &str = "team_acme";

    fn acme() -> Scope {
        Scope::team_billing(ACME)
    }

    fn status(code: StatusCode, retry_after: Option<u64>) -> Fault {
        Fault::Status { code, retry_after }
    }

    #[tokio::test]
    async fn status_faults_use_the_error_shape_then_the_queue_drains() {
        let sb = start();
        sb.push_fault(&acme(), status(StatusCode::TOO_MANY_REQUESTS, Some(1)));
        sb.push_fault(&acme(), status(StatusCode::SERVICE_UNAVAILABLE, None));
        sb.push_fault(&acme(), status(StatusCode::BAD_REQUEST, None));
        sb.push_fault(&acme(), status(StatusCode::UNAUTHORIZED, None));
        assert_eq!(sb.pending_faults(&acme()), 4);
        let expected = [
            (429, Some("1"), "RATE_LIMITED", true),
            (503, None, "SERVICE_UNAVAILABLE", true),
            (400, None, "VALIDATION_ERROR", false),
        ];
        for (code, retry_after, name, retryable) in expected {
            let response = get_cost(&sb, ACME, &period(JAN_2025)).await;
            assert_eq!(response.status().as_u16(), code);
            let header = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().ok());
            assert_eq!(header, retry_after.map(Some));
            let body = json(response).await;
            assert_eq!(body["code"], name);
            assert_eq!(body["retryable"], retryable);
            assert!(body["error"].is_string());
        }
        let response = get_cost(&sb, ACME, &period(JAN_2025)).await;
        assert_eq!(response.status(), 401);
        assert_eq!(json(response).await["error"], "UNAUTHORIZED");
        assert_eq!(sb.pending_faults(&acme()), 0);
        assert_eq!(get_cost(&sb, ACME, &period(JAN_2025)).await.status(), 200);
        assert_eq!(sb.request_count(&acme()), 5);
    }

    #[tokio::test]
    async fn latency_delays_then_answers_normally() {
        let sb = start();
        let delay = Duration::from_millis(200);
        sb.push_fault(&acme(), Fault::Latency(delay));
        let response = get_cost(&sb, ACME, &period(JAN_2025)).await;
        let done = Instant::now();
        assert_eq!(response.status(), 200);
        assert_eq!(json(response).await["teamId"], ACME);
        assert!(done - sb.requests()[0].received_at >= delay);
    }

    #[tokio::test]
    async fn malformed_and_truncated_bodies_are_200_but_not_json() {
        let sb = start();
        sb.push_fault(&acme(), Fault::MalformedBody);
        sb.push_fault(&acme(), Fault::TruncatedBody);
        for eof in [false, true] {
            let response = get_cost(&sb, ACME, &period(JAN_2025)).await;
            assert_eq!(response.status(), 200);
            let bytes = within(response.bytes()).await.expect("body reads in full");
            let err = serde_json::from_slice::<Value>(&bytes).expect_err("not valid JSON");
            // A cut document ends early; a malformed one breaks its syntax.
            assert_eq!(err.is_eof(), eof, "{err}");
            if eof {
                assert!(bytes.starts_with(br#"{"teamId":"team_acme""#));
            }
        }
    }

    #[tokio::test]
    async fn inconsistent_totals_break_one_operation_sum() {
        let sb = start();
        sb.push_fault(&acme(), Fault::InconsistentTotals);
        let body = json(get_cost(&sb, ACME, &period(JAN_2025)).await).await;
        let ops = body["operationCosts"].as_array().expect("operationCosts");
        let off_by: Vec<u64> = ops
            .iter()
            .map(|op| {
                let dims = op["dimensions"].as_array().expect("dimensions");
                let sum: u64 = dims
                    .iter()
                    .filter_map(|d| d["costNanodollars"].as_u64())
                    .sum();
                op["totalCostNanodollars"].as_u64().unwrap_or(0) - sum
            })
            .collect();
        assert_eq!(off_by.iter().filter(|&&d| d == 1).count(), 1);
        assert_eq!(off_by.iter().sum::<u64>(), 1);
        let op_sum: u64 = ops
            .iter()
            .filter_map(|op| op["totalCostNanodollars"].as_u64())
            .sum();
        assert_eq!(body["totalCostNanodollars"], op_sum);
    }

    #[tokio::test]
    async fn hang_lasts_until_the_client_gives_up() {
        let sb = start();
        sb.push_fault(&acme(), Fault::Hang);
        let token = sb.dataset().team(ACME).expect("seeded").token.clone();
        let impatient = client_with_timeout(Duration::from_millis(300));
        let request = impatient.get(cost_url(&sb, ACME, &period(JAN_2025)));
        let err = within(request.bearer_auth(&token).send())
            .await
            .expect_err("times out");
        assert!(err.is_timeout(), "{err}");
        assert_eq!(sb.request_count(&acme()), 1);
        assert_eq!(get_cost(&sb, ACME, &period(JAN_2025)).await.status(), 200);
    }

    #[tokio::test]
    async fn drop_connection_closes_without_a_response() {
        let sb = start();
        sb.push_fault(&acme(), Fault::DropConnection);
        let token = sb.dataset().team(ACME).expect("seeded").token.clone();
        let request = client_with_timeout(Duration::from_secs(10))
            .get(cost_url(&sb, ACME, &period(JAN_2025)))
            .bearer_auth(&token);
        let err = within(request.send()).await.expect_err("no response");
        assert!(!err.is_timeout() && err.status().is_none(), "{err}");
        assert_eq!(sb.request_count(&acme()), 1);
        assert_eq!(get_cost(&sb, ACME, &period(JAN_2025)).await.status(), 200);
    }

    #[tokio::test]
    async fn a_persistent_fault_holds_until_cleared_and_stays_in_its_scope() {
        let sb = start();
        sb.set_persistent_fault(&acme(), status(StatusCode::BAD_GATEWAY, None));
        sb.push_fault(&acme(), status(StatusCode::TOO_MANY_REQUESTS, None));
        let codes = [429, 502, 502];
        for code in codes {
            let response = get_cost(&sb, ACME, &period(JAN_2025)).await;
            assert_eq!(response.status().as_u16(), code);
        }
        assert_eq!(
            get_cost(&sb, "team_cobalt", &period(JAN_2025))
                .await
                .status(),
            200
        );
        sb.clear_faults(&acme());
        assert_eq!(get_cost(&sb, ACME, &period(JAN_2025)).await.status(), 200);
        sb.set_persistent_fault(&acme(), Fault::MalformedBody);
        sb.clear_all_faults();
        assert_eq!(get_cost(&sb, ACME, &period(JAN_2025)).await.status(), 200);
    }
}
