//! Trace context travels upstream from the costd binary as it runs without any OTLP exporter: the
//! caller's trace continues (with its `tracestate`), a call without one still starts a trace, and an
//! empty `tracestate` is never sent.

use crate::{
    binary::{serve, serving_addr},
    helpers::*,
};
use costd::{
    proto::{self as pb, cost_service_client::CostServiceClient},
    sandbox::{Sandbox, SandboxOptions},
};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn request(
    month: (&str, &str),
    metadata: &[(&'static str, &str)],
) -> tonic::Request<pb::GetCostsRequest> {
    let mut request = tonic::Request::new(pb::GetCostsRequest {
        query: Some(query(month.0, month.1, &[], pb::Granularity::None)),
    });
    for (name, value) in metadata {
        request
            .metadata_mut()
            .insert(*name, value.parse().expect("ascii"));
    }
    request
}

/// `(trace id, parent id)` of a `traceparent`, checked for the W3C shape.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    assert_eq!(parts[1].len(), 32, "{traceparent}");
    assert_eq!(parts[2].len(), 16, "{traceparent}");
    assert_ne!(parts[1], "0".repeat(32), "a valid trace id: {traceparent}");
    assert_ne!(parts[2], "0".repeat(16), "a valid parent id: {traceparent}");
    (parts[1].to_string(), parts[2].to_string())
}

#[tokio::test]
async fn traceparent_goes_upstream_without_an_exporter_and_tracestate_only_when_set() {
    let sandbox = Sandbox::start(SandboxOptions::default()).expect("sandbox starts");
    let token = sandbox
        .dataset()
        .team("team_acme")
        .expect("seeded team")
        .token
        .clone();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[metrics]
enabled = false

[[providers]]
kind = "team_billing"
id = "team-acme"
display_name = "Acme"
base_url = "{}"
team_id = "team_acme"
credentials = {{ token = {{ env = "ACME_TOKEN" }} }}
"#,
        sandbox.base_url()
    );
    assert!(!config.contains("otlp"), "no exporter configured");
    let (_file, mut command) = serve(&config, &[("ACME_TOKEN", token.as_str())]);
    let mut child = command.spawn().expect("starts");
    let (addr, _lines) = serving_addr(&mut child).await;
    let mut client = within(CostServiceClient::connect(format!("http://{addr}")))
        .await
        .expect("connects");
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let asks = [
        (
            ("2026-01-01", "2026-02-01"),
            vec![
                ("traceparent", caller.as_str()),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
        ),
        (
            ("2026-02-01", "2026-03-01"),
            vec![("traceparent", caller.as_str())],
        ),
        (("2026-03-01", "2026-04-01"), vec![]),
    ];

    let mut seen = Vec::new();
    for (month, metadata) in asks {
        let before = sandbox.requests().len();
        let report = within(client.get_costs(request(month, &metadata)))
            .await
            .expect("answer")
            .into_inner()
            .report
            .expect("a report");
        assert_eq!(
            result_of(&report, "team-acme").state,
            pb::ResultState::Ok as i32
        );
        let recorded = sandbox.requests();
        assert_eq!(recorded.len(), before + 1, "one upstream request per month");
        seen.push(recorded[before].clone());
    }

    let (first_trace, first_parent) = ids(seen[0].traceparent.as_deref().expect("sent"));
    assert_eq!(first_trace, CALLER_TRACE, "the caller's trace continues");
    assert_ne!(first_parent, CALLER_SPAN, "under costd's own span");
    assert_eq!(seen[0].tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    let (second_trace, _) = ids(seen[1].traceparent.as_deref().expect("sent"));
    assert_eq!(second_trace, CALLER_TRACE);
    assert_eq!(seen[1].tracestate, None, "an empty tracestate is not sent");
    let (third_trace, _) = ids(seen[2]
        .traceparent
        .as_deref()
        .expect("sent without a caller's"));
    assert_ne!(third_trace, CALLER_TRACE, "a trace of its own");
    assert_eq!(seen[2].tracestate, None);
}
