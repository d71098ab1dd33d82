//! Settled chunks are shared through redis: the same settled query on three replicas asks the
//! upstreams once, with the same exact answer on each; an open period stays each replica's own; and a
//! stored chunk a replica cannot read is fetched instead, never misread. Real redis-server, real
//! servers on one sandbox, whose counters are the truth.

use crate::{helpers::*, metrics::scrape, redis_kit::RedisServer};
use chrono::Datelike;
use costd::{
    clock::SystemClock,
    config::JobStoreSettings,
    domain::ProviderKind,
    proto as pb,
    sandbox::{SandboxHandle, SandboxOptions},
};
use secrecy::SecretString;
use std::sync::Arc;

/// A costd on `sandbox` reading every provider kind, sharing `redis_url`.
async fn replica(sandbox: &SandboxHandle, redis_url: &str) -> TestApp {
    let url = redis_url.to_string();
    spawn_app_beside(
        sandbox.clone(),
        Arc::new(SystemClock),
        &[
            ProviderKind::TeamBilling,
            ProviderKind::Elastic,
            ProviderKind::Atlas,
        ],
        move |settings, _| {
            settings.job_store = JobStoreSettings::Redis {
                url: SecretString::from(url),
                key_prefix: "costd".to_string(),
                lease_ttl: crate::replicas::LEASE_TTL,
                ca_certificates: None,
            };
        },
    )
    .await
}

fn by_account(start: &str, end: &str) -> pb::CostQuery {
    query(
        start,
        end,
        &[pb::GroupBy::BillingAccount],
        pb::Granularity::None,
    )
}

/// What an answer says, without when or how it was got.
fn figures(report: &pb::CostReport) -> (Vec<pb::CostRow>, Option<pb::CostTotals>) {
    (report.rows.clone(), report.totals.clone())
}

fn metric(scraped: &std::collections::BTreeMap<String, f64>, name: &str) -> f64 {
    scraped
        .iter()
        .filter(|(key, _)| key.split('{').next() == Some(name))
        .map(|(_, value)| value)
        .sum()
}

/// Returns once every chunk `app` fetched from an upstream is in the shared tier: the writes run
/// after the answer, so another replica could otherwise ask before they land.
async fn stored_every_fetch(app: &TestApp) {
    within(async {
        loop {
            let scraped = scrape(app).await;
            let fetched = metric(&scraped, "costd_cache_misses_total");
            let written = scraped
                .get(r#"costd_cache_shared_total{outcome="written"}"#)
                .copied()
                .unwrap_or_default();
            if fetched > 0.0 && written >= fetched {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_same_settled_query_on_three_replicas_asks_the_upstreams_once() {
    // Arrange
    let redis = RedisServer::start().await;
    let sandbox = costd::sandbox::Sandbox::start(SandboxOptions::default()).expect("sandbox");
    let a = replica(&sandbox, &redis.url()).await;
    let b = replica(&sandbox, &redis.url()).await;
    let c = replica(&sandbox, &redis.url()).await;
    let settled = by_account("2026-02-01", "2026-04-01");

    // Act
    let on_a = within(a.get_costs(settled.clone()))
        .await
        .expect("A answers");
    let by_one = sandbox.total_requests();
    stored_every_fetch(&a).await;
    let on_b = within(b.get_costs(settled.clone()))
        .await
        .expect("B answers");
    let on_c = within(c.get_costs(settled)).await.expect("C answers");

    // Assert
    assert!(by_one > 0);
    assert_eq!(
        sandbox.total_requests(),
        by_one,
        "B and C asked no upstream"
    );
    assert!(
        on_a.totals
            .as_ref()
            .is_some_and(|t| nanos(t.billed_cost.as_ref()) != 0),
        "a real total"
    );
    assert_eq!(
        figures(&on_b),
        figures(&on_a),
        "B's answer is A's, to the nano"
    );
    assert_eq!(
        figures(&on_c),
        figures(&on_a),
        "C's answer is A's, to the nano"
    );
    let on_b_scraped = scrape(&b).await;
    assert_eq!(
        on_b_scraped.get(r#"costd_cache_shared_total{outcome="hit"}"#),
        Some(&metric(&scrape(&a).await, "costd_cache_misses_total")),
        "every chunk A fetched, B read from redis"
    );
}

#[tokio::test]
async fn an_open_period_is_fetched_by_each_replica_itself() {
    let redis = RedisServer::start().await;
    let sandbox = costd::sandbox::Sandbox::start(SandboxOptions::default()).expect("sandbox");
    let a = replica(&sandbox, &redis.url()).await;
    let b = replica(&sandbox, &redis.url()).await;
    // Today is in this month, so it is open: its costs can still change.
    let today = chrono::Utc::now().date_naive();
    let open = by_account(
        &today.with_day(1).expect("a first day").to_string(),
        &(today + chrono::Days::new(1)).to_string(),
    );

    within(a.get_costs(open.clone())).await.expect("A answers");
    let by_one = sandbox.total_requests();
    within(b.get_costs(open)).await.expect("B answers");

    assert!(by_one > 0);
    assert_eq!(
        sandbox.total_requests(),
        2 * by_one,
        "each asked for itself"
    );
    assert_eq!(
        metric(&scrape(&a).await, "costd_cache_shared_total"),
        0.0,
        "nothing open goes to the shared tier"
    );
}

#[tokio::test]
async fn a_stored_chunk_this_build_cannot_read_is_fetched_instead() {
    // Arrange: A stores, then every stored chunk is overwritten with bytes of no format.
    let redis = RedisServer::start().await;
    let sandbox = costd::sandbox::Sandbox::start(SandboxOptions::default()).expect("sandbox");
    let a = replica(&sandbox, &redis.url()).await;
    let b = replica(&sandbox, &redis.url()).await;
    let settled = by_account("2026-02-01", "2026-04-01");
    let on_a = within(a.get_costs(settled.clone()))
        .await
        .expect("A answers");
    let by_one = sandbox.total_requests();
    stored_every_fetch(&a).await;
    let mut redis_client = redis::Client::open(redis.url())
        .expect("a url")
        .get_multiplexed_async_connection()
        .await
        .expect("connected");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("costd:chunk:*")
        .query_async(&mut redis_client)
        .await
        .expect("listed");
    assert!(!keys.is_empty(), "A stored its chunks");
    for key in &keys {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(b"not a chunk".as_slice())
            .query_async(&mut redis_client)
            .await
            .expect("overwritten");
    }

    // Act
    let on_b = within(b.get_costs(settled)).await.expect("B answers");

    // Assert
    assert_eq!(sandbox.total_requests(), 2 * by_one, "B fetched for itself");
    assert_eq!(figures(&on_b), figures(&on_a));
    assert_eq!(
        scrape(&b)
            .await
            .get(r#"costd_cache_shared_total{outcome="unreadable"}"#)
            .copied(),
        Some(keys.len() as f64)
    );
}
