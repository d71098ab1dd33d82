//! An upstream failure becomes that account's failure, with the upstream's own code; the others answer.

use crate::helpers::*;
use costd::{
    config::{AccountKind, Settings, TeamBillingSettings},
    domain::UpstreamId,
    proto as pb,
    sandbox::Fault,
};
use http::StatusCode;
use secrecy::SecretString;
use tonic_types::{ErrorDetail, StatusExt};

/// Decodes the ErrorInfo of a failed provider result.
pub(crate) fn error_info(
    result: &pb::ProviderResult,
) -> (
    tonic::Code,
    tonic_types::ErrorInfo,
    Option<tonic_types::RetryInfo>,
) {
    let status = result
        .error
        .clone()
        .expect("a failed result carries a status");
    let code = tonic::Code::from(status.code);
    let encoded = tonic::Status::with_details(
        code,
        status.message.clone(),
        prost::Message::encode_to_vec(&status).into(),
    );
    let details = encoded.get_error_details_vec();
    let info = details
        .iter()
        .find_map(|d| {
            if let ErrorDetail::ErrorInfo(info) = d {
                Some(info.clone())
            } else {
                None
            }
        })
        .expect("ErrorInfo");
    let retry = details.iter().find_map(|d| {
        if let ErrorDetail::RetryInfo(retry) = d {
            Some(retry.clone())
        } else {
            None
        }
    });
    (code, info, retry)
}

fn set_team(settings: &mut Settings, account: &str, team: Option<&str>, token: Option<String>) {
    let entry = settings
        .accounts
        .iter_mut()
        .find(|a| a.id.as_str() == account)
        .expect("configured");
    let AccountKind::TeamBilling(TeamBillingSettings {
        team_id,
        token: secret,
        ..
    }) = &mut entry.kind
    else {
        panic!("a team billing account")
    };
    if let Some(team) = team {
        *team_id = UpstreamId::parse(team).expect("a team id");
    }
    if let Some(token) = token {
        *secret = SecretString::from(token);
    }
}

async fn january(app: &TestApp) -> pb::CostReport {
    app.get_costs(query(
        "2026-01-01",
        "2026-02-01",
        &[pb::GroupBy::BillingAccount],
        pb::Granularity::None,
    ))
    .await
    .expect("a report even when an upstream fails")
}

/// The other two accounts answered in full.
fn others_answered(app: &TestApp, report: &pb::CostReport, failed: &str) {
    for (team, account) in [
        ("team_acme", "team-acme"),
        ("team_borealis", "team-borealis"),
        ("team_cobalt", "team-cobalt"),
    ] {
        if account == failed {
            continue;
        }
        let result = result_of(report, account);
        assert_eq!(result.state, pb::ResultState::Ok as i32, "{account}");
        assert_eq!(
            nanos(result.billed_cost.as_ref()),
            app.expected_nanos(team, at("2026-01-01"), at("2026-02-01"))
        );
    }
    let totals = report.totals.as_ref().expect("totals");
    assert!(!totals.complete);
    assert!(!totals.covered_provider_accounts.iter().any(|a| a == failed));
}

#[tokio::test]
async fn a_token_of_another_team_is_permission_denied_with_the_upstream_code() {
    let borealis_token = {
        let probe = spawn_app().await;
        probe.token("team_borealis")
    };
    let app = spawn_app_with(|s| set_team(s, "team-acme", None, Some(borealis_token))).await;

    let report = january(&app).await;

    let acme = result_of(&report, "team-acme");
    assert_eq!(acme.state, pb::ResultState::Failed as i32);
    let (code, info, retry) = error_info(acme);
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert_eq!(info.reason, "UPSTREAM_PERMISSION_DENIED");
    assert_eq!(info.domain, "team_billing");
    assert_eq!(info.metadata["http_status"], "403");
    assert_eq!(info.metadata["upstream_code"], "FORBIDDEN");
    assert_eq!(info.metadata["provider_account"], "team-acme");
    assert!(retry.is_none(), "a refusal is not worth retrying");
    assert_eq!(acme.upstream_requests, 1, "403 is not retried");
    others_answered(&app, &report, "team-acme");
}

#[tokio::test]
async fn an_unknown_token_is_reported_in_the_auth_pages_error_form() {
    let app = spawn_app_with(|s| {
        set_team(
            s,
            "team-cobalt",
            None,
            Some("cat_tok_not_a_real_one".to_string()),
        )
    })
    .await;

    let report = january(&app).await;

    let (code, info, _) = error_info(result_of(&report, "team-cobalt"));
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert_eq!(info.reason, "UPSTREAM_UNAUTHENTICATED");
    assert_eq!(info.metadata["upstream_code"], "UNAUTHORIZED");
    others_answered(&app, &report, "team-cobalt");
}

#[tokio::test]
async fn an_unknown_team_is_not_found() {
    let app = spawn_app_with(|s| set_team(s, "team-borealis", Some("team_gone"), None)).await;

    let report = january(&app).await;

    let (code, info, _) = error_info(result_of(&report, "team-borealis"));
    assert_eq!(code, tonic::Code::NotFound);
    assert_eq!(info.metadata["http_status"], "404");
    assert_eq!(info.metadata["upstream_code"], "NOT_FOUND");
    others_answered(&app, &report, "team-borealis");
}

#[tokio::test]
async fn malformed_and_truncated_bodies_fail_that_account_not_the_server() {
    for fault in [Fault::MalformedBody, Fault::TruncatedBody] {
        let app = spawn_app().await;
        app.sandbox
            .push_fault(&team_scope("team_acme"), fault.clone());

        let report = january(&app).await;

        let acme = result_of(&report, "team-acme");
        let (code, info, _) = error_info(acme);
        assert_eq!(code, tonic::Code::Unknown, "{fault:?}");
        assert_eq!(info.reason, "UPSTREAM_MALFORMED_RESPONSE", "{fault:?}");
        assert_eq!(info.metadata["http_status"], "200");
        others_answered(&app, &report, "team-acme");
    }
}

#[tokio::test]
async fn a_hanging_upstream_times_out_as_that_accounts_failure() {
    let app = spawn_app_with(|s| {
        s.upstream.request_timeout_ms = 300;
        s.upstream.max_attempts = 2;
    })
    .await;
    app.sandbox
        .set_persistent_fault(&team_scope("team_borealis"), Fault::Hang);

    let report = january(&app).await;

    let borealis = result_of(&report, "team-borealis");
    let (code, info, retry) = error_info(borealis);
    assert_eq!(code, tonic::Code::DeadlineExceeded);
    assert_eq!(info.reason, "UPSTREAM_TIMEOUT");
    assert!(retry.is_some(), "a timeout may succeed later");
    assert_eq!(
        borealis.upstream_requests, 2,
        "the timeout was retried once"
    );
    assert_eq!(app.sandbox.request_count(&team_scope("team_borealis")), 2);
    others_answered(&app, &report, "team-borealis");
}

#[tokio::test]
async fn a_dropped_connection_is_retried_and_then_reported_unavailable() {
    let app = spawn_app_with(|s| s.upstream.max_attempts = 3).await;
    app.sandbox
        .set_persistent_fault(&team_scope("team_cobalt"), Fault::DropConnection);

    let report = january(&app).await;

    let cobalt = result_of(&report, "team-cobalt");
    let (code, info, _) = error_info(cobalt);
    assert_eq!(code, tonic::Code::Unavailable);
    assert_eq!(info.reason, "UPSTREAM_UNAVAILABLE");
    assert_eq!(app.sandbox.request_count(&team_scope("team_cobalt")), 3);
    others_answered(&app, &report, "team-cobalt");
}

#[tokio::test]
async fn a_server_error_after_every_retry_carries_retry_info() {
    let app = spawn_app_with(|s| s.upstream.max_attempts = 2).await;
    app.sandbox.set_persistent_fault(
        &team_scope("team_acme"),
        Fault::Status {
            code: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    );

    let report = january(&app).await;

    let (code, info, retry) = error_info(result_of(&report, "team-acme"));
    assert_eq!(code, tonic::Code::Unavailable);
    assert_eq!(info.metadata["upstream_code"], "SERVICE_UNAVAILABLE");
    assert!(retry.is_some());
    others_answered(&app, &report, "team-acme");
}

#[tokio::test]
async fn totals_that_do_not_add_up_are_reported_and_not_corrected() {
    let app = spawn_app().await;
    app.sandbox
        .push_fault(&team_scope("team_acme"), Fault::InconsistentTotals);

    let report = january(&app).await;

    let acme = result_of(&report, "team-acme");
    assert_eq!(acme.state, pb::ResultState::Ok as i32);
    assert_eq!(
        acme.warnings.len(),
        1,
        "the inflated operation total: {:?}",
        acme.warnings
    );
    assert!(acme.warnings.iter().all(|w| w.code == "TOTAL_MISMATCH"));
    // The records are the dimensions as sent, so the sum is the true usage, not the inflated total.
    assert_eq!(
        nanos(acme.billed_cost.as_ref()),
        app.expected_nanos("team_acme", at("2026-01-01"), at("2026-02-01"))
    );
}

#[tokio::test]
async fn an_answer_larger_than_the_cap_fails_that_account() {
    let app = spawn_app_with(|s| s.upstream.max_response_bytes = 256).await;

    let report = january(&app).await;

    for account in ["team-acme", "team-borealis", "team-cobalt"] {
        let (code, info, _) = error_info(result_of(&report, account));
        assert_eq!(code, tonic::Code::ResourceExhausted);
        assert_eq!(info.reason, "UPSTREAM_RESPONSE_TOO_LARGE");
    }
    assert_eq!(
        app.sandbox.total_requests(),
        3,
        "a too-large answer is not retried"
    );
}
