//! Answers a cost query: plans each selected account's chunks, gets them through the one chunk cache
//! (concurrently, bounded per account), keeps each account's outcome apart, and aggregates the accounts
//! that answered.

pub mod aggregate;
mod cache;
mod health;
mod report;
mod shared_tier;

pub use cache::{CachedChunk, ChunkAnswer, ChunkCache, ChunkKey, FetchHold};
pub use health::{HealthBoard, HealthSnapshot};
pub use report::{AccountResult, AccountState, RecordSet, Report};
pub use shared_tier::SharedTier;

use crate::{
    deadline::Deadline,
    domain::{
        AccountRef, CostQuery, Currency, FetchProgress, Money, MoneyError, ProgressObserver,
        ProviderAccountId, UpstreamError,
    },
    jobs::{JobManager, JobSnapshot, JobWork, PartSnapshot},
    providers::Provider,
};
use futures::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use std::{sync::Arc, time::Duration};
use tracing::Instrument;

#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
pub enum EngineError {
    #[error("cannot sum the records exactly: {0}")]
    Arithmetic(#[from] MoneyError),
    #[error(
        "the query needs {planned} upstream chunks; server.max_chunks_per_query allows {limit}"
    )]
    TooManyChunks { planned: usize, limit: usize },
    #[error("the report has {rows} rows; server.max_rows allows {limit}")]
    TooManyRows { rows: usize, limit: usize },
}

/// How much one query may ask of the engine.
#[derive(Debug, Clone, Copy)]
pub struct EngineLimits {
    /// Chunks of one account fetched at once.
    pub max_concurrency_per_account: usize,
    pub max_chunks_per_query: usize,
    pub max_rows: usize,
}

/// The query engine. Shared by every RPC behind an `Arc`.
pub struct Engine {
    providers: Vec<Arc<Provider>>,
    health: HealthBoard,
    cache: ChunkCache,
    limits: EngineLimits,
}

impl Engine {
    pub fn new(providers: Vec<Provider>, cache: ChunkCache, limits: EngineLimits) -> Engine {
        let mut providers: Vec<Arc<Provider>> = providers.into_iter().map(Arc::new).collect();
        providers.sort_by(|a, b| a.account().id.cmp(&b.account().id));
        let health = HealthBoard::new(providers.iter().map(|p| p.account().id.clone()));
        Engine {
            providers,
            health,
            cache,
            limits,
        }
    }

    /// Configured accounts, ordered by id.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// The ids of the configured accounts, ordered: the accounts a query may name.
    pub fn account_ids(&self) -> Vec<ProviderAccountId> {
        self.providers
            .iter()
            .map(|p| p.account().id.clone())
            .collect()
    }

    pub fn health(&self) -> &HealthBoard {
        &self.health
    }

    pub fn cache(&self) -> &ChunkCache {
        &self.cache
    }

    /// Aggregated costs for `query`, waiting for upstreams until `deadline`.
    pub async fn report(
        &self,
        query: &CostQuery,
        deadline: Deadline,
    ) -> Result<Report, EngineError> {
        self.report_observed(query, deadline, &|_, _| {}).await
    }

    /// As [`Engine::report`], telling `observe` how each account's upstream work is going.
    pub async fn report_observed(
        &self,
        query: &CostQuery,
        deadline: Deadline,
        observe: &ProgressObserver<'_>,
    ) -> Result<Report, EngineError> {
        self.report_from(query, deadline, observe, None).await
    }

    /// The answer for a query whose `job` runs on another replica: its asynchronous accounts PENDING
    /// with the job's latest progress, asked nothing here (the other replica's poller does that); the
    /// others answered by this engine, from its cache or their upstreams.
    pub async fn report_beside(
        &self,
        query: &CostQuery,
        deadline: Deadline,
        job: &Job,
    ) -> Result<Report, EngineError> {
        self.report_from(query, deadline, &|_, _| {}, Some(job))
            .await
    }

    async fn report_from(
        &self,
        query: &CostQuery,
        deadline: Deadline,
        observe: &ProgressObserver<'_>,
        elsewhere: Option<&Job>,
    ) -> Result<Report, EngineError> {
        let records = self
            .records_observed(query, deadline, observe, elsewhere)
            .await?;
        let aggregation = aggregate::aggregate(records.columns(), query)?;
        if aggregation.rows.len() > self.limits.max_rows {
            return Err(EngineError::TooManyRows {
                rows: aggregation.rows.len(),
                limit: self.limits.max_rows,
            });
        }
        let RecordSet {
            accounts,
            unchanged_until,
            holds,
            ..
        } = records;
        let mut accounts = accounts;
        for result in &mut accounts {
            if let Some(share) = aggregation.by_account.get(&result.account.id) {
                result.billed_cost = share.billed_cost;
                result.record_count = share.record_count;
            }
            if let Some(left_out) = aggregation.unbucketed.get(&result.account.id) {
                result.notes.push(format!(
                    "{left_out} records cover periods longer than one bucket or past the requested range (the upstream reports whole periods); they are in no row and not in the totals"
                ));
            }
        }
        Ok(Report {
            query: query.clone(),
            aggregation,
            accounts,
            unchanged_until,
            holds,
        })
    }

    /// Whether `query` asks an asynchronous upstream (whose work may be a job on another replica).
    pub fn asks_asynchronous(&self, query: &CostQuery) -> bool {
        self.providers.iter().any(|p| {
            p.capabilities().asynchronous
                && query
                    .filter
                    .selects_account(p.account().kind, &p.account().id)
        })
    }

    /// The chunks of every selected account that answered, and every account's result.
    pub async fn records(
        &self,
        query: &CostQuery,
        deadline: Deadline,
    ) -> Result<RecordSet, EngineError> {
        self.records_observed(query, deadline, &|_, _| {}, None)
            .await
    }

    /// The records of `query`; an asynchronous account that `elsewhere` (a job on another replica)
    /// has a part for is PENDING with that part's progress instead of fetched.
    async fn records_observed(
        &self,
        query: &CostQuery,
        deadline: Deadline,
        observe: &ProgressObserver<'_>,
        elsewhere: Option<&Job>,
    ) -> Result<RecordSet, EngineError> {
        type Plan = Result<Vec<crate::providers::Chunk>, UpstreamError>;
        let plans: Vec<(&Arc<Provider>, Plan)> = self
            .providers
            .iter()
            .filter(|p| {
                query
                    .filter
                    .selects_account(p.account().kind, &p.account().id)
            })
            .map(|p| match p.unanswerable(query) {
                Some(error) => (p, Err(error)),
                None => (p, Ok(p.plan(query))),
            })
            .collect();
        let planned: usize = plans
            .iter()
            .map(|(_, chunks)| chunks.as_ref().map_or(0, Vec::len))
            .sum();
        if planned > self.limits.max_chunks_per_query {
            return Err(EngineError::TooManyChunks {
                planned,
                limit: self.limits.max_chunks_per_query,
            });
        }
        let outcomes = futures::future::join_all(plans.into_iter().map(|(provider, chunks)| {
            let span = tracing::info_span!(
                "provider account",
                costd.provider = provider.account().kind.as_str(),
                costd.account = provider.account().id.as_str(),
            );
            let polled_elsewhere = elsewhere
                .filter(|_| provider.capabilities().asynchronous)
                .and_then(|job| {
                    job.parts
                        .iter()
                        .find(|part| part.account.id == provider.account().id)
                });
            async move {
                if let Some(part) = polled_elsewhere {
                    return AccountOutcome::pending_elsewhere(part);
                }
                match chunks {
                    Ok(chunks) => {
                        self.fetch_account(provider.clone(), chunks, query, deadline, observe)
                            .await
                    }
                    Err(error) => AccountOutcome::unanswerable(provider.account().clone(), error),
                }
            }
            .instrument(span)
        }))
        .await;
        let mut chunks = Vec::new();
        let mut accounts = Vec::with_capacity(outcomes.len());
        let mut holds = Vec::new();
        for outcome in outcomes {
            chunks.extend(outcome.chunks);
            accounts.push(outcome.result);
            holds.extend(outcome.holds);
        }
        let reusable = accounts
            .iter()
            .all(|a| a.from_cache && a.state == AccountState::Ok);
        let unchanged_until = reusable
            .then(|| {
                chunks
                    .iter()
                    .map(|(chunk, _)| self.cache.unchanged_until(chunk))
                    .min()
            })
            .flatten();
        Ok(RecordSet {
            query: query.clone(),
            unchanged_until,
            holds,
            chunks,
            accounts,
        })
    }

    async fn fetch_account(
        &self,
        provider: Arc<Provider>,
        chunks: Vec<crate::providers::Chunk>,
        query: &CostQuery,
        deadline: Deadline,
        observe: &ProgressObserver<'_>,
    ) -> AccountOutcome {
        let account = provider.account().clone();
        let chunk_count = chunks.len();
        let account_observer = |progress: &FetchProgress| observe(&account.id, progress);
        let answers: Vec<ChunkAnswer> = stream::iter(chunks)
            .map(|chunk| {
                let key = ChunkKey {
                    account: account.id.clone(),
                    chunk,
                };
                self.cache.get(
                    provider.clone(),
                    key,
                    deadline,
                    query.max_staleness,
                    &account_observer,
                )
            })
            // `buffered`, not `buffer_unordered`: answers keep the plan's order, so records come out in a
            // deterministic order whatever finished first.
            .buffered(self.limits.max_concurrency_per_account)
            .collect()
            .await;
        let now = self.cache.now();
        let mut result = AccountResult {
            account: account.clone(),
            state: AccountState::Ok,
            fetched_at: None,
            from_cache: true,
            warnings: Vec::new(),
            notes: Vec::new(),
            billed_cost: Money::zero(Currency::USD),
            record_count: 0,
            upstream_requests: 0,
        };
        let mut served = Vec::with_capacity(answers.len());
        let mut holds = Vec::new();
        let mut pending: Option<FetchProgress> = None;
        let mut first_failure: Option<UpstreamError> = None;
        let mut failed_chunks = 0usize;
        let mut stale: Option<(Duration, UpstreamError)> = None;
        for answer in answers {
            let data = match answer {
                ChunkAnswer::Fresh { data, fetched } => {
                    if fetched {
                        result.from_cache = false;
                        result.upstream_requests += data.requests;
                        self.health
                            .record_success(&account.id, now, data.rate_limit_remaining);
                    }
                    data
                }
                ChunkAnswer::Stale {
                    data,
                    age,
                    error,
                    requests,
                } => {
                    // The failed refresh's requests were sent for this answer: they count.
                    result.upstream_requests += requests;
                    self.health.record_failure(&account.id, now, &error);
                    if stale.as_ref().is_none_or(|(oldest, _)| age > *oldest) {
                        stale = Some((age, error));
                    }
                    data
                }
                ChunkAnswer::Pending { hold, progress } => {
                    result.from_cache = false;
                    holds.push(hold);
                    pending = Some(*progress);
                    continue;
                }
                ChunkAnswer::Failed(failure) => {
                    result.from_cache = false;
                    result.upstream_requests += failure.requests;
                    self.health.record_failure(&account.id, now, &failure.error);
                    if let Some(reading) = failure.rate_limit_remaining {
                        self.health.record_rate_limit(&account.id, reading);
                    }
                    failed_chunks += 1;
                    first_failure.get_or_insert(failure.error);
                    continue;
                }
            };
            result.fetched_at = Some(
                result
                    .fetched_at
                    .map_or(data.fetched_at, |t| t.min(data.fetched_at)),
            );
            result.warnings.extend(data.warnings.iter().cloned());
            let estimated = !self.cache.is_settled(&data.period);
            served.push((data, estimated));
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
                result.notes.push(format!("{failed_chunks} of {chunk_count} upstream requests failed; the first error is reported"));
            }
            result.state = AccountState::Failed(error);
            result.fetched_at = None;
            return AccountOutcome {
                chunks: Vec::new(),
                result,
                holds: Vec::new(),
            };
        }
        if let Some(progress) = pending {
            // Some of its data is still on the way: none of it counts yet.
            result.state = AccountState::Pending { progress };
            result.fetched_at = None;
            return AccountOutcome {
                chunks: Vec::new(),
                result,
                holds,
            };
        }
        if let Some((age, error)) = stale {
            result.state = AccountState::Stale { age, error };
        }
        AccountOutcome {
            chunks: served,
            result,
            holds,
        }
    }
}

/// One account's share of an answer.
struct AccountOutcome {
    chunks: Vec<(Arc<CachedChunk>, bool)>,
    result: AccountResult,
    holds: Vec<FetchHold>,
}

/// The job table runs queries through the engine, with no deadline: a job waits for its upstreams.
impl JobWork for Engine {
    type Report = Report;
    type Error = EngineError;
    type Hold = FetchHold;

    fn accounts(&self, query: &CostQuery) -> Vec<AccountRef> {
        self.providers
            .iter()
            .map(|p| p.account())
            .filter(|account| query.filter.selects_account(account.kind, &account.id))
            .cloned()
            .collect()
    }

    async fn run<'a>(
        &'a self,
        query: &'a CostQuery,
        observe: &'a ProgressObserver<'a>,
    ) -> Result<Report, EngineError> {
        self.report_observed(query, Deadline::JOB, observe).await
    }

    fn resume(&self, account: &ProviderAccountId, progress: &FetchProgress) {
        if let Some(provider) = self.providers.iter().find(|p| &p.account().id == account) {
            provider.resume(progress);
        }
    }

    fn failure<'r>(report: &'r Report, account: &ProviderAccountId) -> Option<&'r UpstreamError> {
        report
            .accounts
            .iter()
            .find(|result| &result.account.id == account)
            .and_then(|result| match &result.state {
                AccountState::Failed(error) => Some(error),
                _ => None,
            })
    }
}

/// The job table as the app runs it: jobs of engine queries.
pub type Jobs = JobManager<Engine>;
/// A job of an engine query, as its subscribers see it.
pub type Job = JobSnapshot<Engine>;

impl AccountOutcome {
    /// An account that cannot answer the query's shape: FAILED, nothing sent, no rows. Not an upstream
    /// failure, so its health is untouched.
    fn unanswerable(account: AccountRef, error: UpstreamError) -> Self {
        AccountOutcome {
            chunks: Vec::new(),
            result: AccountResult::without_data(account, AccountState::Failed(error)),
            holds: Vec::new(),
        }
    }

    /// An asynchronous account whose upstream work a job on another replica does: PENDING with that
    /// job's latest progress, nothing asked here.
    fn pending_elsewhere(part: &PartSnapshot) -> Self {
        let progress = FetchProgress {
            polls: part.polls,
            note: part.note.clone(),
            next_poll_at: part.next_poll_at,
            upstream_query: part.upstream_query.clone(),
        };
        AccountOutcome {
            chunks: Vec::new(),
            result: AccountResult::without_data(
                part.account.clone(),
                AccountState::Pending { progress },
            ),
            holds: Vec::new(),
        }
    }
}
