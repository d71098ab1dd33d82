//! The tower layer in front of every service: health passes untouched (probes carry no credentials);
//! every other call is authenticated and its grant looked up once, and the resulting [`Access`] goes
//! into the request's extensions, where the handlers read it. Refusals are answered here, counted
//! by reason.

use super::status;
use crate::{
    auth::{Access, Authenticator, Refusal, TlsPeer},
    domain::CostQuery,
    metrics::{CallNote, Metrics},
};
use futures::future::BoxFuture;
use std::{
    sync::Arc,
    task::{Context, Poll},
};

/// Paths of `grpc.health.v1.Health`: open to everyone (probes), never shed, never refused.
pub const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

#[derive(Clone)]
pub struct GuardLayer {
    /// `None`: no `[auth]`, every call is [`Access::Open`].
    auth: Option<Arc<Authenticator>>,
    metrics: Arc<Metrics>,
}

impl GuardLayer {
    pub fn new(auth: Option<Arc<Authenticator>>, metrics: Arc<Metrics>) -> Self {
        GuardLayer { auth, metrics }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Guard<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: http_body::Body + Send + Unpin + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The clone is not ready: keep the one that is (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(auth) = self
            .layer
            .auth
            .clone()
            .filter(|_| !request.uri().path().starts_with(HEALTH_PREFIX))
        else {
            request.extensions_mut().insert(Access::Open);
            return Box::pin(inner.call(request));
        };
        let metrics = self.layer.metrics.clone();
        Box::pin(async move {
            let caller = auth
                .authenticate(
                    request.headers().get(http::header::AUTHORIZATION),
                    request.extensions().get::<TlsPeer>(),
                )
                .await;
            let note = request.extensions().get::<Arc<CallNote>>().cloned();
            let principal = match &caller {
                Ok(caller) => Some(&caller.principal),
                Err(Refusal::NoGrant(no_grant)) => Some(&no_grant.0),
                Err(Refusal::Unauthenticated(_)) => None,
            };
            if let (Some(note), Some(principal)) = (note, principal) {
                note.principal(principal.as_str());
            }
            match caller {
                Ok(caller) => {
                    request.extensions_mut().insert(Access::Granted(caller));
                    inner.call(request).await
                }
                Err(refusal) => {
                    let (reason, status) = match &refusal {
                        Refusal::Unauthenticated(rejection) => {
                            (rejection.reason(), status::unauthenticated(*rejection))
                        }
                        Refusal::NoGrant(no_grant) => ("no_grant", status::no_grant(&no_grant.0)),
                    };
                    metrics.auth_rejection(reason);
                    super::refusal::read_to_end(request.into_body()).await;
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// The access the guard attached to a call; none attached is refused (deny by default).
pub fn access(extensions: &tonic::Extensions) -> Result<Access, tonic::Status> {
    attached(extensions).cloned().ok_or_else(status::no_access)
}

/// The access the guard attached to a call, if any (none is refused: see [`access`]).
pub fn attached(extensions: &tonic::Extensions) -> Option<&Access> {
    extensions.get::<Access>()
}

/// The call's note for its audit line, when the RPC layer attached one.
pub struct Note(Option<Arc<CallNote>>);

impl Note {
    pub fn of(extensions: &tonic::Extensions) -> Self {
        Note(extensions.get::<Arc<CallNote>>().cloned())
    }

    /// Notes which accounts the call reads.
    pub fn accounts(&self, accounts: String) {
        if let Some(note) = &self.0 {
            note.accounts(accounts);
        }
    }
}

/// The accounts a parsed query reads, as the audit line lists them.
pub fn touched(query: &CostQuery) -> String {
    match query.filter.provider_accounts.is_empty() {
        true => "*".to_string(),
        false => query
            .filter
            .provider_accounts
            .iter()
            .map(|id| id.as_str())
            .collect::<Vec<_>>()
            .join(","),
    }
}
