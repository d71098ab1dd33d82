//! A tower layer that counts every gRPC call by method and status code and times it, health and
//! reflection included. The code is read where gRPC puts it: in the response headers of a
//! trailers-only answer (most errors), else in the trailers that end the body — so a stream is timed
//! until it ends, and one the client abandons counts as CANCELLED.
//!
//! Where a call's end is known, its audit line is written too: one per call (health excepted, which
//! probes call every few seconds), with the principal and accounts the layers and handlers below
//! noted in the call's [`CallNote`], the method and the code. Never a credential.

use super::{Metrics, RpcLabels, grpc_code_name};
use futures::future::BoxFuture;
use http_body::{Body, Frame};
use std::{
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

/// The method label of a path that is none of the methods served.
pub const UNKNOWN_METHOD: &str = "unknown";

/// Methods left out of the audit log.
const UNAUDITED_PREFIX: &str = "grpc.health.v1.Health/";

/// What the layers and handlers below learn of a call, for its audit line; in the request's
/// extensions. Each is set once.
#[derive(Debug, Default)]
pub struct CallNote {
    principal: OnceLock<String>,
    accounts: OnceLock<String>,
}

impl CallNote {
    pub fn principal(&self, principal: &str) {
        let _ = self.principal.set(principal.to_string());
    }

    /// The provider accounts the call read, comma-separated (`*`: every account, as when costd runs
    /// open and the query names none).
    pub fn accounts(&self, accounts: String) {
        let _ = self.accounts.set(accounts);
    }
}

#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<Metrics>,
    methods: &'static [&'static str],
}

impl RpcMetricsLayer {
    /// Counts calls of `methods` (`package.Service/Method`) under their own name and every other path
    /// as `unknown`, so made-up paths never make new series.
    pub fn new(metrics: Arc<Metrics>, methods: &'static [&'static str]) -> Self {
        RpcMetricsLayer { metrics, methods }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
            methods: self.methods,
        }
    }
}

#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
    methods: &'static [&'static str],
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let note = Arc::new(CallNote::default());
        request.extensions_mut().insert(note.clone());
        let path = request.uri().path().trim_start_matches('/');
        let method = self
            .methods
            .iter()
            .find(|known| **known == path)
            .copied()
            .unwrap_or(UNKNOWN_METHOD);
        let mut call = Call {
            metrics: self.metrics.clone(),
            note,
            method,
            started: Instant::now(),
            recorded: false,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if let Some(code) = grpc_status(response.headers()) {
                call.record(code);
            }
            Ok(response.map(|body| ObservedBody { body, call }))
        })
    }
}

/// One call being answered; records itself once, when its status is known or it is abandoned.
struct Call {
    metrics: Arc<Metrics>,
    note: Arc<CallNote>,
    method: &'static str,
    started: Instant,
    recorded: bool,
}

impl Call {
    fn record(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let labels = RpcLabels {
            method: self.method,
            code: grpc_code_name(code),
        };
        self.metrics.rpc(&labels, self.started.elapsed());
        if !self.method.starts_with(UNAUDITED_PREFIX) {
            tracing::info!(
                target: "costd::audit",
                principal = self.note.principal.get().map_or("anonymous", String::as_str),
                method = self.method,
                accounts = self.note.accounts.get().map_or("", String::as_str),
                code = labels.code,
                "call"
            );
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The body was dropped before its trailers: the client went away (or the server stopped).
        self.record(tonic::Code::Cancelled);
    }
}

/// The response body, watched for the trailers that carry the status.
pub struct ObservedBody<B> {
    body: B,
    call: Call,
}

impl<B> Body for ObservedBody<B>
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
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.call.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.record(tonic::Code::Internal),
            // Ended without trailers: not a well-formed gRPC answer.
            Poll::Ready(None) => this.call.record(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(tonic::Code::from_i32)
}
