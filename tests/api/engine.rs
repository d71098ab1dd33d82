//! The query engine through the real server: one fetch per chunk however many ask, only missing months
//! fetched, stale data served (and marked) when a refresh fails, settled months kept longer than open
//! ones, drill-down pages, and limits. Sandbox counters are the truth; the clock is injected.

use crate::helpers::*;
use costd::{clock::ManualClock, proto as pb, sandbox::Fault};
use http::StatusCode;
use std::{collections::HashSet, sync::Arc, time::Duration};
use tonic_types::StatusExt;

fn months(from: &str, to: &str, accounts: &[&str]) -> pb::CostQuery {
    only_accounts(
        query(
            from,
            to,
            &[pb::GroupBy::BillingAccount, pb::GroupBy::Service],
            pb::Granularity::Monthly,
        ),
        accounts,
    )
}

/// The `startDate`s the sandbox was asked for, for one team.
fn asked_months(app: &TestApp, team: &str) -> Vec<String> {
    let mut starts: Vec<String> = app
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.scope == team_scope(team))
        .filter_map(|r| r.query)
        .filter_map(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("startDate=").map(|v| v[..7].to_string()))
        })
        .collect();
    starts.sort();
    starts
}

#[tokio::test]
async fn a_hundred_identical_cold_queries_make_one_upstream_call_per_chunk() {
    let app = spawn_app().await;
    // Slow first answers, so all hundred callers arrive while the fetches are still running.
    for team in ["team_acme", "team_borealis", "team_cobalt"] {
        for _ in 0..3 {
            app.sandbox.push_fault(
                &team_scope(team),
                Fault::Latency(Duration::from_millis(300)),
            );
        }
    }
    let asked = query(
        "2026-01-01",
        "2026-04-01",
        &[pb::GroupBy::BillingAccount],
        pb::Granularity::Monthly,
    );

    let calls = (0..100).map(|_| {
        let mut client = app.costs.clone();
        let asked = asked.clone();
        tokio::spawn(async move {
            client
                .get_costs(pb::GetCostsRequest { query: Some(asked) })
                .await
        })
    });
    let reports: Vec<pb::CostReport> = within(futures::future::join_all(calls))
        .await
        .into_iter()
        .map(|joined| {
            joined
                .expect("joins")
                .expect("answer")
                .into_inner()
                .report
                .expect("report")
        })
        .collect();

    assert_eq!(
        app.sandbox.total_requests(),
        9,
        "3 accounts × 3 months, each fetched once"
    );
    let first = &reports[0];
    for report in &reports {
        assert_eq!(report.rows, first.rows);
        assert_eq!(report.totals, first.totals);
    }
    assert!(first.totals.as_ref().expect("totals").complete);
}

#[tokio::test]
async fn a_caller_that_gives_up_does_not_abort_the_fetch_the_others_wait_for() {
    let app = spawn_app().await;
    app.sandbox.push_fault(
        &team_scope("team_acme"),
        Fault::Latency(Duration::from_millis(400)),
    );
    let asked = months("2026-01-01", "2026-02-01", &["team-acme"]);
    let call = |asked: pb::CostQuery| {
        let mut client = app.costs.clone();
        tokio::spawn(async move {
            client
                .get_costs(pb::GetCostsRequest { query: Some(asked) })
                .await
        })
    };
    let leader = call(asked.clone());
    let followers: Vec<_> = (0..99).map(|_| call(asked.clone())).collect();
    within(app.sandbox.wait_for_requests(&team_scope("team_acme"), 1)).await;

    leader.abort();
    let answers = within(futures::future::join_all(followers)).await;

    for answer in answers {
        let report = answer
            .expect("joins")
            .expect("answer")
            .into_inner()
            .report
            .expect("report");
        assert_eq!(
            result_of(&report, "team-acme").state,
            pb::ResultState::Ok as i32
        );
    }
    let calls = app.sandbox.request_count(&team_scope("team_acme"));
    assert!(
        calls <= 2,
        "the leader leaving never restarts the work for those already waiting: {calls} calls"
    );
}

#[tokio::test]
async fn a_longer_range_fetches_only_the_months_not_yet_cached() {
    let app = spawn_app().await;

    let first = app
        .get_costs(months("2026-01-01", "2026-04-01", &["team-acme"]))
        .await
        .expect("answer");
    let second = app
        .get_costs(months("2026-01-01", "2026-07-01", &["team-acme"]))
        .await
        .expect("answer");

    assert_eq!(
        asked_months(&app, "team_acme"),
        [
            "2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06"
        ]
    );
    assert!(!result_of(&first, "team-acme").from_cache);
    assert_eq!(result_of(&second, "team-acme").upstream_requests, 3);
    assert_eq!(
        nanos(second.totals.as_ref().and_then(|t| t.billed_cost.as_ref())),
        app.expected_nanos("team_acme", at("2026-01-01"), at("2026-07-01"))
    );
    let third = app
        .get_costs(months("2026-02-01", "2026-06-01", &["team-acme"]))
        .await
        .expect("answer");
    assert!(
        result_of(&third, "team-acme").from_cache,
        "every month of it was cached"
    );
    assert_eq!(result_of(&third, "team-acme").upstream_requests, 0);
}

#[tokio::test]
async fn cold_queries_over_several_providers_run_concurrently() {
    let app = spawn_app().await;
    for team in ["team_acme", "team_borealis", "team_cobalt"] {
        app.sandbox
            .set_persistent_fault(&team_scope(team), Fault::Hang);
    }
    let mut client = app.costs.clone();
    let mut request = tonic::Request::new(pb::GetCostsRequest {
        query: Some(query(
            "2026-01-01",
            "2026-02-01",
            &[],
            pb::Granularity::None,
        )),
    });
    request.set_timeout(Duration::from_secs(20));
    let call = tokio::spawn(async move { client.get_costs(request).await });

    // All three are in flight at once only if no account waited for another.
    within(app.sandbox.wait_for_total_requests(3)).await;

    app.sandbox.shutdown().await;
    within(call)
        .await
        .expect("joins")
        .expect("an answer, every account failed");
}

/// A manual clock in late November 2026: October is settled; November, which ends in the future, is open.
fn november_20() -> ManualClock {
    ManualClock::new(at("2026-11-20T00:00:00Z"))
}

#[tokio::test]
async fn settled_months_stay_cached_longer_than_the_open_month() {
    let clock = november_20();
    let app = spawn_app_on(Arc::new(clock.clone()), |_| {}).await;
    let asked = months("2026-10-01", "2026-12-01", &["team-acme"]);

    let first = app.get_costs(asked.clone()).await.expect("answer");
    clock.advance(chrono::Duration::minutes(10));
    let second = app.get_costs(asked.clone()).await.expect("answer");
    clock.advance(chrono::Duration::hours(7));
    app.get_costs(asked).await.expect("answer");

    // Cold: Oct and Nov. After 10 min: Nov only (open TTL 5 min). After 7 h more: both (settled TTL 6 h).
    assert_eq!(
        asked_months(&app, "team_acme"),
        ["2026-10", "2026-10", "2026-11", "2026-11", "2026-11"]
    );
    assert_eq!(result_of(&second, "team-acme").upstream_requests, 1);
    let estimated: Vec<(String, bool)> = first
        .rows
        .iter()
        .map(|r| {
            (
                r.period_start
                    .as_ref()
                    .map(|t| t.seconds.to_string())
                    .unwrap_or_default(),
                r.estimated,
            )
        })
        .collect();
    assert!(
        estimated.iter().any(|(_, e)| *e) && estimated.iter().any(|(_, e)| !*e),
        "{estimated:?}"
    );
    for row in &first.rows {
        let november = row.period_start == Some(timestamp("2026-11-01"));
        assert_eq!(row.estimated, november, "only the open month is estimated");
    }
}

#[tokio::test]
async fn a_failed_refresh_serves_the_cached_data_marked_stale_with_its_age() {
    let clock = november_20();
    let app = spawn_app_on(Arc::new(clock.clone()), |s| s.upstream.max_attempts = 2).await;
    let asked = query("2026-11-01", "2026-12-01", &[], pb::Granularity::None);
    let fresh = app.get_costs(asked.clone()).await.expect("answer");
    assert_eq!(
        result_of(&fresh, "team-acme").state,
        pb::ResultState::Ok as i32
    );
    clock.advance(chrono::Duration::minutes(10));
    app.sandbox.set_persistent_fault(
        &team_scope("team_acme"),
        Fault::Status {
            code: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    );

    let stale = app.get_costs(asked.clone()).await.expect("answer");
    let mut strict = asked.clone();
    strict.max_staleness = Some(prost_types::Duration {
        seconds: 60,
        nanos: 0,
    });
    let refused = app.get_costs(strict).await.expect("answer");

    let acme = result_of(&stale, "team-acme");
    assert_eq!(acme.state, pb::ResultState::Stale as i32);
    assert_eq!(
        acme.staleness,
        Some(prost_types::Duration {
            seconds: 600,
            nanos: 0
        })
    );
    assert_eq!(
        tonic::Code::from(acme.error.as_ref().expect("the refresh's error").code),
        tonic::Code::Unavailable
    );
    assert_eq!(
        nanos(acme.billed_cost.as_ref()),
        nanos(result_of(&fresh, "team-acme").billed_cost.as_ref())
    );
    let totals = stale.totals.expect("totals");
    assert!(
        totals
            .covered_provider_accounts
            .contains(&"team-acme".to_string()),
        "stale data is in the totals"
    );
    assert_eq!(
        result_of(&refused, "team-acme").state,
        pb::ResultState::Failed as i32,
        "older than max_staleness"
    );
    assert_eq!(
        result_of(&refused, "team-borealis").state,
        pb::ResultState::Ok as i32
    );

    clock.advance(chrono::Duration::hours(25));
    let expired = app.get_costs(asked).await.expect("answer");
    assert_eq!(
        result_of(&expired, "team-acme").state,
        pb::ResultState::Failed as i32,
        "past the stale grace"
    );
}

#[tokio::test]
async fn walking_every_page_returns_each_record_exactly_once() {
    let app = spawn_app().await;
    let asked = query("2026-01-01", "2026-03-01", &[], pb::Granularity::Monthly);
    let report = app.get_costs(asked.clone()).await.expect("answer");
    let mut client = app.costs.clone();
    let mut token = String::new();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_cost_records(pb::ListCostRecordsRequest {
                query: Some(asked.clone()),
                page_size: 7,
                page_token: token,
            })
            .await
            .expect("a page")
            .into_inner();
        assert!(page.records.len() <= 7);
        seen.extend(page.records);
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }

    let totals = report.totals.expect("totals");
    assert_eq!(seen.len() as i64, totals.record_count);
    assert!(pages > 2);
    let distinct: HashSet<String> = seen.iter().map(|r| format!("{r:?}")).collect();
    assert_eq!(distinct.len(), seen.len(), "no record twice");
    assert_eq!(
        seen.iter()
            .map(|r| nanos(r.billed_cost.as_ref()))
            .sum::<i128>(),
        nanos(totals.billed_cost.as_ref())
    );
    assert_eq!(
        app.sandbox.total_requests(),
        6,
        "pages are served from the cached chunks"
    );
    let first = &seen[0];
    assert_eq!(
        first.original_amount.as_ref().expect("original").unit,
        "nanodollar"
    );
    assert!(first.extensions.contains_key("x_pricing_rule_id"));
}

#[tokio::test]
async fn a_tampered_or_foreign_page_token_is_refused() {
    let app = spawn_app().await;
    let asked = query("2026-01-01", "2026-02-01", &[], pb::Granularity::None);
    let mut client = app.costs.clone();
    let first = client
        .list_cost_records(pb::ListCostRecordsRequest {
            query: Some(asked.clone()),
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("a page")
        .into_inner();
    let token = first.next_page_token;
    let mut tampered = token.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let other_query = query("2026-01-01", "2026-03-01", &[], pb::Granularity::None);

    for (asked, token) in [
        (asked.clone(), String::from_utf8(tampered).expect("ascii")),
        (other_query, token),
    ] {
        let status = client
            .list_cost_records(pb::ListCostRecordsRequest {
                query: Some(asked),
                page_size: 2,
                page_token: token,
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status
                .get_details_bad_request()
                .expect("details")
                .field_violations[0]
                .field,
            "page_token"
        );
    }
}

#[tokio::test]
async fn queries_beyond_the_limits_name_the_limit() {
    let app = spawn_app_with(|s| {
        s.server.max_chunks_per_query = 10;
        s.server.max_rows = 3;
    })
    .await;

    let too_many_chunks = app
        .get_costs(query(
            "2026-01-01",
            "2026-01-31",
            &[],
            pb::Granularity::Daily,
        ))
        .await
        .expect_err("refused");
    let too_many_rows = app
        .get_costs(only_accounts(
            query(
                "2026-01-01",
                "2026-02-01",
                &[pb::GroupBy::Service],
                pb::Granularity::None,
            ),
            &["team-acme"],
        ))
        .await
        .expect_err("refused");

    for (status, limit) in [
        (too_many_chunks, "server.max_chunks_per_query"),
        (too_many_rows, "server.max_rows"),
    ] {
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains(limit), "{}", status.message());
        assert_eq!(
            status.get_details_error_info().expect("ErrorInfo").metadata["limit"],
            limit
        );
    }
    assert_eq!(
        app.sandbox.total_requests(),
        1,
        "the chunk limit is checked before any call"
    );
}
