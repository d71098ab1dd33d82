//! Wire ↔ domain. Requests are parsed in `query.rs`, once, reporting every field violation
//! together; this file turns domain values and answers into their wire form.

mod query;

pub use query::{QueryRules, parse_query};

use super::status;
use crate::{
    domain::{
        ChargeCategory, CostQuery, CostRecord, Granularity, GroupBy, Money, MoneyError,
        ProviderKind, Quantity, format_decimal,
    },
    engine::{AccountResult, AccountState, Report, aggregate::Row},
    proto as pb,
};
use chrono::{DateTime, Utc};

pub fn provider_kind(value: i32) -> Option<ProviderKind> {
    match pb::ProviderKind::try_from(value).ok()? {
        pb::ProviderKind::Atlas => Some(ProviderKind::Atlas),
        pb::ProviderKind::Elastic => Some(ProviderKind::Elastic),
        pb::ProviderKind::TeamBilling => Some(ProviderKind::TeamBilling),
        pb::ProviderKind::Unspecified => None,
    }
}

pub fn provider_kind_to_proto(kind: ProviderKind) -> pb::ProviderKind {
    match kind {
        ProviderKind::Atlas => pb::ProviderKind::Atlas,
        ProviderKind::Elastic => pb::ProviderKind::Elastic,
        ProviderKind::TeamBilling => pb::ProviderKind::TeamBilling,
    }
}

fn group_by_of(value: i32) -> Option<GroupBy> {
    GroupBy::ALL
        .into_iter()
        .find(|g| group_by_to_proto(*g) as i32 == value)
}

pub fn group_by_to_proto(group_by: GroupBy) -> pb::GroupBy {
    match group_by {
        GroupBy::Provider => pb::GroupBy::Provider,
        GroupBy::BillingAccount => pb::GroupBy::BillingAccount,
        GroupBy::SubAccount => pb::GroupBy::SubAccount,
        GroupBy::Resource => pb::GroupBy::Resource,
        GroupBy::Service => pb::GroupBy::Service,
        GroupBy::Sku => pb::GroupBy::Sku,
        GroupBy::ChargeDimension => pb::GroupBy::ChargeDimension,
        GroupBy::ChargeCategory => pb::GroupBy::ChargeCategory,
    }
}

pub fn granularity_to_proto(granularity: Granularity) -> pb::Granularity {
    match granularity {
        Granularity::None => pb::Granularity::None,
        Granularity::Daily => pb::Granularity::Daily,
        Granularity::Monthly => pb::Granularity::Monthly,
    }
}

pub fn time_to_proto(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// Money on the wire; an amount beyond ±9.2e18 units cannot be sent and is an error, not a clamp.
pub fn money_to_proto(money: &Money) -> Result<pb::Money, MoneyError> {
    let (units, nanos) = money.units_and_nanos()?;
    Ok(pb::Money {
        currency_code: money.currency().as_str().to_string(),
        units,
        nanos,
    })
}

fn quantity_to_proto(quantity: &Quantity) -> pb::Quantity {
    pb::Quantity {
        value: format_decimal(quantity.value),
        unit: quantity.unit.to_string(),
    }
}

pub fn query_to_proto(query: &CostQuery) -> pb::CostQuery {
    pb::CostQuery {
        start_time: Some(time_to_proto(query.period.start())),
        end_time: Some(time_to_proto(query.period.end())),
        filter: Some(pb::CostFilter {
            providers: query
                .filter
                .providers
                .iter()
                .map(|k| provider_kind_to_proto(*k) as i32)
                .collect(),
            provider_accounts: query
                .filter
                .provider_accounts
                .iter()
                .map(|a| a.to_string())
                .collect(),
            sub_accounts: query.filter.sub_accounts.iter().cloned().collect(),
            resources: query.filter.resources.iter().cloned().collect(),
            services: query.filter.services.iter().cloned().collect(),
        }),
        group_by: query
            .group_by
            .iter()
            .map(|g| group_by_to_proto(*g) as i32)
            .collect(),
        granularity: granularity_to_proto(query.granularity) as i32,
        max_staleness: query
            .max_staleness
            .and_then(|d| prost_types::Duration::try_from(d).ok()),
    }
}

pub fn report_to_proto(report: &Report) -> Result<pb::CostReport, MoneyError> {
    let covered: Vec<String> = report
        .accounts
        .iter()
        .filter(|a| a.is_covered())
        .map(|a| a.account.id.to_string())
        .collect();
    Ok(pb::CostReport {
        query: Some(query_to_proto(&report.query)),
        rows: report
            .aggregation
            .rows
            .iter()
            .map(row_to_proto)
            .collect::<Result<_, _>>()?,
        totals: Some(pb::CostTotals {
            billed_cost: Some(money_to_proto(&report.aggregation.total)?),
            record_count: report.aggregation.record_count as i64,
            covered_provider_accounts: covered,
            complete: report.is_complete(),
        }),
        provider_results: report
            .accounts
            .iter()
            .map(account_result_to_proto)
            .collect::<Result<_, _>>()?,
        job: String::new(),
    })
}

fn row_to_proto(row: &Row) -> Result<pb::CostRow, MoneyError> {
    Ok(pb::CostRow {
        group_values: row
            .group_values
            .iter()
            .map(|value| pb::GroupValue {
                group_by: group_by_to_proto(value.group_by) as i32,
                id: value.id.as_deref().unwrap_or_default().to_string(),
                display_name: value
                    .display_name
                    .as_deref()
                    .unwrap_or_default()
                    .to_string(),
            })
            .collect(),
        period_start: Some(time_to_proto(row.period.start())),
        period_end: Some(time_to_proto(row.period.end())),
        billed_cost: Some(money_to_proto(&row.billed_cost)?),
        consumed_quantity: row.consumed_quantity.as_ref().map(quantity_to_proto),
        record_count: row.record_count as i64,
        estimated: row.estimated,
    })
}

/// Names `job` in every PENDING result: the job that finishes their upstream work.
pub fn name_pending_job(results: &mut [pb::ProviderResult], job: &str) {
    for result in results {
        if result.state == pb::ResultState::Pending as i32 {
            result.job = job.to_string();
        }
    }
}

pub fn account_result_to_proto(result: &AccountResult) -> Result<pb::ProviderResult, MoneyError> {
    let mut notes = result.notes.clone();
    let (state, error, staleness) = match &result.state {
        AccountState::Ok => (pb::ResultState::Ok, None, None),
        AccountState::Pending { progress } => {
            if !progress.note.is_empty() {
                notes.push(progress.note.clone());
            }
            (pb::ResultState::Pending, None, None)
        }
        AccountState::Stale { age, error } => (
            pb::ResultState::Stale,
            Some(status::upstream_failure(&result.account, error)),
            prost_types::Duration::try_from(*age).ok(),
        ),
        AccountState::Failed(error) => (
            pb::ResultState::Failed,
            Some(status::upstream_failure(&result.account, error)),
            None,
        ),
    };
    Ok(pb::ProviderResult {
        provider_account: result.account.id.to_string(),
        provider: provider_kind_to_proto(result.account.kind) as i32,
        state: state as i32,
        error,
        fetched_at: result.fetched_at.map(time_to_proto),
        from_cache: result.from_cache,
        staleness,
        warnings: result
            .warnings
            .iter()
            .map(|w| pb::DataQualityWarning {
                code: w.code.to_string(),
                message: w.message.clone(),
            })
            .collect(),
        notes,
        job: String::new(),
        billed_cost: Some(money_to_proto(&result.billed_cost)?),
        record_count: result.record_count as i64,
        upstream_requests: result.upstream_requests as i32,
    })
}

pub fn record_to_proto(record: &CostRecord) -> Result<pb::CostRecord, MoneyError> {
    let text =
        |value: Option<&crate::domain::Text>| value.map(|t| t.to_string()).unwrap_or_default();
    Ok(pb::CostRecord {
        provider: provider_kind_to_proto(record.provider) as i32,
        provider_account: record.provider_account.to_string(),
        billing_account_id: record.billing_account.id.to_string(),
        billing_account_name: text(record.billing_account.name.as_ref()),
        sub_account_id: text(record.sub_account.as_ref().map(|s| &s.id)),
        sub_account_name: text(record.sub_account.as_ref().and_then(|s| s.name.as_ref())),
        resource_id: text(record.resource.as_ref().map(|r| &r.id)),
        resource_name: text(record.resource.as_ref().and_then(|r| r.name.as_ref())),
        resource_type: text(record.resource.as_ref().map(|r| &r.kind)),
        service_name: record.service_name.to_string(),
        sku_id: text(record.sku_id.as_ref()),
        charge_dimension: text(record.charge_dimension.as_ref()),
        charge_category: charge_category_to_proto(record.charge_category) as i32,
        charge_period_start: Some(time_to_proto(record.charge_period.start())),
        charge_period_end: Some(time_to_proto(record.charge_period.end())),
        billed_cost: Some(money_to_proto(&record.billed_cost)?),
        original_amount: Some(quantity_to_proto(&record.original_amount)),
        consumed_quantity: record.consumed_quantity.as_ref().map(quantity_to_proto),
        list_unit_price: record.list_unit_price.as_ref().map(|price| pb::Quantity {
            value: format_decimal(price.amount),
            unit: price.currency.as_str().to_string(),
        }),
        invoice_id: text(record.invoice_id.as_ref()),
        extensions: record
            .extensions
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
        estimated: false,
    })
}

fn charge_category_to_proto(category: ChargeCategory) -> pb::ChargeCategory {
    match category {
        ChargeCategory::Usage => pb::ChargeCategory::Usage,
        ChargeCategory::Purchase => pb::ChargeCategory::Purchase,
        ChargeCategory::Tax => pb::ChargeCategory::Tax,
        ChargeCategory::Credit => pb::ChargeCategory::Credit,
        ChargeCategory::Adjustment => pb::ChargeCategory::Adjustment,
    }
}

#[cfg(test)]
mod fuzz_tests;
