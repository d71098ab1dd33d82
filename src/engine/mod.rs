//! Answers a cost query: plans each selected account's chunks, fetches them concurrently (bounded per
//! account), keeps each account's outcome apart, and aggregates the accounts that answered.

pub mod aggregate;
mod health;

pub use health::{HealthBoard, HealthSnapshot};

use crate::{
    config::Settings,
    deadline::Deadline,
    domain::{CostQuery, CostRecord, Currency, DataQualityWarning, Money, MoneyError},
    providers::{
        AccountRef, ChunkData, ChunkFailure, Provider, error::UpstreamError, http::UpstreamHttp,
    },
};
use aggregate::Aggregation;
use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use std::sync::Arc;
use tracing::Instrument;

/// Whether an account's data is in the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountState {
    Ok,
    Failed(UpstreamError),
}

/// How one account contributed to a report.
#[derive(Debug, Clone)]
pub struct AccountResult {
    pub account: AccountRef,
    pub state: AccountState,
    /// When its oldest data was fetched.
    pub fetched_at: Option<DateTime<Utc>>,
    pub warnings: Vec<DataQualityWarning>,
    pub notes: Vec<String>,
    /// Sum of its records in the rows.
    pub billed_cost: Money,
    pub record_count: u64,
    pub upstream_requests: u32,
}

/// A finished report: rows and totals over the accounts that answered, and every account's result.
#[derive(Debug, Clone)]
pub struct Report {
    pub query: CostQuery,
    pub aggregation: Aggregation,
    pub accounts: Vec<AccountResult>,
}

impl Report {
    /// Every selected account answered and every record found a row.
    pub fn is_complete(&self) -> bool {
        self.aggregation.unbucketed.is_empty()
            && self.accounts.iter().all(|a| a.state == AccountState::Ok)
    }
}

/// The records behind a report, for drill-down, with the same per-account results.
pub struct RecordSet {
    pub records: Vec<CostRecord>,
    pub accounts: Vec<AccountResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot sum the records exactly: {0}")]
    Arithmetic(#[from] MoneyError),
}

/// The query engine. Shared by every RPC behind an `Arc`.
pub struct Engine {
    providers: Vec<Provider>,
    health: HealthBoard,
    max_concurrency_per_account: usize,
}

impl Engine {
    pub fn new(settings: &Settings, http: Arc<UpstreamHttp>) -> Engine {
        let mut providers: Vec<Provider> = settings
            .accounts
            .iter()
            .map(|account| Provider::new(account, http.clone()))
            .collect();
        providers.sort_by(|a, b| a.account().id.cmp(&b.account().id));
        let health = HealthBoard::new(providers.iter().map(|p| p.account().id.clone()));
        Engine {
            providers,
            health,
            max_concurrency_per_account: settings.upstream.max_concurrency_per_account,
        }
    }

    /// Configured accounts, ordered by id.
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    pub fn health(&self) -> &HealthBoard {
        &self.health
    }

    /// Aggregated costs for `query`, waiting for upstreams until `deadline`.
    pub async fn report(
        &self,
        query: &CostQuery,
        deadline: Deadline,
    ) -> Result<Report, EngineError> {
        let records = self.records(query, deadline).await;
        let aggregation = aggregate::aggregate(&records.records, query)?;
        let mut accounts = records.accounts;
        for result in &mut accounts {
            if let Some(share) = aggregation.by_account.get(&result.account.id) {
                result.billed_cost = share.billed_cost;
                result.record_count = share.record_count;
            }
            if let Some(left_out) = aggregation.unbucketed.get(&result.account.id) {
                result.notes.push(format!(
                    "{left_out} records cover periods longer than one bucket of this granularity; they are in no row and not in the totals"
                ));
            }
        }
        Ok(Report {
            query: query.clone(),
            aggregation,
            accounts,
        })
    }

    /// The filtered records of every selected account that answered, and every account's result.
    pub async fn records(&self, query: &CostQuery, deadline: Deadline) -> RecordSet {
        let selected = self.providers.iter().filter(|p| {
            query
                .filter
                .selects_account(p.account().kind, &p.account().id)
        });
        let outcomes = futures::future::join_all(selected.map(|provider| {
            let span = tracing::info_span!(
                "provider account",
                costd.provider = provider.account().kind.as_str(),
                costd.account = provider.account().id.as_str(),
            );
            self.fetch_account(provider, query, deadline)
                .instrument(span)
        }))
        .await;
        let mut records = Vec::new();
        let mut accounts = Vec::with_capacity(outcomes.len());
        for (account_records, result) in outcomes {
            records.extend(
                account_records
                    .into_iter()
                    .filter(|r| query.filter.keeps(r)),
            );
            accounts.push(result);
        }
        RecordSet { records, accounts }
    }

    async fn fetch_account(
        &self,
        provider: &Provider,
        query: &CostQuery,
        deadline: Deadline,
    ) -> (Vec<CostRecord>, AccountResult) {
        let chunks = provider.plan(query);
        let outcomes: Vec<Result<ChunkData, ChunkFailure>> = stream::iter(chunks)
            .map(|chunk| async move { provider.fetch(&chunk, deadline).await })
            .buffer_unordered(self.max_concurrency_per_account)
            .collect()
            .await;
        let account = provider.account().clone();
        let fetched_at = Utc::now();
        let mut result = AccountResult {
            account: account.clone(),
            state: AccountState::Ok,
            fetched_at: Some(fetched_at),
            warnings: Vec::new(),
            notes: Vec::new(),
            billed_cost: Money::zero(Currency::USD),
            record_count: 0,
            upstream_requests: 0,
        };
        let mut records = Vec::new();
        let mut first_failure: Option<UpstreamError> = None;
        let mut failed_chunks = 0usize;
        let chunk_count = outcomes.len();
        for outcome in outcomes {
            match outcome {
                Ok(data) => {
                    result.upstream_requests += data.requests;
                    result.warnings.extend(data.warnings);
                    records.extend(data.records);
                    self.health
                        .record_success(&account.id, fetched_at, data.rate_limit_remaining);
                }
                Err(failure) => {
                    result.upstream_requests += failure.requests;
                    self.health
                        .record_failure(&account.id, fetched_at, &failure.error);
                    failed_chunks += 1;
                    first_failure.get_or_insert(failure.error);
                }
            }
        }
        if let Some(error) = first_failure {
            // Part of an account's data would be a silently wrong total: the whole account fails.
            tracing::warn!(
                reason = error.kind.reason(),
                http_status = error.http_status,
                upstream_code = error.upstream_code.as_deref(),
                failed_chunks,
                chunk_count,
                "provider account failed"
            );
            if chunk_count > 1 {
                result.notes.push(format!("{failed_chunks} of {chunk_count} upstream periods failed; the first error is reported"));
            }
            result.state = AccountState::Failed(error);
            result.fetched_at = None;
            records.clear();
        }
        (records, result)
    }
}
