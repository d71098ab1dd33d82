//! Upstream politeness across queries, through the real server and the sandbox's counters:
//! - 200 distinct cold queries at one account at once: the most requests in flight at it / the
//!   configured `max_concurrency_per_account` (goal <= 1.0). (The team emulator has no rate limit of
//!   its own, so a 429 could only come from a fault; none is injected here.)
//! - sustained 503 from that account: its requests per second / the fault-free rate, with the
//!   default breaker and with the breaker lifted so the retry budget alone bounds it (goal <= 1.2).
//!
//! Rounds are interleaved and medians reported; each round has its own server and sandbox.

use costd::{
    App,
    config::Settings,
    proto::{self as pb, cost_service_client::CostServiceClient},
    sandbox::{Fault, Sandbox, SandboxHandle, Scope},
};
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use tonic::transport::Channel;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 3;
const LIMIT: usize = 8;
const COLD_QUERIES: usize = 200;
/// Callers in the closed loop of the rate rounds, and how long each runs.
const CALLERS: usize = 16;
const RUN: Duration = Duration::from_secs(3);

fn acme() -> Scope {
    Scope::team_billing("team_acme")
}

/// One cold query per day, counted back from 2026-01-01, for team-acme alone.
fn day(index: usize) -> pb::CostQuery {
    let start = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).expect("date")
        - chrono::Days::new(index as u64 + 1);
    let at = |d: chrono::NaiveDate| {
        costd::api::convert::time_to_proto(d.and_hms_opt(0, 0, 0).expect("time").and_utc())
    };
    pb::CostQuery {
        start_time: Some(at(start)),
        end_time: Some(at(start + chrono::Days::new(1))),
        filter: Some(pb::CostFilter {
            provider_accounts: vec!["team-acme".to_string()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn serve(adjust: impl FnOnce(&mut Settings)) -> (SandboxHandle, CostServiceClient<Channel>) {
    let sandbox = Sandbox::start(Default::default()).expect("sandbox");
    let mut settings =
        costd::demo::settings(&sandbox, SocketAddr::from(([127, 0, 0, 1], 0))).expect("settings");
    settings.accounts.retain(|a| a.id.as_str() == "team-acme");
    settings.upstream.max_concurrency_per_account = LIMIT;
    settings.upstream.retry_initial_delay_ms = 10;
    settings.upstream.retry_max_delay_ms = 50;
    // Cold every time: the rate rounds ask the same days again.
    settings.cache.max_bytes = 1;
    adjust(&mut settings);
    let app = App::build(settings).await.expect("builds");
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    (sandbox, CostServiceClient::new(channel))
}

/// Most in flight / the limit, for 200 distinct cold queries at once.
async fn burst() -> f64 {
    let (sandbox, client) = serve(|_| {}).await;
    sandbox.set_persistent_fault(&acme(), Fault::Latency(Duration::from_millis(20)));
    let calls = (0..COLD_QUERIES).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .get_costs(pb::GetCostsRequest {
                    query: Some(day(i)),
                })
                .await
                .expect("answered")
        }
    });
    futures::future::join_all(calls).await;
    assert_eq!(
        sandbox.request_count(&acme()),
        COLD_QUERIES,
        "one request per query"
    );
    sandbox.most_in_flight(&acme()) as f64 / LIMIT as f64
}

/// Upstream requests per second from `CALLERS` callers asking without pause for `RUN`, and upstream
/// requests per call.
async fn rate(failing: bool, breaker: bool) -> (f64, f64) {
    let (sandbox, client) = serve(|settings| {
        if !breaker {
            settings.upstream.breaker_consecutive_failures = u32::MAX;
            settings.upstream.breaker_failure_rate_percent = 100;
            settings.upstream.breaker_window = 10_000;
        }
    })
    .await;
    if failing {
        sandbox.set_persistent_fault(
            &acme(),
            Fault::Status {
                code: http::StatusCode::SERVICE_UNAVAILABLE,
                retry_after: None,
            },
        );
    }
    let started = Instant::now();
    let callers = (0..CALLERS).map(|caller| {
        let mut client = client.clone();
        async move {
            let mut calls = 0usize;
            while started.elapsed() < RUN {
                let _ = client
                    .get_costs(pb::GetCostsRequest {
                        query: Some(day((caller + calls * CALLERS) % 365)),
                    })
                    .await;
                calls += 1;
            }
            calls
        }
    });
    let calls: usize = futures::future::join_all(callers).await.into_iter().sum();
    let requests = sandbox.request_count(&acme()) as f64;
    (
        requests / started.elapsed().as_secs_f64(),
        requests / calls.max(1) as f64,
    )
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (mut bursts, mut healthy, mut failing, mut budget_only, mut per_call) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let in_flight = burst().await;
            bursts.push(in_flight);
            let (ok, ok_per_call) = rate(false, true).await;
            let (broken, broken_per_call) = rate(true, true).await;
            let (budgeted, budgeted_per_call) = rate(true, false).await;
            healthy.push(ok);
            failing.push(broken);
            budget_only.push(budgeted);
            per_call.push(budgeted_per_call);
            println!(
                "round {round}: in flight / limit {in_flight:.2}; requests/s (per call) healthy {ok:.0} ({ok_per_call:.2}), \
                 503 {broken:.0} ({broken_per_call:.2}), 503 without breaker {budgeted:.0} ({budgeted_per_call:.2})"
            );
        }
        let healthy = median(healthy);
        println!(
            "200 cold queries at once: most in flight / limit = {:.2} (goal <= 1.0)",
            median(bursts)
        );
        println!(
            "sustained 503: requests/s / fault-free = {:.3} with the breaker, {:.2} with the retry budget alone (goal <= 1.2); \
             requests per call with the budget alone {:.2}",
            median(failing) / healthy,
            median(budget_only) / healthy,
            median(per_call)
        );
    });
}
