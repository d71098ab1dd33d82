//! Bad input gets one INVALID_ARGUMENT listing every violation, and costs no upstream call.

use crate::helpers::*;
use costd::proto as pb;
use tonic_types::StatusExt;

#[tokio::test]
async fn a_query_with_several_bad_fields_lists_every_violation() {
    let app = spawn_app().await;
    let bad = pb::CostQuery {
        start_time: Some(timestamp("2026-03-01")),
        end_time: Some(timestamp("2026-02-01")),
        filter: Some(pb::CostFilter {
            providers: vec![pb::ProviderKind::Unspecified as i32],
            provider_accounts: vec!["team-acme".to_string(), "nobody".to_string()],
            services: vec![String::new()],
            ..Default::default()
        }),
        group_by: vec![
            pb::GroupBy::Service as i32,
            pb::GroupBy::Unspecified as i32,
            pb::GroupBy::Service as i32,
        ],
        granularity: 42,
        max_staleness: Some(prost_types::Duration {
            seconds: -5,
            nanos: 0,
        }),
    };

    let status = app.get_costs(bad).await.expect_err("refused");

    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        [
            "query.end_time",
            "query.filter.providers[0]",
            "query.filter.provider_accounts[1]",
            "query.filter.services[0]",
            "query.group_by[1]",
            "query.group_by[2]",
            "query.granularity",
            "query.max_staleness",
        ]
    );
    assert_eq!(
        app.sandbox.total_requests(),
        0,
        "nothing was asked upstream"
    );
}

#[tokio::test]
async fn missing_query_and_missing_times_are_violations() {
    let app = spawn_app().await;
    let mut client = app.costs.clone();

    let no_query = client
        .get_costs(pb::GetCostsRequest { query: None })
        .await
        .expect_err("refused");
    let no_times = app
        .get_costs(pb::CostQuery::default())
        .await
        .expect_err("refused");

    assert_eq!(
        no_query
            .get_details_bad_request()
            .expect("details")
            .field_violations[0]
            .field,
        "query"
    );
    let fields: Vec<String> = no_times
        .get_details_bad_request()
        .expect("details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["query.start_time", "query.end_time"]);
}

#[tokio::test]
async fn a_range_beyond_the_limit_names_the_limit() {
    let app = spawn_app_with(|s| s.server.max_range_days = 31).await;

    let status = app
        .get_costs(query(
            "2026-01-01",
            "2026-03-01",
            &[],
            pb::Granularity::None,
        ))
        .await
        .expect_err("refused");

    let violation = &status
        .get_details_bad_request()
        .expect("details")
        .field_violations[0];
    assert_eq!(violation.field, "query.end_time");
    assert!(
        violation.description.contains("at most 31 days"),
        "{}",
        violation.description
    );
}
