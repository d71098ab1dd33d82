//! Wire ↔ domain. Requests are parsed here, once, reporting every field violation together.

use super::status;
use crate::{
    auth::Access,
    domain::{
        ChargeCategory, CostFilter, CostQuery, CostRecord, Granularity, GroupBy, Money, MoneyError,
        Period, ProviderAccountId, ProviderKind, Quantity, format_decimal,
    },
    engine::{AccountResult, AccountState, Report, aggregate::Row},
    proto as pb,
};
use chrono::{DateTime, Utc};
use std::{collections::BTreeSet, time::Duration};
use tonic_types::FieldViolation;

/// What a query may ask for, shared by every service that takes one.
pub struct QueryRules {
    pub known_accounts: Vec<ProviderAccountId>,
    pub max_range_days: u32,
}

impl QueryRules {
    /// Parses a wire query as `access` may ask it: PERMISSION_DENIED naming the accounts it asks for
    /// outside the caller's grant, INVALID_ARGUMENT listing every violation, and a query that names
    /// no account covers only the granted ones.
    pub fn parse(
        &self,
        query: Option<pb::CostQuery>,
        access: &Access,
    ) -> Result<CostQuery, tonic::Status> {
        self.refuse_ungranted(query.as_ref(), access)?;
        let mut query = parse_query(query, self).map_err(status::invalid_argument)?;
        self.scope(&mut query, access)?;
        Ok(query)
    }

    /// PERMISSION_DENIED when the query names accounts the grant does not cover, checked before the
    /// accounts are known to exist, so the answer tells nothing of accounts outside the grant.
    pub fn refuse_ungranted(
        &self,
        query: Option<&pb::CostQuery>,
        access: &Access,
    ) -> Result<(), tonic::Status> {
        let named = query
            .and_then(|query| query.filter.as_ref())
            .map(|filter| filter.provider_accounts.as_slice())
            .unwrap_or_default();
        let outside: Vec<String> = named
            .iter()
            .filter(|id| !access.covers_account(id))
            .map(|id| shorten(id))
            .collect();
        match outside.is_empty() {
            true => Ok(()),
            false => Err(status::accounts_not_granted(&outside)),
        }
    }

    /// A query naming no account asks for every granted one (so its covered accounts say so).
    pub fn scope(&self, query: &mut CostQuery, access: &Access) -> Result<(), tonic::Status> {
        if matches!(access, Access::Open) || !query.filter.provider_accounts.is_empty() {
            return Ok(());
        }
        query.filter.provider_accounts = self
            .known_accounts
            .iter()
            .filter(|id| access.covers_account(id.as_str()))
            .cloned()
            .collect();
        match query.filter.provider_accounts.is_empty() {
            // An empty account filter means every account: never the answer here.
            true => Err(status::no_granted_accounts()),
            false => Ok(()),
        }
    }
}

/// Parses a wire query into a domain query, or lists everything wrong with it: the one parser of
/// every request that carries a query.
pub fn parse_query(
    query: Option<pb::CostQuery>,
    limits: &QueryRules,
) -> Result<CostQuery, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let mut violation = |field: String, description: String| {
        violations.push(FieldViolation::new(field, description))
    };
    let Some(query) = query else {
        return Err(vec![FieldViolation::new("query", "required")]);
    };
    let start = timestamp(
        "query.start_time",
        query.start_time.as_ref(),
        &mut violation,
    );
    let end = timestamp("query.end_time", query.end_time.as_ref(), &mut violation);
    let period = match (start, end) {
        (Some(start), Some(end)) => match Period::new(start, end) {
            Ok(period)
                if period.duration() > chrono::Duration::days(i64::from(limits.max_range_days)) =>
            {
                violation(
                    "query.end_time".into(),
                    format!(
                        "the range is {} days; at most {} days are allowed",
                        period.duration().num_days(),
                        limits.max_range_days
                    ),
                );
                None
            }
            Ok(period) => Some(period),
            Err(_) => {
                violation("query.end_time".into(), "must be after start_time".into());
                None
            }
        },
        _ => None,
    };
    let filter = query.filter.unwrap_or_default();
    let mut providers = BTreeSet::new();
    for (index, value) in filter.providers.iter().enumerate() {
        match provider_kind(*value) {
            Some(kind) => {
                providers.insert(kind);
            }
            None => violation(
                format!("query.filter.providers[{index}]"),
                "must be a provider kind, not UNSPECIFIED".into(),
            ),
        }
    }
    let mut provider_accounts = BTreeSet::new();
    for (index, id) in filter.provider_accounts.iter().enumerate() {
        match ProviderAccountId::parse(id)
            .ok()
            .filter(|id| limits.known_accounts.contains(id))
        {
            Some(id) => {
                provider_accounts.insert(id);
            }
            None => violation(
                format!("query.filter.provider_accounts[{index}]"),
                format!(
                    "`{}` is not a configured provider account (ListProviders lists them)",
                    shorten(id)
                ),
            ),
        }
    }
    let mut texts = |name: &str, values: Vec<String>| -> BTreeSet<String> {
        for (index, value) in values.iter().enumerate() {
            if value.is_empty() {
                violation(
                    format!("query.filter.{name}[{index}]"),
                    "must not be empty".into(),
                );
            }
        }
        values.into_iter().collect()
    };
    let sub_accounts = texts("sub_accounts", filter.sub_accounts);
    let resources = texts("resources", filter.resources);
    let services = texts("services", filter.services);
    let mut group_by = Vec::new();
    for (index, value) in query.group_by.iter().enumerate() {
        match group_by_of(*value) {
            Some(dimension) if group_by.contains(&dimension) => violation(
                format!("query.group_by[{index}]"),
                format!("`{}` is listed twice", dimension.as_str()),
            ),
            Some(dimension) => group_by.push(dimension),
            None => violation(
                format!("query.group_by[{index}]"),
                "must be a dimension, not UNSPECIFIED".into(),
            ),
        }
    }
    let granularity = match pb::Granularity::try_from(query.granularity) {
        Ok(pb::Granularity::Unspecified | pb::Granularity::None) => Some(Granularity::None),
        Ok(pb::Granularity::Daily) => Some(Granularity::Daily),
        Ok(pb::Granularity::Monthly) => Some(Granularity::Monthly),
        Err(_) => {
            violation(
                "query.granularity".into(),
                format!("{} is not a granularity", query.granularity),
            );
            None
        }
    };
    let max_staleness = match query.max_staleness {
        None => Some(None),
        Some(duration) if !well_formed(&duration) => {
            violation(
                "query.max_staleness".into(),
                "is not a valid protobuf Duration (seconds within ±315576000000, |nanos| below \
                 1000000000, both of one sign)"
                    .into(),
            );
            None
        }
        Some(duration) => match Duration::try_from(duration) {
            Ok(duration) => Some(Some(duration)),
            Err(_) => {
                violation(
                    "query.max_staleness".into(),
                    "must be a non-negative duration".into(),
                );
                None
            }
        },
    };
    match (period, granularity, max_staleness) {
        (Some(period), Some(granularity), Some(max_staleness)) if violations.is_empty() => {
            Ok(CostQuery {
                period,
                filter: CostFilter {
                    providers,
                    provider_accounts,
                    sub_accounts,
                    resources,
                    services,
                },
                group_by,
                granularity,
                max_staleness,
            })
        }
        _ => Err(violations),
    }
}

fn timestamp(
    field: &str,
    value: Option<&prost_types::Timestamp>,
    violation: &mut impl FnMut(String, String),
) -> Option<DateTime<Utc>> {
    let Some(value) = value else {
        violation(field.into(), "required".into());
        return None;
    };
    // chrono accepts more than protobuf does (leap-second nanos, years past 9999): check the wire's range.
    let parsed = u32::try_from(value.nanos)
        .ok()
        .filter(|nanos| *nanos < NANOS_PER_SECOND)
        .filter(|_| PROTO_TIMESTAMP_SECONDS.contains(&value.seconds))
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos));
    let Some(parsed) = parsed else {
        violation(
            field.into(),
            "is not a valid protobuf Timestamp (0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z, \
             nanos 0 to 999999999)"
                .into(),
        );
        return None;
    };
    let supported = Period::supported();
    if !(supported.start()..=supported.end()).contains(&parsed) {
        violation(
            field.into(),
            format!(
                "must lie from {} to {}: the upstreams' dates cannot express instants outside",
                supported.start().to_rfc3339(),
                supported.end().to_rfc3339()
            ),
        );
        return None;
    }
    Some(parsed)
}

const NANOS_PER_SECOND: u32 = 1_000_000_000;
/// google.protobuf.Timestamp's documented range, in seconds since the epoch.
const PROTO_TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;
/// google.protobuf.Duration's documented range, in seconds (about 10,000 years).
const PROTO_DURATION_SECONDS: std::ops::RangeInclusive<i64> = -315_576_000_000..=315_576_000_000;

/// A protobuf Duration as its documentation defines one: seconds and nanos in range, with one sign.
fn well_formed(duration: &prost_types::Duration) -> bool {
    PROTO_DURATION_SECONDS.contains(&duration.seconds)
        && duration.nanos.unsigned_abs() < NANOS_PER_SECOND
        && !(duration.seconds > 0 && duration.nanos < 0)
        && !(duration.seconds < 0 && duration.nanos > 0)
}

fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

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
mod fuzz_tests {
    //! The wire → domain query parse on arbitrary messages and bytes: never a panic, and what it
    //! accepts is a query every upstream can be asked.
    use super::*;
    use crate::domain::ProviderAccountId;
    use proptest::prelude::*;
    use prost::Message;

    fn rules() -> QueryRules {
        QueryRules {
            known_accounts: vec![ProviderAccountId::parse("team-acme").expect("an id")],
            max_range_days: 731,
        }
    }

    /// Seconds near the edges that matter (the epoch, protobuf's range, chrono's) and anywhere.
    fn seconds() -> impl Strategy<Value = i64> {
        prop_oneof![
            any::<i64>(),
            -62_135_596_900i64..-62_135_596_700,
            -100i64..100,
            1_700_000_000i64..1_800_000_000,
            253_399_000_000i64..253_402_400_000,
        ]
    }

    fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
        prop::option::weighted(
            0.95,
            (seconds(), prop_oneof![any::<i32>(), 0i32..1_000_000_000])
                .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
        )
    }

    fn query() -> impl Strategy<Value = pb::CostQuery> {
        let texts = || prop::collection::vec(prop_oneof!["", "[a-z-]{1,12}", "\\PC{0,8}"], 0..4);
        (
            timestamp(),
            timestamp(),
            (
                prop::collection::vec(-1i32..5, 0..4),
                prop::collection::vec(
                    prop_oneof![Just("team-acme".to_string()), "\\PC{0,12}"],
                    0..4,
                ),
                texts(),
                texts(),
                texts(),
            ),
            prop::collection::vec(-1i32..10, 0..5),
            -1i32..5,
            prop::option::of(
                (any::<i64>(), any::<i32>())
                    .prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
            ),
        )
            .prop_map(
                |(
                    start,
                    end,
                    (providers, accounts, subs, resources, services),
                    group_by,
                    granularity,
                    staleness,
                )| {
                    pb::CostQuery {
                        start_time: start,
                        end_time: end,
                        filter: Some(pb::CostFilter {
                            providers,
                            provider_accounts: accounts,
                            sub_accounts: subs,
                            resources,
                            services,
                        }),
                        group_by,
                        granularity,
                        max_staleness: staleness,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 10_000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_query_parses_or_says_why(wire in query()) {
            match parse_query(Some(wire), &rules()) {
                Ok(query) => {
                    let supported = Period::supported();
                    prop_assert!(supported.contains_period(&query.period), "{}", query.period);
                    prop_assert!(query.period.duration() <= chrono::Duration::days(731));
                    // Every calendar piece an upstream is asked for keeps a four-digit year.
                    for month in query.period.months() {
                        prop_assert!(Period::month_of(month.start()).end() <= supported.end());
                    }
                }
                Err(violations) => prop_assert!(!violations.is_empty()),
            }
        }

        #[test]
        fn any_bytes_decode_and_parse_or_say_why(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(request) = pb::GetCostsRequest::decode(bytes.as_slice()) {
                let _ = parse_query(request.query, &rules());
            }
        }
    }
}
