//! Spawning the app, the process-wide telemetry capture, and ground truth from the sandbox's data.

use bytes::{Buf, BufMut, Bytes};
use chrono::{DateTime, Utc};
use costd::{
    App, AppError,
    config::{LogFormat, Settings, TelemetryConfig},
    domain::ProviderKind,
    proto::{self as pb, cost_service_client::CostServiceClient},
    sandbox::{Sandbox, SandboxHandle, SandboxOptions, Scope},
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use std::{
    future::Future,
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Longest any single wait in a test may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Everything logged and every span exported by any test in this binary.
pub struct Captured {
    logs: Arc<Mutex<Vec<u8>>>,
    spans: InMemorySpanExporter,
    _provider: SdkTracerProvider,
}

impl Captured {
    pub fn logs(&self) -> String {
        let bytes = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn spans(&self) -> Vec<SpanData> {
        self.spans.get_finished_spans().unwrap_or_default()
    }
}

#[derive(Clone)]
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capture once for the whole test binary.
pub fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let spans = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let config = TelemetryConfig {
            // Verbose on purpose: the secret tests read everything the libraries log too.
            log_level: "debug,h2=info,tower=info".to_string(),
            log_format: LogFormat::Json,
            ..TelemetryConfig::default()
        };
        let writer = CaptureWriter(logs.clone());
        let subscriber =
            costd::telemetry::subscriber(&config, move || writer.clone(), Some(&provider));
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in tests");
        Captured {
            logs,
            spans,
            _provider: provider,
        }
    })
}

/// A running costd with its own sandbox.
pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// The plaintext health listener, when TLS is on and it is configured.
    pub health_addr: Option<SocketAddr>,
    pub sandbox: SandboxHandle,
    pub costs: CostServiceClient<Channel>,
    pub channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), AppError>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns costd wired to a fresh sandbox, after `adjust` has changed the test settings.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(std::sync::Arc::new(costd::clock::SystemClock), adjust).await
}

/// As [`spawn_app_with`], with cache freshness judged on `clock`.
pub async fn spawn_app_on(
    clock: std::sync::Arc<dyn costd::clock::Clock>,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn_app_full(clock, &[ProviderKind::TeamBilling], |settings, _| {
        adjust(settings)
    })
    .await
}

/// Spawns costd with the demo's accounts of the given kinds; `adjust` sees the settings and the sandbox.
pub async fn spawn_app_full(
    clock: std::sync::Arc<dyn costd::clock::Clock>,
    kinds: &[ProviderKind],
    adjust: impl FnOnce(&mut Settings, &SandboxHandle),
) -> TestApp {
    let sandbox = Sandbox::start(SandboxOptions::default()).expect("sandbox starts");
    spawn_app_beside(sandbox, clock, kinds, adjust).await
}

/// As [`spawn_app_full`], on a sandbox already running: several replicas share one sandbox, whose
/// counters then count what all of them sent.
pub async fn spawn_app_beside(
    sandbox: SandboxHandle,
    clock: std::sync::Arc<dyn costd::clock::Clock>,
    kinds: &[ProviderKind],
    adjust: impl FnOnce(&mut Settings, &SandboxHandle),
) -> TestApp {
    captured();
    let mut settings = costd::demo::settings(&sandbox, SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("demo settings");
    settings.telemetry = TelemetryConfig::default();
    // Fast retries keep the suite quick; the policy is the same, only the delays are shorter.
    settings.upstream.retry_initial_delay_ms = 10;
    settings.upstream.retry_max_delay_ms = 50;
    settings.upstream.request_timeout_ms = 5_000;
    settings.server.drain_timeout_ms = 2_000;
    // Atlas answers after a few polls; polling fast keeps those tests quick, the policy is the same.
    settings.atlas.poll_initial_ms = 5;
    settings.atlas.poll_max_ms = 40;
    settings
        .accounts
        .retain(|account| kinds.contains(&account.provider()));
    adjust(&mut settings, &sandbox);
    let app = App::build_with_clock(settings, clock)
        .await
        .expect("app builds");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let health_addr = app.health_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    // Lazy: a server with TLS on is called through channels of the test's own making.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect_lazy();
    TestApp {
        addr,
        metrics_addr,
        health_addr,
        sandbox,
        costs: CostServiceClient::new(channel.clone()),
        channel,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    /// Triggers the graceful stop and returns the server task to await.
    pub fn begin_stop(&mut self) -> JoinHandle<Result<(), AppError>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.take().expect("the server is stopped once")
    }

    pub async fn get_costs(&self, query: pb::CostQuery) -> Result<pb::CostReport, tonic::Status> {
        let mut client = self.costs.clone();
        let response = client
            .get_costs(pb::GetCostsRequest { query: Some(query) })
            .await?;
        Ok(response.into_inner().report.expect("a report"))
    }

    /// ListProviders as it answers now.
    pub async fn list_providers(&self) -> pb::ListProvidersResponse {
        within(
            self.costs
                .clone()
                .list_providers(pb::ListProvidersRequest {}),
        )
        .await
        .expect("listed")
        .into_inner()
    }

    /// One account's health as ListProviders reports it now.
    pub async fn health_of(&self, id: &str) -> pb::ProviderHealth {
        self.list_providers()
            .await
            .provider_accounts
            .into_iter()
            .find(|p| p.id == id)
            .and_then(|p| p.health)
            .expect("the account's health")
    }

    pub fn token(&self, team_id: &str) -> String {
        self.sandbox
            .dataset()
            .team(team_id)
            .expect("seeded team")
            .token
            .clone()
    }

    /// The team's cost over `[start, end)` under the default sheet, summed here from the sandbox's
    /// hourly usage and price table — not from any answer of the API.
    pub fn expected_nanos(&self, team_id: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> i128 {
        expected_by(&self.sandbox, team_id, start, end, |_| ())
            .into_values()
            .sum()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Expected nanodollars per key over `[start, end)`, keying each hourly usage record with `key`.
pub fn expected_by<K: Ord>(
    sandbox: &SandboxHandle,
    team_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    key: impl Fn(&costd::sandbox::UsageRecord) -> K,
) -> std::collections::BTreeMap<K, i128> {
    let dataset = sandbox.dataset();
    let team = dataset.team(team_id).expect("seeded team");
    let sheet = dataset.default_pricing_sheet();
    let mut sums = std::collections::BTreeMap::new();
    for usage in dataset.usage(team, start, end) {
        let price = sheet
            .price(usage.operation, usage.dimension)
            .expect("every dimension has a price");
        *sums.entry(key(&usage)).or_insert(0) +=
            i128::from(usage.units) * i128::from(price.unit_price_nanodollars);
    }
    sums
}

pub fn team_scope(team_id: &str) -> Scope {
    Scope::team_billing(team_id)
}

pub fn at(text: &str) -> DateTime<Utc> {
    costd::cli::parse_instant(text).expect("valid test instant")
}

pub fn timestamp(text: &str) -> prost_types::Timestamp {
    costd::api::convert::time_to_proto(at(text))
}

/// A query over `[from, to)` with the given grouping and granularity.
pub fn query(
    from: &str,
    to: &str,
    group_by: &[pb::GroupBy],
    granularity: pb::Granularity,
) -> pb::CostQuery {
    pb::CostQuery {
        start_time: Some(timestamp(from)),
        end_time: Some(timestamp(to)),
        group_by: group_by.iter().map(|g| *g as i32).collect(),
        granularity: granularity as i32,
        ..Default::default()
    }
}

pub fn only_accounts(mut query: pb::CostQuery, accounts: &[&str]) -> pb::CostQuery {
    query
        .filter
        .get_or_insert_with(Default::default)
        .provider_accounts = accounts.iter().map(|a| a.to_string()).collect();
    query
}

pub fn nanos(money: Option<&pb::Money>) -> i128 {
    let money = money.expect("an amount");
    assert_eq!(money.currency_code, "USD");
    i128::from(money.units) * 1_000_000_000 + i128::from(money.nanos)
}

/// A Money as grpcurl prints it (protobuf JSON: `units` an int64 string, `nanos` left out when 0).
pub fn json_nanos(money: &serde_json::Value) -> i128 {
    let units: i128 = money["units"]
        .as_str()
        .expect("int64 as a string")
        .parse()
        .expect("a number");
    units * 1_000_000_000 + i128::from(money["nanos"].as_i64().unwrap_or(0))
}

pub fn result_of<'a>(report: &'a pb::CostReport, account: &str) -> &'a pb::ProviderResult {
    report
        .provider_results
        .iter()
        .find(|r| r.provider_account == account)
        .unwrap_or_else(|| panic!("no result for {account}"))
}

/// How many records ListCostRecords lists for `query`, every page walked.
pub async fn listed_records(app: &TestApp, query: &pb::CostQuery) -> usize {
    all_records(app, query).await.len()
}

/// Every record ListCostRecords lists for `query`, every page walked.
pub async fn all_records(app: &TestApp, query: &pb::CostQuery) -> Vec<pb::CostRecord> {
    let mut token = String::new();
    let mut records = Vec::new();
    loop {
        let page = app
            .costs
            .clone()
            .list_cost_records(pb::ListCostRecordsRequest {
                query: Some(query.clone()),
                page_size: 10_000,
                page_token: token,
            })
            .await
            .expect("a page")
            .into_inner();
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            return records;
        }
        token = page.next_page_token;
    }
}

/// What Health/Check answers on `app`'s channel.
pub async fn serving(app: &TestApp) -> ServingStatus {
    serving_on(app.channel.clone()).await
}

/// What Health/Check answers on `channel`.
pub async fn serving_on(channel: Channel) -> ServingStatus {
    within(HealthClient::new(channel).check(HealthCheckRequest {
        service: String::new(),
    }))
    .await
    .expect("health answers")
    .into_inner()
    .status()
}

/// Fails the test instead of hanging when `future` takes longer than [`PATIENCE`].
pub async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("finished in time")
}

/// The job of a WatchJob stream's last event, the stream read to its end.
pub async fn last_job_of(mut events: tonic::Streaming<pb::WatchJobResponse>) -> pb::Job {
    let mut last = None;
    while let Some(event) = within(events.message()).await.expect("an event") {
        last = event.job;
    }
    last.expect("a final event")
}

/// A codec that sends and returns message bytes as they are: to see an answer's exact bytes, or to
/// send bytes that are no message at all.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}
