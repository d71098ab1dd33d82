//! Upstream text is untrusted: an upstream that echoes the request's Authorization header puts no
//! credential into results, jobs, health, logs or spans; a body cut short is the network's failure,
//! retried, not a malformed answer.

use crate::helpers::*;
use costd::{
    domain::ProviderKind,
    proto::{self as pb, query_job_service_client::QueryJobServiceClient},
    sandbox::{Fault, Scope},
};
use std::sync::Arc;

fn elastic_scope(app: &TestApp, name: &str) -> (Scope, String) {
    let dataset = app.sandbox.dataset().elastic();
    let org = dataset
        .organizations()
        .iter()
        .find(|o| o.name.starts_with(name))
        .expect("seeded");
    (Scope::elastic(org.id), org.api_key.clone())
}

#[tokio::test]
async fn an_upstream_echoing_the_authorization_header_leaks_no_credential() {
    let app = spawn_app_full(
        Arc::new(costd::clock::SystemClock),
        &[ProviderKind::TeamBilling, ProviderKind::Elastic],
        |_, _| {},
    )
    .await;
    let team_token = app.token("team_acme");
    let (elastic, elastic_key) = elastic_scope(&app, "Acme");
    let echo = Fault::EchoAuthorization(http::StatusCode::UNAUTHORIZED);
    app.sandbox
        .set_persistent_fault(&team_scope("team_acme"), echo.clone());
    app.sandbox.set_persistent_fault(&elastic, echo);
    let month = query(
        "2026-01-01",
        "2026-02-01",
        &[pb::GroupBy::BillingAccount],
        pb::Granularity::Monthly,
    );

    let report = app.get_costs(month.clone()).await.expect("answer");
    let mut jobs = QueryJobServiceClient::new(app.channel.clone());
    let started = within(jobs.start_query(pb::StartQueryRequest {
        query: Some(month.clone()),
    }))
    .await
    .expect("started")
    .into_inner()
    .job
    .expect("a job");
    let finished = within(jobs.watch_job(pb::WatchJobRequest {
        name: started.name.clone(),
    }))
    .await
    .expect("watching")
    .into_inner();
    let job = last_job_of(finished).await;
    let providers = app.list_providers().await;

    let failed: Vec<&pb::ProviderResult> = report
        .provider_results
        .iter()
        .filter(|r| r.state == pb::ResultState::Failed as i32)
        .collect();
    // Both Elastic accounts read the echoing organization (v1 and v2).
    let failed_ids: Vec<&str> = failed.iter().map(|r| r.provider_account.as_str()).collect();
    assert_eq!(failed_ids, ["elastic-acme", "elastic-acme-v1", "team-acme"]);
    let echoed: Vec<&str> = failed
        .iter()
        .filter_map(|r| r.error.as_ref())
        .map(|e| e.message.as_str())
        .filter(|m| m.contains("request had Authorization"))
        .collect();
    assert!(
        echoed.len() >= 2,
        "the upstream's words reach the caller: {echoed:?}"
    );
    for message in echoed {
        assert!(
            message.ends_with("[redacted])"),
            "the echo is there, its credential is not: {message}"
        );
    }
    let seen = [
        format!("{report:?}"),
        format!("{job:?}"),
        format!("{providers:?}"),
        captured().logs(),
        format!("{:?}", captured().spans()),
    ];
    for (what, text) in ["report", "job", "ListProviders", "logs", "spans"]
        .iter()
        .zip(&seen)
    {
        assert!(
            !text.contains(&team_token),
            "the team token is in the {what}"
        );
        assert!(
            !text.contains(&elastic_key),
            "the Elastic key is in the {what}"
        );
    }
}

#[tokio::test]
async fn a_body_cut_short_of_its_content_length_is_retried() {
    let app = spawn_app().await;
    let acme = team_scope("team_acme");
    app.sandbox.push_fault(&acme, Fault::BodyCutShort);

    let report = app
        .get_costs(only_accounts(
            query("2026-01-01", "2026-02-01", &[], pb::Granularity::None),
            &["team-acme"],
        ))
        .await
        .expect("answer");

    let result = result_of(&report, "team-acme");
    assert_eq!(result.state, pb::ResultState::Ok as i32, "{result:?}");
    assert_eq!(
        app.sandbox.request_count(&acme),
        2,
        "the cut answer, then the whole one"
    );
    assert_eq!(
        nanos(report.totals.as_ref().and_then(|t| t.billed_cost.as_ref())),
        app.expected_nanos("team_acme", at("2026-01-01"), at("2026-02-01"))
    );
}
