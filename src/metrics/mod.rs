//! Prometheus metrics: one registry per server (tests run many servers in one process and read exact
//! counts), recorded where the work happens and served as OpenMetrics text on their own port.
//!
//! Names follow Prometheus conventions: the text encoder appends `_total` to counters and the unit to
//! metrics registered with one, so `costd_rpc_duration` is exposed as `costd_rpc_duration_seconds`.

use prometheus_client::{
    encoding::{EncodeLabelSet, text},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use std::{borrow::Cow, time::Duration};

/// Latency buckets in seconds: from a cached answer (well under a millisecond) to an Atlas fetch.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    120.0,
];

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `package.Service/Method`, one of the methods served, or `unknown`.
    pub method: &'static str,
    /// The gRPC status code's canonical name, e.g. `OK`, `INVALID_ARGUMENT`.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    provider: &'static str,
    /// The route template, e.g. `/teams/{teamId}/billing/cost`: bounded, unlike the URL.
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    provider: &'static str,
    endpoint: &'static str,
    /// The HTTP status code, or what went wrong when there was none (`timeout`, `unavailable`, ...).
    outcome: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    /// One of a fixed set of reasons (`token_expired`, `no_grant`, ...).
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FoundLabels {
    by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    outcome: &'static str,
}

/// What the shared tier did with a settled chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedTierOutcome {
    /// Read from redis instead of the upstream.
    Hit,
    /// Not in redis: fetched from the upstream.
    Miss,
    Written,
    /// In redis but not readable by this build (another format, or damaged): fetched instead.
    Unreadable,
    /// Larger than `cache.shared_max_chunk_bytes`: not written.
    TooLarge,
    /// Redis did not answer in time.
    Unavailable,
}

/// How a chunk lookup was answered, for the cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLookup {
    /// Fresh data from the cache.
    Hit,
    /// Not fresh: this caller started the fetch.
    Miss,
    /// Not fresh: this caller joined a fetch already running (counted as a miss too).
    Coalesced,
}

/// What found a remembered GetCosts answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFound {
    /// The request's own bytes, before it was decoded: the answer went out as its stored frame.
    ByRequest,
    /// The request's parsed query (its bytes were new).
    ByQuery,
}

/// What one Atlas poll answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtlasPoll {
    Processing,
    Ready,
    Throttled,
    /// The upstream no longer knows the token.
    Gone,
    Failed,
}

pub struct Metrics {
    registry: Registry,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_duration: Histograms<MethodLabels>,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_duration: Histograms<EndpointLabels>,
    upstream_retries: Family<EndpointLabels, Counter>,
    upstream_retries_refused: Family<ProviderLabels, Counter>,
    upstream_circuit_opened: Family<ProviderLabels, Counter>,
    upstream_circuit_refused: Family<ProviderLabels, Counter>,
    cache_hits: Family<ProviderLabels, Counter>,
    cache_misses: Family<ProviderLabels, Counter>,
    cache_coalesced: Family<ProviderLabels, Counter>,
    cache_stale: Family<ProviderLabels, Counter>,
    cache_shared: Family<PollLabels, Counter>,
    cache_bytes: Gauge,
    cache_entries: Gauge,
    jobs: Family<StateLabels, Gauge>,
    job_store_up: Family<StoreLabels, Gauge>,
    atlas_polls: Family<PollLabels, Counter>,
    atlas_budget_shared: Gauge,
    atlas_budget_waiting: Gauge,
    auth_rejections: Family<ReasonLabels, Counter>,
    auth_open: Gauge,
    export_messages: Counter,
    export_writers_blocked: Gauge,
    queue_delay_microseconds: Gauge,
    queue_delayed: Gauge,
    early_retries_held: Counter,
    answers_remembered: Family<FoundLabels, Counter>,
    /// `answers_remembered`'s two series, taken once: counted on the cached call's hot path.
    answers_by_request: Counter,
    answers_by_query: Counter,
}

/// An Atlas request held by its bucket; uncounted when dropped.
pub struct BudgetHeld(Gauge);

impl Drop for BudgetHeld {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let answers_remembered = Family::<FoundLabels, Counter>::default();
        let found = |by| {
            answers_remembered
                .get_or_create(&FoundLabels { by })
                .clone()
        };
        let (answers_by_request, answers_by_query) = (found("request_bytes"), found("query"));
        let mut metrics = Metrics {
            registry: Registry::with_prefix("costd"),
            rpc_requests: Family::default(),
            rpc_duration: Family::new_with_constructor(latency_histogram),
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            upstream_retries: Family::default(),
            upstream_retries_refused: Family::default(),
            upstream_circuit_opened: Family::default(),
            upstream_circuit_refused: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_coalesced: Family::default(),
            cache_stale: Family::default(),
            cache_shared: Family::default(),
            cache_bytes: Gauge::default(),
            cache_entries: Gauge::default(),
            jobs: Family::default(),
            job_store_up: Family::default(),
            atlas_polls: Family::default(),
            atlas_budget_shared: Gauge::default(),
            atlas_budget_waiting: Gauge::default(),
            auth_rejections: Family::default(),
            auth_open: Gauge::default(),
            export_messages: Counter::default(),
            export_writers_blocked: Gauge::default(),
            queue_delay_microseconds: Gauge::default(),
            queue_delayed: Gauge::default(),
            early_retries_held: Counter::default(),
            answers_remembered,
            answers_by_request,
            answers_by_query,
        };
        let registry = &mut metrics.registry;
        registry.register(
            "rpc_requests",
            "gRPC calls handled, by method and status code",
            metrics.rpc_requests.clone(),
        );
        registry.register(
            "cache_shared",
            "Settled chunks looked up in or written to the tier replicas share, by outcome",
            metrics.cache_shared.clone(),
        );
        registry.register_with_unit(
            "rpc_duration",
            "Time to answer a gRPC call (a stream: until it ends), by method",
            Unit::Seconds,
            metrics.rpc_duration.clone(),
        );
        registry.register(
            "upstream_requests",
            "HTTP requests sent to provider APIs, retries included, by provider, endpoint and outcome",
            metrics.upstream_requests.clone(),
        );
        registry.register_with_unit(
            "upstream_request_duration",
            "Time for one upstream HTTP request, body included, by provider and endpoint",
            Unit::Seconds,
            metrics.upstream_duration.clone(),
        );
        registry.register(
            "upstream_retries",
            "Upstream requests sent again after a retryable failure, by provider and endpoint",
            metrics.upstream_retries.clone(),
        );
        registry.register(
            "upstream_retries_refused",
            "Retries not sent because the account's retry budget was spent, by provider",
            metrics.upstream_retries_refused.clone(),
        );
        registry.register(
            "upstream_circuit_openings",
            "Times an account's circuit breaker opened, by provider",
            metrics.upstream_circuit_opened.clone(),
        );
        registry.register(
            "upstream_circuit_refusals",
            "Requests not sent because the account's circuit was open, by provider",
            metrics.upstream_circuit_refused.clone(),
        );
        registry.register(
            "cache_hits",
            "Chunk lookups answered with fresh cached data, by provider",
            metrics.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Chunk lookups that needed an upstream fetch (started or joined), by provider",
            metrics.cache_misses.clone(),
        );
        registry.register(
            "cache_coalesced_waits",
            "Cache misses that waited on a fetch already running instead of starting one",
            metrics.cache_coalesced.clone(),
        );
        registry.register(
            "cache_stale_serves",
            "Chunks served stale because their refresh failed or ran past the caller's deadline",
            metrics.cache_stale.clone(),
        );
        registry.register_with_unit(
            "cache",
            "Memory held by cached chunks, by the weigher's estimate",
            Unit::Bytes,
            metrics.cache_bytes.clone(),
        );
        registry.register(
            "cache_entries",
            "Chunks in the cache",
            metrics.cache_entries.clone(),
        );
        registry.register("jobs", "Query jobs held, by state", metrics.jobs.clone());
        registry.register(
            "job_store_up",
            "Whether the job store answered its last call (1) or not (0), by store kind",
            metrics.job_store_up.clone(),
        );
        registry.register(
            "atlas_polls",
            "Polls of Atlas cost-explorer query tokens, by what they answered",
            metrics.atlas_polls.clone(),
        );
        registry.register(
            "atlas_budget_shared",
            "With replicas sharing redis: 1 while the Atlas organizations' buckets are drawn from redis, 0 while from this replica's share",
            metrics.atlas_budget_shared.clone(),
        );
        registry.register(
            "atlas_budget_waiting",
            "Atlas requests held until their organization's bucket allows them",
            metrics.atlas_budget_waiting.clone(),
        );
        registry.register(
            "auth_rejections",
            "Calls refused for their credentials or for want of a grant, by reason",
            metrics.auth_rejections.clone(),
        );
        registry.register(
            "auth_open",
            "1 when no [auth] section is configured and every caller is served",
            metrics.auth_open.clone(),
        );
        registry.register(
            "export_messages",
            "Data messages ExportCosts writers have handed to their reader's bounded channel",
            metrics.export_messages.clone(),
        );
        registry.register(
            "export_writers_blocked",
            "ExportCosts writers waiting for their reader to take a message from a full channel",
            metrics.export_writers_blocked.clone(),
        );
        registry.register(
            "queue_delay_microseconds",
            "How long the queue-delay probe last waited for the runtime to run it once its socket was readable",
            metrics.queue_delay_microseconds.clone(),
        );
        registry.register(
            "queue_delayed",
            "1 while the probe's wait has stayed above server.max_queue_delay_us for a whole interval and calls are shed",
            metrics.queue_delayed.clone(),
        );
        registry.register(
            "answers_remembered",
            "GetCosts calls answered with a remembered answer, by what found it: the request's own bytes (sent as the stored frame, undecoded) or its parsed query",
            metrics.answers_remembered.clone(),
        );
        registry.register(
            "early_retries_held",
            "Overload refusals held for server.early_retry_hold_ms: their connection had been refused less than the shortest RetryInfo delay before",
            metrics.early_retries_held.clone(),
        );
        metrics
    }

    /// A GetCosts call answered with a remembered answer.
    pub fn answer_remembered(&self, found: AnswerFound) {
        match found {
            AnswerFound::ByRequest => self.answers_by_request.inc(),
            AnswerFound::ByQuery => self.answers_by_query.inc(),
        };
    }

    /// An overload refusal held: its connection came back before any RetryInfo delay had passed.
    pub fn early_retry_held(&self) {
        self.early_retries_held.inc();
    }

    /// The queue-delay probe's last sample, and whether calls are shed for it.
    pub fn set_queue_delay(&self, waited: Duration, delayed: bool) {
        self.queue_delay_microseconds
            .set(i64::try_from(waited.as_micros()).unwrap_or(i64::MAX));
        self.queue_delayed.set(i64::from(delayed));
    }

    /// Records a refused call; `reason` is one of a fixed set.
    pub fn auth_rejection(&self, reason: &'static str) {
        self.auth_rejections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn set_auth_open(&self, open: bool) {
        self.auth_open.set(i64::from(open));
    }

    /// Records a finished RPC.
    pub fn rpc(&self, labels: &RpcLabels, elapsed: Duration) {
        self.rpc_requests.get_or_create(labels).inc();
        self.rpc_duration
            .get_or_create(&MethodLabels {
                method: labels.method,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one upstream HTTP request and how it ended.
    pub fn upstream_request(
        &self,
        provider: &'static str,
        endpoint: &'static str,
        outcome: Cow<'static, str>,
        elapsed: Duration,
    ) {
        self.upstream_requests
            .get_or_create(&UpstreamLabels {
                provider,
                endpoint,
                outcome,
            })
            .inc();
        self.upstream_duration
            .get_or_create(&EndpointLabels { provider, endpoint })
            .observe(elapsed.as_secs_f64());
    }

    pub fn upstream_retry(&self, provider: &'static str, endpoint: &'static str) {
        self.upstream_retries
            .get_or_create(&EndpointLabels { provider, endpoint })
            .inc();
    }

    pub fn upstream_retry_refused(&self, provider: &'static str) {
        self.upstream_retries_refused
            .get_or_create(&ProviderLabels { provider })
            .inc();
    }

    pub fn upstream_circuit_opened(&self, provider: &'static str) {
        self.upstream_circuit_opened
            .get_or_create(&ProviderLabels { provider })
            .inc();
    }

    pub fn upstream_circuit_refused(&self, provider: &'static str) {
        self.upstream_circuit_refused
            .get_or_create(&ProviderLabels { provider })
            .inc();
    }

    pub fn cache_lookup(&self, provider: &'static str, lookup: CacheLookup) {
        let labels = ProviderLabels { provider };
        match lookup {
            CacheLookup::Hit => self.cache_hits.get_or_create(&labels).inc(),
            CacheLookup::Miss => self.cache_misses.get_or_create(&labels).inc(),
            CacheLookup::Coalesced => {
                self.cache_misses.get_or_create(&labels).inc();
                self.cache_coalesced.get_or_create(&labels).inc()
            }
        };
    }

    pub fn cache_stale_serve(&self, provider: &'static str) {
        self.cache_stale
            .get_or_create(&ProviderLabels { provider })
            .inc();
    }

    pub fn shared_tier(&self, outcome: SharedTierOutcome) {
        let outcome = match outcome {
            SharedTierOutcome::Hit => "hit",
            SharedTierOutcome::Miss => "miss",
            SharedTierOutcome::Written => "written",
            SharedTierOutcome::Unreadable => "unreadable",
            SharedTierOutcome::TooLarge => "too_large",
            SharedTierOutcome::Unavailable => "unavailable",
        };
        self.cache_shared
            .get_or_create(&PollLabels { outcome })
            .inc();
    }

    pub fn atlas_poll(&self, poll: AtlasPoll) {
        let outcome = match poll {
            AtlasPoll::Processing => "processing",
            AtlasPoll::Ready => "ready",
            AtlasPoll::Throttled => "throttled",
            AtlasPoll::Gone => "gone",
            AtlasPoll::Failed => "failed",
        };
        self.atlas_polls
            .get_or_create(&PollLabels { outcome })
            .inc();
    }

    /// Sets the gauges read from state at scrape time.
    pub fn set_cache_size(&self, bytes: u64, entries: u64) {
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// Sets the jobs gauge; every state is listed, so a state with no jobs reads 0 rather than vanishing.
    pub fn set_jobs(&self, counts: &[(&'static str, usize)]) {
        for &(state, count) in counts {
            self.jobs
                .get_or_create(&StateLabels { state })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Sets whether the job store (`memory` or `redis`) answered its last call.
    pub fn set_atlas_budget_shared(&self, shared: bool) {
        self.atlas_budget_shared.set(i64::from(shared));
    }

    /// Counts one Atlas request held by its bucket, until the returned value is dropped.
    pub fn atlas_budget_held(&self) -> BudgetHeld {
        self.atlas_budget_waiting.inc();
        BudgetHeld(self.atlas_budget_waiting.clone())
    }

    pub fn set_job_store_up(&self, store: &'static str, up: bool) {
        self.job_store_up
            .get_or_create(&StoreLabels { store })
            .set(i64::from(up));
    }

    /// Counts a data message an export writer handed to its reader.
    pub fn export_message(&self) {
        self.export_messages.inc();
    }

    /// Counts an export writer as blocked on its reader until the guard is dropped.
    pub fn export_writer_blocked(&self) -> BlockedWriter<'_> {
        self.export_writers_blocked.inc();
        BlockedWriter(&self.export_writers_blocked)
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = text::encode(&mut text, &self.registry);
        text
    }
}

/// An export writer waiting on its reader; counted in `export_writers_blocked` while held.
pub struct BlockedWriter<'a>(&'a Gauge);

impl Drop for BlockedWriter<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The canonical name of a gRPC status code (as in grpc/status.proto), for the `code` label.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

mod rpc;
pub use rpc::{CallNote, RpcMetricsLayer};
pub mod server;
