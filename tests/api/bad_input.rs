//! Input no well-behaved client sends: bytes that are no message, messages over the size limit,
//! thousands of violations at once, instants and durations outside what protobuf (or an upstream)
//! can express. Each gets a clear, bounded error and costs no upstream call.

use crate::helpers::*;
use bytes::Bytes;
use costd::{domain::ProviderKind, proto as pb};
use std::sync::Arc;
use tonic_types::StatusExt;

const UNARY_METHODS: &[&str] = &[
    "/costd.v1.CostService/GetCosts",
    "/costd.v1.CostService/ListCostRecords",
    "/costd.v1.CostService/ListProviders",
    "/costd.v1.QueryJobService/StartQuery",
    "/costd.v1.QueryJobService/GetJob",
    "/costd.v1.QueryJobService/ListJobs",
    "/costd.v1.QueryJobService/CancelJob",
];
const WATCH_JOB: &str = "/costd.v1.QueryJobService/WatchJob";

/// Bytes that no message type decodes, each for its own reason.
fn undecodable() -> Vec<(&'static str, Vec<u8>)> {
    let mut deep = vec![0x7b; 200]; // field 15 opens a group, 200 deep,
    deep.extend(vec![0x7c; 200]); // and every group is closed again
    vec![
        ("a truncated varint", vec![0x0a, 0xff]),
        ("wire type 7", vec![0x0f, 0x01]),
        ("groups nested past the recursion limit", deep),
    ]
}

async fn call_raw(app: &TestApp, path: &'static str, bytes: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    within(grpc.ready()).await.expect("ready");
    let path = http::uri::PathAndQuery::from_static(path);
    let request = tonic::Request::new(Bytes::from(bytes));
    let answer = match path.as_str() == WATCH_JOB {
        true => within(grpc.server_streaming(request, path, RawCodec))
            .await
            .map(|_| ()),
        false => within(grpc.unary(request, path, RawCodec))
            .await
            .map(|_| ()),
    };
    answer.expect_err("refused")
}

fn assert_undecodable(status: &tonic::Status, what: &str) {
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{what}: {status:?}"
    );
    let violations = status.get_details_bad_request().expect("BadRequest");
    assert_eq!(violations.field_violations[0].field, "request", "{what}");
    assert!(
        status.message().contains("not a valid protobuf message"),
        "{what}: {}",
        status.message()
    );
}

#[tokio::test]
async fn bytes_that_are_no_request_are_an_invalid_argument_on_every_method() {
    let app = spawn_app().await;
    for path in UNARY_METHODS.iter().chain([&WATCH_JOB]) {
        for (what, bytes) in undecodable() {
            let status = call_raw(&app, path, bytes).await;
            assert_undecodable(&status, &format!("{path}, {what}"));
        }
    }
    // A string field (name, or page_token) that is not UTF-8.
    for (path, field) in [
        ("/costd.v1.QueryJobService/GetJob", 0x0a),
        ("/costd.v1.QueryJobService/CancelJob", 0x0a),
        (WATCH_JOB, 0x0a),
        ("/costd.v1.QueryJobService/ListJobs", 0x1a),
        ("/costd.v1.CostService/ListCostRecords", 0x1a),
    ] {
        let status = call_raw(&app, path, vec![field, 0x02, 0xff, 0xfe]).await;
        assert_undecodable(&status, &format!("{path}, invalid UTF-8"));
    }
    assert_eq!(app.sandbox.total_requests(), 0, "nothing went upstream");
}

#[tokio::test]
async fn a_request_over_the_size_limit_is_resource_exhausted_naming_the_limit() {
    let app = spawn_app_with(|settings| settings.server.max_request_bytes = 1_024).await;
    let mut big = query(
        "2026-09-01",
        "2026-10-01",
        &[pb::GroupBy::Service],
        pb::Granularity::Monthly,
    );
    big.filter = Some(pb::CostFilter {
        services: vec!["s".repeat(2_000)],
        ..Default::default()
    });
    let mut jobs = pb::query_job_service_client::QueryJobServiceClient::new(app.channel.clone());
    let refusals = [
        app.get_costs(big.clone()).await.expect_err("refused"),
        within(jobs.start_query(pb::StartQueryRequest {
            query: Some(big.clone()),
        }))
        .await
        .expect_err("refused"),
        within(jobs.get_job(pb::GetJobRequest {
            name: format!("jobs/{}", "x".repeat(2_000)),
        }))
        .await
        .expect_err("refused"),
    ];
    for status in refusals {
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("1024 bytes"),
            "{}",
            status.message()
        );
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "REQUEST_TOO_LARGE");
        assert_eq!(info.metadata["limit"], "server.max_request_bytes");
        assert_eq!(info.metadata["allowed"], "1024");
    }
    // Under the limit, the same server answers.
    app.get_costs(query(
        "2026-09-01",
        "2026-10-01",
        &[pb::GroupBy::Service],
        pb::Granularity::Monthly,
    ))
    .await
    .expect("a small request is answered");
}

#[tokio::test]
async fn ten_thousand_violations_answer_a_bounded_error_that_counts_the_rest() {
    let app = spawn_app().await;
    let mut bad = query("2026-09-01", "2026-10-01", &[], pb::Granularity::None);
    bad.filter = Some(pb::CostFilter {
        // Long ids too: an echoed value is shortened.
        provider_accounts: (0..10_000)
            .map(|i| format!("nobody-{i}-{}", "é".repeat(100)))
            .collect(),
        ..Default::default()
    });

    let status = app.get_costs(bad).await.expect_err("refused");

    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // What travels in the trailers: the details base64-encoded, the message percent-encoded.
    let details_on_wire = status.details().len().div_ceil(3) * 4;
    let message_on_wire: usize = status
        .message()
        .chars()
        .map(|c| if c.is_ascii() { 1 } else { 3 * c.len_utf8() })
        .sum();
    assert!(
        details_on_wire + message_on_wire <= 8 * 1024,
        "{details_on_wire} + {message_on_wire} bytes of error metadata"
    );
    assert!(
        status
            .message()
            .starts_with("invalid request (10000 violations): "),
        "{}",
        status.message()
    );
    let violations = status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations;
    assert_eq!(
        violations[0].field, "query.filter.provider_accounts[0]",
        "the first violations are listed"
    );
    let listed = violations.len() - 1;
    assert!(listed >= 10, "only {listed} listed");
    let rest = violations.last().expect("a last violation");
    assert_eq!(rest.field, "request");
    assert_eq!(
        rest.description,
        format!("{} more violations are not listed", 10_000 - listed)
    );
    assert_eq!(app.sandbox.total_requests(), 0);
}

fn violation_fields(status: &tonic::Status) -> Vec<(String, String)> {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect()
}

#[tokio::test]
async fn instants_and_durations_outside_their_range_are_violations() {
    let app = spawn_app().await;
    let in_range = || query("2026-09-01", "2026-10-01", &[], pb::Granularity::None);
    let ts = |seconds: i64, nanos: i32| Some(prost_types::Timestamp { seconds, nanos });
    let cases: Vec<(&str, pb::CostQuery, &str)> = vec![
        (
            "after 9999-12-31",
            pb::CostQuery {
                end_time: ts(253_402_300_800, 0),
                ..in_range()
            },
            "query.end_time",
        ),
        (
            "before 0001-01-01",
            pb::CostQuery {
                start_time: ts(-62_135_596_801, 0),
                ..in_range()
            },
            "query.start_time",
        ),
        (
            "nanos of a leap second",
            pb::CostQuery {
                start_time: ts(1_788_220_800, 1_500_000_000),
                ..in_range()
            },
            "query.start_time",
        ),
        (
            "negative nanos",
            pb::CostQuery {
                start_time: ts(1_788_220_800, -1),
                ..in_range()
            },
            "query.start_time",
        ),
        (
            "before the epoch",
            pb::CostQuery {
                start_time: Some(timestamp("1969-12-01")),
                end_time: Some(timestamp("1970-01-02")),
                ..in_range()
            },
            "query.start_time",
        ),
        (
            "December 9999, whose month ends in year 10000",
            pb::CostQuery {
                start_time: Some(timestamp("9999-12-01")),
                end_time: Some(timestamp("9999-12-31")),
                ..in_range()
            },
            "query.end_time",
        ),
        (
            "a duration's nanos and seconds of two signs",
            pb::CostQuery {
                max_staleness: Some(prost_types::Duration {
                    seconds: 5,
                    nanos: -1,
                }),
                ..in_range()
            },
            "query.max_staleness",
        ),
        (
            "a duration of more than 10,000 years",
            pb::CostQuery {
                max_staleness: Some(prost_types::Duration {
                    seconds: 315_576_000_001,
                    nanos: 0,
                }),
                ..in_range()
            },
            "query.max_staleness",
        ),
        (
            "a duration's nanos of more than a second",
            pb::CostQuery {
                max_staleness: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 1_000_000_000,
                }),
                ..in_range()
            },
            "query.max_staleness",
        ),
    ];
    for (what, bad, field) in cases {
        let status = app.get_costs(bad).await.expect_err(what);
        let fields = violation_fields(&status);
        assert_eq!(fields.len(), 1, "{what}: {fields:?}");
        assert_eq!(fields[0].0, field, "{what}: {fields:?}");
    }
    assert_eq!(app.sandbox.total_requests(), 0);
}

#[tokio::test]
async fn the_last_month_costd_answers_for_reaches_every_upstream_with_four_digit_years() {
    let app = spawn_app_full(
        Arc::new(costd::clock::SystemClock),
        &[
            ProviderKind::TeamBilling,
            ProviderKind::Elastic,
            ProviderKind::Atlas,
        ],
        |_, _| {},
    )
    .await;

    let report = app
        .get_costs(query(
            "9999-11-01",
            "9999-12-01",
            &[pb::GroupBy::BillingAccount],
            pb::Granularity::Monthly,
        ))
        .await
        .expect("November 9999 is answerable");

    for result in &report.provider_results {
        assert_ne!(
            result.state,
            pb::ResultState::Failed as i32,
            "{}: {:?}",
            result.provider_account,
            result.error
        );
    }
    let requests = app.sandbox.requests();
    assert!(!requests.is_empty());
    for request in requests {
        let sent = format!("{}?{}", request.path, request.query.unwrap_or_default());
        assert!(!sent.contains("10000"), "{sent}");
    }
}
