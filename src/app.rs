//! Server assembly: binds, wires the services, health and reflection, and drains on stop.

use crate::{
    api::{CostApi, CostServer, OversizedRequestLayer, QueryJobApi, QueryRules},
    clock::{Clock, SystemClock},
    config::Settings,
    domain::Redactor,
    engine::{ChunkCache, Engine, EngineLimits, Jobs},
    jobs::{JobManager, MemoryJobStore},
    metrics::{
        self, Metrics, RpcMetricsLayer,
        server::{HeldGauges, HeldState},
    },
    proto::{self as pb, query_job_service_server::QueryJobServiceServer},
    providers::{Provider, http::UpstreamHttp},
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
    #[error("server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("metrics endpoint failed: {0}")]
    Metrics(std::io::Error),
    #[error("server task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
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
        let metrics = Arc::new(Metrics::new());
        let redactor = Redactor::new(
            settings
                .accounts
                .iter()
                .flat_map(|account| account.kind.secrets()),
        );
        let http = Arc::new(UpstreamHttp::new(
            &settings.upstream,
            metrics.clone(),
            Arc::new(redactor),
        )?);
        let providers = settings
            .accounts
            .iter()
            .map(|account| Provider::new(account, &settings.atlas, http.clone()))
            .collect();
        let cache = ChunkCache::new(
            &settings.cache,
            Duration::from_millis(settings.upstream.fetch_timeout_ms),
            clock.clone(),
            metrics.clone(),
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
        let jobs = JobManager::new(
            Arc::new(MemoryJobStore::default()),
            engine.clone(),
            clock,
            retention,
        );
        Ok(App {
            listener,
            local_addr,
            engine,
            jobs,
            metrics,
            metrics_listener,
            settings,
        })
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

    /// Serves until `shutdown` resolves; then reports NOT_SERVING, stops accepting, and gives in-flight
    /// calls the drain timeout to finish.
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
            known_accounts: self
                .engine
                .providers()
                .iter()
                .map(|p| p.account().id.clone())
                .collect(),
            max_range_days: self.settings.server.max_range_days,
        });
        let cost_api = CostApi::new(
            self.engine.clone(),
            self.jobs.clone(),
            rules.clone(),
            Duration::from_millis(self.settings.server.deadline_margin_ms),
        );
        let (stop_accepting, accepting_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .trace_fn(rpc_span)
            .layer(RpcMetricsLayer::new(self.metrics.clone(), served_methods()))
            .layer(OversizedRequestLayer {
                max_request_bytes: self.settings.server.max_request_bytes,
            })
            .add_service(health_service)
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
            // Without TCP_NODELAY a response of a few frames waits on the peer's delayed ACK (~40 ms).
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                async {
                    let _ = accepting_stopped.await;
                },
            );
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
                result = &mut server => return flatten(result),
                () = shutdown => {}
            }
            tracing::info!(
                drain_timeout_ms = self.settings.server.drain_timeout_ms,
                "stopping: not serving, draining"
            );
            set_all(&health, ServingStatus::NotServing).await;
            let _ = stop_accepting.send(());
            match tokio::time::timeout(self.settings.drain_timeout(), &mut server).await {
                Ok(result) => flatten(result),
                Err(_) => {
                    tracing::warn!("drain timeout reached; closing the calls still open");
                    server.abort();
                    Ok(())
                }
            }
        }
        .await;
        let _ = stop_metrics.send(());
        if let Some(metrics_server) = metrics_server {
            metrics_server.await?.map_err(AppError::Metrics)?;
        }
        served
    }
}

/// Every method served, as `package.Service/Method`, read from the services' own descriptors: the RPC
/// metrics label only these. Made once per process (the names live as long as it does).
fn served_methods() -> &'static [&'static str] {
    static METHODS: OnceLock<Vec<&'static str>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let sets = [
            pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut methods: Vec<&'static str> = sets
            .iter()
            .filter_map(|bytes| prost_types::FileDescriptorSet::decode(*bytes).ok())
            .flat_map(|set| set.file)
            .flat_map(|file| {
                let package = file.package().to_string();
                file.service.into_iter().flat_map(move |service| {
                    let prefix = format!("{package}.{}", service.name());
                    service.method.into_iter().map(move |method| {
                        &*Box::leak(format!("{prefix}/{}", method.name()).into_boxed_str())
                    })
                })
            })
            .collect();
        methods.sort_unstable();
        methods.dedup();
        methods
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
            HeldGauges {
                cache_bytes,
                cache_entries,
                jobs_by_state: self.jobs.count_by_state().to_vec(),
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

fn flatten(
    result: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), AppError> {
    result?.map_err(AppError::from)
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
