//! A request larger than `server.max_request_bytes` is refused by tonic's decoder with OUT_OF_RANGE
//! before any codec or handler sees it. gRPC names that case RESOURCE_EXHAUSTED, and the caller should
//! learn which limit it hit: this layer rewrites that one answer. costd's own code never answers
//! OUT_OF_RANGE (every status is built in `status.rs`), so the code alone identifies tonic's refusal.

use super::status;
use futures::future::BoxFuture;
use std::task::{Context, Poll};
use tonic::Code;

#[derive(Clone, Copy)]
pub struct OversizedRequestLayer {
    pub max_request_bytes: usize,
}

impl<S> tower::Layer<S> for OversizedRequestLayer {
    type Service = OversizedRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OversizedRequest {
            inner,
            max_request_bytes: self.max_request_bytes,
        }
    }
}

#[derive(Clone)]
pub struct OversizedRequest<S> {
    inner: S,
    max_request_bytes: usize,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for OversizedRequest<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let limit = self.max_request_bytes;
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            let refused = response
                .headers()
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<i32>().ok())
                .is_some_and(|code| Code::from_i32(code) == Code::OutOfRange);
            if refused {
                let headers = response.headers_mut();
                for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
                    headers.remove(name);
                }
                // Only a header value that cannot be built fails here; the answer keeps tonic's then.
                let _ = status::request_too_large(limit).add_header(headers);
            }
            Ok(response)
        })
    }
}
