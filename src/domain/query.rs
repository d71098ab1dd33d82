//! A cost question in domain terms: built only from validated parts.

use super::{CostRecord, Period, ProviderAccountId, ProviderKind};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeSet, time::Duration};

/// A dimension rows can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GroupBy {
    Provider,
    BillingAccount,
    SubAccount,
    Resource,
    Service,
    Sku,
    ChargeDimension,
    ChargeCategory,
}

impl GroupBy {
    pub const ALL: [GroupBy; 8] = [
        GroupBy::Provider,
        GroupBy::BillingAccount,
        GroupBy::SubAccount,
        GroupBy::Resource,
        GroupBy::Service,
        GroupBy::Sku,
        GroupBy::ChargeDimension,
        GroupBy::ChargeCategory,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            GroupBy::Provider => "provider",
            GroupBy::BillingAccount => "billing_account",
            GroupBy::SubAccount => "sub_account",
            GroupBy::Resource => "resource",
            GroupBy::Service => "service",
            GroupBy::Sku => "sku",
            GroupBy::ChargeDimension => "charge_dimension",
            GroupBy::ChargeCategory => "charge_category",
        }
    }
}

/// Time bucketing of report rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Granularity {
    None,
    Daily,
    Monthly,
}

impl Granularity {
    /// The buckets of `period` at this granularity, in order.
    pub fn buckets(&self, period: &Period) -> Vec<Period> {
        match self {
            Granularity::None => vec![*period],
            Granularity::Daily => period.days(),
            Granularity::Monthly => period.months(),
        }
    }
}

/// Which records a query covers. Empty sets mean "no restriction".
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CostFilter {
    pub providers: BTreeSet<ProviderKind>,
    pub provider_accounts: BTreeSet<ProviderAccountId>,
    pub sub_accounts: BTreeSet<String>,
    pub resources: BTreeSet<String>,
    pub services: BTreeSet<String>,
}

impl CostFilter {
    /// Whether a provider account is asked about at all.
    pub fn selects_account(&self, kind: ProviderKind, account: &ProviderAccountId) -> bool {
        (self.providers.is_empty() || self.providers.contains(&kind))
            && (self.provider_accounts.is_empty() || self.provider_accounts.contains(account))
    }

    /// Whether a record of a selected account is kept.
    pub fn keeps(&self, record: &CostRecord) -> bool {
        let admits = |set: &BTreeSet<String>, value: Option<&str>| {
            set.is_empty() || value.is_some_and(|v| set.contains(v))
        };
        admits(
            &self.sub_accounts,
            record.sub_account.as_ref().map(|s| &*s.id),
        ) && admits(&self.resources, record.resource.as_ref().map(|r| &*r.id))
            && admits(&self.services, Some(&record.service_name))
    }
}

/// A validated cost question.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CostQuery {
    pub period: Period,
    pub filter: CostFilter,
    /// Ordered, without repeats.
    pub group_by: Vec<GroupBy>,
    pub granularity: Granularity,
    pub max_staleness: Option<Duration>,
}
