//! Replicas on one redis draw from one bucket per Atlas organization: together they never send more
//! than the bucket allows (the sandbox's own bucket, of the same shape, refuses nothing), a replica
//! started later finds it as spent as the others left it, and with redis gone each replica draws from
//! its share of the bucket, and says so. Real redis-server, real servers on one sandbox.

use crate::{
    helpers::*,
    jobs::{org, start, watch_all},
    metrics::scrape,
    redis_kit::RedisServer,
};
use costd::{
    proto::{self as pb, cost_service_client::CostServiceClient},
    sandbox::{RateLimit, SandboxHandle, SandboxOptions},
};
use std::time::Duration;

/// The organization's bucket, in costd's configuration and in the sandbox alike.
const CAPACITY: u32 = 8;
/// A bucket with room for three short queries before the fallback is measured.
const ROOMY: u32 = 20;

/// A costd on `sandbox` reading Kestrel only, its jobs and budgets in `redis_url`, its bucket holding
/// `capacity` requests.
async fn replica(sandbox: &SandboxHandle, redis_url: &str, capacity: u32) -> TestApp {
    crate::replicas::kestrel_replica(sandbox, redis_url, |settings| {
        settings.atlas.bucket_capacity = capacity;
        settings.atlas.bucket_refill_per_minute = 1;
    })
    .await
}

/// A sandbox whose Atlas bucket is costd's, refilled too slowly to matter here, and whose queries
/// never finish: every replica wants more requests than the whole bucket holds.
fn sandbox() -> SandboxHandle {
    let sandbox =
        costd::sandbox::Sandbox::start(SandboxOptions::default()).expect("sandbox starts");
    sandbox.atlas().set_rate_limit(RateLimit {
        capacity: CAPACITY,
        refill_amount: 1,
        refill_period: Duration::from_secs(3_600),
    });
    sandbox.atlas().set_processing_polls(u32::MAX);
    sandbox
}

fn month(start: &str, end: &str) -> pb::CostQuery {
    query(start, end, &[], pb::Granularity::None)
}

async fn gauge(app: &TestApp, name: &str) -> f64 {
    scrape(app).await.get(name).copied().unwrap_or_default()
}

/// Returns once an Atlas request of `app` is held by its bucket (an event the metric reports).
async fn held_by_the_bucket(app: &TestApp) {
    within(async {
        while gauge(app, "costd_atlas_budget_waiting").await < 1.0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

fn sent(sandbox: &SandboxHandle, org: &str) -> usize {
    let counters = sandbox.atlas().counters(org);
    counters.posts + counters.polls
}

#[tokio::test]
async fn replicas_bursting_at_one_organization_share_its_bucket_and_a_new_one_finds_it_spent() {
    // Arrange
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let a = replica(&sandbox, &redis.url(), CAPACITY).await;
    let b = replica(&sandbox, &redis.url(), CAPACITY).await;
    let kestrel = org(&a, "Kestrel");

    // Act: distinct queries, so that each replica polls its own.
    start(&a, month("2025-04-01", "2025-05-01")).await;
    start(&b, month("2025-05-01", "2025-06-01")).await;
    held_by_the_bucket(&a).await;
    held_by_the_bucket(&b).await;
    let sent_by_both = sent(&sandbox, kestrel);
    let c = replica(&sandbox, &redis.url(), CAPACITY).await;
    start(&c, month("2025-06-01", "2025-07-01")).await;
    held_by_the_bucket(&c).await;

    // Assert
    assert!(
        sent_by_both <= CAPACITY as usize,
        "two replicas sent {sent_by_both} requests from one bucket of {CAPACITY}"
    );
    assert!(sent_by_both >= 2, "both replicas sent: {sent_by_both}");
    assert_eq!(
        sent(&sandbox, kestrel),
        sent_by_both,
        "a replica started later finds the bucket spent"
    );
    assert_eq!(sandbox.atlas().counters(kestrel).rate_limited, 0);
    assert_eq!(gauge(&a, "costd_atlas_budget_shared").await, 1.0);
}

#[tokio::test]
async fn with_redis_gone_a_replica_draws_from_its_share_and_says_so() {
    // Arrange: two replicas that redis saw draw (each ran a query to its end; A last, so it too has
    // learnt that there are two), then redis gone. The sandbox's bucket is left large: the shares are
    // what is measured.
    let mut redis = RedisServer::start().await;
    let sandbox = costd::sandbox::Sandbox::start(SandboxOptions::default()).expect("sandbox");
    sandbox.atlas().set_processing_polls(1);
    let a = replica(&sandbox, &redis.url(), ROOMY).await;
    let b = replica(&sandbox, &redis.url(), ROOMY).await;
    let kestrel = org(&a, "Kestrel");
    for (app, (from, to)) in [
        (&a, ("2025-01-01", "2025-02-01")),
        (&b, ("2025-02-01", "2025-03-01")),
        (&a, ("2025-03-01", "2025-04-01")),
    ] {
        let job = start(app, month(from, to)).await;
        watch_all(app, &job.name).await;
    }
    let before = sent(&sandbox, kestrel);
    redis.kill().await;
    sandbox.atlas().set_processing_polls(u32::MAX);

    // Act: calls whose queries never finish (GetCosts: a job cannot start without its store), each
    // drawing from its replica's share alone.
    let waiting = [
        (&a, ("2025-04-01", "2025-05-01")),
        (&b, ("2025-05-01", "2025-06-01")),
    ]
    .map(|(app, (from, to))| {
        let mut costs = CostServiceClient::new(app.channel.clone());
        let request = pb::GetCostsRequest {
            query: Some(month(from, to)),
        };
        tokio::spawn(async move { costs.get_costs(request).await })
    });
    held_by_the_bucket(&a).await;
    held_by_the_bucket(&b).await;

    // Assert: each share is half the bucket; full local buckets would have sent twice as much.
    let during = sent(&sandbox, kestrel) - before;
    assert!(
        (2..=ROOMY as usize).contains(&during),
        "two halves of a bucket of {ROOMY} sent {during} requests"
    );
    assert_eq!(gauge(&a, "costd_atlas_budget_shared").await, 0.0);
    assert_eq!(gauge(&b, "costd_atlas_budget_shared").await, 0.0);
    assert!(
        captured()
            .logs()
            .contains("drawing from this replica's share of each bucket"),
        "the fallback is announced"
    );
    assert!(
        waiting.iter().all(|call| !call.is_finished()),
        "the calls still wait on their budgets"
    );
}
