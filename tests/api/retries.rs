//! Retries: what may succeed later is asked again, after the upstream's own Retry-After.

use crate::helpers::*;
use costd::{proto as pb, sandbox::Fault};
use http::StatusCode;
use std::time::Duration;

fn acme_january() -> pb::CostQuery {
    only_accounts(
        query("2026-01-01", "2026-02-01", &[], pb::Granularity::None),
        &["team-acme"],
    )
}

#[tokio::test]
async fn a_503_then_200_is_retried_and_succeeds() {
    let app = spawn_app().await;
    app.sandbox.push_fault(
        &team_scope("team_acme"),
        Fault::Status {
            code: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    );

    let report = app.get_costs(acme_january()).await.expect("answer");

    let acme = result_of(&report, "team-acme");
    assert_eq!(acme.state, pb::ResultState::Ok as i32);
    assert_eq!(acme.upstream_requests, 2);
    assert_eq!(app.sandbox.request_count(&team_scope("team_acme")), 2);
    assert_eq!(
        nanos(acme.billed_cost.as_ref()),
        app.expected_nanos("team_acme", at("2026-01-01"), at("2026-02-01"))
    );
}

#[tokio::test]
async fn retry_after_is_honoured_before_asking_again() {
    let app = spawn_app().await;
    app.sandbox.push_fault(
        &team_scope("team_acme"),
        Fault::Status {
            code: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(1),
        },
    );

    let report = app.get_costs(acme_january()).await.expect("answer");

    assert_eq!(
        result_of(&report, "team-acme").state,
        pb::ResultState::Ok as i32
    );
    let requests: Vec<_> = app
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.scope == team_scope("team_acme"))
        .collect();
    assert_eq!(requests.len(), 2);
    let waited = requests[1]
        .received_at
        .duration_since(requests[0].received_at);
    assert!(
        waited >= Duration::from_secs(1),
        "asked again after {waited:?}, before Retry-After"
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_callers_deadline_fails_at_once_with_retry_info() {
    let app = spawn_app().await;
    app.sandbox.push_fault(
        &team_scope("team_acme"),
        Fault::Status {
            code: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(120),
        },
    );
    let mut client = app.costs.clone();
    let mut request = tonic::Request::new(pb::GetCostsRequest {
        query: Some(acme_january()),
    });
    request.set_timeout(Duration::from_secs(10));

    let report = within(client.get_costs(request))
        .await
        .expect("answer")
        .into_inner()
        .report
        .expect("report");

    let acme = result_of(&report, "team-acme");
    let status = acme.error.clone().expect("failed");
    assert_eq!(
        tonic::Code::from(status.code),
        tonic::Code::ResourceExhausted
    );
    assert_eq!(
        acme.upstream_requests, 1,
        "no pointless wait past the deadline"
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let app = spawn_app().await;
    app.sandbox.push_fault(
        &team_scope("team_acme"),
        Fault::Status {
            code: StatusCode::BAD_REQUEST,
            retry_after: None,
        },
    );

    let report = app.get_costs(acme_january()).await.expect("answer");

    let status = result_of(&report, "team-acme")
        .error
        .clone()
        .expect("failed");
    assert_eq!(tonic::Code::from(status.code), tonic::Code::InvalidArgument);
    assert_eq!(app.sandbox.request_count(&team_scope("team_acme")), 1);
}
