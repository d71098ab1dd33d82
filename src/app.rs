//! Server assembly: binds, wires the services, health and reflection, and drains on stop.

use crate::{
    api::{CostApi, CostServer, GuardLayer, OversizedRequestLayer, QueryJobApi, QueryRules},
    auth::{self, Authenticator, TlsAcceptor},
    clock::{Clock, SystemClock},
    config::{JobStoreSettings, Settings},
    domain::Redactor,
    engine::{ChunkCache, Engine, EngineLimits, Jobs, SharedTier},
    jobs::{JobManager, JobStore, MemoryJobStore, RedisJobStore, RedisStoreOptions, StoreError},
    metrics::{
        self, Metrics, RpcMetricsLayer,
        server::{HeldGauges, HeldState},
    },
    proto::{self as pb, query_job_service_server::QueryJobServiceServer},
    providers::{Provider, budget::SharedBudgets, gate::Gates, http::UpstreamHttp},
    redis_link::RedisLink,
    server::{self, Admission, ConnectionLimits, QueueDelay},
    telemetry,
};
use prost::Message;
use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};
use tokio::net::TcpListener;
use tonic::{server::NamedService, transport::server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};

/// How long drawing from a shared Atlas bucket, or reading a shared chunk, may wait on redis before
/// going on without it (the local share; the upstream).
const SHARED_CALL_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the upstream HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("metrics endpoint failed: {0}")]
    Metrics(std::io::Error),
    #[error("server task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot use the job store: {0}")]
    JobStore(crate::jobs::StoreError),
    #[error("{0}")]
    Auth(#[from] auth::SetupError),
    #[error("health endpoint failed: {0}")]
    Health(#[from] tonic::transport::Error),
}

/// A bound, not yet serving, costd.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    engine: Arc<Engine>,
    jobs: Arc<Jobs>,
    metrics: Arc<Metrics>,
    /// Bound when metrics are enabled.
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    /// With TLS: the plaintext health-only listener, when configured.
    health_listener: Option<(TcpListener, SocketAddr)>,
    tls: Option<TlsAcceptor>,
    /// `None`: no `[auth]`, everyone is served.
    auth: Option<Arc<Authenticator>>,
    settings: Settings,
}

impl App {
    /// Binds the listener (port 0 picks a free port) and builds everything behind it.
    pub async fn build(settings: Settings) -> Result<App, AppError> {
        App::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`App::build`], judging cache freshness and settlement on `clock`.
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<App, AppError> {
        let (listener, local_addr) = bind(settings.server.listen).await?;
        let metrics_listener = match settings.metrics.enabled {
            true => Some(bind(settings.metrics.listen).await?),
            false => None,
        };
        let health_listener = match settings.server.health_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let tls = settings
            .server
            .tls
            .as_ref()
            .map(TlsAcceptor::new)
            .transpose()?;
        let metrics = Arc::new(Metrics::new());
        let auth = match &settings.auth {
            Some(config) => Some(Arc::new(
                Authenticator::new(config, settings.server.tls.as_ref(), reqwest::Client::new())
                    .await?,
            )),
            None => None,
        };
        metrics.set_auth_open(auth.is_none());
        let redactor = Redactor::new(
            settings
                .accounts
                .iter()
                .flat_map(|account| account.kind.secrets()),
        );
        let gates = Gates::new(&settings.upstream, &settings.accounts, clock.clone());
        let http = Arc::new(UpstreamHttp::new(
            &settings.upstream,
            metrics.clone(),
            Arc::new(redactor),
            gates,
        )?);
        // Replicas that share a job store share through it too: the Atlas organizations' buckets,
        // and settled chunks.
        let (shared_budgets, shared_tier) = match &settings.job_store {
            JobStoreSettings::Memory => (None, None),
            JobStoreSettings::Redis {
                url,
                key_prefix,
                ca_certificates,
                ..
            } => {
                let link = Arc::new(
                    RedisLink::new(url, ca_certificates.as_deref(), SHARED_CALL_TIMEOUT)
                        .map_err(|error| AppError::JobStore(StoreError::Unavailable(error.0)))?,
                );
                let budgets = SharedBudgets::new(link.clone(), key_prefix, metrics.clone());
                let tier = (settings.cache.shared_ttl_seconds > 0).then(|| {
                    Arc::new(SharedTier::new(
                        link,
                        key_prefix,
                        Duration::from_secs(settings.cache.shared_ttl_seconds),
                        settings.cache.shared_max_chunk_bytes,
                        metrics.clone(),
                    ))
                });
                (Some(Arc::new(budgets)), tier)
            }
        };
        let providers = settings
            .accounts
            .iter()
            .map(|account| {
                Provider::new(
                    account,
                    &settings.atlas,
                    http.clone(),
                    shared_budgets.as_ref(),
                )
            })
            .collect();
        let cache = ChunkCache::new(
            &settings.cache,
            Duration::from_millis(settings.upstream.fetch_timeout_ms),
            clock.clone(),
            metrics.clone(),
            shared_tier,
        );
        let limits = EngineLimits {
            max_concurrency_per_account: settings.upstream.max_concurrency_per_account,
            max_chunks_per_query: settings.server.max_chunks_per_query,
            max_rows: settings.server.max_rows,
        };
        let engine = Arc::new(Engine::new(providers, cache, limits));
        let retention = chrono::Duration::seconds(
            i64::try_from(settings.jobs.retention_seconds).unwrap_or(i64::MAX / 1000),
        );
        let store: Arc<dyn JobStore<Engine>> = match &settings.job_store {
            JobStoreSettings::Memory => Arc::new(MemoryJobStore::default()),
            JobStoreSettings::Redis {
                url,
                key_prefix,
                lease_ttl,
                ca_certificates,
            } => Arc::new(
                RedisJobStore::new(
                    url,
                    RedisStoreOptions {
                        key_prefix: key_prefix.clone(),
                        lease_ttl: *lease_ttl,
                        ca_certificates: ca_certificates.clone(),
                    },
                )
                .map_err(AppError::JobStore)?,
            ),
        };
        let jobs = JobManager::new(
            store,
            engine.clone(),
            clock,
            retention,
            settings.jobs.max_jobs,
        );
        Ok(App {
            listener,
            local_addr,
            engine,
            jobs,
            metrics,
            metrics_listener,
            health_listener,
            tls,
            auth,
            settings,
        })
    }

    /// The address of the plaintext health listener, when configured.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// The address of the `/metrics` endpoint, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The engine behind the API, for harnesses that measure it (e.g. emptying the cache).
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// Serves until `shutdown` resolves; then drains: Health answers NOT_SERVING (on new connections
    /// too), new calls UNAVAILABLE, streams end with UNAVAILABLE, callers waiting on upstreams are
    /// answered with what there is, and in-flight calls get the drain timeout to finish. The server
    /// goes away as soon as none is left.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        set_all(&health, ServingStatus::Serving).await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let rules = Arc::new(QueryRules {
            known_accounts: self.engine.account_ids(),
            max_range_days: self.settings.server.max_range_days,
        });
        let cost_api = CostApi::new(
            self.engine.clone(),
            self.jobs.clone(),
            rules.clone(),
            self.metrics.clone(),
            Duration::from_millis(self.settings.server.deadline_margin_ms),
        );
        let server_settings = &self.settings.server;
        let queue_delay = (server_settings.max_queue_delay_us > 0).then(|| {
            QueueDelay::start(
                Duration::from_micros(server_settings.max_queue_delay_us),
                Duration::from_millis(server_settings.queue_delay_interval_ms),
                self.metrics.clone(),
            )
        });
        let admission = Admission::new(
            server_settings.max_concurrent_requests,
            queue_delay,
            Duration::from_millis(server_settings.early_retry_hold_ms),
            streaming_methods(),
            self.metrics.clone(),
        );
        let limits = ConnectionLimits {
            max_connections: server_settings.max_connections,
            handshake_timeout: Duration::from_millis(server_settings.handshake_timeout_ms),
        };
        if self.auth.is_none() {
            tracing::warn!("no [auth] section: serving every caller, unauthenticated");
        }
        let health_server = self.health_listener.map(|(listener, addr)| {
            tracing::info!(%addr, "serving health in plaintext");
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(health_service.clone())
                    .serve_with_incoming_shutdown(
                        TcpIncoming::from(listener),
                        admission.closing().cancelled_owned(),
                    ),
            )
        });
        let server = tonic::transport::Server::builder()
            .max_concurrent_streams(server_settings.max_concurrent_streams)
            .http2_keepalive_interval(Some(Duration::from_millis(
                server_settings.keepalive_interval_ms,
            )))
            .http2_keepalive_timeout(Some(Duration::from_millis(
                server_settings.keepalive_timeout_ms,
            )))
            // Only the hard bound: `server::serve` sends the GOAWAY at the (jittered) age itself.
            .max_connection_age(Duration::from_millis(server_settings.max_connection_age_ms))
            .max_connection_age_grace(self.settings.drain_timeout())
            .trace_fn(rpc_span)
            .layer(RpcMetricsLayer::new(self.metrics.clone(), served_methods()))
            .layer(admission.layer())
            // Who calls is known before anything of the call is read.
            .layer(GuardLayer::new(self.auth.clone(), self.metrics.clone()))
            .layer(OversizedRequestLayer {
                max_request_bytes: self.settings.server.max_request_bytes,
            });
        let routes = tonic::service::Routes::new(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(CostServer::new(
                cost_api,
                self.settings.server.max_request_bytes,
            ))
            .add_service(
                QueryJobServiceServer::new(QueryJobApi::new(self.jobs.clone(), rules))
                    .max_decoding_message_size(self.settings.server.max_request_bytes),
            )
            .prepare();
        let max_age = Duration::from_millis(server_settings.max_connection_age_ms);
        let server: futures::future::BoxFuture<'static, ()> = match self.tls {
            // TLS wraps the accepted connections; the preface is then awaited on decrypted bytes.
            Some(tls) => {
                let accepted = server::accepted(self.listener, limits.max_connections);
                let incoming = server::with_preface(
                    auth::tls::incoming(
                        accepted,
                        tls,
                        limits.handshake_timeout,
                        limits.max_connections as usize,
                    ),
                    limits,
                );
                Box::pin(server::serve(
                    server,
                    routes,
                    incoming,
                    max_age,
                    admission.closing(),
                ))
            }
            None => Box::pin(server::serve(
                server,
                routes,
                server::incoming(self.listener, limits),
                max_age,
                admission.closing(),
            )),
        };
        let mut server = tokio::spawn(server);
        // Scrapes keep working while calls drain; the endpoint stops when the server has.
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_server = self.metrics_listener.map(|(listener, addr)| {
            tracing::info!(%addr, "serving metrics");
            tokio::spawn(metrics::server::serve(
                listener,
                self.metrics.clone(),
                Arc::new(Held {
                    engine: self.engine.clone(),
                    jobs: self.jobs.clone(),
                }),
                async {
                    let _ = metrics_stopped.await;
                },
            ))
        });
        tracing::info!(addr = %self.local_addr, accounts = self.settings.accounts.len(), "serving");
        let served = async {
            tokio::select! {
                result = &mut server => return result.map_err(AppError::from),
                () = shutdown => {}
            }
            tracing::info!(
                drain_timeout_ms = self.settings.server.drain_timeout_ms,
                "stopping: not serving, draining"
            );
            let drained_by = tokio::time::Instant::now() + self.settings.drain_timeout();
            set_all(&health, ServingStatus::NotServing).await;
            admission.start_draining();
            self.engine.cache().release_waiting_callers();
            if tokio::time::timeout_at(drained_by, admission.idle())
                .await
                .is_err()
            {
                tracing::warn!("drain timeout reached with calls in progress");
            }
            // Nothing is left (or the time is up): Health's streams end, connections get GOAWAY.
            admission.close();
            let outcome = match tokio::time::timeout_at(drained_by, &mut server).await {
                Ok(result) => result.map_err(AppError::from),
                Err(_) => {
                    tracing::warn!("drain timeout reached; closing the calls still open");
                    server.abort();
                    Ok(())
                }
            };
            // The jobs this replica polls for go to another at once, not when their leases lapse.
            self.jobs.hand_over().await;
            outcome
        }
        .await;
        let _ = stop_metrics.send(());
        // The probe port stops with the API (at `admission.close()`, or now if serving failed).
        admission.close();
        if let Some(health_server) = health_server {
            health_server.await??;
        }
        if let Some(metrics_server) = metrics_server {
            metrics_server.await?.map_err(AppError::Metrics)?;
        }
        served
    }
}

/// Every method served, as `package.Service/Method`, read from the services' own descriptors: the RPC
/// metrics label only these. Made once per process (the names live as long as it does).
fn served_methods() -> &'static [&'static str] {
    &methods().0
}

/// The server-streaming methods among them: a drain ends their streams.
fn streaming_methods() -> &'static [&'static str] {
    &methods().1
}

/// Every method served, and the streaming ones, each sorted.
fn methods() -> &'static (Vec<&'static str>, Vec<&'static str>) {
    static METHODS: OnceLock<(Vec<&'static str>, Vec<&'static str>)> = OnceLock::new();
    METHODS.get_or_init(|| {
        let sets = [
            pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut methods: Vec<(&'static str, bool)> = sets
            .iter()
            .filter_map(|bytes| prost_types::FileDescriptorSet::decode(*bytes).ok())
            .flat_map(|set| set.file)
            .flat_map(|file| {
                let package = file.package().to_string();
                file.service.into_iter().flat_map(move |service| {
                    let prefix = format!("{package}.{}", service.name());
                    service.method.into_iter().map(move |method| {
                        let name: &'static str =
                            Box::leak(format!("{prefix}/{}", method.name()).into_boxed_str());
                        (name, method.server_streaming())
                    })
                })
            })
            .collect();
        methods.sort_unstable();
        methods.dedup();
        let streaming = methods
            .iter()
            .filter(|(_, streaming)| *streaming)
            .map(|(name, _)| *name)
            .collect();
        (
            methods.into_iter().map(|(name, _)| name).collect(),
            streaming,
        )
    })
}

/// What the metrics endpoint reads at scrape time.
struct Held {
    engine: Arc<Engine>,
    jobs: Arc<Jobs>,
}

impl HeldState for Held {
    fn read(&self) -> futures::future::BoxFuture<'_, HeldGauges> {
        Box::pin(async {
            let (cache_bytes, cache_entries) = self.engine.cache().size().await;
            let counted = self.jobs.count_by_state().await;
            HeldGauges {
                cache_bytes,
                cache_entries,
                job_store_up: (self.jobs.store_kind(), counted.is_ok()),
                // An unreachable job store leaves the job gauges as last read.
                jobs_by_state: counted.map(|counts| counts.to_vec()).unwrap_or_default(),
            }
        })
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), AppError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| AppError::Bind { addr, source })?;
    Ok((listener, local_addr))
}

async fn set_all(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for name in [
        <CostServer as NamedService>::NAME,
        <QueryJobServiceServer<QueryJobApi> as NamedService>::NAME,
    ] {
        health.set_service_status(name, status).await;
    }
}

/// One span per RPC, continuing the caller's trace when it sent a `traceparent`.
fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "rpc",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    );
    telemetry::continue_remote_trace(&span, request.headers());
    span
}
