//! One cache of normalized chunk results, shared by every query: exactly one upstream fetch per chunk
//! however many callers want it, stale-if-error within a grace window, and a byte budget.
//!
//! moka stores the entries and bounds memory (weigher, and a per-entry lifetime of freshness + grace).
//! Whether an entry is fresh, stale or settled is judged on the injected [`Clock`], so tests move time
//! instead of sleeping. Fetches run in spawned tasks behind a map of shared futures: a caller that
//! gives up never aborts the fetch the others are waiting for.

use super::SharedTier;
use crate::{
    clock::Clock,
    config::CacheConfig,
    deadline::Deadline,
    domain::{
        DataQualityWarning, FetchProgress, Period, ProviderAccountId, RecordColumns, StoredChunk,
        UpstreamError, UpstreamErrorKind,
    },
    metrics::{CacheLookup, Metrics},
    providers::{Chunk, ChunkData, ChunkFailure, FetchedChunk, Provider},
    sync::lock,
};
use chrono::{DateTime, Utc};
use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{sync::watch, task::AbortHandle};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A chunk of one provider account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkKey {
    pub account: ProviderAccountId,
    pub chunk: Chunk,
}

/// A fetched, normalized chunk, shared by every answer that uses it.
#[derive(Debug)]
pub struct CachedChunk {
    pub period: Period,
    /// Held compactly; see [`RecordColumns`].
    pub records: RecordColumns,
    pub warnings: Vec<DataQualityWarning>,
    pub fetched_at: DateTime<Utc>,
    /// Upstream HTTP requests the fetch took.
    pub requests: u32,
    /// Requests left in the upstream's rate-limit window after the fetch, when it said.
    pub rate_limit_remaining: Option<crate::providers::RateLimitReading>,
    bytes: u32,
}

/// How a chunk was answered.
#[derive(Debug)]
pub enum ChunkAnswer {
    /// Fresh data; `fetched` is false when it came from the cache.
    Fresh {
        data: Arc<CachedChunk>,
        fetched: bool,
    },
    /// The refresh failed (or is still running past the caller's deadline); older data is served.
    Stale {
        data: Arc<CachedChunk>,
        age: Duration,
        error: UpstreamError,
        /// Requests the failed refresh sent (0 while it is still running).
        requests: u32,
    },
    Failed(ChunkFailure),
    /// Still fetching at the caller's deadline; the hold keeps the fetch alive for whoever takes it.
    Pending {
        hold: FetchHold,
        /// Boxed: it is much larger than the other answers and rare.
        progress: Box<FetchProgress>,
    },
}

type Fetch = Shared<BoxFuture<'static, Arc<Result<Arc<CachedChunk>, ChunkFailure>>>>;

/// Freshness rules, from the configuration.
#[derive(Debug, Clone, Copy)]
struct Policy {
    settlement_lag: chrono::Duration,
    settled_ttl: chrono::Duration,
    open_ttl: chrono::Duration,
    stale_grace: chrono::Duration,
    fetch_timeout: Duration,
}

/// A fetch in flight: its outcome, its progress, and who still waits for it.
#[derive(Clone)]
struct Inflight {
    fetch: Fetch,
    progress: watch::Receiver<FetchProgress>,
    waiters: Arc<AtomicUsize>,
    task: AbortHandle,
}

/// One waiter's interest in a fetch. When the last one is dropped before the fetch ends, the fetch is
/// stopped: nobody wants its answer any more (a cancelled job's polls stop here).
pub struct FetchHold {
    waiters: Arc<AtomicUsize>,
    task: AbortHandle,
    registry: Registry,
    key: ChunkKey,
}

type Registry = Arc<Mutex<HashMap<ChunkKey, Inflight>>>;

impl FetchHold {
    fn join(inflight: &Inflight, registry: &Registry, key: &ChunkKey) -> Self {
        inflight.waiters.fetch_add(1, Ordering::SeqCst);
        FetchHold {
            waiters: inflight.waiters.clone(),
            task: inflight.task.clone(),
            registry: registry.clone(),
            key: key.clone(),
        }
    }
}

impl std::fmt::Debug for FetchHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchHold")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Drop for FetchHold {
    fn drop(&mut self) {
        if self.waiters.fetch_sub(1, Ordering::SeqCst) == 1 && !self.task.is_finished() {
            self.task.abort();
            // Forget the stopped fetch now, so the next caller starts a new one rather than join it.
            let mut inflight = lock(&self.registry);
            if inflight
                .get(&self.key)
                .is_some_and(|entry| entry.task.id() == self.task.id())
            {
                inflight.remove(&self.key);
            }
        }
    }
}

pub struct ChunkCache {
    entries: moka::future::Cache<ChunkKey, Arc<CachedChunk>>,
    inflight: Registry,
    clock: Arc<dyn Clock>,
    policy: Policy,
    metrics: Arc<Metrics>,
    /// Cancelled when the server stops: callers still waiting are answered with what there is.
    callers_released: CancellationToken,
    /// Settled chunks shared with the other replicas, when there are any.
    shared: Option<Arc<SharedTier>>,
}

/// The most a single entry may live in moka regardless of the clock: memory is bounded in real time.
struct Lifetime(Duration);

impl moka::Expiry<ChunkKey, Arc<CachedChunk>> for Lifetime {
    fn expire_after_create(
        &self,
        _: &ChunkKey,
        _: &Arc<CachedChunk>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(self.0)
    }
}

impl ChunkCache {
    pub fn new(
        config: &CacheConfig,
        fetch_timeout: Duration,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        shared: Option<Arc<SharedTier>>,
    ) -> Self {
        let hours = |h: u64| chrono::Duration::hours(h as i64);
        let seconds = |s: u64| chrono::Duration::seconds(s as i64);
        let policy = Policy {
            settlement_lag: hours(config.settlement_lag_hours),
            settled_ttl: seconds(config.settled_ttl_seconds),
            open_ttl: seconds(config.open_ttl_seconds),
            stale_grace: seconds(config.stale_grace_seconds),
            fetch_timeout,
        };
        let longest = Duration::from_secs(
            config.settled_ttl_seconds.max(config.open_ttl_seconds) + config.stale_grace_seconds,
        );
        let entries = moka::future::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_: &ChunkKey, chunk: &Arc<CachedChunk>| chunk.bytes)
            .expire_after(Lifetime(longest))
            .build();
        ChunkCache {
            entries,
            inflight: Arc::new(Mutex::new(HashMap::new())),
            clock,
            policy,
            metrics,
            callers_released: CancellationToken::new(),
            shared,
        }
    }

    /// Ends every caller's wait, now and from now on, as if its deadline came (jobs wait on): a
    /// stopping server answers its waiting callers PENDING or STALE instead of cutting them off.
    pub fn release_waiting_callers(&self) {
        self.callers_released.cancel();
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Whether a period has closed long enough ago that its costs no longer change (FOCUS: final).
    pub fn is_settled(&self, period: &Period) -> bool {
        period.end() + self.policy.settlement_lag <= self.clock.now()
    }

    /// The chunk, from the cache when fresh, else from the one fetch in flight for it (started if
    /// none is). Waits until `deadline`, telling `observe` of the fetch's progress; `max_staleness`
    /// bounds the age of stale data it may serve. A fetch still running at the deadline is answered
    /// `Pending` with a hold on it, or `Stale` when cached data may be served meanwhile.
    pub async fn get(
        &self,
        provider: Arc<Provider>,
        key: ChunkKey,
        deadline: Deadline,
        max_staleness: Option<Duration>,
        observe: &(dyn Fn(&FetchProgress) + Sync),
    ) -> ChunkAnswer {
        let provider_label = provider.account().kind.as_str();
        let cached = self.entries.get(&key).await;
        if let Some(data) = &cached
            && self.clock.now() < self.fresh_until(data)
        {
            self.metrics.cache_lookup(provider_label, CacheLookup::Hit);
            return ChunkAnswer::Fresh {
                data: data.clone(),
                fetched: false,
            };
        }
        let (inflight, lookup) = self.fetch(provider, key.clone());
        self.metrics.cache_lookup(provider_label, lookup);
        let hold = FetchHold::join(&inflight, &self.inflight, &key);
        let mut progress = inflight.progress.clone();
        let mut fetch = inflight.fetch.clone();
        let waited = async {
            loop {
                tokio::select! {
                    outcome = &mut fetch => return outcome,
                    changed = progress.changed() => match changed {
                        Ok(()) => observe(&progress.borrow_and_update()),
                        // The fetch dropped its sender: its outcome is ready.
                        Err(_) => return (&mut fetch).await,
                    },
                }
            }
        };
        let bounded = async {
            match deadline.instant() {
                Some(at) => tokio::time::timeout_at(at, waited).await.ok(),
                None => Some(waited.await),
            }
        };
        let outcome = tokio::select! {
            outcome = bounded => outcome,
            () = self.callers_released.cancelled(), if !deadline.outlives_stop() => None,
        };
        let failure = match outcome.as_deref() {
            Some(Ok(data)) => {
                return ChunkAnswer::Fresh {
                    data: data.clone(),
                    fetched: true,
                };
            }
            Some(Err(failure)) => failure.clone(),
            None => match cached {
                Some(data) if self.servable_stale(&data, max_staleness) => {
                    let error = UpstreamError::new(
                        UpstreamErrorKind::Timeout,
                        "the refresh is still running",
                    );
                    return self.stale(provider_label, data, error, 0);
                }
                _ => {
                    let progress = inflight.progress.borrow().clone();
                    return ChunkAnswer::Pending {
                        hold,
                        progress: Box::new(progress),
                    };
                }
            },
        };
        match cached {
            Some(data) if self.servable_stale(&data, max_staleness) => {
                self.stale(provider_label, data, failure.error, failure.requests)
            }
            _ => ChunkAnswer::Failed(failure),
        }
    }

    /// Serves `data` marked stale with its age, because its refresh failed with `error` after
    /// `requests` upstream requests.
    fn stale(
        &self,
        provider_label: &'static str,
        data: Arc<CachedChunk>,
        error: UpstreamError,
        requests: u32,
    ) -> ChunkAnswer {
        self.metrics.cache_stale_serve(provider_label);
        let age = (self.clock.now() - data.fetched_at)
            .to_std()
            .unwrap_or_default();
        ChunkAnswer::Stale {
            data,
            age,
            error,
            requests,
        }
    }

    /// Drops every entry (benchmarks and operators refilling the cache).
    pub fn invalidate_all(&self) {
        self.entries.invalidate_all();
    }

    /// Bytes held (by the weigher's estimate) and entries, once moka has applied pending changes.
    pub async fn size(&self) -> (u64, u64) {
        self.entries.run_pending_tasks().await;
        (self.entries.weighted_size(), self.entries.entry_count())
    }

    /// Every chunk held now, for weighing what the cache holds per record (benchmarks).
    pub fn held_chunks(&self) -> Vec<Arc<CachedChunk>> {
        self.entries.iter().map(|(_, chunk)| chunk).collect()
    }

    /// Until when an answer built from `data` stays the same: while it is fresh, and, for an open
    /// period, until it settles (its rows stop being estimated).
    pub fn unchanged_until(&self, data: &CachedChunk) -> DateTime<Utc> {
        let fresh_until = self.fresh_until(data);
        if self.is_settled(&data.period) {
            fresh_until
        } else {
            fresh_until.min(data.period.end() + self.policy.settlement_lag)
        }
    }

    fn ttl(&self, data: &CachedChunk) -> chrono::Duration {
        if self.is_settled(&data.period) {
            self.policy.settled_ttl
        } else {
            self.policy.open_ttl
        }
    }

    fn fresh_until(&self, data: &CachedChunk) -> DateTime<Utc> {
        data.fetched_at + self.ttl(data)
    }

    fn servable_stale(&self, data: &CachedChunk, max_staleness: Option<Duration>) -> bool {
        let now = self.clock.now();
        let within_grace = now < self.fresh_until(data) + self.policy.stale_grace;
        let age = (now - data.fetched_at).to_std().unwrap_or_default();
        within_grace && max_staleness.is_none_or(|limit| age <= limit)
    }

    /// The fetch in flight for `key` (coalesced), or a new one in its own task (a miss).
    fn fetch(&self, provider: Arc<Provider>, key: ChunkKey) -> (Inflight, CacheLookup) {
        let mut inflight = lock(&self.inflight);
        if let Some(running) = inflight.get(&key) {
            return (running.clone(), CacheLookup::Coalesced);
        }
        let entries = self.entries.clone();
        let registry = self.inflight.clone();
        let clock = self.clock.clone();
        let timeout = self.policy.fetch_timeout;
        let shared = self
            .shared
            .clone()
            .filter(|_| self.is_settled(&key.chunk.period));
        let task_key = key.clone();
        let (progress_sender, progress) = watch::channel(FetchProgress::default());
        let task = tokio::spawn(
            async move {
                if let Some(stored) = match &shared {
                    Some(tier) => tier.read(&task_key).await,
                    None => None,
                } {
                    let chunk = Arc::new(CachedChunk::stored(stored));
                    entries.insert(task_key.clone(), chunk.clone()).await;
                    lock(&registry).remove(&task_key);
                    return Arc::new(Ok(chunk));
                }
                let result = provider
                    .fetch(&task_key.chunk, Deadline::after(timeout), &progress_sender)
                    .await;
                let outcome = match result {
                    Ok(fetched) => {
                        let chunk = Arc::new(CachedChunk::new(
                            task_key.chunk.period,
                            fetched,
                            clock.now(),
                        ));
                        entries.insert(task_key.clone(), chunk.clone()).await;
                        if let Some(tier) = shared {
                            // The others may read it a moment later; the callers here do not wait.
                            let (key, chunk) = (task_key.clone(), chunk.clone());
                            tokio::spawn(async move { tier.write(&key, &chunk).await });
                        }
                        Ok(chunk)
                    }
                    // Failures are not cached: the next query asks again.
                    Err(failure) => Err(failure),
                };
                lock(&registry).remove(&task_key);
                Arc::new(outcome)
            }
            .instrument(tracing::Span::current()),
        );
        let abort = task.abort_handle();
        let cleanup = (self.inflight.clone(), key.clone());
        let fetch = async move {
            task.await.unwrap_or_else(|join| {
                // Stopped because nobody waits any more (or it panicked): forget it, so the next caller
                // starts afresh.
                lock(&cleanup.0).remove(&cleanup.1);
                let message = if join.is_cancelled() {
                    "the fetch was stopped: nobody waits for it"
                } else {
                    "the fetch task ended abnormally"
                };
                Arc::new(Err(ChunkFailure {
                    error: UpstreamError::new(UpstreamErrorKind::Unavailable, message),
                    requests: 0,
                    rate_limit_remaining: None,
                }))
            })
        }
        .boxed()
        .shared();
        let entry = Inflight {
            fetch,
            progress,
            waiters: Arc::new(AtomicUsize::new(0)),
            task: abort,
        };
        inflight.insert(key, entry.clone());
        (entry, CacheLookup::Miss)
    }
}

impl CachedChunk {
    /// What the weigher says the chunk holds, in bytes.
    pub fn bytes(&self) -> u32 {
        self.bytes
    }

    /// A chunk another replica fetched: as it stored it, with no request of ours.
    fn stored(stored: StoredChunk) -> Self {
        let records = RecordColumns::from_records(stored.records);
        let bytes = estimated_bytes(&records, &stored.warnings);
        CachedChunk {
            period: stored.period,
            records,
            warnings: stored.warnings,
            fetched_at: stored.fetched_at,
            requests: 0,
            rate_limit_remaining: None,
            bytes,
        }
    }

    fn new(period: Period, fetched: FetchedChunk, fetched_at: DateTime<Utc>) -> Self {
        let ChunkData { records, warnings } = fetched.data;
        let bytes = estimated_bytes(&records, &warnings);
        CachedChunk {
            period,
            records,
            warnings,
            fetched_at,
            requests: fetched.requests,
            rate_limit_remaining: fetched.rate_limit_remaining,
            bytes,
        }
    }
}

/// What a chunk holds in memory: its columns as they are allocated, its warnings, and the entry.
fn estimated_bytes(records: &RecordColumns, warnings: &[DataQualityWarning]) -> u32 {
    let warning_bytes: usize = warnings
        .iter()
        .map(|w| std::mem::size_of::<DataQualityWarning>() + w.message.len())
        .sum();
    let entry = std::mem::size_of::<CachedChunk>() + 64;
    u32::try_from(records.heap_bytes() + warning_bytes + entry).unwrap_or(u32::MAX)
}
