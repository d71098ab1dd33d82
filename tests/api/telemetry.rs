//! Traces continue the caller's trace upstream, every upstream request has its span, and no credential
//! appears in any log line, span or error.

use crate::helpers::*;
use costd::{
    config::{AccountKind, TeamBillingSettings},
    proto as pb,
};
use opentelemetry::{
    Value,
    trace::{SpanKind, TraceId},
};
use secrecy::SecretString;

const CALLER_SPAN_ID: u64 = 0x1234_5678_9abc_def0;

fn traced_request(query: pb::CostQuery, trace_id: u128) -> tonic::Request<pb::GetCostsRequest> {
    let mut request = tonic::Request::new(pb::GetCostsRequest { query: Some(query) });
    let traceparent = format!("00-{trace_id:032x}-{CALLER_SPAN_ID:016x}-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ascii"));
    request
}

#[tokio::test]
async fn every_upstream_request_has_a_client_span_in_the_callers_trace() {
    let app = spawn_app().await;
    let trace_id: u128 = rand::random::<u128>() | 1;
    app.sandbox.push_fault(
        &team_scope("team_acme"),
        costd::sandbox::Fault::Status {
            code: http::StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    );
    let mut client = app.costs.clone();

    client
        .get_costs(traced_request(
            only_accounts(
                query("2026-01-01", "2026-03-01", &[], pb::Granularity::Monthly),
                &["team-acme"],
            ),
            trace_id,
        ))
        .await
        .expect("answer");

    let recorded = app.sandbox.requests();
    assert_eq!(recorded.len(), 3, "two months, one of them retried once");
    for request in &recorded {
        let traceparent = request
            .traceparent
            .as_deref()
            .expect("traceparent sent upstream");
        assert!(
            traceparent.contains(&format!("{trace_id:032x}")),
            "{traceparent}"
        );
    }
    let spans: Vec<_> = captured()
        .spans()
        .into_iter()
        .filter(|s| {
            s.span_context.trace_id() == TraceId::from(trace_id) && s.span_kind == SpanKind::Client
        })
        .collect();
    assert_eq!(spans.len(), recorded.len(), "one span per upstream request");
    let attribute = |span: &opentelemetry_sdk::trace::SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    };
    let mut statuses = Vec::new();
    let mut resends = Vec::new();
    for span in &spans {
        assert_eq!(span.name, "GET /teams/{teamId}/billing/cost");
        assert_eq!(
            attribute(span, "http.request.method"),
            Some(Value::from("GET"))
        );
        assert_eq!(
            attribute(span, "url.template"),
            Some(Value::from("/teams/{teamId}/billing/cost"))
        );
        assert_eq!(
            attribute(span, "server.address"),
            Some(Value::from("127.0.0.1"))
        );
        assert_eq!(
            attribute(span, "costd.provider"),
            Some(Value::from("team_billing"))
        );
        assert_eq!(
            attribute(span, "costd.account"),
            Some(Value::from("team-acme"))
        );
        statuses.push(attribute(span, "http.response.status_code"));
        resends.push(attribute(span, "http.request.resend_count"));
    }
    let rpc = captured()
        .spans()
        .into_iter()
        .find(|s| {
            s.span_context.trace_id() == TraceId::from(trace_id) && s.span_kind == SpanKind::Server
        })
        .expect("the RPC's own span, ended before its answer was sent");
    assert_eq!(rpc.name, "costd.v1.CostService/GetCosts");
    assert_eq!(
        rpc.parent_span_id,
        opentelemetry::trace::SpanId::from(CALLER_SPAN_ID),
        "it continues the caller's span"
    );
    assert_eq!(attribute(&rpc, "rpc.method"), Some(Value::from("GetCosts")));
    statuses.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(
        statuses,
        [
            Some(Value::I64(200)),
            Some(Value::I64(200)),
            Some(Value::I64(503))
        ]
    );
    assert_eq!(
        resends
            .iter()
            .filter(|r| **r == Some(Value::I64(1)))
            .count(),
        1,
        "the retry says it is one"
    );
}

#[tokio::test]
async fn no_credential_appears_in_logs_spans_or_errors() {
    let wrong_token = format!("cat_tok_wrong{:016x}", rand::random::<u64>());
    let app = spawn_app_with(|settings| {
        let account = settings
            .accounts
            .iter_mut()
            .find(|a| a.id.as_str() == "team-cobalt")
            .expect("configured");
        let AccountKind::TeamBilling(TeamBillingSettings { token, .. }) = &mut account.kind else {
            panic!("a team billing account")
        };
        *token = SecretString::from(wrong_token.clone());
    })
    .await;
    app.sandbox.push_fault(
        &team_scope("team_acme"),
        costd::sandbox::Fault::Status {
            code: http::StatusCode::BAD_GATEWAY,
            retry_after: None,
        },
    );

    let report = app
        .get_costs(query(
            "2026-01-01",
            "2026-02-01",
            &[pb::GroupBy::BillingAccount],
            pb::Granularity::Daily,
        ))
        .await
        .expect("answer");

    let cobalt = result_of(&report, "team-cobalt");
    assert_eq!(
        cobalt.state,
        pb::ResultState::Failed as i32,
        "the wrong token was used and refused"
    );
    let mut secrets: Vec<String> = app
        .sandbox
        .dataset()
        .teams()
        .iter()
        .map(|t| t.token.clone())
        .collect();
    secrets.push(wrong_token);
    let logs = captured().logs();
    assert!(
        logs.contains("team-cobalt"),
        "the capture saw this test's logs"
    );
    let spans = format!("{:?}", captured().spans());
    let errors = format!("{report:?}");
    let settings_debug = format!(
        "{:?}",
        costd::demo::settings(&app.sandbox, app.addr).expect("settings")
    );
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a token is in the logs");
        assert!(!spans.contains(secret.as_str()), "a token is in a span");
        assert!(!errors.contains(secret.as_str()), "a token is in an error");
        assert!(
            !settings_debug.contains(secret.as_str()),
            "a token is in the settings' Debug"
        );
    }
}
