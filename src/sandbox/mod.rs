//! Local emulators of the upstream billing APIs, with a request recorder and fault injection, for tests and demos.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::sandbox::atlas::state::AtlasState;
use crate::sandbox::conn::{ConnKill, CuttableListener};
use crate::sandbox::fault::{FaultBook, json_response};
use crate::sandbox::recorder::{Incoming, Recorder};

pub mod atlas;
mod authorization;
mod conn;
pub mod elastic;
mod fault;
mod mix;
mod recorder;
pub mod team;
#[cfg(test)]
mod testkit;

pub use crate::sandbox::atlas::auth::{ACCESS_TOKEN_LIFETIME, DIGEST_REALM, NONCE_LIFETIME};
pub use crate::sandbox::atlas::data::{
    ATLAS_SERVICES, ApiKey, AtlasCluster, AtlasDataset, AtlasOrg, AtlasProject, ServiceAccount,
    UsageItem, usd_text,
};
pub use crate::sandbox::atlas::state::{
    AtlasControl, AtlasCounters, DEFAULT_PROCESSING_POLLS, DEFAULT_RESULT_RETENTION, RateLimit,
};
pub use crate::sandbox::elastic::catalog::{
    Decimal4, Grain as ElasticGrain, PricePeriod as ElasticPricePeriod, Sku as ElasticSku,
    Tier as ElasticTier,
};
pub use crate::sandbox::elastic::data::{
    ElasticDataset, ElasticInstance, ElasticOrg, ElasticScale, ElasticUsage,
    SCALE_LINES_PER_INSTANCE,
};
pub use crate::sandbox::elastic::seed::InstanceKind as ElasticInstanceKind;
pub use crate::sandbox::fault::Fault;
pub use crate::sandbox::recorder::RecordedRequest;
pub use crate::sandbox::team::data::{Dataset, Price, PricingSheet, Team, UsageRecord};

/// Upstream name of requests that match no emulated route (scope key is empty).
pub const UNROUTED: &str = "unrouted";

/// How long `shutdown` waits for in-flight requests before abandoning the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where the sandbox listens, and what it holds beyond the seeded data.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// Defaults to `127.0.0.1:0`, an ephemeral port.
    pub addr: SocketAddr,
    /// An extra Elastic organization with this many instances, for scale measurements (none by
    /// default); see [`ElasticScale`].
    pub elastic_scale: Option<ElasticScale>,
}

/// Entry point; see [`Sandbox::start`].
pub struct Sandbox;

/// What faults and recorded requests are keyed by: an emulated upstream and one of
/// its tenants (a team id for the team billing API, later an org id, …).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    pub upstream: &'static str,
    pub key: String,
}

/// A running sandbox. Clones share it; dropping the last one starts a shutdown.
#[derive(Clone)]
pub struct SandboxHandle {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stopped: watch::Receiver<bool>,
    server: AbortHandle,
}

/// State the emulators' handlers share.
pub(crate) struct Shared {
    pub(crate) recorder: Recorder,
    pub(crate) faults: FaultBook,
    pub(crate) dataset: Dataset,
    pub(crate) atlas: AtlasState,
    /// Flips to true once; hanging and delayed requests watch it.
    pub(crate) shutdown: watch::Sender<bool>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            elastic_scale: None,
        }
    }
}

impl Scope {
    pub fn new(upstream: &'static str, key: impl Into<String>) -> Self {
        Self {
            upstream,
            key: key.into(),
        }
    }
}

impl Sandbox {
    /// Binds and starts serving in the background; returns at once.
    /// Must be called within a Tokio runtime (an error otherwise).
    pub fn start(options: SandboxOptions) -> io::Result<SandboxHandle> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let listener = std::net::TcpListener::bind(options.addr)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            recorder: Recorder::new(),
            faults: FaultBook::default(),
            dataset: match options.elastic_scale {
                Some(scale) => Dataset::seeded().with_elastic_scale(scale),
                None => Dataset::seeded(),
            },
            atlas: AtlasState::new(),
            shutdown: watch::Sender::new(false),
        });
        let app = Router::new()
            .merge(team::routes())
            .merge(atlas::routes())
            .merge(elastic::routes())
            .fallback(unrouted)
            .with_state(shared.clone())
            .into_make_service_with_connect_info::<ConnKill>();
        let mut signal = shared.shutdown.subscribe();
        let (stopped_tx, stopped) = watch::channel(false);
        let server = runtime.spawn(async move {
            let served = axum::serve(CuttableListener::new(listener), app)
                .with_graceful_shutdown(async move {
                    let _ = signal.wait_for(|stopping| *stopping).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "sandbox server failed");
            }
            stopped_tx.send_replace(true);
        });
        tracing::info!(%addr, "sandbox listening");
        Ok(SandboxHandle {
            inner: Arc::new(Inner {
                shared,
                addr,
                stopped,
                server: server.abort_handle(),
            }),
        })
    }
}

impl SandboxHandle {
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT` (a wildcard bind is reached over loopback).
    pub fn base_url(&self) -> String {
        let mut addr = self.inner.addr;
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        format!("http://{addr}")
    }

    /// The seeded ground truth the emulators answer from.
    pub fn dataset(&self) -> &Dataset {
        &self.inner.shared.dataset
    }

    /// Stops accepting, ends hanging and delayed requests, and waits (at most a few
    /// seconds) for in-flight ones to finish. Idempotent.
    pub async fn shutdown(&self) {
        self.inner.shared.shutdown.send_replace(true);
        let mut stopped = self.inner.stopped.clone();
        let waited = tokio::time::timeout(SHUTDOWN_GRACE, stopped.wait_for(|s| *s)).await;
        if waited.is_err() {
            tracing::warn!("sandbox did not stop within its grace period; aborting it");
            self.inner.server.abort();
        }
    }

    /// All requests so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.shared.recorder.snapshot()
    }

    pub fn request_count(&self, scope: &Scope) -> usize {
        self.inner.shared.recorder.count(Some(scope))
    }

    /// The most requests of `scope` the emulators were ever answering at once.
    pub fn most_in_flight(&self, scope: &Scope) -> usize {
        self.inner.shared.recorder.most_in_flight(scope)
    }

    pub fn total_requests(&self) -> usize {
        self.inner.shared.recorder.count(None)
    }

    /// Forgets recorded requests (faults stay; see [`Self::clear_all_faults`]).
    pub fn reset(&self) {
        self.inner.shared.recorder.reset();
    }

    /// Resolves once `scope` has at least `n` recorded requests; wrap it in a timeout.
    pub async fn wait_for_requests(&self, scope: &Scope, n: usize) {
        self.inner.shared.recorder.wait_for(Some(scope), n).await;
    }

    /// Resolves once at least `n` requests are recorded in all.
    pub async fn wait_for_total_requests(&self, n: usize) {
        self.inner.shared.recorder.wait_for(None, n).await;
    }

    /// Queues a fault for the scope's next request that finds no earlier one queued.
    pub fn push_fault(&self, scope: &Scope, fault: Fault) {
        self.inner.shared.faults.push(scope, fault);
    }

    /// Applies `fault` to every request of the scope whose queue is empty, until cleared.
    pub fn set_persistent_fault(&self, scope: &Scope, fault: Fault) {
        self.inner.shared.faults.set_persistent(scope, fault);
    }

    /// Drops the scope's queued and persistent faults.
    pub fn clear_faults(&self, scope: &Scope) {
        self.inner.shared.faults.clear(scope);
    }

    pub fn clear_all_faults(&self) {
        self.inner.shared.faults.clear_all();
    }

    /// Queued (not persistent) faults not yet consumed.
    pub fn pending_faults(&self, scope: &Scope) -> usize {
        self.inner.shared.faults.pending(scope)
    }
}

impl std::fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxHandle")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: nobody can stop the server any more, so stop it now.
        self.shared.shutdown.send_replace(true);
    }
}

/// Serves the sandbox on `addr` until Ctrl-C, printing what a person needs to call it.
pub async fn run_standalone(addr: SocketAddr) -> io::Result<()> {
    let sandbox = Sandbox::start(SandboxOptions {
        addr,
        ..SandboxOptions::default()
    })?;
    let base = sandbox.base_url();
    println!("costd sandbox listening on {base}");
    println!("team billing API (Catalyzed): {base}/teams/{{teamId}}/billing/cost");
    // Printing tokens is the point here: they are fake, sandbox-only credentials.
    for team in sandbox.dataset().teams() {
        println!("  team {} ({}): token {}", team.id, team.name, team.token);
    }
    println!("Atlas Cost Explorer: {base}/api/atlas/v2/orgs/{{orgId}}/billing/costExplorer/usage");
    println!("Atlas OAuth token: {base}/api/oauth/token");
    for org in sandbox.atlas().dataset().orgs() {
        let (key, account) = (&org.api_key, &org.service_account);
        println!("  org {} ({}):", org.id, org.name);
        println!("    digest {}:{}", key.public_key, key.private_key);
        println!("    client {}:{}", account.client_id, account.client_secret);
    }
    println!("Elastic billing API v1: {base}/api/v1/billing/costs/{{organizationId}}/deployments");
    println!("Elastic billing API v2: {base}/api/v2/billing/organizations/{{organizationId}}/…");
    for org in sandbox.dataset().elastic().organizations() {
        println!("  org {} ({}): ApiKey {}", org.id, org.name, org.api_key);
    }
    println!("press Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    sandbox.shutdown().await;
    Ok(())
}

/// Anything no emulator routes: recorded (and open to faults) like the rest, then 404.
async fn unrouted(State(shared): State<Arc<Shared>>, incoming: Incoming) -> Response {
    let not_found = |status: StatusCode| {
        let body = format!(
            r#"{{"error":"{}"}}"#,
            status.canonical_reason().unwrap_or("Error")
        );
        json_response(status, Body::from(body))
    };
    let scope = Scope::new(UNROUTED, "");
    shared
        .exchange(scope, incoming, not_found, |_| async move {
            not_found(StatusCode::NOT_FOUND)
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::sandbox::testkit::{JAN_2025, client, cost_url, period, start, within};

    #[tokio::test]
    async fn shutdown_ends_a_hanging_request_promptly() {
        let sb = start();
        let acme = Scope::team_billing("team_acme");
        sb.push_fault(&acme, Fault::Hang);
        let url = cost_url(&sb, "team_acme", &period(JAN_2025));
        let hung = tokio::spawn(client().get(url.clone()).send());
        within(sb.wait_for_requests(&acme, 1)).await;

        let began = Instant::now();
        within(sb.shutdown()).await;
        // Under the grace period: the hang ended, nothing had to be abandoned.
        assert!(began.elapsed() < SHUTDOWN_GRACE);
        let outcome = within(hung).await.expect("client task joins");
        assert!(outcome.is_err(), "the hung request gets no response");
        assert!(
            within(client().get(url).send()).await.is_err(),
            "no longer listening"
        );
        within(sb.shutdown()).await;
    }

    #[test]
    fn handles_are_shareable_across_tasks() {
        fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
        assert_shareable::<SandboxHandle>();
    }

    #[tokio::test]
    async fn dropping_the_last_handle_stops_the_server() {
        let sb = start();
        let copy = sb.clone();
        let mut stopped = sb.inner.stopped.clone();
        drop(sb);
        assert!(!*stopped.borrow());
        drop(copy);
        within(stopped.wait_for(|s| *s))
            .await
            .expect("server task reports");
    }

    #[tokio::test]
    async fn a_fixed_address_is_honoured_and_exclusive() {
        let sb = start();
        assert_eq!(
            sb.base_url(),
            format!("http://127.0.0.1:{}", sb.addr().port())
        );
        let again = Sandbox::start(SandboxOptions {
            addr: sb.addr(),
            ..SandboxOptions::default()
        });
        let err = again.expect_err("address already taken");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn starting_outside_a_runtime_is_an_error_not_a_panic() {
        assert!(Sandbox::start(SandboxOptions::default()).is_err());
    }
}
