//! Overload harness, through the real server and sandbox on loopback. Every figure is a ratio or a
//! latency measured side by side in one run (interleaved, median of rounds), because this machine is
//! shared:
//! 1. saturation, measured: closed-loop callers sending cached GetCosts to a server that refuses
//!    nothing, 1 to 16 of them, all on one connection and then each on its own; the saturation point
//!    is operational analysis' N* = X_max × R(1) (the most calls/s any count reached, times one
//!    caller's mean latency alone): past it a caller more only queues;
//! 2. at 2× saturation: the server admits N* calls in progress (`server.max_concurrent_requests`, or
//!    each of `OVERLOAD_BENCH_LIMITS`, a comma list, for both connection modes) and sheds on the queue
//!    delay as each of `QUEUE_DELAYS_US` says (or `OVERLOAD_BENCH_QUEUE_DELAYS_US`), and `2 × limit`
//!    callers send cached GetCosts back to back; then the same callers at the server as it ships
//!    (limit 1,000, shedding past 10 ms for 100 ms). Each limited server twice: with no hold on a
//!    connection back before its RetryInfo delay, and with the hold it ships with (or each of
//!    `OVERLOAD_BENCH_HOLDS_MS`). Each first retrying a refused call at once (the
//!    worst caller there is), then waiting the RetryInfo delay (a well-behaved one). Accepted calls'
//!    p99 / the p99 of one caller alone (goal <= 3), the refusals' p99 latency (goal < 10 ms), and
//!    Health/Check's p99 from one more caller meanwhile (goal < 100 ms). The callers share the
//!    machine's two cores with the server, on one runtime (with `OVERLOAD_BENCH_SERVER_PROCESS` set,
//!    the server runs in a process of its own: then the OS, not tokio, shares the cores between it
//!    and the callers, and greedy callers' threads take whole time slices from it).
//!    `OVERLOAD_BENCH_LIMITS=16` gives the figures at 32 callers, far past saturation, that earlier
//!    closing notes quoted;
//! 3. the server's RSS after 5,000 idle connections (TCP only, never an HTTP/2 preface, as the
//!    issue's) came and were closed by the handshake timeout / its RSS before (goal <= 1.2), three
//!    rounds, so the callers' sockets are not counted (alone with `-- idle`);
//! 4. the drain, with one call that never finishes: how long after the stop Health answers NOT_SERVING
//!    on an open connection and on a new one (goal < 100 ms), and the time to exit / the drain timeout
//!    (goal <= 1.1).

use costd::{
    App,
    config::ServerConfig,
    proto::{self as pb, cost_service_client::CostServiceClient},
};
use hdrhistogram::Histogram;
use std::{
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[path = "support/mod.rs"]
mod support;

use support::{cached_months, channel, median, rss_bytes, team_settings};

/// The allocator the costd binary ships with, so the harness measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 3;
const RUN_FOR: Duration = Duration::from_millis(1500);
/// The callers counts whose throughput finds the saturation point.
const CURVE: [usize; 8] = [1, 2, 3, 4, 6, 8, 12, 16];
/// The call limit of the server whose idle connections and drain are measured.
const LIMIT: u32 = 16;
/// `server.max_queue_delay_us` values compared (0: shedding by count only), unless
/// `OVERLOAD_BENCH_QUEUE_DELAYS_US` says otherwise; the interval, unless
/// `OVERLOAD_BENCH_QUEUE_INTERVAL_MS` does.
const QUEUE_DELAYS_US: [u64; 2] = [0, 100];
const QUEUE_INTERVAL_MS: u64 = 2;
const IDLE_CONNECTIONS: usize = 5_000;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(500);

/// Shedding on the queue delay, as `server.max_queue_delay_us` (0: by count only) and
/// `server.queue_delay_interval_ms`, and how long a connection back too soon waits for its refusal
/// (`server.early_retry_hold_ms`, 0: never).
#[derive(Debug, Clone, Copy)]
struct Shedding {
    delay_us: u64,
    interval_ms: u64,
    hold_ms: u64,
}

/// The shedding the server ships with.
fn shipped_shedding() -> Shedding {
    let shipped = ServerConfig::default();
    Shedding {
        delay_us: shipped.max_queue_delay_us,
        interval_ms: shipped.queue_delay_interval_ms,
        hold_ms: shipped.early_retry_hold_ms,
    }
}

async fn start(limit: u32, shedding: Shedding) -> SocketAddr {
    let sandbox = Box::leak(Box::new(
        costd::sandbox::Sandbox::start(Default::default()).expect("sandbox"),
    ));
    let mut settings = team_settings(sandbox);
    settings.server.max_concurrent_requests = limit;
    settings.server.max_queue_delay_us = shedding.delay_us;
    settings.server.queue_delay_interval_ms = shedding.interval_ms;
    settings.server.early_retry_hold_ms = shedding.hold_ms;
    settings.server.max_connections = 2 * IDLE_CONNECTIONS as u32;
    settings.server.handshake_timeout_ms = HANDSHAKE_TIMEOUT.as_millis() as u64;
    settings.metrics.enabled = false;
    let app = App::build(settings).await.expect("builds");
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    addr
}

fn cached_query() -> pb::GetCostsRequest {
    cached_months("2026-01-01", "2026-04-01")
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("histogram")
}

fn p99(histogram: &Histogram<u64>) -> Duration {
    Duration::from_micros(histogram.value_at_quantile(0.99))
}

/// What one loaded (or unloaded) run measured: latencies of accepted and refused calls, of Health.
struct Run {
    accepted: Histogram<u64>,
    refused: Histogram<u64>,
    health: Histogram<u64>,
}

/// How a refused caller goes on.
#[derive(Debug, Clone, Copy)]
enum Caller {
    /// Retries at once.
    Greedy,
    /// Waits the RetryInfo delay the refusal names first.
    Polite,
}

/// The RetryInfo delay of a refusal.
fn retry_delay(status: &tonic::Status) -> Duration {
    use tonic_types::StatusExt;
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a refusal carries RetryInfo")
}

/// `callers` send the cached query back to back for RUN_FOR (a refused call is retried as `caller`
/// does), spread over all but the last of `connections`, while one more caller checks Health on
/// the last.
async fn drive(connections: &[Channel], callers: usize, caller: Caller) -> Run {
    let started = Instant::now();
    let (health_channel, connections) = connections.split_last().expect("connections");
    let workers = (0..callers).map(|i| {
        let mut client = CostServiceClient::new(connections[i % connections.len()].clone());
        tokio::spawn(async move {
            let (mut accepted, mut refused) = (histogram(), histogram());
            while started.elapsed() < RUN_FOR {
                let began = Instant::now();
                let answer = client.get_costs(cached_query()).await;
                let took = began.elapsed().as_micros() as u64;
                match answer {
                    Ok(_) => accepted.record(took).expect("in range"),
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        refused.record(took).expect("in range");
                        if let Caller::Polite = caller {
                            tokio::time::sleep(retry_delay(&status)).await;
                        }
                    }
                    Err(status) => panic!("unexpected answer: {status:?}"),
                }
            }
            (accepted, refused)
        })
    });
    let mut health_client = HealthClient::new(health_channel.clone());
    let health = tokio::spawn(async move {
        let mut health = histogram();
        while started.elapsed() < RUN_FOR {
            let began = Instant::now();
            health_client
                .check(HealthCheckRequest::default())
                .await
                .expect("health answers");
            health
                .record(began.elapsed().as_micros() as u64)
                .expect("in range");
        }
        health
    });
    let mut run = Run {
        accepted: histogram(),
        refused: histogram(),
        health: histogram(),
    };
    for worker in futures::future::join_all(workers).await {
        let (accepted, refused) = worker.expect("joins");
        run.accepted.add(accepted).expect("adds");
        run.refused.add(refused).expect("adds");
    }
    run.health.add(health.await.expect("joins")).expect("adds");
    run
}

/// How the callers reach the server.
#[derive(Debug, Clone, Copy)]
enum Connections {
    /// All on one connection, as one client service's threads would.
    Shared,
    /// Each on its own, as separate client services would.
    PerCaller,
}

/// The channels `callers` callers use in `mode`, and one more for Health, opened before anything is
/// timed.
async fn connections(addr: SocketAddr, callers: usize, mode: Connections) -> Vec<Channel> {
    let callers_connections = match mode {
        Connections::Shared => 1,
        Connections::PerCaller => callers,
    };
    futures::future::join_all((0..=callers_connections).map(|_| channel(addr))).await
}

/// The saturation point N* = X_max × R(1) in `mode`, on a server that refuses nothing: the most calls
/// per second any count of callers reached, times one caller's mean latency (operational analysis'
/// balanced point of a closed system; past it a caller more adds only queueing), at least 1.
async fn saturation(addr: SocketAddr, mode: Connections) -> u32 {
    let connections = connections(addr, CURVE[CURVE.len() - 1], mode).await;
    warm(&connections[0]).await;
    let mut throughputs: Vec<Vec<f64>> = vec![Vec::new(); CURVE.len()];
    let mut alone_means = Vec::new();
    for _ in 0..ROUNDS {
        for (at, &callers) in CURVE.iter().enumerate() {
            let run = drive(&connections, callers, Caller::Greedy).await;
            assert!(run.refused.is_empty(), "the curve's server refuses nothing");
            throughputs[at].push(run.accepted.len() as f64 / RUN_FOR.as_secs_f64());
            if callers == 1 {
                alone_means.push(run.accepted.mean() / 1e6);
            }
        }
    }
    let throughputs: Vec<f64> = throughputs.into_iter().map(median).collect();
    let curve: Vec<String> = CURVE
        .iter()
        .zip(&throughputs)
        .map(|(callers, throughput)| format!("{callers}: {throughput:.0}/s"))
        .collect();
    let most = throughputs.iter().copied().fold(0.0, f64::max);
    let alone = median(alone_means);
    let point = (most * alone).ceil().max(1.0) as u32;
    println!(
        "saturation ({mode:?}): calls/s by callers {}; X_max {most:.0}/s × R(1) {:.0} µs = N* {:.2}, so a limit of {point} and {} callers",
        curve.join(", "),
        alone * 1e6,
        most * alone,
        2 * point
    );
    point
}

/// The cached query answered once, so its chunks are cached and the answer remembered.
async fn warm(channel: &Channel) {
    CostServiceClient::new(channel.clone())
        .get_costs(cached_query())
        .await
        .expect("answer");
}

/// `callers` callers (twice the saturation point) at a server of `limit` calls in progress and
/// `shedding`.
async fn at_twice_saturation(
    addr: SocketAddr,
    callers: usize,
    limit: u32,
    shedding: Shedding,
    caller: Caller,
    mode: Connections,
) {
    let connections = connections(addr, callers, mode).await;
    warm(&connections[0]).await;
    let (mut ratios, mut refusals, mut healths) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let unloaded = drive(&connections, 1, caller).await;
        let loaded = drive(&connections, callers, caller).await;
        let ratio = p99(&loaded.accepted).as_secs_f64() / p99(&unloaded.accepted).as_secs_f64();
        println!(
            "round {round} ({caller:?}, {mode:?}, limit {limit}, {shedding:?}): unloaded p50 {:?} p99 {:?} ({} calls); at 2x saturation \
             accepted p50 {:?} p99 {:?} ({} calls), refused p50 {:?} p99 {:?} ({} calls), Health p99 {:?} \
             ({} checks)",
            Duration::from_micros(unloaded.accepted.value_at_quantile(0.5)),
            p99(&unloaded.accepted),
            unloaded.accepted.len(),
            Duration::from_micros(loaded.accepted.value_at_quantile(0.5)),
            p99(&loaded.accepted),
            loaded.accepted.len(),
            Duration::from_micros(loaded.refused.value_at_quantile(0.5)),
            p99(&loaded.refused),
            loaded.refused.len(),
            p99(&loaded.health),
            loaded.health.len(),
        );
        ratios.push(ratio);
        if !loaded.refused.is_empty() {
            refusals.push(p99(&loaded.refused).as_secs_f64() * 1e3);
        }
        healths.push(p99(&loaded.health).as_secs_f64() * 1e3);
    }
    println!(
        "at 2x saturation ({callers} {caller:?} callers, {mode:?}, limit {limit}, {shedding:?}): accepted p99 / unloaded p99 {:.2} (goal <= 3)",
        median(ratios)
    );
    match refusals.is_empty() {
        true => println!(
            "at 2x saturation ({caller:?}, {mode:?}, limit {limit}, {shedding:?}): no call refused"
        ),
        false => {
            let rounds = refusals.len();
            println!(
                "at 2x saturation ({caller:?}, {mode:?}, limit {limit}, {shedding:?}): refusal p99 {:.2} ms (goal < 10 ms), in {rounds} rounds of {ROUNDS}",
                median(refusals)
            )
        }
    }
    println!(
        "at 2x saturation ({caller:?}, {mode:?}, limit {limit}, {shedding:?}): Health/Check p99 {:.2} ms (goal < 100 ms)",
        median(healths)
    );
}

/// Set in a child's environment ("limit delay_us interval_ms hold_ms"): it serves as [`start`] does, prints
/// its address, and answers each line on its stdin with its own RSS, so the server's RSS is read
/// without the callers' sockets in it.
const SERVER_CHILD: &str = "OVERLOAD_BENCH_SERVER_CHILD";
/// Set (to anything): the servers of part 2 run in processes of their own too.
const SERVER_PROCESS: &str = "OVERLOAD_BENCH_SERVER_PROCESS";

async fn serve_as_child(spec: &str) {
    let numbers: Vec<u64> = spec
        .split(' ')
        .map(|n| n.parse().expect("a number"))
        .collect();
    let [limit, delay_us, interval_ms, hold_ms] = numbers[..] else {
        panic!("{SERVER_CHILD} is \"limit delay_us interval_ms hold_ms\"");
    };
    let shedding = Shedding {
        delay_us,
        interval_ms,
        hold_ms,
    };
    let addr = start(limit as u32, shedding).await;
    println!("ADDR {addr}");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = lines.next_line().await {
        println!("RSS {}", rss_bytes());
    }
}

/// A server of part 2: in this process, or with [`SERVER_PROCESS`] in one of its own.
struct Server {
    addr: SocketAddr,
    _process: Option<ServerProcess>,
}

impl Server {
    async fn start(limit: u32, shedding: Shedding) -> Self {
        if std::env::var_os(SERVER_PROCESS).is_none() {
            return Server {
                addr: start(limit, shedding).await,
                _process: None,
            };
        }
        let process = ServerProcess::start(limit, shedding).await;
        Server {
            addr: process.addr,
            _process: Some(process),
        }
    }
}

/// A server in a process of its own: this binary again, as [`serve_as_child`].
struct ServerProcess {
    addr: SocketAddr,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

impl ServerProcess {
    async fn start(limit: u32, shedding: Shedding) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("this binary"))
            .env(
                SERVER_CHILD,
                format!(
                    "{limit} {} {} {}",
                    shedding.delay_us, shedding.interval_ms, shedding.hold_ms
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the server process starts");
        let stdin = child.stdin.take().expect("piped");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let addr = answer(&mut lines, "ADDR ").await;
        ServerProcess {
            addr,
            stdin,
            lines,
            _child: child,
        }
    }

    async fn rss(&mut self) -> u64 {
        self.stdin.write_all(b"rss\n").await.expect("asks");
        answer(&mut self.lines, "RSS ").await
    }
}

/// The next line of the server process's that starts with `prefix`, the rest parsed.
async fn answer<T: std::str::FromStr>(
    lines: &mut Lines<BufReader<ChildStdout>>,
    prefix: &str,
) -> T {
    loop {
        let line = lines
            .next_line()
            .await
            .expect("reads")
            .expect("the server process answers");
        if let Some(value) = line.strip_prefix(prefix) {
            return value.parse().ok().expect("a value");
        }
    }
}

/// Opens IDLE_CONNECTIONS connections that send nothing and waits until the server closed each; the
/// server's RSS while they were open.
async fn idle_connections_come_and_go(server: &mut ServerProcess) -> u64 {
    let mut open = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        open.push(
            tokio::net::TcpStream::connect(server.addr)
                .await
                .expect("connects"),
        );
    }
    let peak = server.rss().await;
    let closed = open.into_iter().map(|mut stream| async move {
        let mut sink = Vec::new();
        // Ends when the server closes it (EOF or reset).
        let _ = stream.read_to_end(&mut sink).await;
    });
    tokio::time::timeout(HANDSHAKE_TIMEOUT * 20, futures::future::join_all(closed))
        .await
        .expect("the server closed every idle connection");
    peak
}

async fn idle_connections() {
    let mut server = ServerProcess::start(LIMIT, shipped_shedding()).await;
    // One cached call first, so the baseline is a server that has answered, not one just started.
    let mut client = CostServiceClient::new(channel(server.addr).await);
    client.get_costs(cached_query()).await.expect("answers");
    let before = server.rss().await;
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let peak = idle_connections_come_and_go(&mut server).await;
        let after = server.rss().await;
        println!(
            "round {round}: the server's RSS before {:.1} MiB, with {IDLE_CONNECTIONS} idle connections {:.1} MiB, after {:.1} MiB",
            mib(before),
            mib(peak),
            mib(after)
        );
        ratios.push(after as f64 / before as f64);
    }
    println!(
        "the server's RSS after {IDLE_CONNECTIONS} idle connections came and went / before: {:.2} (goal <= 1.2)",
        median(ratios)
    );
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A server with `drain` as its drain timeout, and the sender that stops it.
async fn start_stoppable(
    drain: Duration,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), costd::AppError>>,
) {
    let sandbox = Box::leak(Box::new(
        costd::sandbox::Sandbox::start(Default::default()).expect("sandbox"),
    ));
    let mut settings =
        costd::demo::settings(sandbox, SocketAddr::from(([127, 0, 0, 1], 0))).expect("settings");
    settings.server.drain_timeout_ms = drain.as_millis() as u64;
    settings.metrics.enabled = false;
    let app = App::build(settings).await.expect("builds");
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

async fn health_check(channel: Channel) -> i32 {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("health answers")
        .into_inner()
        .status
}

/// Checks Health on `channel` until it answers NOT_SERVING: how long after `stopped_at` that was.
async fn not_serving_after(channel: Channel, stopped_at: Instant) -> Duration {
    loop {
        if health_check(channel.clone()).await == 2 {
            return stopped_at.elapsed();
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(1),
            "Health said SERVING for a second after the stop"
        );
    }
}

async fn drain() {
    const DRAIN: Duration = Duration::from_millis(1_000);
    let (mut on_open, mut on_new, mut exits) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let (addr, stop, server) = start_stoppable(DRAIN).await;
        let open = channel(addr).await;
        // A ListProviders whose request never comes: in progress until the drain timeout.
        let (_never, requests) = tokio::sync::mpsc::channel::<pb::ListProvidersRequest>(1);
        let mut grpc = tonic::client::Grpc::new(open.clone());
        grpc.ready().await.expect("ready");
        let mut held = Box::pin(async move {
            grpc.client_streaming(
                tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(requests)),
                http::uri::PathAndQuery::from_static("/costd.v1.CostService/ListProviders"),
                tonic_prost::ProstCodec::<pb::ListProvidersRequest, pb::ListProvidersResponse>::default(),
            )
            .await
        });
        assert!(futures::poll!(&mut held).is_pending());
        let held = tokio::spawn(held);
        // One connection carries calls in order: this answer means the held call was admitted.
        health_check(open.clone()).await;

        let stopped_at = Instant::now();
        let _ = stop.send(());
        // The stop reaches the server as another task: the first check may still be answered
        // SERVING, so each connection is asked until it says NOT_SERVING.
        let open_took = not_serving_after(open.clone(), stopped_at).await;
        let new_took = not_serving_after(channel(addr).await, stopped_at).await;
        server.await.expect("joins").expect("stops");
        let exit = stopped_at.elapsed();
        held.abort();
        println!(
            "round {round}: NOT_SERVING {open_took:?} after the stop (open connection), {new_took:?} (new one); \
             exit after {exit:?} of a {DRAIN:?} drain"
        );
        on_open.push(open_took.as_secs_f64() * 1e3);
        on_new.push(new_took.as_secs_f64() * 1e3);
        exits.push(exit.as_secs_f64() / DRAIN.as_secs_f64());
    }
    println!(
        "drain: NOT_SERVING {:.2} ms on an open connection, {:.2} ms on a new one (goal < 100 ms)",
        median(on_open),
        median(on_new)
    );
    println!(
        "drain: exit with a call that never ends / the drain timeout {:.3} (goal <= 1.1)",
        median(exits)
    );
}

/// A comma list of numbers in `variable`, or `default`.
fn numbers<T>(variable: &str, default: &[T]) -> Vec<T>
where
    T: std::str::FromStr + Copy,
    T::Err: std::fmt::Debug,
{
    std::env::var(variable)
        .map(|list| {
            list.split(',')
                .map(|n| n.trim().parse().expect("a number"))
                .collect()
        })
        .unwrap_or_else(|_| default.to_vec())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(spec) = std::env::var(SERVER_CHILD) {
        runtime.block_on(serve_as_child(&spec));
        return;
    }
    // `cargo bench --bench overload -- idle`: the idle connections alone.
    if std::env::args().any(|arg| arg == "idle") {
        runtime.block_on(idle_connections());
        return;
    }
    let limits = numbers::<u32>("OVERLOAD_BENCH_LIMITS", &[]);
    let delays = numbers("OVERLOAD_BENCH_QUEUE_DELAYS_US", &QUEUE_DELAYS_US);
    let interval_ms = numbers("OVERLOAD_BENCH_QUEUE_INTERVAL_MS", &[QUEUE_INTERVAL_MS])[0];
    let holds = numbers(
        "OVERLOAD_BENCH_HOLDS_MS",
        &[0, ServerConfig::default().early_retry_hold_ms],
    );
    runtime.block_on(async {
        // As many calls in progress as the curve's callers could ever make: none refused.
        let unlimited = Server::start(
            CURVE[CURVE.len() - 1] as u32 * 4,
            Shedding {
                delay_us: 0,
                interval_ms,
                hold_ms: 0,
            },
        )
        .await;
        for mode in [Connections::Shared, Connections::PerCaller] {
            let point = saturation(unlimited.addr, mode).await;
            // The limit at the saturation point, or each the variable names (with twice as many
            // callers as each).
            let limits = match limits.is_empty() {
                true => vec![point],
                false => limits.clone(),
            };
            for &limit in &limits {
                for &delay_us in &delays {
                    for &hold_ms in &holds {
                        let shedding = Shedding {
                            delay_us,
                            interval_ms,
                            hold_ms,
                        };
                        let server = Server::start(limit, shedding).await;
                        for caller in [Caller::Greedy, Caller::Polite] {
                            at_twice_saturation(
                                server.addr,
                                2 * limit as usize,
                                limit,
                                shedding,
                                caller,
                                mode,
                            )
                            .await;
                        }
                    }
                }
            }
            // What the server ships with, at the same twice the saturation point.
            let shipped = ServerConfig::default().max_concurrent_requests;
            let server = Server::start(shipped, shipped_shedding()).await;
            for caller in [Caller::Greedy, Caller::Polite] {
                at_twice_saturation(
                    server.addr,
                    2 * point as usize,
                    shipped,
                    shipped_shedding(),
                    caller,
                    mode,
                )
                .await;
            }
        }
        idle_connections().await;
        drain().await;
    });
}
