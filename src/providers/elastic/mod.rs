//! Elastic Cloud billing: v1 deployment costs and the v2 billing API, in ECU.

mod client;
pub mod normalize;
pub mod wire;

pub use client::ElasticClient;
pub use normalize::{Bucketing, Organization};

use crate::{
    config::ElasticApiVersion,
    domain::{CostQuery, Granularity, GroupBy, Period},
};

/// An Elastic endpoint, with what it needs beyond the period. Only endpoints that say each instance's
/// type are planned: that type is the record's service (ARCHITECTURE.md says why), so `costs/items`
/// (product types, no instances) and the per-instance `items` and `charts` (no instance type) are not.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// v1 `billing/costs/{org}/deployments`: deployment × billing dimension.
    V1Deployments,
    /// v2 `costs/instances`: instance × SKU line item.
    V2Instances,
    /// v2 `charts`: per instance, one value per bucket.
    V2Charts { bucketing: Bucketing },
}

/// Which endpoint answers which query shape — decided here and nowhere else (ARCHITECTURE.md says why).
/// Filters never change the endpoint (costd applies them to the records), so a query filtered by a
/// row's keys reads the same records as the grouped query the row came from.
///
/// - v1 accounts have one endpoint: deployments, per calendar month, or per day for daily rows.
/// - v2, daily rows grouped by SKU, charge dimension or charge category: instances per day (charts
///   carry one value per instance, no line items).
/// - v2, other daily rows: the daily chart, one call per month.
/// - v2 otherwise: instances per month (instance × SKU, the most detailed answer).
pub fn plan(version: ElasticApiVersion, query: &CostQuery) -> Vec<(Period, Endpoint)> {
    let daily = query.granularity == Granularity::Daily;
    let periods = if daily {
        query.period.days()
    } else {
        query.period.months()
    };
    let groups = |dimension: GroupBy| query.group_by.contains(&dimension);
    let per = |periods: Vec<Period>, endpoint: Endpoint| {
        periods.into_iter().map(|p| (p, endpoint.clone())).collect()
    };
    if version == ElasticApiVersion::V1 {
        return per(periods, Endpoint::V1Deployments);
    }
    let needs_line_items =
        groups(GroupBy::Sku) || groups(GroupBy::ChargeDimension) || groups(GroupBy::ChargeCategory);
    if daily && !needs_line_items {
        return per(
            query.period.months(),
            Endpoint::V2Charts {
                bucketing: Bucketing::Daily,
            },
        );
    }
    per(periods, Endpoint::V2Instances)
}
