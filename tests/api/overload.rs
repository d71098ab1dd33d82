//! Load shedding through the real server: beyond `server.max_concurrent_requests` calls in progress a
//! call is answered RESOURCE_EXHAUSTED with RetryInfo without going upstream, and Health still answers.

use crate::helpers::*;
use costd::{proto as pb, sandbox::Fault};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
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
    let health = within(
        HealthClient::new(app.channel.clone()).check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("health answers")
    .into_inner();

    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.get_details_retry_info().is_some(),
        "RetryInfo tells the caller when to come back"
    );
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.metadata["limit"], "server.max_concurrent_requests");
    assert_eq!(info.metadata["allowed"], "2");
    assert_eq!(health.status(), ServingStatus::Serving);
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
