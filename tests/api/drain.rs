//! The drain through the real server: once stopping, Health answers NOT_SERVING on existing and new
//! connections, new calls are UNAVAILABLE with RetryInfo at once, a call in progress finishes, a
//! GetCosts waiting on an upstream gets its PENDING answer and job, WatchJob streams end UNAVAILABLE,
//! and the server goes away as soon as nothing is left — or at the drain timeout.

use crate::helpers::*;
use costd::{proto as pb, sandbox::Fault};
use pb::query_job_service_client::QueryJobServiceClient;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

/// Longer than any test waits: a server that waits for it fails the test.
const LONG_DRAIN_MS: u64 = 60_000;

async fn connect(app: &TestApp) -> Channel {
    within(
        Channel::from_shared(format!("http://{}", app.addr))
            .expect("uri")
            .connect(),
    )
    .await
    .expect("a new connection is accepted")
}

/// A ListProviders call in progress until its request is sent: the server waits for the message.
struct HeldCall {
    send: mpsc::Sender<pb::ListProvidersRequest>,
    answer: tokio::task::JoinHandle<Result<pb::ListProvidersResponse, tonic::Status>>,
}

/// Starts a [`HeldCall`] on the test's channel. Returns once the server has admitted it: one
/// connection carries calls in order, so a Health answer on it means the server saw the call first.
async fn hold_a_call(app: &TestApp) -> HeldCall {
    let (send, requests) = mpsc::channel(1);
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    within(grpc.ready()).await.expect("ready");
    let mut answer = Box::pin(async move {
        grpc.client_streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(requests)),
            http::uri::PathAndQuery::from_static("/costd.v1.CostService/ListProviders"),
            tonic_prost::ProstCodec::<pb::ListProvidersRequest, pb::ListProvidersResponse>::default(
            ),
        )
        .await
        .map(tonic::Response::into_inner)
    });
    // The first poll hands the request to the channel, ahead of any call made after it.
    assert!(
        futures::poll!(&mut answer).is_pending(),
        "waits for its message"
    );
    let answer = tokio::spawn(answer);
    assert_eq!(
        serving_on(app.channel.clone()).await,
        ServingStatus::Serving
    );
    HeldCall { send, answer }
}

fn assert_stopping(status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("stopping"), "{status:?}");
    assert!(status.get_details_retry_info().is_some(), "{status:?}");
}

#[tokio::test]
async fn while_a_call_drains_health_is_not_serving_everywhere_and_new_calls_are_unavailable() {
    let mut app = spawn_app_with(|s| s.server.drain_timeout_ms = LONG_DRAIN_MS).await;
    let held = hold_a_call(&app).await;

    let server = app.begin_stop();
    let existing = serving_on(app.channel.clone()).await;
    let fresh = connect(&app).await;
    let on_fresh = serving_on(fresh.clone()).await;
    let refused_existing = within(
        app.costs
            .clone()
            .list_providers(pb::ListProvidersRequest {}),
    )
    .await
    .expect_err("no new work while stopping");
    let refused_fresh = within(
        pb::cost_service_client::CostServiceClient::new(fresh)
            .list_providers(pb::ListProvidersRequest {}),
    )
    .await
    .expect_err("no new work while stopping");
    assert!(!server.is_finished(), "the held call keeps the server up");
    held.send
        .send(pb::ListProvidersRequest {})
        .await
        .expect("the call still reads");
    drop(held.send);
    let answered = within(held.answer).await.expect("joins");

    assert_eq!(existing, ServingStatus::NotServing);
    assert_eq!(on_fresh, ServingStatus::NotServing);
    assert_stopping(&refused_existing);
    assert_stopping(&refused_fresh);
    let providers = answered.expect("the call in progress finished");
    assert!(!providers.provider_accounts.is_empty());
    within(server)
        .await
        .expect("joins")
        .expect("stops as soon as nothing is left, long before the drain timeout");
}

#[tokio::test]
async fn a_get_costs_waiting_on_an_upstream_is_answered_pending_with_its_job_when_the_server_stops()
{
    let mut app = spawn_app_with(|s| s.server.drain_timeout_ms = LONG_DRAIN_MS).await;
    let acme = team_scope("team_acme");
    app.sandbox.set_persistent_fault(&acme, Fault::Hang);
    let mut request = tonic::Request::new(pb::GetCostsRequest {
        query: Some(only_accounts(
            query("2026-01-01", "2026-02-01", &[], pb::Granularity::None),
            &["team-acme"],
        )),
    });
    request.set_timeout(PATIENCE);
    let mut client = app.costs.clone();
    let call = tokio::spawn(async move { client.get_costs(request).await });
    within(app.sandbox.wait_for_requests(&acme, 1)).await;

    let server = app.begin_stop();
    let report = within(call)
        .await
        .expect("joins")
        .expect("answered, not cut off")
        .into_inner()
        .report
        .expect("a report");

    let result = result_of(&report, "team-acme");
    assert_eq!(result.state, pb::ResultState::Pending as i32);
    assert!(report.job.starts_with("jobs/"), "{report:?}");
    assert_eq!(result.job, report.job);
    within(server)
        .await
        .expect("joins")
        .expect("a job left running does not hold the server up");
}

#[tokio::test]
async fn a_watch_job_stream_ends_unavailable_with_retry_info_saying_the_server_is_stopping() {
    let mut app = spawn_app_with(|s| s.server.drain_timeout_ms = LONG_DRAIN_MS).await;
    app.sandbox
        .set_persistent_fault(&team_scope("team_acme"), Fault::Hang);
    let mut jobs = QueryJobServiceClient::new(app.channel.clone());
    let job = within(jobs.start_query(pb::StartQueryRequest {
        query: Some(query(
            "2026-01-01",
            "2026-02-01",
            &[],
            pb::Granularity::None,
        )),
    }))
    .await
    .expect("started")
    .into_inner()
    .job
    .expect("a job");
    let mut events = within(jobs.watch_job(pb::WatchJobRequest { name: job.name }))
        .await
        .expect("watching")
        .into_inner();
    let first = within(events.message()).await.expect("an event");
    assert!(first.is_some(), "the snapshot comes first");

    let server = app.begin_stop();
    let mut ended = None;
    while ended.is_none() {
        match within(events.message()).await {
            Ok(Some(_progress)) => {}
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => ended = Some(status),
        }
    }

    assert_stopping(&ended.expect("ended"));
    within(server)
        .await
        .expect("joins")
        .expect("an ended stream does not hold the server up");
}

#[tokio::test]
async fn a_call_that_never_finishes_is_cut_at_the_drain_timeout() {
    let drain = Duration::from_millis(300);
    let mut app = spawn_app_with(|s| s.server.drain_timeout_ms = drain.as_millis() as u64).await;
    let held = hold_a_call(&app).await;
    let stopped_at = Instant::now();

    within(app.begin_stop())
        .await
        .expect("joins")
        .expect("stops cleanly");

    assert!(
        stopped_at.elapsed() >= drain,
        "the call had its drain timeout"
    );
    drop(held);
}
