//! Requests with a query, parsed once: every field violation reported together, the caller's grant
//! applied, instants and durations checked against what protobuf and the upstreams can express.

use super::{group_by_of, provider_kind};
use crate::{
    api::status,
    auth::Access,
    domain::{CostFilter, CostQuery, Granularity, Period, ProviderAccountId},
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
