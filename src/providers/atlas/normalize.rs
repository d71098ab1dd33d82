//! Atlas usage rows into normalized records, and a costd query into the upstream's query body. Pure.

use super::wire::{CreateUsageQuery, SERVICES, UsageResult};
use crate::{
    domain::{
        ChargeCategory, ColumnsBuilder, CostQuery, Currency, DataQualityWarning, Money, Period,
        RecordRef, ResourceRef,
    },
    providers::{AccountRef, ChunkData},
};
use chrono::{Datelike, NaiveDate, NaiveTime};

fn is_atlas_id(text: &str) -> bool {
    crate::domain::AtlasId::parse(text).is_ok()
}

/// The upstream body for one month of `org_id`, narrowed by the query's filters where Atlas can apply
/// them itself. Filter values that cannot be Atlas ids are left to costd's own filtering.
pub fn usage_query(org_id: &str, month: &Period, query: &CostQuery) -> CreateUsageQuery {
    let ids = |values: &std::collections::BTreeSet<String>| -> Vec<String> {
        values.iter().filter(|v| is_atlas_id(v)).cloned().collect()
    };
    let services: Vec<String> = query
        .filter
        .services
        .iter()
        .filter(|s| SERVICES.contains(&s.as_str()))
        .cloned()
        .collect();
    let projects = ids(&query.filter.sub_accounts);
    let clusters = ids(&query.filter.resources);
    // Project and cluster columns come only with groupBy, and groupBy needs a filter value of its own
    // dimension; group by the finest dimension the filters allow so records carry it.
    let group_by = if !clusters.is_empty() {
        Some("clusters")
    } else if !projects.is_empty() {
        Some("projects")
    } else {
        None
    };
    CreateUsageQuery {
        start_date: month.start().date_naive().to_string(),
        end_date: month.end().date_naive().to_string(),
        organizations: vec![org_id.to_string()],
        projects,
        clusters,
        services,
        group_by: group_by.map(str::to_string),
        include_partial_matches: None,
    }
}

/// Every way `body` breaks the documented rules, as (field, problem) pairs. costd builds bodies that
/// keep them, so this is the last check before a request that would only be refused.
pub fn violations(body: &CreateUsageQuery) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let first_of_month = |field: &str, text: &str, found: &mut Vec<(String, String)>| {
        match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            Ok(date) if date.day() == 1 => Some(date),
            _ => {
                found.push((
                    field.to_string(),
                    format!("`{text}` is not the first day of a month (YYYY-MM-01)"),
                ));
                None
            }
        }
    };
    let start = first_of_month("startDate", &body.start_date, &mut found);
    let end = first_of_month("endDate", &body.end_date, &mut found);
    if let (Some(start), Some(end)) = (start, end)
        && start >= end
    {
        found.push(("endDate".to_string(), "must be after startDate".to_string()));
    }
    for (name, ids) in [
        ("organizations", &body.organizations),
        ("projects", &body.projects),
        ("clusters", &body.clusters),
    ] {
        for (index, id) in ids.iter().enumerate() {
            if !is_atlas_id(id) {
                found.push((
                    format!("{name}[{index}]"),
                    "must be 24 lowercase hexadecimal digits".to_string(),
                ));
            }
        }
    }
    for (index, service) in body.services.iter().enumerate() {
        if !SERVICES.contains(&service.as_str()) {
            found.push((
                format!("services[{index}]"),
                format!("`{service}` is not an Atlas service"),
            ));
        }
    }
    if let Some(group_by) = &body.group_by {
        let filtered = match group_by.as_str() {
            "organizations" => Some(&body.organizations),
            "projects" => Some(&body.projects),
            "clusters" => Some(&body.clusters),
            "services" => Some(&body.services),
            _ => None,
        };
        match filtered {
            None => found.push((
                "groupBy".to_string(),
                format!("`{group_by}` is not organizations, projects, clusters or services"),
            )),
            Some(values) if values.is_empty() => found.push((
                "groupBy".to_string(),
                format!("grouping by {group_by} needs a {group_by} filter value"),
            )),
            Some(_) => {}
        }
    }
    found
}

/// One record per usage row, charged over its calendar month.
pub fn usage_rows(
    account: &AccountRef,
    org_id: &str,
    requested: Period,
    body: &UsageResult,
) -> Result<ChunkData, String> {
    let mut records = ColumnsBuilder::new();
    records.reserve(body.usage_details.len());
    let mut warnings = Vec::new();
    for (index, row) in body.usage_details.iter().enumerate() {
        let date = NaiveDate::parse_from_str(&row.usage_date, "%Y-%m-%d").map_err(|_| {
            format!(
                "usageDetails[{index}].usageDate `{}` is not a date",
                row.usage_date
            )
        })?;
        if date.day() != 1 {
            return Err(format!(
                "usageDetails[{index}].usageDate `{date}` is not the first of a month"
            ));
        }
        let month = Period::month_of(date.and_time(NaiveTime::MIN).and_utc());
        if !requested.contains_period(&month) {
            warnings.push(DataQualityWarning {
                code: "PERIOD_MISMATCH",
                message: format!("a row for {date} lies outside the requested {requested}"),
            });
        }
        let billed = Money::from_decimal(Currency::USD, row.usage_amount.0)
            .map_err(|e| format!("usageDetails[{index}].usageAmount: {e}"))?;
        let service = row.service.as_deref().unwrap_or("Atlas");
        let organization = row.organization_id.as_deref().unwrap_or(org_id);
        if organization != org_id {
            warnings.push(DataQualityWarning {
                code: "ACCOUNT_MISMATCH",
                message: format!(
                    "asked for organization `{org_id}`, a row is for `{organization}`"
                ),
            });
        }
        records.push(
            &RecordRef {
                provider: account.kind,
                provider_account: &account.id,
                billing_account: (
                    organization,
                    row.organization_name
                        .as_deref()
                        .or(Some(&account.display_name)),
                ),
                sub_account: row
                    .project_id
                    .as_deref()
                    .map(|id| (id, row.project_name.as_deref())),
                resource: row
                    .cluster_id
                    .as_deref()
                    .or(row.cluster_name.as_deref())
                    .map(|id| ResourceRef {
                        id,
                        name: row.cluster_name.as_deref(),
                        kind: "cluster",
                    }),
                service_name: service,
                sku_id: None,
                charge_dimension: None,
                charge_category: if service == "Credits" {
                    ChargeCategory::Credit
                } else {
                    ChargeCategory::Usage
                },
                charge_period: month,
                billed_cost: billed,
                original_amount: (row.usage_amount.0, "USD"),
                consumed_quantity: None,
                list_unit_price: None,
                invoice_id: row.invoice_id.as_deref(),
            },
            &[],
        );
    }
    Ok(ChunkData {
        records: records.finish(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CostFilter, Granularity, ProviderAccountId, ProviderKind, Text};
    use proptest::prelude::*;

    const ORG: &str = "65f0a1b2c3d4e5f60718293a";

    fn account() -> AccountRef {
        AccountRef {
            id: ProviderAccountId::parse("atlas-kestrel").unwrap(),
            kind: ProviderKind::Atlas,
            display_name: Text::from("Kestrel"),
        }
    }

    fn september() -> Period {
        Period::month_of(
            chrono::DateTime::parse_from_rfc3339("2024-09-15T00:00:00Z")
                .unwrap()
                .to_utc(),
        )
    }

    fn parse(text: &str) -> UsageResult {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn the_documented_row_becomes_a_monthly_usd_record() {
        let body = parse(&format!(
            r#"{{"usageDetails":[{{"invoiceId":"inv1","organizationId":"{ORG}","organizationName":"Kubecost","service":"Clusters","usageAmount":51.19,"usageDate":"2024-09-01","extra":true}}]}}"#
        ));
        let normalized = usage_rows(&account(), ORG, september(), &body).unwrap();
        assert!(normalized.warnings.is_empty());
        let record = &normalized.records.record(0);
        assert_eq!(record.billed_cost.nanos(), 51_190_000_000);
        assert_eq!(record.charge_period, september());
        assert_eq!(record.billing_account.name.as_deref(), Some("Kubecost"));
        assert_eq!(record.invoice_id.as_deref(), Some("inv1"));
        assert_eq!(record.charge_category, ChargeCategory::Usage);
    }

    #[test]
    fn projects_clusters_and_credits_are_kept() {
        let body = parse(
            r#"{"usageDetails":[
                {"projectId":"aaaaaaaaaaaaaaaaaaaaaaaa","projectName":"prod","clusterId":"bbbbbbbbbbbbbbbbbbbbbbbb","clusterName":"orders","service":"Storage","usageAmount":0.1,"usageDate":"2024-09-01"},
                {"service":"Credits","usageAmount":-2.5,"usageDate":"2024-09-01"}]}"#,
        );
        let normalized = usage_rows(&account(), ORG, september(), &body).unwrap();
        let storage = &normalized.records.record(0);
        assert_eq!(
            storage.sub_account.as_ref().unwrap().name.as_deref(),
            Some("prod")
        );
        assert_eq!(
            storage.resource.as_ref().unwrap().name.as_deref(),
            Some("orders")
        );
        let credit = &normalized.records.record(1);
        assert_eq!(credit.charge_category, ChargeCategory::Credit);
        assert_eq!(credit.billed_cost.nanos(), -2_500_000_000);
        assert_eq!(
            credit.billing_account.id.as_ref(),
            ORG,
            "rows without an organization belong to the one asked"
        );
    }

    #[test]
    fn a_date_that_is_not_the_first_of_a_month_is_malformed() {
        let body = parse(r#"{"usageDetails":[{"usageAmount":1,"usageDate":"2024-09-02"}]}"#);
        assert!(
            usage_rows(&account(), ORG, september(), &body)
                .unwrap_err()
                .contains("first of a month")
        );
    }

    #[test]
    fn every_broken_rule_is_named_before_any_request() {
        let body = CreateUsageQuery {
            start_date: "2025-02-15".into(),
            end_date: "2025-01-01".into(),
            organizations: vec!["ABC".into()],
            projects: vec![],
            clusters: vec!["bbbbbbbbbbbbbbbbbbbbbbbb".into(), "x".into()],
            services: vec!["Clusters".into(), "Lambda".into()],
            group_by: Some("projects".into()),
            include_partial_matches: None,
        };
        let fields: Vec<String> = violations(&body)
            .into_iter()
            .map(|(field, _)| field)
            .collect();
        assert_eq!(
            fields,
            [
                "startDate",
                "organizations[0]",
                "clusters[1]",
                "services[1]",
                "groupBy"
            ]
        );
        let month = september();
        let query = CostQuery {
            period: month,
            filter: CostFilter::default(),
            group_by: vec![],
            granularity: Granularity::None,
            max_staleness: None,
        };
        assert!(
            violations(&usage_query(ORG, &month, &query)).is_empty(),
            "costd's own bodies keep every rule"
        );
    }

    #[test]
    fn filters_narrow_the_upstream_query_with_a_matching_group_by() {
        let mut filter = CostFilter::default();
        filter
            .resources
            .insert("bbbbbbbbbbbbbbbbbbbbbbbb".to_string());
        filter.resources.insert("an-elastic-deployment".to_string());
        filter.services.insert("Storage".to_string());
        filter.services.insert("gb_hours".to_string());
        let query = CostQuery {
            period: september(),
            filter,
            group_by: vec![],
            granularity: Granularity::None,
            max_staleness: None,
        };
        let body = usage_query(ORG, &september(), &query);
        assert_eq!(body.start_date, "2024-09-01");
        assert_eq!(body.end_date, "2024-10-01");
        assert_eq!(body.clusters, ["bbbbbbbbbbbbbbbbbbbbbbbb"]);
        assert_eq!(body.services, ["Storage"]);
        assert_eq!(body.group_by.as_deref(), Some("clusters"));
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["organizations"][0], ORG);
        assert!(json.get("projects").is_none(), "empty lists are not sent");
    }

    proptest! {
        #[test]
        fn normalization_never_loses_or_invents_a_cent(cents in proptest::collection::vec(-1_000_000i64..100_000_000, 0..50)) {
            let rows: Vec<String> = cents
                .iter()
                .map(|c| format!(r#"{{"service":"Clusters","usageAmount":{},"usageDate":"2024-09-01"}}"#, rust_decimal::Decimal::new(*c, 2)))
                .collect();
            let body = parse(&format!(r#"{{"usageDetails":[{}]}}"#, rows.join(",")));
            let normalized = usage_rows(&account(), ORG, september(), &body).unwrap();
            let nanos: i128 = normalized.records.records().map(|r| r.billed_cost.nanos()).sum();
            prop_assert_eq!(nanos, cents.iter().map(|c| i128::from(*c) * 10_000_000).sum::<i128>());
        }
    }
}
