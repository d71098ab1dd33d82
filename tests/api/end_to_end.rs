//! The shipped binary end to end: the demo as the README starts it, grpcurl through reflection, and
//! traces exported over OTLP and flushed when the process stops.

use crate::{binary::*, helpers::*};
use costd::proto as pb;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use std::{path::PathBuf, process::Stdio};
use tokio::{io::AsyncBufReadExt, sync::mpsc};

pub fn grpcurl() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/grpcurl");
    assert!(
        path.exists(),
        "grpcurl is missing: scripts/install-tools installs it (scripts/test runs that)"
    );
    path
}

#[tokio::test]
async fn grpcurl_lists_and_calls_the_service_through_reflection_alone() {
    let app = spawn_app().await;
    let addr = app.addr.to_string();

    let list = within(
        tokio::process::Command::new(grpcurl())
            .args(["-plaintext", &addr, "list"])
            .output(),
    )
    .await
    .expect("runs");
    // The README's example, verbatim apart from the address.
    let body = r#"{"query":{"start_time":"2026-01-01T00:00:00Z","end_time":"2026-02-01T00:00:00Z","group_by":["GROUP_BY_SERVICE"]}}"#;
    let call = within(
        tokio::process::Command::new(grpcurl())
            .args([
                "-plaintext",
                "-d",
                body,
                &addr,
                "costd.v1.CostService/GetCosts",
            ])
            .output(),
    )
    .await
    .expect("runs");

    let services = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(
        services.contains("costd.v1.CostService") && services.contains("costd.v1.QueryJobService"),
        "{services}"
    );
    assert!(
        call.status.success(),
        "{}",
        String::from_utf8_lossy(&call.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&call.stdout).expect("JSON");
    let total_nanos = json_nanos(&answer["report"]["totals"]["billedCost"]);
    let expected: i128 = ["team_acme", "team_borealis", "team_cobalt"]
        .iter()
        .map(|team| app.expected_nanos(team, at("2026-01-01"), at("2026-02-01")))
        .sum();
    assert_eq!(total_nanos, expected);
}

#[tokio::test]
async fn the_demo_serves_every_seeded_account_from_its_embedded_sandbox() {
    let mut demo = tokio::process::Command::new(COSTD)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starts");
    let mut lines = tokio::io::BufReader::new(demo.stdout.take().expect("piped")).lines();
    let (addr, banner_accounts, metrics_url) = within(async {
        let mut addr = None;
        let mut accounts = None;
        while let Some(line) = lines.next_line().await.expect("readable") {
            if let Some(rest) = line.strip_prefix("costd demo: serving gRPC on ") {
                addr = Some(rest.split(',').next().expect("an address").to_string());
            }
            if let Some(rest) = line.strip_prefix("accounts: ") {
                accounts = Some(rest.split(", ").map(str::to_string).collect::<Vec<_>>());
            }
            if let Some(url) = line.trim().strip_prefix("curl ") {
                return (
                    addr.expect("the address comes first"),
                    accounts.expect("the accounts come before the examples"),
                    url.to_string(),
                );
            }
        }
        panic!("the demo ended before printing its addresses");
    })
    .await;
    let mut client = pb::cost_service_client::CostServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");

    let report = client
        .get_costs(pb::GetCostsRequest {
            query: Some(query(
                "2026-01-01",
                "2026-02-01",
                &[],
                pb::Granularity::None,
            )),
        })
        .await
        .expect("answer")
        .into_inner()
        .report
        .expect("report");

    let totals = report.totals.expect("totals");
    assert!(totals.complete);
    assert_eq!(
        totals.covered_provider_accounts,
        [
            "atlas-kestrel",
            "atlas-lumen",
            "atlas-quarry",
            "elastic-acme",
            "elastic-acme-v1",
            "elastic-borealis",
            "elastic-cobalt",
            "team-acme",
            "team-borealis",
            "team-cobalt"
        ]
    );
    let mut banner_accounts = banner_accounts;
    banner_accounts.sort();
    assert_eq!(
        banner_accounts, totals.covered_provider_accounts,
        "the banner names every account the demo serves"
    );
    let scraped = within(reqwest::get(&metrics_url))
        .await
        .expect("scraped")
        .text()
        .await
        .expect("text");
    assert!(
        scraped.contains(
            "costd_rpc_requests_total{method=\"costd.v1.CostService/GetCosts\",code=\"OK\"} 1\n"
        ),
        "{scraped}"
    );
    terminate(&demo).await;
    assert!(within(demo.wait()).await.expect("exits").success());
}

/// An OTLP/gRPC collector that hands every export to the test.
struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn spans_are_exported_over_otlp_and_flushed_on_sigterm() {
    let (exports, mut received) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let collector_addr = listener.local_addr().expect("bound");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(exports)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let upstreams = costd::sandbox::Sandbox::start(Default::default()).expect("sandbox");
    let token = upstreams
        .dataset()
        .team("team_acme")
        .expect("seeded")
        .token
        .clone();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[providers]]\nkind = \"team_billing\"\nid = \"team-acme\"\nbase_url = \"{}\"\nteam_id = \"team_acme\"\ncredentials = {{ token = {{ env = \"COSTD_TEAM_ACME_TOKEN\" }} }}\n",
        upstreams.base_url()
    );
    let endpoint = format!("http://{collector_addr}");
    let (_file, mut command) = serve(
        &config,
        &[
            ("COSTD_TEAM_ACME_TOKEN", &token),
            ("COSTD_OTLP_ENDPOINT", &endpoint),
        ],
    );
    let mut child = command.spawn().expect("starts");
    let (addr, _rest) = serving_addr(&mut child).await;
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let mut client = pb::cost_service_client::CostServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let mut request = tonic::Request::new(pb::GetCostsRequest {
        query: Some(query(
            "2026-01-01",
            "2026-02-01",
            &[],
            pb::Granularity::None,
        )),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .expect("ascii"),
    );
    client.get_costs(request).await.expect("answer");

    terminate(&child).await;
    assert!(within(child.wait()).await.expect("exits").success());

    let mut names = Vec::new();
    let mut service_names = Vec::new();
    while let Ok(export) = received.try_recv() {
        for resource_spans in export.resource_spans {
            let resource = resource_spans.resource.unwrap_or_default();
            service_names.extend(
                resource
                    .attributes
                    .iter()
                    .filter(|kv| kv.key == "service.name")
                    .map(|kv| format!("{:?}", kv.value)),
            );
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                let id: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                if id == trace_id {
                    names.push(span.name);
                }
            }
        }
    }
    assert!(
        names
            .iter()
            .any(|n| n == "GET /teams/{teamId}/billing/cost"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "costd.v1.CostService/GetCosts"),
        "{names:?}"
    );
    assert!(
        service_names.iter().all(|s| s.contains("costd")) && !service_names.is_empty(),
        "{service_names:?}"
    );
}
