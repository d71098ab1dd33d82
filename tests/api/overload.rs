//! Load shedding through the real server: beyond `server.max_concurrent_requests` calls in progress,
//! or while ready work has waited longer than `server.max_queue_delay_us` for the runtime, a call is
//! answered RESOURCE_EXHAUSTED with RetryInfo without going upstream, and Health still answers; a
//! connection back before any RetryInfo delay passed waits `server.early_retry_hold_ms` for it.

use crate::{helpers::*, metrics::scrape};
use costd::{proto as pb, sandbox::Fault};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

/// A GetCosts for one month of team-acme that waits up to `PATIENCE` for its upstream.
fn patient_month(month: u32) -> tonic::Request<pb::GetCostsRequest> {
    let asked = only_accounts(
        query(
            &format!("2026-0{month}-01"),
            &format!("2026-0{}-01", month + 1),
            &[],
            pb::Granularity::None,
        ),
        &["team-acme"],
    );
    let mut request = tonic::Request::new(pb::GetCostsRequest { query: Some(asked) });
    request.set_timeout(PATIENCE);
    request
}

/// A refusal for a server-wide limit: RESOURCE_EXHAUSTED, RetryInfo, and ErrorInfo naming the
/// limit's key and what it allows.
fn assert_over_limit(refused: &tonic::Status, limit: &str, allowed: &str) {
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    let retry_after = refused
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo tells the caller when to come back");
    assert!(
        (Duration::from_millis(50)..=Duration::from_millis(150)).contains(&retry_after),
        "half to one and a half times 100 ms: {retry_after:?}"
    );
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "SERVER_OVERLOADED");
    assert_eq!(info.metadata["limit"], limit);
    assert_eq!(info.metadata["allowed"], allowed);
}

#[tokio::test]
async fn beyond_the_call_limit_a_call_is_resource_exhausted_with_retry_info_and_health_still_serves()
 {
    let app = spawn_app_with(|settings| settings.server.max_concurrent_requests = 2).await;
    let acme = team_scope("team_acme");
    app.sandbox.set_persistent_fault(&acme, Fault::Hang);
    // Two months are two upstream requests: both calls are in progress once both arrived.
    let held: Vec<_> = (1..=2)
        .map(|month| {
            let mut client = app.costs.clone();
            tokio::spawn(async move { client.get_costs(patient_month(month)).await })
        })
        .collect();
    within(app.sandbox.wait_for_requests(&acme, 2)).await;

    let refused = within(app.costs.clone().get_costs(patient_month(3)))
        .await
        .expect_err("over the limit");
    let health = serving(&app).await;

    assert_over_limit(&refused, "server.max_concurrent_requests", "2");
    assert_eq!(health, ServingStatus::Serving);
    // Callers refused together are told to come back at different times.
    let mut delays = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let refused = within(app.costs.clone().get_costs(patient_month(3)))
            .await
            .expect_err("over the limit");
        assert_over_limit(&refused, "server.max_concurrent_requests", "2");
        delays.extend(refused.get_details_retry_info().and_then(|i| i.retry_delay));
    }
    assert!(delays.len() > 1, "one delay for every refusal: {delays:?}");
    assert_eq!(
        app.sandbox.request_count(&acme),
        2,
        "the refused call never went upstream"
    );
    for call in held {
        call.abort();
    }
}

#[tokio::test]
async fn a_call_gives_its_place_back_when_it_ends() {
    let app = spawn_app_with(|settings| settings.server.max_concurrent_requests = 1).await;

    for month in 1..=3 {
        // One at a time, each within the limit of one: each ended call gave its place back.
        within(app.costs.clone().get_costs(patient_month(month)))
            .await
            .expect("admitted");
    }
}

#[tokio::test]
async fn a_connection_refused_again_before_any_retry_delay_waits_for_that_refusal_and_no_other_connection_does()
 {
    let app = spawn_app_with(|settings| {
        settings.server.max_concurrent_requests = 1;
        // Far longer than any wait below: a held refusal cannot pass for a prompt one.
        settings.server.early_retry_hold_ms = 600_000;
    })
    .await;
    let acme = team_scope("team_acme");
    app.sandbox.set_persistent_fault(&acme, Fault::Hang);
    let mut client = app.costs.clone();
    let in_progress = tokio::spawn(async move { client.get_costs(patient_month(1)).await });
    within(app.sandbox.wait_for_requests(&acme, 1)).await;

    let first = within(app.costs.clone().get_costs(patient_month(2)))
        .await
        .expect_err("over the limit");
    // At once again on the same connection, as a caller that ignores RetryInfo would.
    let again = tokio::time::timeout(
        Duration::from_millis(500),
        app.costs.clone().get_costs(patient_month(2)),
    )
    .await;
    let other_connection = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .expect("valid uri")
        .connect_lazy();
    let elsewhere = within(
        pb::cost_service_client::CostServiceClient::new(other_connection)
            .get_costs(patient_month(2)),
    )
    .await
    .expect_err("over the limit");
    let scraped = scrape(&app).await;

    assert_over_limit(&first, "server.max_concurrent_requests", "1");
    assert!(
        again.is_err(),
        "the early retry's refusal is held: {again:?}"
    );
    assert_over_limit(&elsewhere, "server.max_concurrent_requests", "1");
    assert_eq!(
        scraped["costd_early_retries_held_total"], 1.0,
        "{scraped:?}"
    );
    assert_eq!(
        app.sandbox.request_count(&acme),
        1,
        "no refused call went upstream"
    );
    in_progress.abort();
}

/// Tasks that keep the runtime's run queue long, as a flood of cheap calls would: each works for a
/// millisecond, then yields to the back of the queue. They stop when this is dropped.
struct Hogs(Arc<AtomicBool>);

fn hog_the_runtime(tasks: usize) -> Hogs {
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..tasks {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                while began.elapsed() < Duration::from_millis(1) {
                    std::hint::spin_loop();
                }
                tokio::task::yield_now().await;
            }
        });
    }
    Hogs(stop)
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn while_ready_work_waits_longer_than_max_queue_delay_calls_are_refused_and_health_still_serves()
 {
    let app = spawn_app_with(|settings| {
        settings.server.max_queue_delay_us = 2_000;
        settings.server.queue_delay_interval_ms = 20;
    })
    .await;
    let acme = team_scope("team_acme");
    within(app.costs.clone().get_costs(patient_month(1)))
        .await
        .expect("answered, and remembered");
    let upstream = app.sandbox.request_count(&acme);
    assert_eq!(scrape(&app).await["costd_queue_delayed"], 0.0, "idle");

    let hogs = hog_the_runtime(20);
    // Calls are answered until the wait has stayed above 2 ms for 20 ms; then all but one each probe
    // period are refused, so of a burst of calls some are.
    let refused = within(async {
        loop {
            let burst = (0..10).map(|_| {
                let mut client = app.costs.clone();
                async move { client.get_costs(patient_month(1)).await }
            });
            let answers = futures::future::join_all(burst).await;
            if let Some(refused) = answers.into_iter().find_map(Result::err) {
                break refused;
            }
        }
    })
    .await;
    let health = serving(&app).await;
    let scraped = scrape(&app).await;

    assert_over_limit(&refused, "server.max_queue_delay_us", "2000");
    assert!(
        refused.message().contains("server.max_queue_delay_us"),
        "{refused:?}"
    );
    assert_eq!(health, ServingStatus::Serving, "Health is never shed");
    assert!(
        scraped["costd_queue_delay_microseconds"] >= 2_000.0,
        "{scraped:?}"
    );

    drop(hogs);
    // The first sample under the target ends the shedding: calls are answered again.
    within(async { while scrape(&app).await["costd_queue_delayed"] != 0.0 {} }).await;
    within(app.costs.clone().get_costs(patient_month(1)))
        .await
        .expect("answered once the runtime caught up");
    assert_eq!(
        app.sandbox.request_count(&acme),
        upstream,
        "every answer came from what was remembered"
    );
}
