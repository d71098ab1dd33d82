//! Load harness for the query engine, through the real server and sandbox on loopback. Every figure is
//! a ratio measured side by side in one run (A/B interleaved, median of rounds), because this machine
//! is noisy:
//! 1. cached GetCosts vs grpc.health.v1.Health/Check on the same server: throughput and p99, at 1 and
//!    at 100 calls in flight; once with the generated (decoding) client, once with a client that
//!    leaves answers undecoded, as h2load would, so the ratio measures the server and not the client's
//!    decoding on the same two cores;
//! 2. the same, driven from outside the process by h2load (Debian's nghttp2-client, installed by
//!    scripts/install-tools) at 100 streams in flight (4 connections × 25), for Health/Check and
//!    cached GetCosts with a 10-row and a 50-row answer: throughput and mean latency ratios;
//! 3. 100 identical cold queries: wall time / one cold query;
//! 4. a cold query over 3 providers × 100 ms injected latency: wall time / the slowest provider alone;
//! 5. RSS after filling the cache to its budget three times (fill, invalidate): third / first;
//! 6. bytes per cached record after a daily query over a year of every demo account (small chunks),
//!    with the fixed cost per chunk and the cost per record beside it. Bytes, not time: a debug build
//!    gives the same figure, and `cargo bench --bench load -- bytes` runs this part alone
//!    (`-- h2load` runs part 2 alone, to profile the server under it).

use costd::{
    App,
    proto::{self as pb, cost_service_client::CostServiceClient},
    sandbox::{Fault, Sandbox, SandboxHandle, Scope},
};
use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[path = "support/mod.rs"]
mod support;

use support::{channel, cpu_ns, drive, median, rss_bytes, team_settings, timestamp};

/// The allocator the costd binary ships with, so the harness measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 3;
const RUN_FOR: Duration = Duration::from_millis(1500);
const TEAMS: [&str; 3] = ["team_acme", "team_borealis", "team_cobalt"];

fn month_query(year: i32, month: u32, accounts: &[&str]) -> pb::CostQuery {
    let start = chrono::NaiveDate::from_ymd_opt(year, month, 1).expect("valid");
    let end = if month == 12 {
        chrono::NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(year, month + 1, 1)
    }
    .expect("valid");
    pb::CostQuery {
        start_time: Some(timestamp(&start.to_string())),
        end_time: Some(timestamp(&end.to_string())),
        filter: Some(pb::CostFilter {
            provider_accounts: accounts.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }),
        group_by: vec![
            pb::GroupBy::BillingAccount as i32,
            pb::GroupBy::Service as i32,
        ],
        granularity: pb::Granularity::Monthly as i32,
        max_staleness: None,
    }
}

struct Server {
    addr: SocketAddr,
    sandbox: SandboxHandle,
    engine: Arc<costd::engine::Engine>,
}

async fn start(cache_bytes: u64) -> Server {
    let sandbox = Sandbox::start(Default::default()).expect("sandbox");
    let mut settings = team_settings(&sandbox);
    settings.cache.max_bytes = cache_bytes;
    settings.server.max_chunks_per_query = 100_000;
    let app = App::build(settings).await.expect("builds");
    let addr = app.local_addr();
    let engine = app.engine();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Server {
        addr,
        sandbox,
        engine,
    }
}

async fn cached_vs_health(server: &Server) {
    let channel = channel(server.addr).await;
    let cached = month_query(2026, 1, &[]);
    let warm = CostServiceClient::new(channel.clone())
        .get_costs(pb::GetCostsRequest {
            query: Some(cached.clone()),
        })
        .await
        .expect("warms")
        .into_inner();
    let rows = warm.report.as_ref().map_or(0, |r| r.rows.len());
    println!(
        "cached GetCosts answer: {} bytes encoded ({rows} rows)",
        prost::Message::encoded_len(&warm)
    );
    let limits = costd::api::QueryRules {
        known_accounts: server.engine.account_ids(),
        max_range_days: 731,
    };
    let domain_query =
        costd::api::convert::parse_query(Some(cached.clone()), &limits).expect("valid");
    let began = Instant::now();
    for _ in 0..2_000 {
        let report = server
            .engine
            .report(&domain_query, costd::deadline::Deadline::NONE)
            .await
            .expect("report");
        std::hint::black_box(costd::api::convert::report_to_proto(&report).expect("converts"));
    }
    println!(
        "engine.report + report_to_proto, cached, in process: {:.1} us per call",
        began.elapsed().as_secs_f64() * 1e6 / 2_000.0
    );
    let costs = CostServiceClient::new(channel.clone());
    let health = HealthClient::new(channel.clone());
    compare_with_health(
        "",
        move || {
            let mut client = costs.clone();
            let query = cached.clone();
            async move {
                client
                    .get_costs(pb::GetCostsRequest { query: Some(query) })
                    .await
                    .expect("answer");
            }
        },
        move || {
            let mut client = health.clone();
            async move {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .expect("answer");
            }
        },
    )
    .await;
}

/// Cached GetCosts (`costs`) against Health/Check (`health`) at 1 and 100 in flight, interleaved over
/// ROUNDS; prints the median throughput and p99 ratios.
async fn compare_with_health<A, AF, H, HF>(client: &str, costs: A, health: H)
where
    A: Fn() -> AF + Clone + Send + 'static,
    AF: std::future::Future<Output = ()> + Send,
    H: Fn() -> HF + Clone + Send + 'static,
    HF: std::future::Future<Output = ()> + Send,
{
    for in_flight in [1, 100] {
        let (mut throughput, mut p99) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let a = drive(in_flight, RUN_FOR, costs.clone()).await;
            let b = drive(in_flight, RUN_FOR, health.clone()).await;
            throughput.push(a.0 / b.0);
            p99.push(a.1.as_secs_f64() / b.1.as_secs_f64().max(1e-6));
        }
        println!(
            "cached GetCosts vs Health/Check at {in_flight} in flight{client}: throughput ratio {:.2} (goal >= 0.8), p99 ratio {:.2} (goal <= 1.5)",
            median(throughput),
            median(p99)
        );
    }
}

/// A codec that sends and returns message bytes as they are: the client side of a call costs the
/// same whatever the answer holds, so the ratio measures the server. (A decoding client spends its
/// own CPU on a 1.2 KB answer against Health's 2 bytes, on the same two cores as the server.)
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
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
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        use bytes::Buf;
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

/// One unary call of `path` with `message` already encoded, its answer left undecoded.
async fn raw_call(channel: Channel, path: &'static str, message: bytes::Bytes) {
    raw_answer(channel, path, message).await;
}

/// As [`raw_call`], returning the answer's bytes.
async fn raw_answer(channel: Channel, path: &'static str, message: bytes::Bytes) -> bytes::Bytes {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(message),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .expect("answer")
    .into_inner()
}

async fn cached_vs_health_raw(server: &Server) {
    let channel = channel(server.addr).await;
    let costs = bytes::Bytes::from(prost::Message::encode_to_vec(&pb::GetCostsRequest {
        query: Some(month_query(2026, 1, &[])),
    }));
    let health = bytes::Bytes::from(prost::Message::encode_to_vec(&HealthCheckRequest {
        service: String::new(),
    }));
    raw_call(channel.clone(), GET_COSTS_PATH, costs.clone()).await;
    let (channel_a, channel_b) = (channel.clone(), channel);
    compare_with_health(
        ", undecoding client",
        move || raw_call(channel_a.clone(), GET_COSTS_PATH, costs.clone()),
        move || raw_call(channel_b.clone(), HEALTH_CHECK_PATH, health.clone()),
    )
    .await;
}

const GET_COSTS_PATH: &str = "/costd.v1.CostService/GetCosts";
const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// Requests per h2load run (a fixed count), and the longest one run may take before the harness fails.
const H2LOAD_REQUESTS: usize = 100_000;
const H2LOAD_LIMIT: Duration = Duration::from_secs(60);
/// h2load rounds, each Health/Check then GetCosts 10 rows then GetCosts 50 rows, after one warm-up.
const H2LOAD_ROUNDS: usize = 5;

/// A 50-row answer: the three teams' January–May 2026 by team and service, monthly (5 months × the
/// 10 team × service pairs of one month).
fn fifty_row_query() -> pb::CostQuery {
    let mut query = month_query(2026, 1, &[]);
    query.end_time = Some(timestamp("2026-06-01"));
    query
}

/// A unary gRPC request body as it goes on the wire: uncompressed flag, length (big-endian), message.
fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(0);
    frame.extend_from_slice(
        &u32::try_from(body.len())
            .expect("a small message")
            .to_be_bytes(),
    );
    frame.extend_from_slice(&body);
    frame
}

/// What one h2load run measured.
struct H2loadRun {
    per_second: f64,
    mean_latency: Duration,
    /// This process's (the server's) on-CPU time per request, ns.
    server_cpu_per_call: f64,
    /// h2load's CPU time per request (user + system), ns.
    client_cpu_per_call: f64,
}

/// CPU time of this process's waited-for children so far (h2load's runs), ns: /proc/self/stat's
/// `cutime` + `cstime`, in clock ticks of 10 ms (USER_HZ is 100 on Linux).
fn children_cpu_ns() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    // cutime and cstime are fields 16 and 17 of the line, 14 and 15 after the name.
    let ticks: f64 = fields[13..15]
        .iter()
        .map(|t| t.parse::<f64>().expect("ticks"))
        .sum();
    ticks * 1e7
}

/// h2load's `123us`, `1.23ms`, `1.02s`.
fn h2load_duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else {
        (text.strip_suffix('s')?, 1.0)
    };
    number
        .parse::<f64>()
        .ok()
        .map(|n| Duration::from_secs_f64(n * scale))
}

/// Reads h2load's report; fails unless every one of `requests` was answered with HTTP 200.
fn parse_h2load(report: &str, requests: usize) -> (f64, Duration) {
    let line = |prefix: &str| {
        report
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("h2load printed no `{prefix}` line:\n{report}"))
    };
    let counts = line("requests:");
    for wanted in [
        format!("{requests} done"),
        format!("{requests} succeeded"),
        "0 failed".to_string(),
        "0 errored".to_string(),
        "0 timeout".to_string(),
    ] {
        assert!(counts.contains(&wanted), "h2load: {counts}");
    }
    let statuses = line("status codes:");
    assert!(
        statuses.starts_with(&format!("status codes: {requests} 2xx")),
        "every answer HTTP 200: {statuses}"
    );
    let per_second = line("finished in")
        .split(", ")
        .find_map(|part| part.strip_suffix(" req/s"))
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no req/s in h2load's report:\n{report}"));
    // `time for request:  min  max  mean  sd  +/- sd`
    let mean_latency = line("time for request:")
        .split_whitespace()
        .nth(5)
        .and_then(h2load_duration)
        .unwrap_or_else(|| panic!("no mean request time in h2load's report:\n{report}"));
    (per_second, mean_latency)
}

/// One h2load run of `requests` POSTs of `frame` to `path`, 100 streams in flight.
async fn h2load(addr: SocketAddr, path: &str, frame: &Path, requests: usize) -> H2loadRun {
    let (server_before, client_before) = (cpu_ns(), children_cpu_ns());
    let run = tokio::process::Command::new("h2load")
        .args(["-n", &requests.to_string(), "-c", "4", "-m", "25"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("--data={}", frame.display()))
        .arg(format!("http://{addr}{path}"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(H2LOAD_LIMIT, run)
        .await
        .expect("h2load finishes in time")
        .expect("h2load runs (scripts/install-tools installs it)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "h2load failed: {report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let calls = requests as f64;
    let server_cpu_per_call = (cpu_ns() - server_before) / calls;
    let client_cpu_per_call = (children_cpu_ns() - client_before) / calls;
    let (per_second, mean_latency) = parse_h2load(&report, requests);
    H2loadRun {
        per_second,
        mean_latency,
        server_cpu_per_call,
        client_cpu_per_call,
    }
}

/// Health/Check and cached GetCosts (10 and 50 rows) driven by h2load from outside the process.
async fn h2load_vs_health(server: &Server) {
    let channel = channel(server.addr).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let health_frame = dir.path().join("health.bin");
    std::fs::write(
        &health_frame,
        grpc_frame(&HealthCheckRequest {
            service: String::new(),
        }),
    )
    .expect("written");
    let mut answers = Vec::new();
    for (name, query, rows) in [
        ("10", month_query(2026, 1, &[]), 10),
        ("50", fifty_row_query(), 50),
    ] {
        let request = pb::GetCostsRequest { query: Some(query) };
        let frame = grpc_frame(&request);
        // The frame h2load sends, checked once with a tonic client: OK (gRPC status), the rows wanted.
        // Asked twice, so the answer is remembered (the first may fetch or be just fetched).
        let message = bytes::Bytes::copy_from_slice(&frame[5..]);
        raw_call(channel.clone(), GET_COSTS_PATH, message.clone()).await;
        let answer = raw_answer(channel.clone(), GET_COSTS_PATH, message).await;
        let report = <pb::GetCostsResponse as prost::Message>::decode(answer.clone())
            .expect("a GetCostsResponse")
            .report
            .expect("a report");
        assert_eq!(report.rows.len(), rows, "rows in the {name}-row answer");
        assert!(
            report
                .provider_results
                .iter()
                .all(|r| r.state == pb::ResultState::Ok as i32 && r.from_cache),
            "a cached answer"
        );
        let path = dir.path().join(format!("costs-{name}.bin"));
        std::fs::write(&path, frame).expect("written");
        answers.push((rows, answer.len(), path));
    }
    h2load(server.addr, HEALTH_CHECK_PATH, &health_frame, 2_000).await;
    let (mut throughput, mut latency) = (vec![Vec::new(); 2], vec![Vec::new(); 2]);
    // Each call's CPU in the server and in h2load, over Health's, so what the throughput ratio
    // holds of each side shows: the two share the machine's cores.
    let (mut server_cpu, mut client_cpu) = (vec![Vec::new(); 2], vec![Vec::new(); 2]);
    let (mut health_per_second, mut health_cpu) = (Vec::new(), Vec::new());
    for _ in 0..H2LOAD_ROUNDS {
        let health = h2load(
            server.addr,
            HEALTH_CHECK_PATH,
            &health_frame,
            H2LOAD_REQUESTS,
        )
        .await;
        health_per_second.push(health.per_second);
        health_cpu.push((health.server_cpu_per_call, health.client_cpu_per_call));
        for (i, (_, _, frame)) in answers.iter().enumerate() {
            let costs = h2load(server.addr, GET_COSTS_PATH, frame, H2LOAD_REQUESTS).await;
            throughput[i].push(costs.per_second / health.per_second);
            latency[i].push(
                costs.mean_latency.as_secs_f64() / health.mean_latency.as_secs_f64().max(1e-9),
            );
            server_cpu[i].push(costs.server_cpu_per_call / health.server_cpu_per_call);
            client_cpu[i].push(costs.client_cpu_per_call / health.client_cpu_per_call.max(1.0));
        }
    }
    println!(
        "h2load, Health/Check at 100 in flight: {:.0} req/s (median of {H2LOAD_ROUNDS} rounds of {H2LOAD_REQUESTS})",
        median(health_per_second)
    );
    println!(
        "h2load, Health/Check: {:.1} µs of server CPU and {:.1} µs of h2load's per call (medians)",
        median(health_cpu.iter().map(|c| c.0 / 1e3).collect()),
        median(health_cpu.iter().map(|c| c.1 / 1e3).collect())
    );
    for (i, (rows, bytes, _)) in answers.iter().enumerate() {
        println!(
            "h2load, cached GetCosts ({rows} rows, {bytes} bytes) vs Health/Check at 100 in flight: throughput ratio {:.2} (goal >= 0.8), mean latency ratio {:.2}; CPU per call / Health's: server {:.2}, h2load {:.2}",
            median(throughput[i].clone()),
            median(latency[i].clone()),
            median(server_cpu[i].clone()),
            median(client_cpu[i].clone())
        );
    }
}

fn slow_first_answers(sandbox: &SandboxHandle, teams: &[&str]) {
    for team in teams {
        sandbox.push_fault(
            &Scope::team_billing(*team),
            Fault::Latency(Duration::from_millis(100)),
        );
    }
}

async fn cold_queries(server: &Server) {
    let channel = channel(server.addr).await;
    let client = CostServiceClient::new(channel);
    let mut months = (2025..=2026).flat_map(|year| (1..=12).map(move |month| (year, month)));
    let (mut coalesced, mut spread) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        // One cold query over all three providers, each answering after 100 ms.
        let (year, month) = months.next().expect("a fresh month");
        slow_first_answers(&server.sandbox, &TEAMS);
        let began = Instant::now();
        client
            .clone()
            .get_costs(pb::GetCostsRequest {
                query: Some(month_query(year, month, &[])),
            })
            .await
            .expect("answer");
        let one_cold = began.elapsed();

        // The slowest provider alone, cold.
        let (year, month) = months.next().expect("a fresh month");
        slow_first_answers(&server.sandbox, &["team_acme"]);
        let began = Instant::now();
        client
            .clone()
            .get_costs(pb::GetCostsRequest {
                query: Some(month_query(year, month, &["team-acme"])),
            })
            .await
            .expect("answer");
        let slowest_alone = began.elapsed();

        // A hundred identical cold queries at once.
        let (year, month) = months.next().expect("a fresh month");
        slow_first_answers(&server.sandbox, &TEAMS);
        let query = month_query(year, month, &[]);
        let began = Instant::now();
        futures::future::join_all((0..100).map(|_| {
            let mut client = client.clone();
            let query = query.clone();
            async move {
                client
                    .get_costs(pb::GetCostsRequest { query: Some(query) })
                    .await
                    .expect("answer")
            }
        }))
        .await;
        let hundred = began.elapsed();
        coalesced.push(hundred.as_secs_f64() / one_cold.as_secs_f64());
        spread.push(one_cold.as_secs_f64() / slowest_alone.as_secs_f64());
    }
    println!(
        "100 identical cold queries: wall / one cold query {:.2} (goal <= 1.2)",
        median(coalesced)
    );
    println!(
        "cold query over 3 providers x 100 ms: wall / slowest provider alone {:.2} (goal <= 1.3)",
        median(spread)
    );
}

async fn cache_refills(server: &Server, budget: u64) {
    let client = CostServiceClient::new(channel(server.addr).await);
    let mut rss = Vec::new();
    for fill in 1..=3 {
        // Every day of both years, per team: more chunks than the budget holds, so it evicts too.
        for year in [2025, 2026] {
            let mut query = month_query(year, 1, &[]);
            query.end_time = Some(timestamp(&format!("{}-01-01", year + 1)));
            query.granularity = pb::Granularity::Daily as i32;
            query.group_by = vec![pb::GroupBy::Service as i32];
            client
                .clone()
                .get_costs(pb::GetCostsRequest { query: Some(query) })
                .await
                .expect("answer");
        }
        let (held, _) = server.engine.cache().size().await;
        rss.push(rss_bytes());
        println!(
            "fill {fill}: cache holds {} KiB of a {} KiB budget; RSS {} MiB",
            held / 1024,
            budget / 1024,
            rss_bytes() / (1024 * 1024)
        );
        server.engine.cache().invalidate_all();
    }
    println!(
        "RSS after the third fill / after the first: {:.2} (goal <= 1.1)",
        rss[2] as f64 / rss[0] as f64
    );
}

/// A daily query over 2025 across every demo account, then what the cache holds per record. The
/// fixed cost per chunk and the cost per record are the least-squares line of each chunk's bytes
/// against its records; the entry (the `CachedChunk` itself, its `Arc` and moka's share) is part of
/// the fixed cost.
async fn bytes_per_cached_record() {
    let sandbox = Sandbox::start(Default::default()).expect("sandbox");
    let mut settings =
        costd::demo::settings(&sandbox, SocketAddr::from(([127, 0, 0, 1], 0))).expect("settings");
    settings.server.max_chunks_per_query = 100_000;
    let app = App::build(settings).await.expect("builds");
    let engine = app.engine();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let mut query = month_query(2025, 1, &[]);
    query.end_time = Some(timestamp("2026-01-01"));
    query.granularity = pb::Granularity::Daily as i32;
    query.group_by = vec![pb::GroupBy::Service as i32];
    let rules = costd::api::QueryRules {
        known_accounts: engine.account_ids(),
        max_range_days: 731,
    };
    let query = costd::api::convert::parse_query(Some(query), &rules).expect("valid");
    // No deadline: the answer waits for Atlas' asynchronous invoices too.
    let report = engine
        .report(&query, costd::deadline::Deadline::NONE)
        .await
        .expect("report");
    // Atlas' monthly invoice lines are held too, though a daily query puts them in no row.
    assert!(
        report
            .accounts
            .iter()
            .all(|a| a.state == costd::engine::AccountState::Ok),
        "every demo account answers"
    );
    let (held, _) = engine.cache().size().await;
    let chunks = engine.cache().held_chunks();
    let records: usize = chunks.iter().map(|c| c.records.len()).sum();
    let points: Vec<(f64, f64)> = chunks
        .iter()
        .map(|c| (c.records.len() as f64, f64::from(c.bytes())))
        .collect();
    let count = points.len() as f64;
    let (mean_x, mean_y) = (
        points.iter().map(|p| p.0).sum::<f64>() / count,
        points.iter().map(|p| p.1).sum::<f64>() / count,
    );
    let covariance: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let variance: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let per_record = covariance / variance;
    // The `CachedChunk` inline, as the weigher counts it, before any of its heap.
    let entry = chunks.first().map_or(0, |c| std::mem::size_of_val(&**c));
    println!(
        "bytes per cached record, a year of daily data on the demo accounts: {:.0} (goal <= 150; {} chunks, {records} records, {:.1} records a chunk; fixed {:.0} bytes a chunk, of which the entry inline {entry}; {:.0} a record)",
        held as f64 / records as f64,
        chunks.len(),
        records as f64 / count,
        mean_y - per_record * mean_x,
        per_record,
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::args().any(|arg| arg == "bytes") {
        runtime.block_on(bytes_per_cached_record());
        return;
    }
    if std::env::args().any(|arg| arg == "cached") {
        runtime.block_on(async {
            let server = start(256 * 1024 * 1024).await;
            cached_vs_health(&server).await;
            cached_vs_health_raw(&server).await;
        });
        return;
    }
    if std::env::args().any(|arg| arg == "h2load") {
        runtime.block_on(async {
            let server = start(256 * 1024 * 1024).await;
            h2load_vs_health(&server).await;
        });
        return;
    }
    runtime.block_on(async {
        let server = start(256 * 1024 * 1024).await;
        cached_vs_health(&server).await;
        cached_vs_health_raw(&server).await;
        h2load_vs_health(&server).await;
        cold_queries(&server).await;
        let budget = 8 * 1024 * 1024;
        let small = start(budget).await;
        cache_refills(&small, budget).await;
        bytes_per_cached_record().await;
    });
}
