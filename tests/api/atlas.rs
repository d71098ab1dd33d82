//! MongoDB Atlas through the real server: both auth schemes, exact monthly totals, one upstream query
//! per organization and body however many ask, a forgotten token recreated once, throttling honoured,
//! and upstream work never thrown away when a caller's deadline is short.

use crate::helpers::*;
use costd::{
    config::{AccountKind, AtlasCredentials, AtlasSettings, Settings},
    domain::ProviderKind,
    proto as pb,
    sandbox::{RateLimit, SandboxHandle, Scope},
};
use secrecy::SecretString;
use std::{sync::Arc, time::Duration};

async fn spawn_atlas(adjust: impl FnOnce(&mut Settings, &SandboxHandle)) -> TestApp {
    spawn_app_full(
        Arc::new(costd::clock::SystemClock),
        &[ProviderKind::Atlas],
        adjust,
    )
    .await
}

fn org(app: &TestApp, name: &str) -> &'static str {
    app.sandbox
        .atlas()
        .dataset()
        .orgs()
        .iter()
        .find(|o| o.name.starts_with(name))
        .expect("seeded")
        .id
}

/// The organization's usage over whole months `[from, to)`, summed here from the sandbox's rows.
fn expected_nanos(app: &TestApp, name: &str, from: &str, to: &str) -> i128 {
    let dataset = app.sandbox.atlas().dataset();
    let org = dataset.org(org(app, name)).expect("seeded");
    let day = |text: &str| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("date");
    org.usage(day(from), day(to))
        .map(|item| i128::from(item.amount_cents) * 10_000_000)
        .sum()
}

fn state(report: &pb::CostReport, account: &str) -> i32 {
    result_of(report, account).state
}

#[tokio::test]
async fn digest_and_service_account_auth_both_answer_exact_monthly_totals() {
    let app = spawn_atlas(|_, _| {}).await;

    let report = app
        .get_costs(query(
            "2025-01-01",
            "2025-05-01",
            &[pb::GroupBy::BillingAccount, pb::GroupBy::Service],
            pb::Granularity::Monthly,
        ))
        .await
        .expect("answer");

    for (account, name) in [
        ("atlas-kestrel", "Kestrel"),
        ("atlas-lumen", "Lumen"),
        ("atlas-quarry", "Quarry"),
    ] {
        let result = result_of(&report, account);
        assert_eq!(result.state, pb::ResultState::Ok as i32, "{result:?}");
        assert_eq!(
            nanos(result.billed_cost.as_ref()),
            expected_nanos(&app, name, "2025-01-01", "2025-05-01"),
            "{account}"
        );
        assert_eq!(
            app.sandbox
                .atlas()
                .counters(org(&app, name))
                .queries_created,
            4,
            "one query per month"
        );
    }
    let lumen_uses_a_service_account = app.sandbox.request_count(&Scope::atlas_oauth());
    assert_eq!(
        lumen_uses_a_service_account, 1,
        "one token for all four months"
    );
    let credits = report
        .rows
        .iter()
        .filter(|r| r.group_values[1].id == "Credits");
    assert!(
        credits.clone().count() > 0 && credits.clone().all(|r| nanos(r.billed_cost.as_ref()) < 0),
        "credits are negative"
    );
}

#[tokio::test]
async fn a_hundred_identical_queries_create_one_atlas_query() {
    let app = spawn_atlas(|settings, _| {
        settings
            .accounts
            .retain(|a| a.id.as_str() == "atlas-kestrel")
    })
    .await;
    let asked = query("2025-06-01", "2025-07-01", &[], pb::Granularity::None);

    let calls = (0..100).map(|_| {
        let mut client = app.costs.clone();
        let asked = asked.clone();
        tokio::spawn(async move {
            client
                .get_costs(pb::GetCostsRequest { query: Some(asked) })
                .await
        })
    });
    let reports = within(futures::future::join_all(calls)).await;

    for report in reports {
        let report = report
            .expect("joins")
            .expect("answer")
            .into_inner()
            .report
            .expect("report");
        assert_eq!(state(&report, "atlas-kestrel"), pb::ResultState::Ok as i32);
    }
    assert_eq!(
        app.sandbox
            .atlas()
            .counters(org(&app, "Kestrel"))
            .queries_created,
        1
    );
}

#[tokio::test]
async fn wrong_keys_fail_that_account_and_appear_nowhere() {
    let wrong_private = format!("{:032x}", rand::random::<u128>());
    let wrong_secret = format!("mdb_sa_sk_{:032x}", rand::random::<u128>());
    let app =
        spawn_atlas(|settings, _| give_wrong_keys(settings, &wrong_private, &wrong_secret)).await;

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
        let status = result_of(&report, account).error.clone().expect("failed");
        assert_eq!(
            tonic::Code::from(status.code),
            tonic::Code::PermissionDenied,
            "{account}: {}",
            status.message
        );
    }
    assert_eq!(
        state(&report, "atlas-quarry"),
        pb::ResultState::Ok as i32,
        "the other organization still answers"
    );
    let dataset = app.sandbox.atlas().dataset();
    let mut secrets: Vec<String> = dataset
        .orgs()
        .iter()
        .flat_map(|o| {
            [
                o.api_key.private_key.clone(),
                o.service_account.client_secret.clone(),
            ]
        })
        .collect();
    secrets.extend([wrong_private, wrong_secret]);
    let (logs, spans, errors) = (
        captured().logs(),
        format!("{:?}", captured().spans()),
        format!("{report:?}"),
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str())
                && !spans.contains(secret.as_str())
                && !errors.contains(secret.as_str())
        );
    }
}

#[tokio::test]
async fn a_token_the_upstream_forgets_is_created_again_once() {
    let app = spawn_atlas(|settings, _| {
        settings
            .accounts
            .retain(|a| a.id.as_str() == "atlas-quarry")
    })
    .await;
    let quarry = org(&app, "Quarry");
    app.sandbox.atlas().set_org_processing_polls(quarry, 30);
    let asked = query("2025-03-01", "2025-04-01", &[], pb::Granularity::None);
    let mut client = app.costs.clone();
    let call = tokio::spawn(async move {
        client
            .get_costs(pb::GetCostsRequest { query: Some(asked) })
            .await
    });

    // The challenge, the create, and a first poll have been seen: the query is processing.
    within(app.sandbox.wait_for_requests(&Scope::atlas(quarry), 4)).await;
    app.sandbox.atlas().forget_queries();
    let report = within(call)
        .await
        .expect("joins")
        .expect("answer")
        .into_inner()
        .report
        .expect("report");

    assert_eq!(state(&report, "atlas-quarry"), pb::ResultState::Ok as i32);
    assert_eq!(
        app.sandbox.atlas().counters(quarry).queries_created,
        2,
        "created once more, not again and again"
    );
    assert_eq!(
        nanos(report.totals.and_then(|t| t.billed_cost).as_ref()),
        expected_nanos(&app, "Quarry", "2025-03-01", "2025-04-01")
    );
}

#[tokio::test]
async fn throttled_polls_wait_for_retry_after() {
    let app = spawn_atlas(|settings, _| {
        settings
            .accounts
            .retain(|a| a.id.as_str() == "atlas-kestrel")
    })
    .await;
    let kestrel = org(&app, "Kestrel");
    app.sandbox.atlas().set_org_processing_polls(kestrel, 6);
    app.sandbox.atlas().set_rate_limit(RateLimit {
        capacity: 4,
        refill_amount: 4,
        refill_period: Duration::from_secs(1),
    });

    let report = app
        .get_costs(query(
            "2025-02-01",
            "2025-03-01",
            &[],
            pb::Granularity::None,
        ))
        .await
        .expect("answer");

    assert_eq!(state(&report, "atlas-kestrel"), pb::ResultState::Ok as i32);
    let counters = app.sandbox.atlas().counters(kestrel);
    assert!(
        counters.rate_limited >= 1,
        "the bucket ran dry at least once: {counters:?}"
    );
    assert!(
        counters.rate_limited <= 2,
        "after a 429 the client waited instead of hammering: {counters:?}"
    );
}

#[tokio::test]
async fn a_short_deadline_leaves_the_query_running_for_the_next_caller() {
    let app =
        spawn_atlas(|settings, _| settings.accounts.retain(|a| a.id.as_str() == "atlas-lumen"))
            .await;
    let lumen = org(&app, "Lumen");
    app.sandbox.atlas().set_org_processing_polls(lumen, 20);
    let asked = query("2025-08-01", "2025-09-01", &[], pb::Granularity::None);
    let mut client = app.costs.clone();
    let mut hurried = tonic::Request::new(pb::GetCostsRequest {
        query: Some(asked.clone()),
    });
    hurried.set_timeout(Duration::from_millis(300));

    let first = client
        .get_costs(hurried)
        .await
        .expect("an answer within the deadline")
        .into_inner()
        .report
        .expect("report");
    let second = app.get_costs(asked).await.expect("answer");

    let pending = result_of(&first, "atlas-lumen");
    assert_ne!(
        pending.state,
        pb::ResultState::Ok as i32,
        "still processing when the first caller had to go"
    );
    assert_eq!(state(&second, "atlas-lumen"), pb::ResultState::Ok as i32);
    assert_eq!(
        app.sandbox.atlas().counters(lumen).queries_created,
        1,
        "the second caller joined the same upstream query"
    );
}

#[tokio::test]
async fn daily_rows_are_not_smeared_from_monthly_data() {
    let app = spawn_atlas(|settings, _| {
        settings
            .accounts
            .retain(|a| a.id.as_str() == "atlas-kestrel")
    })
    .await;

    let report = app
        .get_costs(query(
            "2025-01-01",
            "2025-02-01",
            &[],
            pb::Granularity::Daily,
        ))
        .await
        .expect("answer");

    let kestrel = result_of(&report, "atlas-kestrel");
    assert!(report.rows.is_empty(), "no day gets a share of a month");
    assert!(
        kestrel
            .notes
            .iter()
            .any(|n| n.contains("longer than one bucket")),
        "{:?}",
        kestrel.notes
    );
    assert!(!report.totals.expect("totals").complete);
}

#[tokio::test]
async fn a_refused_service_account_token_is_replaced_once() {
    let app =
        spawn_atlas(|settings, _| settings.accounts.retain(|a| a.id.as_str() == "atlas-lumen"))
            .await;

    let before = app
        .get_costs(query(
            "2025-01-01",
            "2025-02-01",
            &[],
            pb::Granularity::None,
        ))
        .await
        .expect("answer");
    app.sandbox.atlas().expire_access_tokens();
    let after = app
        .get_costs(query(
            "2025-02-01",
            "2025-03-01",
            &[],
            pb::Granularity::None,
        ))
        .await
        .expect("answer");

    assert_eq!(state(&before, "atlas-lumen"), pb::ResultState::Ok as i32);
    assert_eq!(
        state(&after, "atlas-lumen"),
        pb::ResultState::Ok as i32,
        "the refused token was replaced"
    );
    assert_eq!(
        app.sandbox.request_count(&Scope::atlas_oauth()),
        2,
        "one token, then exactly one more"
    );
}

/// Kestrel's API key pair gets a wrong private key, and the service account (Lumen's) a wrong secret.
pub fn give_wrong_keys(settings: &mut Settings, wrong_private: &str, wrong_secret: &str) {
    for account in &mut settings.accounts {
        let AccountKind::Atlas(AtlasSettings { credentials, .. }) = &mut account.kind else {
            continue;
        };
        match credentials {
            AtlasCredentials::Digest { private_key, .. }
                if account.id.as_str() == "atlas-kestrel" =>
            {
                *private_key = SecretString::from(wrong_private.to_string());
            }
            AtlasCredentials::ServiceAccount { client_secret, .. } => {
                *client_secret = SecretString::from(wrong_secret.to_string())
            }
            _ => {}
        }
    }
}
