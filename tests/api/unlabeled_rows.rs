//! No unlabeled rows: Atlas groups by project or cluster only for the ids a query names, so grouping
//! its costs by sub-account or resource without such a filter fails that account with
//! FAILED_PRECONDITION naming the filter, sends nothing, and leaves the other accounts alone; the
//! capabilities say which groupings need a filter.

use crate::helpers::*;
use costd::{domain::ProviderKind, proto as pb, sandbox::Scope};
use std::sync::Arc;

async fn spawn() -> TestApp {
    spawn_app_full(
        Arc::new(costd::clock::SystemClock),
        &[
            ProviderKind::Atlas,
            ProviderKind::TeamBilling,
            ProviderKind::Elastic,
        ],
        |_, sandbox| sandbox.atlas().set_processing_polls(0),
    )
    .await
}

fn atlas_accounts(report: &pb::CostReport) -> Vec<&pb::ProviderResult> {
    report
        .provider_results
        .iter()
        .filter(|r| r.provider_account.starts_with("atlas-"))
        .collect()
}

#[tokio::test]
async fn grouping_atlas_by_resource_or_sub_account_without_a_filter_fails_only_atlas() {
    let app = spawn().await;
    let orgs: Vec<&'static str> = app
        .sandbox
        .atlas()
        .dataset()
        .orgs()
        .iter()
        .map(|o| o.id)
        .collect();

    for (group_by, needed) in [
        (pb::GroupBy::Resource, "needs a resource filter"),
        (
            pb::GroupBy::SubAccount,
            "needs a sub-account (project) or resource (cluster) filter",
        ),
    ] {
        let report = app
            .get_costs(query(
                "2025-01-01",
                "2025-02-01",
                &[group_by],
                pb::Granularity::None,
            ))
            .await
            .expect("an answer: one provider's precondition fails no other");

        let atlas = atlas_accounts(&report);
        assert_eq!(atlas.len(), orgs.len());
        for result in atlas {
            assert_eq!(result.state, pb::ResultState::Failed as i32, "{result:?}");
            let status = result.error.as_ref().expect("a status");
            assert_eq!(
                tonic::Code::from(status.code),
                tonic::Code::FailedPrecondition
            );
            assert!(status.message.contains(needed), "{}", status.message);
            assert_eq!(result.upstream_requests, 0);
            assert_eq!(result.record_count, 0);
        }
        for result in report
            .provider_results
            .iter()
            .filter(|r| r.provider_account.starts_with("elastic-"))
        {
            assert_eq!(result.state, pb::ResultState::Ok as i32, "{result:?}");
        }
        assert!(!report.rows.is_empty(), "Elastic's rows are there");
        assert!(
            report.rows.iter().all(|r| !r.group_values[0].id.is_empty()),
            "no row with an empty key: {:?}",
            report.rows
        );
        let totals = report.totals.expect("totals");
        assert!(!totals.complete);
        assert!(
            totals
                .covered_provider_accounts
                .iter()
                .all(|a| !a.starts_with("atlas-"))
        );
    }
    for org in &orgs {
        assert_eq!(
            app.sandbox.request_count(&Scope::atlas(*org)),
            0,
            "nothing was asked of Atlas"
        );
    }
    let providers = app
        .costs
        .clone()
        .list_providers(pb::ListProvidersRequest {})
        .await
        .expect("answer")
        .into_inner();
    for provider in &providers.provider_accounts {
        let capabilities = provider.capabilities.as_ref().expect("capabilities");
        let needs_filter = &capabilities.group_by_requires_filter;
        if provider.provider == pb::ProviderKind::Atlas as i32 {
            assert_eq!(
                needs_filter,
                &[pb::GroupBy::SubAccount as i32, pb::GroupBy::Resource as i32]
            );
            assert_eq!(
                provider.health.as_ref().expect("health").state,
                pb::HealthState::Unspecified as i32,
                "a query costd would not send is no upstream failure"
            );
        } else {
            assert!(needs_filter.is_empty(), "{provider:?}");
        }
        for dimension in needs_filter {
            assert!(
                capabilities.group_by.contains(dimension),
                "answered with a filter"
            );
        }
    }
}

#[tokio::test]
async fn with_a_cluster_filter_atlas_rows_carry_their_cluster_and_project() {
    let app = spawn().await;
    let dataset = app.sandbox.atlas().dataset();
    let kestrel = dataset
        .orgs()
        .iter()
        .find(|o| o.name.starts_with("Kestrel"))
        .expect("seeded");
    let project = &kestrel.projects[0];
    let cluster = &project.clusters[0];
    let mut asked = only_accounts(
        query(
            "2025-01-01",
            "2025-02-01",
            &[pb::GroupBy::SubAccount, pb::GroupBy::Resource],
            pb::Granularity::None,
        ),
        &["atlas-kestrel"],
    );
    asked.filter.get_or_insert_with(Default::default).resources = vec![cluster.id.clone()];

    let report = app.get_costs(asked).await.expect("answer");

    assert_eq!(
        result_of(&report, "atlas-kestrel").state,
        pb::ResultState::Ok as i32
    );
    let keys: Vec<(&str, &str)> = report
        .rows
        .iter()
        .map(|r| (r.group_values[0].id.as_str(), r.group_values[1].id.as_str()))
        .collect();
    assert_eq!(
        keys,
        [(project.id.as_str(), cluster.id.as_str())],
        "{:?}",
        report.rows
    );
}
