//! Upstream politeness across queries: whatever many queries run at once, each provider account gets
//! at most its concurrency and rate, one pause after a 429, a circuit breaker after repeated
//! failures, and retries only within a budget. The sandbox's counters and in-flight gauge are the truth.

use crate::failures::error_info;
use crate::helpers::*;
use crate::metrics::scrape;
use chrono::Duration as ChronoDuration;
use costd::{
    clock::ManualClock,
    proto as pb,
    sandbox::{Fault, Scope},
};
use http::StatusCode;
use std::{num::NonZeroU32, sync::Arc, time::Duration};

/// One cold query per January day, for team-acme alone: each needs its own upstream request.
fn days(n: u32) -> Vec<pb::CostQuery> {
    (1..=n)
        .map(|day| {
            only_accounts(
                query(
                    &format!("2026-01-{day:02}"),
                    &format!("2026-01-{:02}", day + 1),
                    &[],
                    pb::Granularity::None,
                ),
                &["team-acme"],
            )
        })
        .collect()
}

/// When the sandbox received each request of `scope`, earliest first.
fn received_at(app: &TestApp, scope: &Scope) -> Vec<std::time::Instant> {
    let mut received: Vec<_> = app
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| &r.scope == scope)
        .map(|r| r.received_at)
        .collect();
    received.sort();
    received
}

async fn all_at_once(app: &TestApp, queries: Vec<pb::CostQuery>) -> Vec<pb::CostReport> {
    let calls = queries.into_iter().map(|q| app.get_costs(q));
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("answered"))
        .collect()
}

#[tokio::test]
async fn the_concurrency_limit_holds_for_all_queries_together() {
    let app = spawn_app_with(|s| s.upstream.max_concurrency_per_account = 2).await;
    let acme = team_scope("team_acme");
    app.sandbox
        .set_persistent_fault(&acme, Fault::Latency(Duration::from_millis(50)));

    let reports = all_at_once(&app, days(12)).await;

    for report in &reports {
        assert_eq!(
            result_of(report, "team-acme").state,
            pb::ResultState::Ok as i32
        );
    }
    assert_eq!(app.sandbox.request_count(&acme), 12);
    assert_eq!(
        app.sandbox.most_in_flight(&acme),
        2,
        "12 queries at once, 2 requests in flight at most (and the limit is used)"
    );
}

#[tokio::test]
async fn a_429_pauses_the_account_for_every_caller() {
    let app = spawn_app_with(|s| s.upstream.max_concurrency_per_account = 1).await;
    let acme = team_scope("team_acme");
    app.sandbox.push_fault(
        &acme,
        Fault::Status {
            code: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(1),
        },
    );

    all_at_once(&app, days(3)).await;

    let received = received_at(&app, &acme);
    assert_eq!(received.len(), 4, "three queries and one retry");
    for later in &received[1..] {
        assert!(
            *later >= received[0] + Duration::from_secs(1),
            "a request went {:?} after the 429 that asked for a second's pause",
            *later - received[0]
        );
    }
}

#[tokio::test]
async fn a_per_account_rate_spaces_requests_from_all_queries() {
    let app = spawn_app_with(|s| {
        s.upstream.max_concurrency_per_account = 100;
        let acme = s
            .accounts
            .iter_mut()
            .find(|a| a.id.as_str() == "team-acme")
            .expect("configured");
        acme.requests_per_second = NonZeroU32::new(10);
    })
    .await;
    let acme = team_scope("team_acme");

    all_at_once(&app, days(14)).await;

    let received = received_at(&app, &acme);
    assert_eq!(received.len(), 14);
    // A burst of 10, then one each 100 ms: the 14th goes 400 ms after the burst. The first request
    // may arrive late (it opens the connection), so the bound keeps a margin; unlimited, all 14
    // arrive within a few milliseconds.
    let span = received[13] - received[0];
    assert!(
        span >= Duration::from_millis(250),
        "14 requests in {span:?}"
    );
}

#[tokio::test]
async fn an_open_circuit_answers_without_asking_and_one_probe_closes_it() {
    let clock = ManualClock::new(at("2026-03-01"));
    let app = spawn_app_on(Arc::new(clock.clone()), |s| {
        s.upstream.max_attempts = 1;
        s.upstream.breaker_consecutive_failures = 2;
        s.upstream.breaker_open_ms = 60_000;
    })
    .await;
    let acme = team_scope("team_acme");
    let failing = Fault::Status {
        code: StatusCode::SERVICE_UNAVAILABLE,
        retry_after: None,
    };
    app.sandbox.set_persistent_fault(&acme, failing);
    let january = || query("2026-01-01", "2026-02-01", &[], pb::Granularity::None);
    for _ in 0..2 {
        let report = app.get_costs(january()).await.expect("answer");
        assert_eq!(
            error_info(result_of(&report, "team-acme")).1.reason,
            "UPSTREAM_UNAVAILABLE"
        );
    }
    assert_eq!(app.sandbox.request_count(&acme), 2);
    let open = app.health_of("team-acme").await;
    assert_eq!(open.circuit, pb::CircuitState::Open as i32);
    assert_eq!(
        open.circuit_retry_time,
        Some(costd::api::convert::time_to_proto(
            at("2026-03-01") + ChronoDuration::seconds(60)
        ))
    );
    assert_eq!(
        app.health_of("team-borealis").await.circuit,
        pb::CircuitState::Closed as i32
    );

    let refused = app.get_costs(january()).await.expect("answer");
    let (code, info, retry) = error_info(result_of(&refused, "team-acme"));
    assert_eq!(code, tonic::Code::Unavailable);
    assert_eq!(info.reason, "UPSTREAM_CIRCUIT_OPEN");
    assert!(
        retry.and_then(|r| r.retry_delay).is_some(),
        "says when to come back"
    );
    assert_eq!(app.sandbox.request_count(&acme), 2, "nothing was sent");
    assert_eq!(
        result_of(&refused, "team-borealis").state,
        pb::ResultState::Ok as i32,
        "the other accounts answer"
    );
    let scraped = scrape(&app).await;
    assert_eq!(
        scraped["costd_upstream_circuit_openings_total{provider=\"team_billing\"}"],
        1.0
    );
    assert_eq!(
        scraped["costd_upstream_circuit_refusals_total{provider=\"team_billing\"}"],
        1.0
    );

    app.sandbox.clear_faults(&acme);
    clock.advance(ChronoDuration::seconds(60));
    let probed = app.get_costs(january()).await.expect("answer");
    assert_eq!(
        result_of(&probed, "team-acme").state,
        pb::ResultState::Ok as i32
    );
    assert_eq!(app.sandbox.request_count(&acme), 3, "one probe");
    assert_eq!(
        app.health_of("team-acme").await.circuit,
        pb::CircuitState::Closed as i32
    );
}

#[tokio::test]
async fn sustained_failure_retries_only_within_the_budget() {
    let app = spawn_app_with(|s| {
        s.upstream.max_attempts = 5;
        s.upstream.retry_budget_percent = 20;
        s.upstream.retry_budget_min_per_second = 0;
        // The breaker would stop the traffic first; here the budget alone is measured.
        s.upstream.breaker_consecutive_failures = 1_000;
        s.upstream.breaker_failure_rate_percent = 100;
        s.upstream.breaker_window = 10_000;
    })
    .await;
    let acme = team_scope("team_acme");
    app.sandbox.set_persistent_fault(
        &acme,
        Fault::Status {
            code: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    );

    for query in days(20) {
        let report = app.get_costs(query).await.expect("answer");
        assert_eq!(
            result_of(&report, "team-acme").state,
            pb::ResultState::Failed as i32
        );
    }

    let sent = app.sandbox.request_count(&acme);
    assert!(
        (20..=24).contains(&sent),
        "20 calls of 5 attempts each sent {sent} requests; the budget allows 20 % more than the calls"
    );
    let scraped = scrape(&app).await;
    assert!(scraped["costd_upstream_retries_refused_total{provider=\"team_billing\"}"] >= 16.0);
}
