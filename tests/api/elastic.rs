//! Elastic Cloud through the real server: v1 and every v2 endpoint agree with each other and with the
//! seeded usage computed here; amounts are exact; each documented error fails only its account.

use crate::helpers::*;
use costd::{
    config::{AccountKind, ElasticSettings, Settings},
    domain::ProviderKind,
    domain::UpstreamId,
    proto as pb,
    sandbox::{ElasticInstanceKind, Fault, SandboxHandle, Scope},
};
use http::StatusCode;
use std::{collections::BTreeMap, sync::Arc};
use tonic_types::{ErrorDetail, StatusExt};

/// Nanos per ten-thousandth of an ECU, at 1 USD per ECU.
const NANOS_PER_TEN_THOUSANDTH: i128 = 100_000;

async fn spawn_elastic(adjust: impl FnOnce(&mut Settings, &SandboxHandle)) -> TestApp {
    spawn_app_full(
        Arc::new(costd::clock::SystemClock),
        &[ProviderKind::Elastic],
        adjust,
    )
    .await
}

fn org_id(app: &TestApp, name: &str) -> &'static str {
    let dataset = app.sandbox.dataset().elastic();
    dataset
        .organizations()
        .iter()
        .find(|o| o.name.starts_with(name))
        .expect("seeded")
        .id
}

/// Expected nanos per key over `[from, to)`, summed from the sandbox's usage records.
fn expected<K: Ord>(
    app: &TestApp,
    org: &str,
    from: &str,
    to: &str,
    key: impl Fn(&costd::sandbox::ElasticUsage<'_>) -> Option<K>,
) -> BTreeMap<K, i128> {
    let dataset = app.sandbox.dataset().elastic();
    let org = dataset.organization(org_id(app, org)).expect("seeded");
    let mut sums = BTreeMap::new();
    for usage in dataset.usage(org, at(from), at(to)) {
        if let Some(k) = key(&usage) {
            *sums.entry(k).or_insert(0) +=
                i128::from(usage.total.ten_thousandths()) * NANOS_PER_TEN_THOUSANDTH;
        }
    }
    sums
}

fn total(report: &pb::CostReport) -> i128 {
    nanos(report.totals.as_ref().and_then(|t| t.billed_cost.as_ref()))
}

#[tokio::test]
async fn totals_for_one_period_agree_across_v1_v2_instances_items_and_daily_charts() {
    let app = spawn_elastic(|_, _| {}).await;
    let january = |group_by: &[pb::GroupBy], granularity, account: &str| {
        only_accounts(
            query("2026-01-01", "2026-02-01", group_by, granularity),
            &[account],
        )
    };

    let instances = app
        .get_costs(january(
            &[pb::GroupBy::Resource],
            pb::Granularity::None,
            "elastic-acme",
        ))
        .await
        .expect("answer");
    let items = app
        .get_costs(january(
            &[pb::GroupBy::Service],
            pb::Granularity::None,
            "elastic-acme",
        ))
        .await
        .expect("answer");
    let charts = app
        .get_costs(january(&[], pb::Granularity::Daily, "elastic-acme"))
        .await
        .expect("answer");
    let v1 = app
        .get_costs(january(
            &[pb::GroupBy::Resource],
            pb::Granularity::None,
            "elastic-acme-v1",
        ))
        .await
        .expect("answer");

    let everything: i128 = expected(&app, "Acme", "2026-01-01", "2026-02-01", |_| Some(()))
        .values()
        .sum();
    assert_eq!(total(&instances), everything);
    assert_eq!(total(&items), everything);
    assert_eq!(total(&charts), everything);
    assert_eq!(
        charts.rows.len(),
        31,
        "one row per day from the daily chart"
    );
    for report in [&instances, &items, &charts, &v1] {
        for result in &report.provider_results {
            assert_eq!(result.state, pb::ResultState::Ok as i32, "{result:?}");
            assert!(result.warnings.is_empty(), "{:?}", result.warnings);
        }
    }
    // v1 reports hosted deployments only; per deployment it agrees with v2.
    let deployments = expected(&app, "Acme", "2026-01-01", "2026-02-01", |u| {
        (u.instance.kind == ElasticInstanceKind::Deployment).then(|| u.instance.id.clone())
    });
    let per_resource = |report: &pb::CostReport| -> BTreeMap<String, i128> {
        report
            .rows
            .iter()
            .map(|r| (r.group_values[0].id.clone(), nanos(r.billed_cost.as_ref())))
            .collect()
    };
    assert_eq!(per_resource(&v1), deployments);
    let v2_deployments: BTreeMap<String, i128> = per_resource(&instances)
        .into_iter()
        .filter(|(id, _)| deployments.contains_key(id))
        .collect();
    assert_eq!(v2_deployments, deployments);
}

#[tokio::test]
async fn tenths_that_floats_get_wrong_are_summed_exactly() {
    let app = spawn_elastic(|_, _| {}).await;

    let report = app
        .get_costs(only_accounts(
            query(
                "2025-03-10",
                "2025-03-11",
                &[pb::GroupBy::Resource],
                pb::Granularity::Daily,
            ),
            &["elastic-acme"],
        ))
        .await
        .expect("answer");

    let snapshots = report
        .rows
        .iter()
        .find(|r| r.group_values[0].display_name == "archive-snapshots")
        .expect("the archive row");
    assert_eq!(
        nanos(snapshots.billed_cost.as_ref()),
        300_000_000,
        "0.1 + 0.2 ECU is exactly 0.3"
    );
    let expected_all: i128 = expected(&app, "Acme", "2025-03-10", "2025-03-11", |_| Some(()))
        .values()
        .sum();
    assert_eq!(total(&report), expected_all);
}

#[tokio::test]
async fn a_configured_ecu_rate_converts_exactly_and_records_keep_the_ecu_amount() {
    let app = spawn_elastic(|settings, _| {
        for account in &mut settings.accounts {
            if let AccountKind::Elastic(ElasticSettings { usd_per_ecu, .. }) = &mut account.kind {
                *usd_per_ecu = "0.97125".parse().expect("decimal");
            }
        }
    })
    .await;
    let asked = only_accounts(
        query(
            "2026-01-01",
            "2026-02-01",
            &[pb::GroupBy::Resource, pb::GroupBy::Sku],
            pb::Granularity::None,
        ),
        &["elastic-cobalt"],
    );

    let report = app.get_costs(asked.clone()).await.expect("answer");

    // ECU in ten-thousandths × 0.97125 (97125 hundred-thousandths) is exactly nanodollars.
    let expected_nanos: i128 = expected(&app, "Cobalt", "2026-01-01", "2026-02-01", |_| Some(()))
        .values()
        .sum::<i128>()
        / NANOS_PER_TEN_THOUSANDTH
        * 97_125;
    assert_eq!(total(&report), expected_nanos);
    let mut client = app.costs.clone();
    let records = client
        .list_cost_records(pb::ListCostRecordsRequest {
            query: Some(asked),
            page_size: 5,
            page_token: String::new(),
        })
        .await
        .expect("records")
        .into_inner()
        .records;
    let record = &records[0];
    assert_eq!(
        record.original_amount.as_ref().expect("original").unit,
        "ECU"
    );
    assert_eq!(record.extensions["x_usd_per_ecu"], "0.97125");
    assert!(!record.sku_id.is_empty());
}

#[tokio::test]
async fn group_by_deployment_sku_and_day_equal_the_seeded_data() {
    let app = spawn_elastic(|_, _| {}).await;

    let by_instance_and_sku = app
        .get_costs(only_accounts(
            query(
                "2026-02-01",
                "2026-03-01",
                &[pb::GroupBy::Resource, pb::GroupBy::Sku],
                pb::Granularity::Monthly,
            ),
            &["elastic-borealis"],
        ))
        .await
        .expect("answer");
    let by_day_and_sku = app
        .get_costs(only_accounts(
            query(
                "2026-02-01",
                "2026-02-05",
                &[pb::GroupBy::Sku],
                pb::Granularity::Daily,
            ),
            &["elastic-borealis"],
        ))
        .await
        .expect("answer");

    let answered = |report: &pb::CostReport, with_day: bool| -> BTreeMap<(String, String), i128> {
        let mut sums = BTreeMap::new();
        for row in &report.rows {
            let first = if with_day {
                chrono::DateTime::from_timestamp(
                    row.period_start.as_ref().expect("start").seconds,
                    0,
                )
                .expect("time")
                .date_naive()
                .to_string()
            } else {
                row.group_values[0].id.clone()
            };
            let sku = row.group_values.last().expect("sku").id.clone();
            let cost = nanos(row.billed_cost.as_ref());
            if cost != 0 {
                *sums.entry((first, sku)).or_insert(0) += cost;
            }
        }
        sums
    };
    let non_zero = |sums: BTreeMap<(String, String), i128>| {
        sums.into_iter()
            .filter(|(_, v)| *v != 0)
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        answered(&by_instance_and_sku, false),
        non_zero(expected(
            &app,
            "Borealis",
            "2026-02-01",
            "2026-03-01",
            |u| Some((u.instance.id.clone(), u.sku.sku.to_string()))
        ))
    );
    assert_eq!(
        answered(&by_day_and_sku, true),
        non_zero(expected(
            &app,
            "Borealis",
            "2026-02-01",
            "2026-02-05",
            |u| Some((u.start.date_naive().to_string(), u.sku.sku.to_string()))
        ))
    );
    assert_eq!(
        app.sandbox
            .request_count(&Scope::elastic(org_id(&app, "Borealis"))),
        1 + 4,
        "a month of instances, then 4 days"
    );
}

/// The gRPC code and ErrorInfo of a failed account.
fn failure(report: &pb::CostReport, account: &str) -> (tonic::Code, BTreeMap<String, String>) {
    let result = result_of(report, account);
    assert_eq!(result.state, pb::ResultState::Failed as i32, "{result:?}");
    let status = result.error.clone().expect("a status");
    let code = tonic::Code::from(status.code);
    let details = tonic::Status::with_details(
        code,
        status.message.clone(),
        prost::Message::encode_to_vec(&status).into(),
    )
    .get_error_details_vec();
    let info = details
        .into_iter()
        .find_map(|d| {
            if let ErrorDetail::ErrorInfo(info) = d {
                Some(info)
            } else {
                None
            }
        })
        .expect("ErrorInfo");
    assert_eq!(info.domain, "elastic");
    (code, info.metadata.into_iter().collect())
}

#[tokio::test]
async fn each_documented_error_fails_only_its_account_with_the_upstream_code() {
    let app = spawn_elastic(|settings, sandbox| {
        let dataset = sandbox.dataset().elastic();
        let borealis_key = dataset.organizations()[1].api_key.clone();
        for account in &mut settings.accounts {
            if let AccountKind::Elastic(ElasticSettings {
                api_key,
                organization_id,
                ..
            }) = &mut account.kind
            {
                match account.id.as_str() {
                    // Another organization's key on both APIs: refused.
                    "elastic-acme" | "elastic-acme-v1" => {
                        *api_key = secrecy::SecretString::from(borealis_key.clone())
                    }
                    "elastic-cobalt" => {
                        *organization_id = UpstreamId::parse("9999999999").expect("an id")
                    }
                    _ => {}
                }
            }
        }
    })
    .await;

    let report = app
        .get_costs(query(
            "2026-01-01",
            "2026-02-01",
            &[],
            pb::Granularity::None,
        ))
        .await
        .expect("answer");

    let (code, info) = failure(&report, "elastic-acme-v1");
    assert_eq!(
        (
            code,
            info["http_status"].as_str(),
            info["upstream_code"].as_str()
        ),
        (
            tonic::Code::PermissionDenied,
            "403",
            "organization.invalid_access"
        )
    );
    let (code, info) = failure(&report, "elastic-acme");
    assert_eq!(
        (code, info["http_status"].as_str()),
        (tonic::Code::PermissionDenied, "403")
    );
    let (code, info) = failure(&report, "elastic-cobalt");
    assert_eq!(
        (code, info["http_status"].as_str()),
        (tonic::Code::NotFound, "404")
    );
    assert_eq!(
        result_of(&report, "elastic-borealis").state,
        pb::ResultState::Ok as i32,
        "the others still answer"
    );
}

#[tokio::test]
async fn server_side_failures_and_broken_bodies_fail_only_their_account() {
    let app = spawn_elastic(|settings, _| settings.upstream.max_attempts = 1).await;
    let acme = Scope::elastic(org_id(&app, "Acme"));
    let cobalt = Scope::elastic(org_id(&app, "Cobalt"));
    let borealis = Scope::elastic(org_id(&app, "Borealis"));
    // The v2 acme account asks first (accounts are asked in id order), then v1 for the same org.
    app.sandbox.push_fault(
        &acme,
        Fault::Status {
            code: StatusCode::FAILED_DEPENDENCY,
            retry_after: None,
        },
    );
    app.sandbox.push_fault(
        &acme,
        Fault::Status {
            code: StatusCode::INTERNAL_SERVER_ERROR,
            retry_after: None,
        },
    );
    app.sandbox.push_fault(&cobalt, Fault::TruncatedBody);
    app.sandbox.push_fault(&borealis, Fault::InconsistentTotals);

    let report = app
        .get_costs(query(
            "2026-01-01",
            "2026-02-01",
            &[],
            pb::Granularity::None,
        ))
        .await
        .expect("answer");

    let failed: BTreeMap<&str, (tonic::Code, String)> = ["elastic-acme", "elastic-acme-v1"]
        .into_iter()
        .map(|account| {
            let (code, info) = failure(&report, account);
            (
                account,
                (
                    code,
                    info.get("upstream_code")
                        .cloned()
                        .unwrap_or_else(|| info["http_status"].clone()),
                ),
            )
        })
        .collect();
    let mut seen: Vec<(tonic::Code, String)> = failed.into_values().collect();
    seen.sort_by_key(|(code, _)| *code as i32);
    assert_eq!(
        seen,
        [
            (tonic::Code::Unavailable, "424".to_string()),
            (
                tonic::Code::Unavailable,
                "billing_service.failed_request".to_string()
            )
        ]
    );
    let (code, _) = failure(&report, "elastic-cobalt");
    assert_eq!(code, tonic::Code::Unknown, "a truncated body is malformed");
    let borealis_result = result_of(&report, "elastic-borealis");
    assert_eq!(borealis_result.state, pb::ResultState::Ok as i32);
    assert_eq!(
        borealis_result.warnings.len(),
        1,
        "{:?}",
        borealis_result.warnings
    );
    assert_eq!(borealis_result.warnings[0].code, "TOTAL_MISMATCH");
}

#[tokio::test]
async fn throttling_is_retried_after_the_upstreams_retry_after() {
    let app = spawn_elastic(|_, _| {}).await;
    let cobalt = Scope::elastic(org_id(&app, "Cobalt"));
    app.sandbox.push_fault(
        &cobalt,
        Fault::Status {
            code: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(1),
        },
    );

    let report = app
        .get_costs(only_accounts(
            query("2026-01-01", "2026-02-01", &[], pb::Granularity::None),
            &["elastic-cobalt"],
        ))
        .await
        .expect("answer");

    assert_eq!(
        result_of(&report, "elastic-cobalt").state,
        pb::ResultState::Ok as i32
    );
    let times: Vec<_> = app
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.scope == cobalt)
        .map(|r| r.received_at)
        .collect();
    assert_eq!(times.len(), 2);
    assert!(times[1].duration_since(times[0]) >= std::time::Duration::from_secs(1));
}

#[tokio::test]
async fn an_unknown_organization_a_bad_key_and_a_refused_request_keep_their_codes() {
    let app = spawn_elastic(|settings, _| {
        for account in &mut settings.accounts {
            if let AccountKind::Elastic(ElasticSettings {
                api_key,
                organization_id,
                ..
            }) = &mut account.kind
            {
                match account.id.as_str() {
                    "elastic-acme-v1" => {
                        *organization_id = UpstreamId::parse("1111111111").expect("an id")
                    }
                    "elastic-cobalt" => {
                        *api_key = secrecy::SecretString::from("ec_key_not_a_real_one")
                    }
                    _ => {}
                }
            }
        }
    })
    .await;
    app.sandbox.push_fault(
        &Scope::elastic(org_id(&app, "Borealis")),
        Fault::Status {
            code: StatusCode::BAD_REQUEST,
            retry_after: None,
        },
    );

    let report = app
        .get_costs(query(
            "2026-01-01",
            "2026-02-01",
            &[],
            pb::Granularity::None,
        ))
        .await
        .expect("answer");

    let (code, info) = failure(&report, "elastic-acme-v1");
    assert_eq!(
        (code, info["upstream_code"].as_str()),
        (tonic::Code::NotFound, "organization.not_found")
    );
    let (code, info) = failure(&report, "elastic-cobalt");
    assert_eq!(
        (code, info["http_status"].as_str()),
        (tonic::Code::PermissionDenied, "401")
    );
    let cobalt_error = result_of(&report, "elastic-cobalt")
        .error
        .clone()
        .expect("status");
    assert!(
        cobalt_error.message.contains("Unauthorized"),
        "v2's text/plain body is the message: {}",
        cobalt_error.message
    );
    let (code, _) = failure(&report, "elastic-borealis");
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert_eq!(
        result_of(&report, "elastic-acme").state,
        pb::ResultState::Ok as i32
    );
}

#[tokio::test]
async fn a_v1_refusal_of_the_date_range_keeps_its_code_and_header() {
    let app = spawn_elastic(|settings, _| {
        settings
            .accounts
            .retain(|a| a.id.as_str() == "elastic-acme-v1")
    })
    .await;
    app.sandbox.push_fault(
        &Scope::elastic(org_id(&app, "Acme")),
        Fault::Status {
            code: StatusCode::BAD_REQUEST,
            retry_after: None,
        },
    );

    let report = app
        .get_costs(query(
            "2026-01-01",
            "2026-02-01",
            &[],
            pb::Granularity::None,
        ))
        .await
        .expect("answer");

    let (code, info) = failure(&report, "elastic-acme-v1");
    assert_eq!(
        (code, info["upstream_code"].as_str()),
        (tonic::Code::InvalidArgument, "costs.invalid_date_range")
    );
}

#[tokio::test]
async fn daily_rows_for_one_instance_come_from_the_daily_chart_filtered_by_costd() {
    let app = spawn_elastic(|_, _| {}).await;
    let dataset = app.sandbox.dataset().elastic();
    let org = dataset.organization(org_id(&app, "Acme")).expect("seeded");
    let instance = org
        .instances
        .iter()
        .find(|i| i.name == "search-prod")
        .expect("seeded")
        .id
        .clone();
    let mut asked = only_accounts(
        query(
            "2026-03-01",
            "2026-03-08",
            &[pb::GroupBy::Resource],
            pb::Granularity::Daily,
        ),
        &["elastic-acme"],
    );
    asked.filter.get_or_insert_with(Default::default).resources = vec![instance.clone()];

    let report = app.get_costs(asked).await.expect("answer");

    let expected = expected(&app, "Acme", "2026-03-01", "2026-03-08", |u| {
        (u.instance.id == instance).then_some(())
    });
    assert_eq!(total(&report), expected.values().sum::<i128>());
    assert_eq!(report.rows.len(), 7, "one row per day");
    assert!(report.rows.iter().all(|r| r.group_values[0].id == instance));
    let asked_paths: Vec<String> = app.sandbox.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        asked_paths.len(),
        1,
        "one chart for the month: {asked_paths:?}"
    );
    // The organization's chart, not the instance's own: only the former says the instance's type,
    // which is its records' service whichever query reads them.
    assert!(
        asked_paths[0].ends_with(&format!("/organizations/{}/charts", org.id)),
        "{asked_paths:?}"
    );
}
