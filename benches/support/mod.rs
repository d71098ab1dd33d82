//! What several harnesses share: the median of rounds, a closed-loop driver (throughput and p99),
//! the process's resident memory and CPU time, the demo's team accounts and a server serving them;
//! and, for those that run the real server in a child process, the big Elastic account's settings
//! and a running server with its client. Included by each bench with `#[path]`; not every bench
//! uses every item.
#![allow(dead_code)]

use costd::{
    App,
    config::{
        AccountKind, AccountSettings, CacheConfig, ElasticApiVersion, ElasticSettings, LogFormat,
        MetricsConfig, ServerConfig, Settings, TelemetryConfig, UpstreamConfig,
    },
    domain::{ProviderAccountId, UpstreamId},
    proto::cost_service_client::CostServiceClient,
};
use hdrhistogram::Histogram;
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use tonic::transport::Channel;

/// The middle value of `values` (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// costd over the demo's three team accounts of `sandbox`, on loopback: the figures of the harnesses
/// that use it compare costd's serving path, not Atlas' polling.
pub fn team_settings(sandbox: &costd::sandbox::SandboxHandle) -> Settings {
    let mut settings =
        costd::demo::settings(sandbox, SocketAddr::from(([127, 0, 0, 1], 0))).expect("settings");
    settings
        .accounts
        .retain(|a| a.provider() == costd::domain::ProviderKind::TeamBilling);
    settings
}

/// A plaintext channel to the server on `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects")
}

/// costd built from `settings`, served until the process ends, and a channel to it.
pub async fn serve(settings: Settings) -> Channel {
    let app = App::build(settings).await.expect("builds");
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    channel(addr).await
}

/// A date or instant as the CLI reads it, as a protobuf timestamp.
pub fn timestamp(text: &str) -> prost_types::Timestamp {
    costd::api::convert::time_to_proto(costd::cli::parse_instant(text).expect("valid"))
}

/// GetCosts over `[from, to)` by billing account and service, monthly: the cached call the load
/// harnesses repeat.
pub fn cached_months(from: &str, to: &str) -> costd::proto::GetCostsRequest {
    use costd::proto as pb;
    pb::GetCostsRequest {
        query: Some(pb::CostQuery {
            start_time: Some(timestamp(from)),
            end_time: Some(timestamp(to)),
            group_by: vec![
                pb::GroupBy::BillingAccount as i32,
                pb::GroupBy::Service as i32,
            ],
            granularity: pb::Granularity::Monthly as i32,
            ..Default::default()
        }),
    }
}

/// Calls `call` from `in_flight` workers for `run_for`; returns calls per second and p99 latency.
pub async fn drive<F, Fut>(in_flight: usize, run_for: Duration, call: F) -> (f64, Duration)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let workers = (0..in_flight).map(|_| {
        let call = call.clone();
        tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3).expect("histogram");
            while started.elapsed() < run_for {
                let began = Instant::now();
                call().await;
                let _ = histogram.record(began.elapsed().as_micros() as u64);
            }
            histogram
        })
    });
    let mut total = Histogram::<u64>::new(3).expect("histogram");
    for worker in futures::future::join_all(workers).await {
        let _ = total.add(worker.expect("joins"));
    }
    (
        total.len() as f64 / started.elapsed().as_secs_f64(),
        Duration::from_micros(total.value_at_quantile(0.99)),
    )
}

/// This process's resident set (`VmRSS`), in bytes; 0 where /proc is not there.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// The account id the big Elastic organization is configured under.
pub const ACCOUNT: &str = "elastic-zenith";

/// costd reading only the sandbox's big Elastic organization. `cache.max_bytes` = 16 GiB (the
/// default 256 MiB would evict chunks of a 1M-record query, so a second query would not be warm);
/// `upstream.request_timeout_ms` = 120 s.
pub fn big_elastic_settings(base_url: &str, org_id: &str, api_key: &str) -> Settings {
    let account = AccountSettings {
        id: ProviderAccountId::parse(ACCOUNT).expect("valid id"),
        display_name: "Zenith Fleet".to_string(),
        base_url: reqwest::Url::parse(base_url).expect("url"),
        requests_per_second: None,
        kind: AccountKind::Elastic(ElasticSettings {
            organization_id: UpstreamId::parse(org_id).expect("valid id"),
            api_key: secrecy::SecretString::from(api_key.to_string()),
            api_version: ElasticApiVersion::V2,
            usd_per_ecu: rust_decimal::Decimal::ONE,
        }),
    };
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    Settings {
        server: ServerConfig {
            listen: loopback,
            ..ServerConfig::default()
        },
        telemetry: TelemetryConfig {
            log_level: "warn".to_string(),
            log_format: LogFormat::Text,
            ..TelemetryConfig::default()
        },
        upstream: UpstreamConfig {
            request_timeout_ms: 120_000,
            ..UpstreamConfig::default()
        },
        cache: CacheConfig {
            max_bytes: 16 << 30,
            ..CacheConfig::default()
        },
        atlas: Default::default(),
        jobs: Default::default(),
        job_store: costd::config::JobStoreSettings::Memory,
        auth: None,
        metrics: MetricsConfig {
            enabled: false,
            listen: loopback,
        },
        accounts: vec![account],
    }
}

/// A running server and a client of it; dropping `stop` stops it.
pub struct Server {
    pub client: CostServiceClient<Channel>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), costd::AppError>>,
}

pub async fn start(settings: Settings) -> Server {
    let app = App::build(settings).await.expect("builds");
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let client = CostServiceClient::new(channel).max_decoding_message_size(64 << 20);
    Server { client, stop, task }
}

impl Server {
    pub async fn stop(self) {
        drop(self.client);
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// On-CPU time of every thread of this process so far, in ns (user + system, as the scheduler
/// counts it; finer than the clock ticks of /proc/self/stat). Threads that have exited are not
/// counted; tokio's workers live as long as the runtime.
pub fn cpu_ns() -> f64 {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task").expect("procfs") {
        let path = task.expect("entry").path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            let ns = text.split_whitespace().next().unwrap_or("0");
            total += ns.parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}

/// A `kB` field of /proc/self/status.
pub fn status_kib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a kB figure")
}
