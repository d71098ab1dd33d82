//! Admission of calls: at most `max_concurrent_requests` in progress at once (Health excluded), the
//! rest answered RESOURCE_EXHAUSTED at once, as are new calls while the runtime has stayed behind by
//! more than `max_queue_delay_us` (see [`super::queue_delay`]); while draining, new calls answered
//! UNAVAILABLE at once and streams ended with UNAVAILABLE. A call is in progress until its response
//! body ends, so a stream counts for as long as it is open.
//!
//! A connection refused again sooner than any RetryInfo delay it was told has that refusal held for
//! `early_retry_hold_ms` (still well under the 10 ms a refusal may take): a caller that retries at
//! once otherwise comes straight back, and is queued ahead of the calls admitted rather than parked
//! in its refusal. Callers that honour RetryInfo are never held.
//!
//! Not tower's `ConcurrencyLimit` + `LoadShed`: those decide in `poll_ready`, before the request's
//! path is known, so Health could not be excluded, and their permit goes with the response head, so an
//! open stream would not count.

use super::queue_delay::QueueDelay;
use crate::{
    api::{HEALTH_PREFIX, refusal, status},
    metrics::Metrics,
    sync::lock,
};
use futures::future::BoxFuture;
use http_body::{Body, Frame};
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

// Refusals are made once, so that none encodes its details or escapes its message again, and
// so that HPACK finds their headers in the connection's table (a RetryInfo delay drawn anew for
// each would be a new header value every time): one ready-made header set per RetryInfo delay,
// cloned.

/// The overload refusals of one limit, one per RetryInfo delay.
fn over_limit_refusals(refusal: impl Fn(Duration) -> tonic::Status) -> Vec<http::HeaderMap> {
    status::overload_retry_delays()
        .map(|after| headers_of(refusal(after)))
        .collect()
}

/// The headers of `status`'s trailers-only answer.
fn headers_of(status: tonic::Status) -> http::HeaderMap {
    status.into_http::<()>().into_parts().0.headers
}

/// One of `refusals` (one per RetryInfo delay, never none), at random: callers refused together are
/// told different delays.
fn any_of(refusals: &[http::HeaderMap]) -> &http::HeaderMap {
    &refusals[rand::random_range(0..refusals.len())]
}

/// Shedding on the queue delay: the probe, and its refusals.
struct DelayShedding {
    probe: Arc<QueueDelay>,
    refusals: Vec<http::HeaderMap>,
}

/// The server's admission state, shared by every connection.
pub struct Admission {
    calls: Arc<Semaphore>,
    max_calls: u32,
    /// Beyond `max_calls`.
    overloaded: Vec<http::HeaderMap>,
    /// `None` when `server.max_queue_delay_us` is 0: calls are shed by count only.
    delay: Option<DelayShedding>,
    /// How long an overload refusal is held when its connection comes back too soon; zero: never.
    early_retry_hold: Duration,
    /// How soon after a refusal its connection's next one is too soon: the shortest RetryInfo delay.
    shortest_retry_delay: Duration,
    metrics: Arc<Metrics>,
    /// While draining.
    stopping: http::HeaderMap,
    /// `package.Service/Method` of every streaming method: ended when the drain starts.
    streaming: &'static [&'static str],
    draining: CancellationToken,
    closing: CancellationToken,
}

impl Admission {
    pub fn new(
        max_calls: u32,
        delay: Option<Arc<QueueDelay>>,
        early_retry_hold: Duration,
        streaming: &'static [&'static str],
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let overloaded = over_limit_refusals(|after| {
            status::overloaded_after(
                "server.max_concurrent_requests",
                u64::from(max_calls),
                after,
            )
        });
        let delay = delay.map(|probe| DelayShedding {
            refusals: over_limit_refusals(|after| status::delayed_after(probe.target(), after)),
            probe,
        });
        Arc::new(Admission {
            calls: Arc::new(Semaphore::new(max_calls as usize)),
            max_calls,
            overloaded,
            delay,
            early_retry_hold,
            shortest_retry_delay: shortest_retry_delay(),
            metrics,
            stopping: headers_of(status::stopping()),
            streaming,
            draining: CancellationToken::new(),
            closing: CancellationToken::new(),
        })
    }

    pub fn layer(self: &Arc<Self>) -> AdmissionLayer {
        AdmissionLayer {
            admission: self.clone(),
        }
    }

    /// From now on new calls (but Health) are UNAVAILABLE, and open streams (but Health's) end.
    pub fn start_draining(&self) {
        self.draining.cancel();
    }

    /// Resolves when no call (but Health) is in progress.
    pub async fn idle(&self) {
        // Every permit back means every admitted call's body has ended or been dropped.
        let _all = self.calls.acquire_many(self.max_calls).await;
    }

    /// The server goes away: Health's watch streams end too.
    pub fn close(&self) {
        self.draining.cancel();
        self.closing.cancel();
    }

    /// Cancelled by [`Admission::close`]: the serving loop stops accepting and sends GOAWAY.
    pub fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }
}

#[derive(Clone)]
pub struct AdmissionLayer {
    admission: Arc<Admission>,
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    /// Once per connection: `server::serve` serves each connection on its own, so the service made
    /// here, and what it remembers of refusals, is that connection's.
    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            admission: self.admission.clone(),
            last_refused: Arc::default(),
        }
    }
}

#[derive(Clone)]
pub struct AdmissionService<S> {
    inner: S,
    admission: Arc<Admission>,
    /// When this connection was last refused for overload.
    last_refused: Arc<Mutex<Option<Instant>>>,
}

/// The shortest RetryInfo delay an overload refusal names: a caller back sooner did not wait for it.
fn shortest_retry_delay() -> Duration {
    status::overload_retry_delays()
        .min()
        .unwrap_or(Duration::ZERO)
}

/// Whether a refusal at `now` comes sooner after the connection's `last` one than `shortest` (the
/// shortest RetryInfo delay), so sooner than any caller told to wait would be back.
fn too_soon(last: Option<Instant>, now: Instant, shortest: Duration) -> bool {
    last.is_some_and(|last| now.saturating_duration_since(last) < shortest)
}

impl<S> AdmissionService<S> {
    /// An overload refusal: held for `early_retry_hold` if this connection was refused too recently.
    fn over_limit<ReqBody, B, E>(
        &self,
        request: http::Request<ReqBody>,
        refusal: &http::HeaderMap,
    ) -> BoxFuture<'static, Result<http::Response<AdmittedBody<B>>, E>>
    where
        ReqBody: Body + Send + Unpin + 'static,
        B: Send + 'static,
        E: Send + 'static,
    {
        let admission = &self.admission;
        let now = Instant::now();
        let last = lock(&self.last_refused).replace(now);
        if admission.early_retry_hold.is_zero()
            || !too_soon(last, now, admission.shortest_retry_delay)
        {
            return refused(request, refusal, Duration::ZERO);
        }
        admission.metrics.early_retry_held();
        refused(request, refusal, admission.early_retry_hold)
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AdmissionService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + Send + Unpin + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<AdmittedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let admission = &self.admission;
        let path = request.uri().path();
        let streaming = admission.streaming.contains(&path.trim_start_matches('/'));
        if path.starts_with(HEALTH_PREFIX) {
            let ends = streaming.then(|| admission.closing.clone());
            return admitted(self.inner.call(request), None, ends);
        }
        if admission.draining.is_cancelled() {
            return refused(request, &admission.stopping, Duration::ZERO);
        }
        if let Some(delay) = &admission.delay
            && delay.probe.refuses()
        {
            return self.over_limit(request, any_of(&delay.refusals));
        }
        let Ok(permit) = admission.calls.clone().try_acquire_owned() else {
            return self.over_limit(request, any_of(&admission.overloaded));
        };
        let ends = streaming.then(|| admission.draining.clone());
        admitted(self.inner.call(request), Some(permit), ends)
    }
}

fn admitted<F, B, E>(
    response: F,
    permit: Option<OwnedSemaphorePermit>,
    ends: Option<CancellationToken>,
) -> BoxFuture<'static, Result<http::Response<AdmittedBody<B>>, E>>
where
    F: Future<Output = Result<http::Response<B>, E>> + Send + 'static,
{
    Box::pin(async move {
        let response = response.await?;
        Ok(response.map(|body| AdmittedBody {
            inner: Some(body),
            permit,
            ends: ends.map(|token| Box::pin(token.cancelled_owned())),
        }))
    })
}

/// A trailers-only answer (the status in the response headers, no body), once what the caller still
/// sends of the request is in (see [`refusal`]) and `hold` has passed.
fn refused<ReqBody, B, E>(
    request: http::Request<ReqBody>,
    refusal: &http::HeaderMap,
    hold: Duration,
) -> BoxFuture<'static, Result<http::Response<AdmittedBody<B>>, E>>
where
    ReqBody: Body + Send + Unpin + 'static,
    B: Send + 'static,
    E: Send + 'static,
{
    let mut response = http::Response::new(AdmittedBody {
        inner: None,
        permit: None,
        ends: None,
    });
    *response.headers_mut() = refusal.clone();
    Box::pin(async move {
        let held = async {
            if !hold.is_zero() {
                tokio::time::sleep(hold).await;
            }
        };
        tokio::join!(refusal::read_to_end(request.into_body()), held);
        Ok(response)
    })
}

/// A response body that holds its call's place until it ends, and, for a stream, ends it with
/// UNAVAILABLE (and RetryInfo) when the server stops. `inner` is `None` for a trailers-only answer.
pub struct AdmittedBody<B> {
    inner: Option<B>,
    permit: Option<OwnedSemaphorePermit>,
    ends: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl<B> Body for AdmittedBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // What the stream has ready goes out first (Health's NOT_SERVING before the end).
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            // Trailers end a gRPC answer: the place is free before the caller reads them.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => this.permit = None,
            Poll::Ready(None) => {
                this.inner = None;
                this.permit = None;
            }
            Poll::Pending => {
                if let Some(ends) = this.ends.as_mut()
                    && ends.as_mut().poll(cx).is_ready()
                {
                    // Dropping the stream ends its work; the place is given back at once.
                    this.inner = None;
                    this.permit = None;
                    this.ends = None;
                    let mut trailers = http::HeaderMap::new();
                    // Only a status whose message is not valid header text fails; ours is ASCII.
                    let _ = status::stopping().add_header(&mut trailers);
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_too_soon_until_the_shortest_retry_delay_has_passed_since_the_last() {
        let start = Instant::now();
        let shortest = shortest_retry_delay();
        assert!(shortest >= Duration::from_millis(50), "{shortest:?}");

        assert!(
            !too_soon(None, start, shortest),
            "a first refusal is never held"
        );
        assert!(too_soon(Some(start), start, shortest));
        let just_before = start + shortest - Duration::from_micros(1);
        assert!(too_soon(Some(start), just_before, shortest));
        assert!(
            !too_soon(Some(start), start + shortest, shortest),
            "it waited"
        );
        // Two streams' refusals read the clock before taking the lock in either order.
        let a_little_later = start + Duration::from_millis(1);
        assert!(too_soon(Some(a_little_later), start, shortest));
    }
}
