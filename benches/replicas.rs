//! Two replicas on one redis (a real redis-server, as the tests start it), interleaved rounds, medians
//! of the per-round figures:
//! - WatchJob delivery lag p99 on the other replica / on the poller's own replica (goal <= 2): one
//!   Atlas job polled fast on A, watched at once on A and on B; lag = receipt - the snapshot's
//!   update_time;
//! - GetJob from redis / from memory (reported): sequential calls for a finished job, on a redis
//!   replica and on a memory-store replica beside it;
//! - takeover time / lease TTL (reported; the tests bound it by 1.5): a `costd serve` child process
//!   polling an Atlas job is killed with SIGKILL, and the time until the next poll of that token
//!   (by another replica, which takes the lapsed lease) is divided by the lease TTL.

// The tests' harness, shared; the bench needs only part of it.
#[allow(dead_code)]
#[path = "../tests/api/redis_kit.rs"]
mod redis_kit;
#[allow(dead_code)]
#[path = "../tests/api/replica_process.rs"]
mod replica_process;

use costd::{
    App,
    config::{JobStoreSettings, Settings},
    proto::{self as pb, query_job_service_client::QueryJobServiceClient},
    sandbox::SandboxHandle,
};
use hdrhistogram::Histogram;
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use tonic::transport::Channel;

/// The allocator the costd binary ships with, so the harness measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 5;
const GETS: usize = 2_000;
const TAKEOVERS: usize = 3;
/// Short, so a takeover round takes a second or two; the ratio is what is reported.
const LEASE_TTL: Duration = Duration::from_millis(1_000);

fn month(index: usize) -> pb::CostQuery {
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("date")
        + chrono::Months::new(index as u32);
    let end = start + chrono::Months::new(1);
    let at = |d: chrono::NaiveDate| {
        costd::api::convert::time_to_proto(d.and_hms_opt(0, 0, 0).expect("time").and_utc())
    };
    pb::CostQuery {
        start_time: Some(at(start)),
        end_time: Some(at(end)),
        ..Default::default()
    }
}

fn settings(sandbox: &SandboxHandle, store: JobStoreSettings) -> Settings {
    let mut settings =
        costd::demo::settings(sandbox, SocketAddr::from(([127, 0, 0, 1], 0))).expect("settings");
    settings
        .accounts
        .retain(|a| a.id.as_str() == "atlas-kestrel");
    settings.atlas.poll_initial_ms = 2;
    settings.atlas.poll_max_ms = 5;
    settings.atlas.bucket_capacity = 1_000_000;
    settings.atlas.bucket_refill_per_minute = 1_000_000;
    settings.job_store = store;
    settings
}

async fn serve(settings: Settings) -> Channel {
    let app = App::build(settings).await.expect("builds");
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects")
}

async fn start(channel: &Channel, index: usize) -> pb::Job {
    QueryJobServiceClient::new(channel.clone())
        .start_query(pb::StartQueryRequest {
            query: Some(month(index)),
        })
        .await
        .expect("starts")
        .into_inner()
        .job
        .expect("job")
}

/// Every event's lag on one watch, to the end, as a histogram in microseconds.
async fn watch_lags(channel: Channel, name: String) -> Histogram<u64> {
    let mut stream = QueryJobServiceClient::new(channel)
        .watch_job(pb::WatchJobRequest { name })
        .await
        .expect("watching")
        .into_inner();
    let mut lags = Histogram::<u64>::new(3).expect("histogram");
    while let Ok(Some(event)) = stream.message().await {
        if let Some(update) = event.job.and_then(|j| j.update_time) {
            let sent = chrono::DateTime::from_timestamp(update.seconds, update.nanos as u32)
                .expect("time");
            let lag = (chrono::Utc::now() - sent)
                .num_microseconds()
                .unwrap_or(0)
                .max(0);
            let _ = lags.record(lag as u64);
        }
    }
    lags
}

/// Mean time of one GetJob for `name`, over `GETS` sequential calls.
async fn get_job_time(channel: &Channel, name: &str) -> Duration {
    let mut client = QueryJobServiceClient::new(channel.clone());
    let began = Instant::now();
    for _ in 0..GETS {
        client
            .get_job(pb::GetJobRequest {
                name: name.to_string(),
            })
            .await
            .expect("found");
    }
    began.elapsed() / GETS as u32
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
        let redis = redis_kit::RedisServer::start().await;
        let sandbox = costd::sandbox::Sandbox::start(Default::default()).expect("sandbox");
        sandbox.atlas().set_processing_polls(300);
        sandbox.atlas().set_rate_limit(costd::sandbox::RateLimit {
            capacity: 1_000_000,
            refill_amount: 1_000_000,
            refill_period: Duration::from_secs(1),
        });
        let shared = || JobStoreSettings::Redis {
            url: secrecy::SecretString::from(redis.url()),
            key_prefix: "costd-bench".to_string(),
            lease_ttl: LEASE_TTL,
            ca_certificates: None,
        };
        let a = serve(settings(&sandbox, shared())).await;
        let b = serve(settings(&sandbox, shared())).await;
        let memory = serve(settings(&sandbox, JobStoreSettings::Memory)).await;

        let (mut own, mut other, mut lag_ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut from_redis, mut from_memory, mut get_ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let job = start(&a, round).await;
            let (on_a, on_b) = tokio::join!(
                watch_lags(a.clone(), job.name.clone()),
                watch_lags(b.clone(), job.name.clone())
            );
            let (p99_a, p99_b) = (
                on_a.value_at_quantile(0.99) as f64 / 1000.0,
                on_b.value_at_quantile(0.99) as f64 / 1000.0,
            );
            own.push(p99_a);
            other.push(p99_b);
            lag_ratios.push(p99_b / p99_a);

            let local = start(&memory, round).await;
            // Finished on both sides before the reads are timed.
            let _ = tokio::join!(
                watch_lags(memory.clone(), local.name.clone()),
                watch_lags(b.clone(), job.name.clone())
            );
            let redis_time = get_job_time(&b, &job.name).await.as_secs_f64() * 1e6;
            let memory_time = get_job_time(&memory, &local.name).await.as_secs_f64() * 1e6;
            from_redis.push(redis_time);
            from_memory.push(memory_time);
            get_ratios.push(redis_time / memory_time);
        }
        // Takeover: a poller on its own process, killed mid-poll; the in-process replicas take over.
        sandbox.atlas().set_processing_polls(40);
        let kestrel = replica_process::kestrel(&sandbox);
        let creates_before = sandbox.atlas().counters(kestrel.id).queries_created;
        let mut takeover_ratios = Vec::new();
        for round in 0..TAKEOVERS {
            let poller =
                replica_process::ReplicaProcess::start(&sandbox, &redis.url(), "costd-bench", LEASE_TTL)
                    .await;
            let job = start(&poller.channel, 30 + round).await;
            let at_start = replica_process::polls(&sandbox, kestrel.id);
            replica_process::poll_after(&sandbox, kestrel.id, at_start + 2).await;
            poller.kill().await;
            let killed_at = Instant::now();
            let at_kill = replica_process::polls(&sandbox, kestrel.id);
            replica_process::poll_after(&sandbox, kestrel.id, at_kill).await;
            takeover_ratios.push(killed_at.elapsed().as_secs_f64() / LEASE_TTL.as_secs_f64());
            let _ = watch_lags(b.clone(), job.name.clone()).await;
        }
        let creates = sandbox.atlas().counters(kestrel.id).queries_created - creates_before;
        println!(
            "takeover after SIGKILL: next poll of the same token after {:.2}x the lease TTL (median of {TAKEOVERS}: {:?}); Atlas creates {creates} for {TAKEOVERS} jobs",
            median(takeover_ratios.clone()),
            takeover_ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
        );
        println!(
            "WatchJob p99 delivery lag: {:.2} ms on the poller's replica, {:.2} ms on another; ratio {:.2} (goal <= 2)",
            median(own),
            median(other),
            median(lag_ratios)
        );
        println!(
            "GetJob: {:.0} µs from redis, {:.0} µs from memory; ratio {:.2} (reported)",
            median(from_redis),
            median(from_memory),
            median(get_ratios)
        );
    });
}
