//! One taxonomy per provider, checked as a property through the real server: for every row of a
//! grouped report, the query filtered by that row's keys gives the row's figure and record count, and
//! no row's key is empty. Run for every configured account (team billing, Elastic v2 and v1, Atlas),
//! over the dimensions its capabilities advertise, singly and in pairs, daily and over the range.

use crate::helpers::*;
use costd::{domain::ProviderKind, proto as pb};
use std::sync::Arc;

/// Dimensions a filter can name; the others stay grouped in the filtered query.
fn filter_on(filter: &mut pb::CostFilter, dimension: pb::GroupBy, id: &str) -> bool {
    match dimension {
        pb::GroupBy::SubAccount => filter.sub_accounts = vec![id.to_string()],
        pb::GroupBy::Resource => filter.resources = vec![id.to_string()],
        pb::GroupBy::Service => filter.services = vec![id.to_string()],
        // One value per account, and the query names the account.
        pb::GroupBy::Provider | pb::GroupBy::BillingAccount => {}
        _ => return false,
    }
    true
}

fn dimension(value: &pb::GroupValue) -> pb::GroupBy {
    pb::GroupBy::try_from(value.group_by).expect("a known dimension")
}

/// Checks every row of `base` grouped by `group_by` for `account`; returns how many rows it checked.
async fn rows_are_reproduced_by_their_filters(
    app: &TestApp,
    account: &str,
    base: &pb::CostQuery,
    group_by: &[pb::GroupBy],
) -> usize {
    let mut grouped = only_accounts(base.clone(), &[account]);
    grouped.group_by = group_by.iter().map(|g| *g as i32).collect();
    let report = app.get_costs(grouped.clone()).await.expect("answer");
    let granularity = pb::Granularity::try_from(base.granularity).expect("known");
    let context = format!("{account} grouped by {group_by:?}, {granularity:?}");
    assert_eq!(
        result_of(&report, account).state,
        pb::ResultState::Ok as i32,
        "{context}: {:?}",
        result_of(&report, account).error
    );
    assert!(!report.rows.is_empty(), "{context}: rows to check");
    for row in &report.rows {
        let mut filter = grouped.filter.clone().unwrap_or_default();
        let mut residual = Vec::new();
        for value in &row.group_values {
            assert!(
                !value.id.is_empty(),
                "{context}: a row without a {:?} key: {row:?}",
                dimension(value)
            );
            if !filter_on(&mut filter, dimension(value), &value.id) {
                residual.push(value.clone());
            }
        }
        let mut filtered = grouped.clone();
        filtered.filter = Some(filter);
        filtered.group_by = residual.iter().map(|v| v.group_by).collect();
        let answer = app.get_costs(filtered.clone()).await.expect("answer");
        let matching: Vec<&pb::CostRow> = answer
            .rows
            .iter()
            .filter(|r| r.period_start == row.period_start)
            .filter(|r| {
                residual
                    .iter()
                    .zip(&r.group_values)
                    .all(|(want, got)| want.id == got.id)
            })
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{context}: the filtered query {:?} has one row for {row:?}: {:?}",
            filtered.filter,
            answer.rows
        );
        assert_eq!(
            (
                nanos(matching[0].billed_cost.as_ref()),
                matching[0].record_count
            ),
            (nanos(row.billed_cost.as_ref()), row.record_count),
            "{context}: filtered by the row's keys, {row:?}"
        );
    }
    report.rows.len()
}

/// Each advertised dimension alone, and each with the next one.
fn group_sets(dimensions: &[pb::GroupBy]) -> Vec<Vec<pb::GroupBy>> {
    let mut sets: Vec<Vec<pb::GroupBy>> = dimensions.iter().map(|d| vec![*d]).collect();
    sets.extend(dimensions.windows(2).map(|pair| pair.to_vec()));
    sets
}

#[tokio::test]
async fn every_row_is_what_the_query_filtered_by_its_keys_answers() {
    let app = spawn_app_full(
        Arc::new(costd::clock::SystemClock),
        &[
            ProviderKind::TeamBilling,
            ProviderKind::Elastic,
            ProviderKind::Atlas,
        ],
        |_, sandbox| sandbox.atlas().set_processing_polls(0),
    )
    .await;
    let providers = app
        .costs
        .clone()
        .list_providers(pb::ListProvidersRequest {})
        .await
        .expect("answer")
        .into_inner()
        .provider_accounts;
    let accounts = [
        "team-acme",
        "elastic-acme",
        "elastic-acme-v1",
        "atlas-kestrel",
    ];
    let mut checked = 0;
    for account in accounts {
        let provider = providers
            .iter()
            .find(|p| p.id == account)
            .expect("configured");
        let capabilities = provider.capabilities.clone().expect("capabilities");
        let dimensions: Vec<pb::GroupBy> = capabilities
            .group_by
            .iter()
            .filter(|g| !capabilities.group_by_requires_filter.contains(g))
            .map(|g| pb::GroupBy::try_from(*g).expect("known"))
            .collect();
        let granularities: Vec<pb::Granularity> = capabilities
            .granularities
            .iter()
            .map(|g| pb::Granularity::try_from(*g).expect("known"))
            .filter(|g| *g != pb::Granularity::Monthly)
            .collect();
        let (from, to) = if provider.provider == pb::ProviderKind::Atlas as i32 {
            ("2025-01-01", "2025-03-01")
        } else {
            ("2026-02-01", "2026-02-03")
        };
        for granularity in granularities {
            for group_by in group_sets(&dimensions) {
                let base = query(from, to, &[], granularity);
                checked +=
                    rows_are_reproduced_by_their_filters(&app, account, &base, &group_by).await;
            }
        }
    }

    // Atlas groups by project and cluster when the query names some: the same property holds.
    let dataset = app.sandbox.atlas().dataset();
    let kestrel = dataset
        .orgs()
        .iter()
        .find(|o| o.name.starts_with("Kestrel"))
        .expect("seeded");
    let projects: Vec<String> = kestrel.projects.iter().map(|p| p.id.clone()).collect();
    let clusters: Vec<String> = kestrel
        .projects
        .iter()
        .flat_map(|p| p.clusters.iter().map(|c| c.id.clone()))
        .collect();
    assert!(projects.len() >= 2 && clusters.len() >= 2, "seeded");
    let mut by_projects = query("2025-01-01", "2025-03-01", &[], pb::Granularity::None);
    by_projects.filter = Some(pb::CostFilter {
        sub_accounts: projects,
        ..Default::default()
    });
    let mut by_clusters = by_projects.clone();
    by_clusters.filter = Some(pb::CostFilter {
        resources: clusters,
        ..Default::default()
    });
    for (base, group_by) in [
        (&by_projects, vec![pb::GroupBy::SubAccount]),
        (
            &by_projects,
            vec![pb::GroupBy::SubAccount, pb::GroupBy::Service],
        ),
        (&by_clusters, vec![pb::GroupBy::Resource]),
        (
            &by_clusters,
            vec![pb::GroupBy::SubAccount, pb::GroupBy::Resource],
        ),
    ] {
        checked +=
            rows_are_reproduced_by_their_filters(&app, "atlas-kestrel", base, &group_by).await;
    }
    assert!(checked > 100, "{checked} rows checked");
}
