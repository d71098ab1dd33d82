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

/// An Elastic endpoint, with what it needs beyond the period.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// v1 `billing/costs/{org}/deployments`: deployment × billing dimension.
    V1Deployments,
    /// v2 `costs/instances`: instance × SKU line item.
    V2Instances,
    /// v2 `costs/items`: product type × SKU line item, for the whole organization.
    V2Items,
    /// v2 `costs/instances/{id}/items`: one instance's SKU line items.
    V2InstanceItems { instance_id: String },
    /// v2 `charts`: per instance, one value per bucket.
    V2Charts { bucketing: Bucketing },
    /// v2 `instances/{id}/charts`: one instance, its values per bucket.
    V2InstanceCharts {
        instance_id: String,
        bucketing: Bucketing,
    },
}

/// Which endpoint answers which query shape — decided here and nowhere else (ARCHITECTURE.md says why).
///
/// - v1 accounts have one endpoint: deployments, per calendar month, or per day for daily rows.
/// - v2, daily rows for chosen resources: each instance's own daily chart, one call per month.
/// - v2, daily rows without SKU-level grouping: the daily chart, one call per month.
/// - v2, daily rows grouped by SKU, charge dimension or service: instances per day (charts carry no SKUs).
/// - v2, a filter on resources: each instance's own items, per month (only what was asked is fetched).
/// - v2, grouped by service but not by resource or sub-account: organization items, whose products
///   are the service (product type).
/// - v2 otherwise: instances per month, the most detailed answer (instance × SKU).
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
    let instance_ids: Vec<&String> = query.filter.resources.iter().collect();
    let chosen_instances =
        !instance_ids.is_empty() && instance_ids.iter().all(|id| is_path_segment(id));
    let per_instance = |make: &dyn Fn(&str) -> Endpoint| -> Vec<(Period, Endpoint)> {
        let months = query.period.months();
        months
            .iter()
            .flat_map(|period| instance_ids.iter().map(move |id| (*period, make(id))))
            .collect()
    };
    if daily && chosen_instances {
        return per_instance(&|id| Endpoint::V2InstanceCharts {
            instance_id: id.to_string(),
            bucketing: Bucketing::Daily,
        });
    }
    if daily {
        let needs_line_items =
            groups(GroupBy::Sku) || groups(GroupBy::ChargeDimension) || groups(GroupBy::Service);
        return if needs_line_items {
            per(periods, Endpoint::V2Instances)
        } else {
            per(
                query.period.months(),
                Endpoint::V2Charts {
                    bucketing: Bucketing::Daily,
                },
            )
        };
    }
    if chosen_instances {
        return per_instance(&|id| Endpoint::V2InstanceItems {
            instance_id: id.to_string(),
        });
    }
    if groups(GroupBy::Service) && !groups(GroupBy::Resource) && !groups(GroupBy::SubAccount) {
        return per(periods, Endpoint::V2Items);
    }
    per(periods, Endpoint::V2Instances)
}

/// Ids that can be put in a URL path as they are.
fn is_path_segment(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}
