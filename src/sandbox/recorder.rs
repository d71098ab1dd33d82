//! Records every request the sandbox receives, so tests can count upstream calls and their timing.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::extract::connect_info::ConnectInfo;
use http::request::Parts;
use http::{Method, header};
use tokio::sync::watch;

use crate::sandbox::Scope;
use crate::sandbox::conn::ConnKill;

/// One request as the sandbox saw it. Holds no credential, only whether one was sent.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Which emulated upstream (and which of its tenants) the request addressed.
    pub scope: Scope,
    pub method: Method,
    pub path: String,
    /// The raw query string, without the `?`.
    pub query: Option<String>,
    /// The W3C `traceparent` header, if sent.
    pub traceparent: Option<String>,
    /// The W3C `tracestate` header, if sent.
    pub tracestate: Option<String>,
    /// Whether an `Authorization` header was present (its value is never kept).
    pub has_authorization: bool,
    /// When the handler received the request.
    pub received_at: Instant,
}

/// The request log plus a version counter that wakes waiters on each new request.
pub(crate) struct Recorder {
    records: Mutex<Vec<RecordedRequest>>,
    version: watch::Sender<u64>,
    /// Per scope: requests being answered now, and the most there ever were at once.
    in_flight: Mutex<HashMap<Scope, (usize, usize)>>,
}

/// One request being answered; leaves the count when dropped.
pub(crate) struct InFlight<'a> {
    recorder: &'a Recorder,
    scope: Scope,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some((now, _)) = lock(&self.recorder.in_flight).get_mut(&self.scope) {
            *now = now.saturating_sub(1);
        }
    }
}

/// What an emulator handler extracts before knowing its scope; becomes a record once it does.
pub(crate) struct Incoming {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    has_authorization: bool,
    /// Kept only for the fault that echoes it back; never recorded.
    pub(crate) authorization: Option<String>,
    received_at: Instant,
    /// Absent when the router is driven without the sandbox's own listener.
    pub(crate) conn: Option<ConnKill>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            records: Mutex::new(Vec::new()),
            version: watch::Sender::new(0),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        // A panic elsewhere must not make the log unreadable for the test reporting it.
        lock(&self.records)
    }

    pub(crate) fn record(&self, scope: &Scope, incoming: &Incoming) {
        self.lock().push(RecordedRequest {
            scope: scope.clone(),
            method: incoming.method.clone(),
            path: incoming.path.clone(),
            query: incoming.query.clone(),
            traceparent: incoming.traceparent.clone(),
            tracestate: incoming.tracestate.clone(),
            has_authorization: incoming.has_authorization,
            received_at: incoming.received_at,
        });
        // Notify after releasing the log lock: waiters take it in their predicate.
        self.version.send_modify(|v| *v += 1);
    }

    /// Counts a request of `scope` as in flight until the guard drops.
    pub(crate) fn enter(&self, scope: &Scope) -> InFlight<'_> {
        let mut in_flight = lock(&self.in_flight);
        let (now, most) = in_flight.entry(scope.clone()).or_default();
        *now += 1;
        *most = (*most).max(*now);
        InFlight {
            recorder: self,
            scope: scope.clone(),
        }
    }

    /// The most requests of `scope` that were ever answered at once.
    pub(crate) fn most_in_flight(&self, scope: &Scope) -> usize {
        lock(&self.in_flight)
            .get(scope)
            .map_or(0, |(_, most)| *most)
    }

    pub(crate) fn snapshot(&self) -> Vec<RecordedRequest> {
        self.lock().clone()
    }

    pub(crate) fn count(&self, scope: Option<&Scope>) -> usize {
        let records = self.lock();
        match scope {
            Some(scope) => records.iter().filter(|r| &r.scope == scope).count(),
            None => records.len(),
        }
    }

    pub(crate) fn reset(&self) {
        self.lock().clear();
        self.version.send_modify(|v| *v += 1);
    }

    /// Resolves once at least `n` requests (of `scope`, or in all) are recorded.
    pub(crate) async fn wait_for(&self, scope: Option<&Scope>, n: usize) {
        // Subscribing before the first check means no request can slip between them.
        let mut rx = self.version.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|_| self.count(scope) >= n).await;
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Incoming {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let (traceparent, tracestate) = (header("traceparent"), header("tracestate"));
        Ok(Self {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            traceparent,
            tracestate,
            has_authorization: parts.headers.contains_key(header::AUTHORIZATION),
            authorization: header(header::AUTHORIZATION.as_str()),
            received_at: Instant::now(),
            conn: parts
                .extensions
                .get::<ConnectInfo<ConnKill>>()
                .map(|c| c.0.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::sandbox::testkit::{
        JAN_2025, client, cost_url, get_cost, period, start, token_of, within,
    };
    use crate::sandbox::{Fault, Scope, UNROUTED};

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[tokio::test]
    async fn records_scope_request_line_traceparent_and_auth_presence() {
        let sb = start();
        let token = token_of(&sb, "team_acme");
        let query = period(JAN_2025);
        let traced = client()
            .get(cost_url(&sb, "team_acme", &query))
            .bearer_auth(&token)
            .header("traceparent", TRACEPARENT);
        within(traced.send()).await.expect("request succeeds");
        let anonymous = client().get(cost_url(&sb, "team_borealis", &query));
        within(anonymous.send()).await.expect("request succeeds");
        let stray = client().get(format!("{}/nowhere", sb.base_url()));
        assert_eq!(within(stray.send()).await.expect("sent").status(), 404);
        get_cost(&sb, "team_acme", &query).await;

        let records = sb.requests();
        assert_eq!(records.len(), 4);
        assert_eq!(sb.total_requests(), 4);
        assert_eq!(sb.request_count(&Scope::team_billing("team_acme")), 2);
        assert_eq!(sb.request_count(&Scope::team_billing("team_borealis")), 1);
        assert_eq!(sb.request_count(&Scope::new(UNROUTED, "")), 1);
        let first = &records[0];
        assert_eq!(first.scope, Scope::team_billing("team_acme"));
        assert_eq!(first.method, http::Method::GET);
        assert_eq!(first.path, "/teams/team_acme/billing/cost");
        assert_eq!(first.query.as_deref(), Some(query.as_str()));
        assert_eq!(first.traceparent.as_deref(), Some(TRACEPARENT));
        assert!(first.has_authorization);
        assert!(!records[1].has_authorization && records[1].traceparent.is_none());
        assert_eq!(records[2].path, "/nowhere");
        assert!(
            records
                .windows(2)
                .all(|w| w[0].received_at <= w[1].received_at)
        );
        assert!(
            !format!("{records:?}").contains(&token),
            "credentials are never kept"
        );

        sb.reset();
        assert_eq!(sb.total_requests(), 0);
        assert!(sb.requests().is_empty());
    }

    #[tokio::test]
    async fn waiting_for_requests_follows_arrivals_without_sleeping() {
        let sb = start();
        let acme = Scope::team_billing("team_acme");
        // Already satisfied: resolves at once.
        within(sb.wait_for_requests(&acme, 0)).await;
        sb.push_fault(&acme, Fault::Hang);
        let hung = tokio::spawn({
            let sb = sb.clone();
            async move { get_cost(&sb, "team_acme", &period(JAN_2025)).await }
        });
        // Seen while the request is still in flight.
        within(sb.wait_for_requests(&acme, 1)).await;
        assert!(!hung.is_finished());
        let more = tokio::spawn({
            let sb = sb.clone();
            async move {
                for _ in 0..3 {
                    get_cost(&sb, "team_cobalt", &period(JAN_2025)).await;
                }
            }
        });
        within(sb.wait_for_total_requests(4)).await;
        assert_eq!(sb.request_count(&Scope::team_billing("team_cobalt")), 3);
        within(more).await.expect("requests finish");
        hung.abort();
    }
}
