//! What an answer is made of: each account's result, the chunks behind it, and the finished report.

use super::{
    CachedChunk, FetchHold,
    aggregate::{self, Aggregation},
};
use crate::domain::{
    AccountRef, CostQuery, CostRecord, Currency, DataQualityWarning, FetchProgress, Money,
    MoneyError, ProviderAccountId, RecordColumns, UpstreamError,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::{sync::Arc, time::Duration};

/// Whether an account's data is in the answer, and how fresh it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountState {
    Ok,
    /// Served from the cache after a failed refresh; `error` is that failure.
    Stale {
        age: Duration,
        error: UpstreamError,
    },
    /// Still fetching when the caller's deadline came; the report's holds keep the work going.
    Pending {
        progress: FetchProgress,
    },
    Failed(UpstreamError),
}

/// How one account contributed to an answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountResult {
    pub account: AccountRef,
    pub state: AccountState,
    /// When its oldest data was fetched.
    pub fetched_at: Option<DateTime<Utc>>,
    /// All of its data came from the cache.
    pub from_cache: bool,
    pub warnings: Vec<DataQualityWarning>,
    pub notes: Vec<String>,
    /// Sum of its records in the rows.
    pub billed_cost: Money,
    pub record_count: u64,
    pub upstream_requests: u32,
}

impl AccountResult {
    /// An account that gave no data to an answer: in `state`, nothing fetched, nothing counted.
    pub fn without_data(account: AccountRef, state: AccountState) -> Self {
        AccountResult {
            account,
            state,
            fetched_at: None,
            from_cache: false,
            warnings: Vec::new(),
            notes: Vec::new(),
            billed_cost: Money::zero(Currency::USD),
            record_count: 0,
            upstream_requests: 0,
        }
    }

    /// Whether its data is in the totals.
    pub fn is_covered(&self) -> bool {
        matches!(self.state, AccountState::Ok | AccountState::Stale { .. })
    }
}

/// A finished report: rows and totals over the accounts that answered, and every account's result.
/// Stored whole by a shared job store (`jobs::RedisJobStore`), holds aside: they are this process's.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub query: CostQuery,
    pub aggregation: Aggregation,
    pub accounts: Vec<AccountResult>,
    /// Set when the report came wholly from fresh cached chunks: until then, the same query gets the
    /// same report.
    pub unchanged_until: Option<DateTime<Utc>>,
    /// Holds on the fetches of PENDING accounts: whoever keeps them keeps that work alive.
    #[serde(skip)]
    pub holds: Vec<FetchHold>,
}

impl Report {
    /// Whether some account is still being fetched.
    pub fn is_pending(&self) -> bool {
        self.accounts
            .iter()
            .any(|a| matches!(a.state, AccountState::Pending { .. }))
    }
}

impl Report {
    /// Every selected account answered and every record found a row.
    pub fn is_complete(&self) -> bool {
        self.aggregation.unbucketed.is_empty()
            && self.accounts.iter().all(AccountResult::is_covered)
    }
}

/// The chunks behind an answer, shared with the cache, and every account's result.
pub struct RecordSet {
    pub(super) query: CostQuery,
    /// See [`Report::unchanged_until`].
    pub(super) unchanged_until: Option<DateTime<Utc>>,
    /// See [`Report::holds`].
    pub holds: Vec<FetchHold>,
    /// Each chunk with whether its period is still open (its costs estimated).
    pub(super) chunks: Vec<(Arc<CachedChunk>, bool)>,
    pub accounts: Vec<AccountResult>,
}

impl RecordSet {
    /// Each chunk's records as the cache holds them, with whether they are estimated; the query's
    /// filter is not yet applied (see [`aggregate::ChunkFilter`]).
    pub fn columns(&self) -> impl Iterator<Item = (&RecordColumns, bool)> {
        self.chunks
            .iter()
            .map(|(chunk, estimated)| (&chunk.records, *estimated))
    }

    /// The records the query's filter keeps, each with whether it is estimated.
    pub fn records(&self) -> impl Iterator<Item = (CostRecord, bool)> + '_ {
        self.columns().flat_map(|(chunk, estimated)| {
            let keeps = aggregate::ChunkFilter::new(chunk, &self.query.filter);
            chunk
                .records_where(move |index| keeps.keeps(index))
                .map(move |record| (record, estimated))
        })
    }

    /// Every account's result, with its billed cost and record count over the filtered records.
    pub fn accounts_with_totals(&self) -> Result<Vec<AccountResult>, MoneyError> {
        let mut sums: std::collections::HashMap<&ProviderAccountId, (Money, u64)> =
            std::collections::HashMap::new();
        for (chunk, _) in self.columns() {
            let keeps = aggregate::ChunkFilter::new(chunk, &self.query.filter);
            for index in (0..chunk.len()).filter(|index| keeps.keeps(*index)) {
                let (total, count) = sums
                    .entry(chunk.account_of(index))
                    .or_insert((Money::zero(Currency::USD), 0));
                *total = total.checked_add(Money::from_nanos(
                    chunk.billed_currency(index),
                    chunk.billed_nanos(index),
                ))?;
                *count += 1;
            }
        }
        let mut accounts = self.accounts.clone();
        for account in &mut accounts {
            let (total, count) = sums
                .remove(&account.account.id)
                .unwrap_or((Money::zero(Currency::USD), 0));
            account.billed_cost = total;
            account.record_count = count;
        }
        Ok(accounts)
    }

    /// The records in a stable total order, for pages that neither repeat nor skip a record.
    pub fn sorted_records(&self) -> Vec<(CostRecord, bool)> {
        let mut records: Vec<(CostRecord, bool)> = self.records().collect();
        records.sort_by(|(a, _), (b, _)| record_order(a, b));
        records
    }
}

/// Account, then period, then the record's identifying columns, then its amounts: two records equal
/// under this order are identical in every field a caller sees.
fn record_order(a: &CostRecord, b: &CostRecord) -> std::cmp::Ordering {
    // Borrowed, not cloned: a sort compares each record about log2(n) times, and a cloned text is
    // two atomic operations each time.
    fn key(r: &CostRecord) -> impl Ord + '_ {
        (
            &r.provider_account,
            r.charge_period,
            &r.service_name,
            &r.sku_id,
            &r.charge_dimension,
            r.resource.as_ref().map(|x| &x.id),
            r.sub_account.as_ref().map(|x| &x.id),
            &r.billing_account.id,
            r.charge_category,
        )
    }
    key(a)
        .cmp(&key(b))
        .then_with(|| a.billed_cost.nanos().cmp(&b.billed_cost.nanos()))
        .then_with(|| a.original_amount.value.cmp(&b.original_amount.value))
        .then_with(|| {
            a.consumed_quantity
                .as_ref()
                .map(|q| q.value)
                .cmp(&b.consumed_quantity.as_ref().map(|q| q.value))
        })
        .then_with(|| a.extensions.cmp(&b.extensions))
}
