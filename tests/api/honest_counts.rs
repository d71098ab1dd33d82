//! Counts and codes say what happened: a STALE account counts the requests its failed refresh sent,
//! an Atlas 401's `errorCode` reaches ErrorInfo, and ListProviders reports the upstream's own
//! rate-limit header.

use crate::helpers::*;
use costd::{
    clock::ManualClock,
    domain::ProviderKind,
    proto as pb,
    sandbox::{Fault, RateLimit},
};
use http::StatusCode;
use std::{sync::Arc, time::Duration};
use tonic_types::{ErrorDetail, StatusExt};

fn error_info(result: &pb::ProviderResult) -> (tonic::Code, tonic_types::ErrorInfo) {
    let status = result.error.clone().expect("a status");
    let code = tonic::Code::from(status.code);
    let decoded = tonic::Status::with_details(
        code,
        status.message.clone(),
        prost::Message::encode_to_vec(&status).into(),
    );
    let info = decoded
        .get_error_details_vec()
        .into_iter()
        .find_map(|d| match d {
            ErrorDetail::ErrorInfo(info) => Some(info),
            _ => None,
        })
        .expect("ErrorInfo");
    (code, info)
}

#[tokio::test]
async fn a_stale_account_counts_the_requests_of_its_failed_refresh() {
    let clock = ManualClock::new(at("2026-11-20T00:00:00Z"));
    let app = spawn_app_on(Arc::new(clock.clone()), |s| s.upstream.max_attempts = 3).await;
    let asked = only_accounts(
        query("2026-11-01", "2026-12-01", &[], pb::Granularity::None),
        &["team-acme"],
    );
    let fresh = app.get_costs(asked.clone()).await.expect("answer");
    assert_eq!(result_of(&fresh, "team-acme").upstream_requests, 1);
    clock.advance(chrono::Duration::minutes(10));
    app.sandbox.set_persistent_fault(
        &team_scope("team_acme"),
        Fault::Status {
            code: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    );
    let before = app.sandbox.requests().len();

    let stale = app.get_costs(asked).await.expect("answer");

    let acme = result_of(&stale, "team-acme");
    assert_eq!(acme.state, pb::ResultState::Stale as i32);
    assert_eq!(
        app.sandbox.requests().len() - before,
        3,
        "the refresh tried 3 times"
    );
    assert_eq!(acme.upstream_requests, 3, "and the result says so");
}

#[tokio::test]
async fn an_atlas_401_reaches_error_info_with_its_error_code() {
    let wrong_private = format!("{:032x}", rand::random::<u128>());
    let wrong_secret = format!("mdb_sa_sk_{:032x}", rand::random::<u128>());
    let app = spawn_app_full(
        Arc::new(costd::clock::SystemClock),
        &[ProviderKind::Atlas],
        |settings, _| crate::atlas::give_wrong_keys(settings, &wrong_private, &wrong_secret),
    )
    .await;

    let report = app
        .get_costs(query(
            "2025-01-01",
            "2025-02-01",
            &[],
            pb::Granularity::None,
        ))
        .await
        .expect("answer");

    for account in ["atlas-kestrel", "atlas-lumen"] {
        let (code, info) = error_info(result_of(&report, account));
        assert_eq!(code, tonic::Code::PermissionDenied, "{account}");
        assert_eq!(info.reason, "UPSTREAM_UNAUTHENTICATED", "{account}");
        assert_eq!(info.metadata["http_status"], "401", "{account}");
        assert_eq!(
            info.metadata.get("upstream_code").map(String::as_str),
            Some("USER_UNAUTHORIZED"),
            "{account}: Atlas' own code, like every other status's"
        );
    }
}

#[tokio::test]
async fn list_providers_reports_the_rate_limit_remaining_the_upstream_sent() {
    let app = spawn_app_full(
        Arc::new(costd::clock::SystemClock),
        &[ProviderKind::Atlas, ProviderKind::TeamBilling],
        |settings, sandbox| {
            // One request at a time, so the last answer is the one that took the last token.
            settings.upstream.max_concurrency_per_account = 1;
            // A bucket that does not refill during the test, so the count left is exact.
            sandbox.atlas().set_rate_limit(RateLimit {
                capacity: 50,
                refill_amount: 1,
                refill_period: Duration::from_secs(24 * 3600),
            })
        },
    )
    .await;
    // The service-account organization: every request it sends draws from the bucket (a Digest
    // account's challenge round trips do not).
    let lumen = app
        .sandbox
        .atlas()
        .dataset()
        .orgs()
        .iter()
        .find(|o| o.name.starts_with("Lumen"))
        .expect("seeded")
        .id;

    let report = app
        .get_costs(only_accounts(
            query("2025-01-01", "2025-03-01", &[], pb::Granularity::None),
            &["atlas-lumen", "team-acme"],
        ))
        .await
        .expect("answer");
    assert_eq!(
        result_of(&report, "atlas-lumen").state,
        pb::ResultState::Ok as i32
    );

    let counters = app.sandbox.atlas().counters(lumen);
    let taken = counters.posts + counters.polls;
    assert!(
        taken >= 4,
        "two months, each created and polled: {counters:?}"
    );
    let providers = app.list_providers().await;
    let health = |id: &str| {
        providers
            .provider_accounts
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| p.health.clone())
            .expect("health")
    };
    assert_eq!(
        health("atlas-lumen").rate_limit_remaining,
        Some(50 - taken as i64),
        "RateLimit-Remaining of the last answer"
    );
    assert_eq!(
        health("team-acme").rate_limit_remaining,
        None,
        "the team billing API sends no rate-limit header"
    );
}
