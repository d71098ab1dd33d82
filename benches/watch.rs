//! WatchJob fan-out: 1,000 subscribers on one job (an Atlas query polled fast, so its snapshots change
//! often), with and without one subscriber that never reads. Interleaved rounds, medians:
//! - p99 delivery lag to the reading subscribers, stalled / not stalled (goal <= 1.2);
//! - process RSS before and after all rounds (goal: flat);
//! - job events received per second vs a bare tonic server stream on the same server (reflection's
//!   ListServices answers on one bidirectional stream), as a ratio (goal >= 0.5).

use costd::{
    App,
    proto::{self as pb, query_job_service_client::QueryJobServiceClient},
};
use hdrhistogram::Histogram;
use std::{net::SocketAddr, time::Instant};
use tonic::transport::Channel;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest,
};

/// The allocator the costd binary ships with, so the harness measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SUBSCRIBERS: usize = 1_000;
const CHANNELS: usize = 10;
const ROUNDS: usize = 3;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

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

/// Runs one job with `SUBSCRIBERS` watchers; returns the p99 lag (ms) and events received per second.
/// The stalled subscriber has a connection of its own, as a slow client does: over HTTP/2 its unread
/// events hold its connection's receive window, which would stall any stream sharing it.
async fn round(channels: &[Channel], lonely: &Channel, index: usize, stalled: bool) -> (f64, f64) {
    let mut client = QueryJobServiceClient::new(channels[0].clone());
    let job = client
        .start_query(pb::StartQueryRequest {
            query: Some(month(index)),
        })
        .await
        .expect("starts")
        .into_inner()
        .job
        .expect("job");
    let mut parked = None;
    let mut watchers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let channel = if stalled && i == 0 {
            lonely.clone()
        } else {
            channels[i % CHANNELS].clone()
        };
        let mut client = QueryJobServiceClient::new(channel);
        let stream = client
            .watch_job(pb::WatchJobRequest {
                name: job.name.clone(),
            })
            .await
            .expect("watching")
            .into_inner();
        if stalled && i == 0 {
            parked = Some(stream);
            continue;
        }
        watchers.push(tokio::spawn(async move {
            let mut stream = stream;
            let mut lags = Histogram::<u64>::new(3).expect("histogram");
            let mut events = 0u64;
            let began = Instant::now();
            while let Ok(Some(event)) = stream.message().await {
                events += 1;
                if let Some(update) = event.job.and_then(|j| j.update_time) {
                    let sent =
                        chrono::DateTime::from_timestamp(update.seconds, update.nanos as u32)
                            .expect("time");
                    let lag = (chrono::Utc::now() - sent)
                        .num_microseconds()
                        .unwrap_or(0)
                        .max(0) as u64;
                    let _ = lags.record(lag);
                }
            }
            (lags, events, began.elapsed())
        }));
    }
    let mut lags = Histogram::<u64>::new(3).expect("histogram");
    // Each watcher's own rate since it subscribed, summed: the events per second the fan-out delivers.
    let mut rate = 0f64;
    for watcher in watchers {
        let (histogram, count, took) = watcher.await.expect("joins");
        let _ = lags.add(histogram);
        rate += count as f64 / took.as_secs_f64().max(1e-9);
    }
    drop(parked);
    (lags.value_at_quantile(0.99) as f64 / 1000.0, rate)
}

/// Messages per second on one bidirectional reflection stream, requests sent back to back.
async fn bare_stream(channel: Channel) -> f64 {
    let count = 20_000;
    let requests = (0..count).map(|_| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    });
    let began = Instant::now();
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("stream")
        .into_inner();
    let mut received = 0;
    while let Ok(Some(_)) = stream.message().await {
        received += 1;
    }
    received as f64 / began.elapsed().as_secs_f64()
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
        let sandbox = costd::sandbox::Sandbox::start(Default::default()).expect("sandbox");
        let mut settings = costd::demo::settings(&sandbox, SocketAddr::from(([127, 0, 0, 1], 0))).expect("settings");
        settings.accounts.retain(|a| a.id.as_str() == "atlas-kestrel");
        settings.atlas.poll_initial_ms = 2;
        settings.atlas.poll_max_ms = 5;
        // Long enough that all subscribers are watching for most of the job's run.
        sandbox.atlas().set_processing_polls(800);
        // Measuring fan-out, not Atlas' bucket (500 requests, then 100 a minute): lift it on both sides.
        sandbox.atlas().set_rate_limit(costd::sandbox::RateLimit {
            capacity: 1_000_000,
            refill_amount: 1_000_000,
            refill_period: std::time::Duration::from_secs(1),
        });
        settings.atlas.bucket_capacity = 1_000_000;
        settings.atlas.bucket_refill_per_minute = 1_000_000;
        let app = App::build(settings).await.expect("builds");
        let addr = app.local_addr();
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        let mut channels = Vec::new();
        for _ in 0..CHANNELS {
            channels.push(Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connects"));
        }
        let lonely = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connects");
        let (mut calm, mut with_stalled, mut rates, mut bare) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut rss = Vec::new();
        for r in 0..ROUNDS {
            let (p99, rate) = round(&channels, &lonely, 2 * r, false).await;
            calm.push(p99);
            rates.push(rate);
            let (p99, _) = round(&channels, &lonely, 2 * r + 1, true).await;
            with_stalled.push(p99);
            bare.push(bare_stream(channels[1].clone()).await);
            rss.push(rss_mib());
        }
        println!("p99 delivery lag: {:.2} ms without a stalled subscriber, {:.2} ms with one; ratio {:.2} (goal <= 1.2)", median(calm.clone()), median(with_stalled.clone()), median(with_stalled) / median(calm));
        let rss_text: Vec<String> = rss.iter().map(|m| format!("{m:.0}")).collect();
        println!("RSS after each pair of rounds: {} MiB; last / first {:.2} (goal: flat)", rss_text.join(", "), rss[rss.len() - 1] / rss[0]);
        println!(
            "job events received {:.0}/s (all subscribers) vs bare tonic stream {:.0}/s; ratio {:.2} (goal >= 0.5)",
            median(rates.clone()),
            median(bare.clone()),
            median(rates) / median(bare)
        );
    });
}
