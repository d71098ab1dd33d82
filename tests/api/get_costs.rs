//! GetCosts answers team billing costs exactly as the sandbox's seeded data says.

use crate::helpers::*;
use costd::proto as pb;
use std::collections::BTreeMap;

#[tokio::test]
async fn totals_by_team_equal_the_seeded_usage_priced_independently() {
    let app = spawn_app().await;

    let report = app
        .get_costs(query(
            "2026-01-01",
            "2026-04-01",
            &[pb::GroupBy::BillingAccount],
            pb::Granularity::None,
        ))
        .await
        .expect("answer");

    let mut expected_total = 0;
    for (team, account) in [
        ("team_acme", "team-acme"),
        ("team_borealis", "team-borealis"),
        ("team_cobalt", "team-cobalt"),
    ] {
        let expected = app.expected_nanos(team, at("2026-01-01"), at("2026-04-01"));
        let row = report
            .rows
            .iter()
            .find(|r| r.group_values[0].id == team)
            .unwrap_or_else(|| panic!("a row for {team}"));
        assert_eq!(nanos(row.billed_cost.as_ref()), expected, "{team}");
        let result = result_of(&report, account);
        assert_eq!(result.state, pb::ResultState::Ok as i32);
        assert_eq!(nanos(result.billed_cost.as_ref()), expected);
        assert!(result.warnings.is_empty(), "{:?}", result.warnings);
        expected_total += expected;
    }
    let totals = report.totals.expect("totals");
    assert_eq!(nanos(totals.billed_cost.as_ref()), expected_total);
    assert!(totals.complete);
    assert_eq!(
        totals.covered_provider_accounts,
        ["team-acme", "team-borealis", "team-cobalt"]
    );
    // Three months per account, one upstream call each.
    assert_eq!(app.sandbox.request_count(&team_scope("team_acme")), 3);
    assert_eq!(app.sandbox.total_requests(), 9);
}

#[tokio::test]
async fn costs_by_operation_and_dimension_equal_the_seeded_usage() {
    let app = spawn_app().await;

    let report = app
        .get_costs(only_accounts(
            query(
                "2026-02-01",
                "2026-03-01",
                &[pb::GroupBy::Service, pb::GroupBy::ChargeDimension],
                pb::Granularity::None,
            ),
            &["team-cobalt"],
        ))
        .await
        .expect("answer");

    let expected = expected_by(
        &app.sandbox,
        "team_cobalt",
        at("2026-02-01"),
        at("2026-03-01"),
        |u| (u.operation.to_string(), u.dimension.to_string()),
    );
    let answered: BTreeMap<(String, String), i128> = report
        .rows
        .iter()
        .map(|r| {
            (
                (r.group_values[0].id.clone(), r.group_values[1].id.clone()),
                nanos(r.billed_cost.as_ref()),
            )
        })
        .collect();
    assert_eq!(answered, expected);
    assert_eq!(
        report.provider_results.len(),
        1,
        "only the filtered account is asked"
    );
    assert_eq!(app.sandbox.total_requests(), 1);
}

#[tokio::test]
async fn daily_costs_make_one_upstream_call_per_day_and_match_each_day() {
    let app = spawn_app().await;

    let report = app
        .get_costs(only_accounts(
            query("2026-03-28", "2026-04-03", &[], pb::Granularity::Daily),
            &["team-acme"],
        ))
        .await
        .expect("answer");

    let expected = expected_by(
        &app.sandbox,
        "team_acme",
        at("2026-03-28"),
        at("2026-04-03"),
        |u| u.hour.date_naive().to_string(),
    );
    let answered: BTreeMap<String, i128> = report
        .rows
        .iter()
        .map(|r| {
            let start = r.period_start.as_ref().expect("start");
            let day = chrono::DateTime::from_timestamp(start.seconds, 0)
                .expect("valid")
                .date_naive()
                .to_string();
            (day, nanos(r.billed_cost.as_ref()))
        })
        .collect();
    assert_eq!(answered, expected);
    assert_eq!(report.rows.len(), 6);
    assert_eq!(app.sandbox.request_count(&team_scope("team_acme")), 6);
    assert_eq!(result_of(&report, "team-acme").upstream_requests, 6);
}

#[tokio::test]
async fn a_partial_day_range_is_priced_over_exactly_those_hours() {
    let app = spawn_app().await;

    let report = app
        .get_costs(only_accounts(
            query(
                "2026-05-10T06:00:00Z",
                "2026-05-11T18:30:00Z",
                &[],
                pb::Granularity::Daily,
            ),
            &["team-borealis"],
        ))
        .await
        .expect("answer");

    let expected = app.expected_nanos(
        "team_borealis",
        at("2026-05-10T06:00:00Z"),
        at("2026-05-11T18:30:00Z"),
    );
    assert_eq!(
        nanos(report.totals.as_ref().and_then(|t| t.billed_cost.as_ref())),
        expected
    );
    let first = report.rows.first().expect("rows");
    assert_eq!(
        first.period_start,
        Some(timestamp("2026-05-10T06:00:00Z")),
        "buckets are clipped to the range"
    );
}

#[tokio::test]
async fn filters_by_service_keep_only_that_service() {
    let app = spawn_app().await;
    let mut asked = only_accounts(
        query(
            "2026-01-01",
            "2026-02-01",
            &[pb::GroupBy::Service],
            pb::Granularity::None,
        ),
        &["team-acme"],
    );
    asked.filter.get_or_insert_with(Default::default).services = vec!["storage".to_string()];

    let report = app.get_costs(asked).await.expect("answer");

    let expected = expected_by(
        &app.sandbox,
        "team_acme",
        at("2026-01-01"),
        at("2026-02-01"),
        |u| u.operation.to_string(),
    );
    assert_eq!(report.rows.len(), 1);
    assert_eq!(report.rows[0].group_values[0].id, "storage");
    assert_eq!(
        nanos(report.rows[0].billed_cost.as_ref()),
        expected["storage"]
    );
}

#[tokio::test]
async fn upstream_calls_for_the_days_of_one_query_run_concurrently() {
    let app = spawn_app().await;
    // Every request hangs: all seven can only be in flight together if they were sent concurrently.
    app.sandbox
        .set_persistent_fault(&team_scope("team_acme"), costd::sandbox::Fault::Hang);
    let mut client = app.costs.clone();
    let mut request = tonic::Request::new(pb::GetCostsRequest {
        query: Some(only_accounts(
            query("2026-06-01", "2026-06-08", &[], pb::Granularity::Daily),
            &["team-acme"],
        )),
    });
    request.set_timeout(std::time::Duration::from_secs(30));
    let call = tokio::spawn(async move { client.get_costs(request).await });

    within(app.sandbox.wait_for_requests(&team_scope("team_acme"), 7)).await;

    app.sandbox.shutdown().await;
    let report = within(call)
        .await
        .expect("joins")
        .expect("answer")
        .into_inner()
        .report
        .expect("report");
    assert_eq!(
        result_of(&report, "team-acme").state,
        pb::ResultState::Failed as i32
    );
}

#[tokio::test]
async fn list_providers_describes_each_account_and_its_recent_health() {
    let app = spawn_app().await;
    let mut client = app.costs.clone();
    let before = client
        .list_providers(pb::ListProvidersRequest {})
        .await
        .expect("answer")
        .into_inner();
    assert_eq!(
        before
            .provider_accounts
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>(),
        ["team-acme", "team-borealis", "team-cobalt"]
    );
    let acme = &before.provider_accounts[0];
    assert_eq!(acme.display_name, "Acme Analytics");
    assert_eq!(acme.provider, pb::ProviderKind::TeamBilling as i32);
    let capabilities = acme.capabilities.as_ref().expect("capabilities");
    assert_eq!(capabilities.native_unit, "nanodollar");
    assert!(!capabilities.asynchronous);
    assert_eq!(
        acme.health.as_ref().expect("health").state,
        pb::HealthState::Unspecified as i32
    );

    app.sandbox.push_fault(
        &team_scope("team_borealis"),
        costd::sandbox::Fault::Status {
            code: http::StatusCode::FORBIDDEN,
            retry_after: None,
        },
    );
    app.get_costs(query(
        "2026-01-01",
        "2026-02-01",
        &[],
        pb::Granularity::None,
    ))
    .await
    .expect("answer");

    let after = client
        .list_providers(pb::ListProvidersRequest {})
        .await
        .expect("answer")
        .into_inner();
    let health = |i: usize| after.provider_accounts[i].health.clone().expect("health");
    assert_eq!(health(0).state, pb::HealthState::Healthy as i32);
    assert!(health(0).last_success_time.is_some());
    assert_eq!(health(1).state, pb::HealthState::Failing as i32);
    assert_eq!(health(1).consecutive_failures, 1);
    assert_eq!(
        health(1).last_error.expect("error").code,
        tonic::Code::PermissionDenied as i32
    );
}
