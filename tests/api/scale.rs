//! The sandbox's big Elastic organization (`SandboxOptions::elastic_scale`) through the real server:
//! 20,000 records in one query, every one counted, the total exact to the nano.

use crate::helpers::*;
use costd::{
    App,
    proto::{self as pb, cost_service_client::CostServiceClient},
    sandbox::{ElasticScale, SCALE_LINES_PER_INSTANCE, Sandbox, SandboxOptions, Scope},
};
use std::{collections::BTreeSet, net::SocketAddr};
use tonic::transport::Channel;

/// Nanos per ten-thousandth of an ECU, at 1 USD per ECU (the demo's rate).
const NANOS_PER_TEN_THOUSANDTH: i128 = 100_000;
const INSTANCES: usize = 1_000;
/// Two partial months, so two `costs/instances` chunks of one day each.
const FROM: &str = "2026-01-31";
const TO: &str = "2026-02-02";

#[tokio::test]
async fn a_big_elastic_account_answers_every_record_exactly() {
    captured();
    let sandbox = Sandbox::start(SandboxOptions {
        elastic_scale: Some(ElasticScale {
            instances: INSTANCES,
        }),
        ..SandboxOptions::default()
    })
    .expect("sandbox starts");
    let dataset = sandbox.dataset().elastic();
    let org = dataset.scale_organization().expect("the big organization");
    assert_eq!(org.instances.len(), INSTANCES);
    let ids: BTreeSet<&str> = org.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), INSTANCES, "every instance has its own id");

    // Ground truth from the seeded usage records: every line of every instance is listed per
    // chunk, used or not, and the total is the sum of the records' exact totals.
    let lines: usize = org.instances.iter().map(|i| i.skus().count()).sum();
    assert_eq!(lines, INSTANCES * SCALE_LINES_PER_INSTANCE);
    let expected_records = lines * 2;
    assert_eq!(expected_records, 20_000);
    let expected_nanos: i128 = dataset
        .usage(org, at(FROM), at(TO))
        .map(|u| i128::from(u.total.ten_thousandths()) * NANOS_PER_TEN_THOUSANDTH)
        .sum();
    assert!(expected_nanos > 0);

    let mut settings = costd::demo::settings(&sandbox, SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("demo settings");
    settings.telemetry = Default::default();
    settings
        .accounts
        .retain(|a| a.id.as_str() == "elastic-zenith");
    assert_eq!(
        settings.accounts.len(),
        1,
        "the demo reads the big organization"
    );
    let app = App::build(settings).await.expect("app builds");
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("server accepts connections");
    let mut costs = CostServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut ask = async |group_by: &[pb::GroupBy]| {
        let query = query(FROM, TO, group_by, pb::Granularity::Monthly);
        within(costs.get_costs(pb::GetCostsRequest { query: Some(query) }))
            .await
            .expect("answers")
            .into_inner()
            .report
            .expect("a report")
    };

    let report = ask(&[pb::GroupBy::Service]).await;
    let result = result_of(&report, "elastic-zenith");
    assert_eq!(result.state, pb::ResultState::Ok as i32, "{result:?}");
    assert_eq!(result.record_count, expected_records as i64);
    assert_eq!(result.upstream_requests, 2, "one request per month");
    assert_eq!(nanos(result.billed_cost.as_ref()), expected_nanos);
    let total = report.totals.as_ref().and_then(|t| t.billed_cost.as_ref());
    assert_eq!(nanos(total), expected_nanos);
    assert_eq!(report.rows.len(), 2, "one service, two months");
    let scope = Scope::elastic(org.id);
    assert_eq!(sandbox.request_count(&scope), 2);

    // From the cache: one row per instance and month, so the records keep their own resources.
    let by_resource = ask(&[pb::GroupBy::Resource]).await;
    assert_eq!(by_resource.rows.len(), INSTANCES * 2);
    let summed: i128 = by_resource
        .rows
        .iter()
        .map(|r| nanos(r.billed_cost.as_ref()))
        .sum();
    assert_eq!(summed, expected_nanos);
    assert_eq!(sandbox.request_count(&scope), 2, "the cache answered");

    let _ = stop.send(());
    within(server).await.expect("joins").expect("stops cleanly");
}
