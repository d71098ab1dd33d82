//! The Atlas emulator's mutable state (clock, token buckets, query tokens, counters) and the handle's controls over it.

use crate::sync::lock;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use http::Method;

use crate::sandbox::atlas::auth::AuthBook;
use crate::sandbox::atlas::data::AtlasDataset;
use crate::sandbox::atlas::query::CostQuery;
use crate::sandbox::mix::mix;
use crate::sandbox::{SandboxHandle, Scope, Shared};

/// Polls a new query answers "processing" before its result, unless set otherwise.
pub const DEFAULT_PROCESSING_POLLS: u32 = 3;
/// How long a finished query's result stays readable (Assumption 3).
pub const DEFAULT_RESULT_RETENTION: Duration = Duration::from_secs(3600);

/// A token bucket: `capacity` tokens, `refill_amount` more every `refill_period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub capacity: u32,
    pub refill_amount: u32,
    pub refill_period: Duration,
}

/// What the Atlas emulator did for one org, for tests that count upstream calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AtlasCounters {
    /// Recorded POSTs to the org's create endpoint, whatever their answer (401s and faults too).
    pub posts: usize,
    /// Recorded GETs of the org's tokens (polls), whatever their answer.
    pub polls: usize,
    /// Queries created (202s); each got a distinct token.
    pub queries_created: usize,
    /// Polls of a live token answered "processing".
    pub processing_answers: usize,
    /// Polls answered with the result rows.
    pub result_answers: usize,
    /// Requests refused by the org's token bucket (429).
    pub rate_limited: usize,
    /// Authenticated requests whose `Accept` did not name `application/vnd.atlas.2023-01-01+json`.
    pub unversioned_accepts: usize,
}

/// Controls and ground truth of the Atlas emulator; see [`SandboxHandle::atlas`].
pub struct AtlasControl<'a> {
    shared: &'a Shared,
}

/// All of the emulator's state; handlers reach it through `Shared`.
pub(crate) struct AtlasState {
    pub(crate) data: AtlasDataset,
    pub(crate) auth: AuthBook,
    entropy: Entropy,
    /// Added to the real clock, so tests can jump ahead without sleeping.
    offset_nanos: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    default_polls: Option<u32>,
    org_polls: HashMap<String, u32>,
    rate_limit: Option<RateLimit>,
    retention: Option<Duration>,
    buckets: HashMap<String, Bucket>,
    queries: HashMap<String, PendingQuery>,
    counters: HashMap<String, AtlasCounters>,
}

struct Bucket {
    tokens: u32,
    next_refill: Instant,
}

struct PendingQuery {
    org_id: String,
    query: CostQuery,
    polls_left: u32,
    completed_at: Option<Instant>,
}

/// Unpredictable-enough ids without a rand crate: a per-instance random seed, hashed with a counter.
pub(crate) struct Entropy {
    seed: u64,
    counter: AtomicU64,
}

/// Outcome of taking a token from an org's bucket.
pub(crate) enum Taken {
    Allowed {
        limit: u32,
        remaining: u32,
    },
    Refused {
        limit: RateLimit,
        retry_after_secs: u64,
    },
}

/// What a poll of a token finds.
pub(crate) enum PollState {
    Unknown,
    Processing,
    Done(CostQuery),
}

impl Default for RateLimit {
    /// The documented Invoices endpoint set: 500 tokens, 100 more per 60 s, per org.
    fn default() -> Self {
        Self {
            capacity: 500,
            refill_amount: 100,
            refill_period: Duration::from_secs(60),
        }
    }
}

impl SandboxHandle {
    /// The Atlas Cost Explorer emulator: ground truth, counters, clock and limits.
    pub fn atlas(&self) -> AtlasControl<'_> {
        AtlasControl {
            shared: &self.inner.shared,
        }
    }
}

impl<'a> AtlasControl<'a> {
    pub fn dataset(&self) -> &'a AtlasDataset {
        &self.shared.atlas.data
    }

    /// Polls answered "processing" per new query, for orgs without their own setting.
    pub fn set_processing_polls(&self, polls: u32) {
        self.shared.atlas.lock().default_polls = Some(polls);
    }

    /// Polls answered "processing" per new query of one org.
    pub fn set_org_processing_polls(&self, org_id: &str, polls: u32) {
        let mut inner = self.shared.atlas.lock();
        inner.org_polls.insert(org_id.to_owned(), polls);
    }

    /// Replaces every org's bucket with a full one of this shape (periods capped at a year).
    pub fn set_rate_limit(&self, limit: RateLimit) {
        let mut inner = self.shared.atlas.lock();
        let year = Duration::from_secs(365 * 24 * 3600);
        let refill_period = limit.refill_period.clamp(Duration::from_nanos(1), year);
        inner.rate_limit = Some(RateLimit {
            refill_period,
            ..limit
        });
        inner.buckets.clear();
    }

    pub fn set_result_retention(&self, retention: Duration) {
        self.shared.atlas.lock().retention = Some(retention);
    }

    /// Moves the emulator's clock (buckets, result retention, token and nonce expiry) forward.
    pub fn advance_clock(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let offset = &self.shared.atlas.offset_nanos;
        let _ = offset.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
            Some(o.saturating_add(nanos))
        });
    }

    /// Ends every issued OAuth access token now, as if an hour had passed for them.
    pub fn expire_access_tokens(&self) {
        self.shared.atlas.auth.expire_access_tokens();
    }

    /// Forgets every query token, as an upstream restart would.
    pub fn forget_queries(&self) {
        self.shared.atlas.lock().queries.clear();
    }

    pub fn counters(&self, org_id: &str) -> AtlasCounters {
        let mut counters = self.shared.atlas.counters(org_id);
        let scope = Scope::atlas(org_id);
        for request in self.shared.recorder.snapshot() {
            if request.scope != scope {
                continue;
            }
            match request.method {
                Method::POST => counters.posts += 1,
                Method::GET => counters.polls += 1,
                _ => {}
            }
        }
        counters
    }
}

impl AtlasState {
    pub(crate) fn new() -> Self {
        Self {
            data: AtlasDataset::seeded(),
            auth: AuthBook::default(),
            entropy: Entropy::new(),
            offset_nanos: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::now() + Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }

    pub(crate) fn entropy(&self) -> &Entropy {
        &self.entropy
    }

    pub(crate) fn count(&self, org_id: &str, bump: impl FnOnce(&mut AtlasCounters)) {
        bump(self.lock().counters.entry(org_id.to_owned()).or_default());
    }

    fn counters(&self, org_id: &str) -> AtlasCounters {
        self.lock()
            .counters
            .get(org_id)
            .copied()
            .unwrap_or_default()
    }

    /// Takes one token from the org's bucket, refilling it first for the intervals passed.
    pub(crate) fn take_token(&self, org_id: &str, now: Instant) -> Taken {
        let mut inner = self.lock();
        let limit = inner.rate_limit.unwrap_or_default();
        let bucket = inner
            .buckets
            .entry(org_id.to_owned())
            .or_insert_with(|| Bucket {
                tokens: limit.capacity,
                next_refill: now + limit.refill_period,
            });
        let period = limit.refill_period.as_nanos();
        if now >= bucket.next_refill {
            let periods = (now - bucket.next_refill).as_nanos() / period + 1;
            let added = (periods * u128::from(limit.refill_amount)).min(u128::from(u32::MAX));
            bucket.tokens = (bucket.tokens.saturating_add(added as u32)).min(limit.capacity);
            let step = u64::try_from(period * periods).unwrap_or(u64::MAX);
            bucket.next_refill += Duration::from_nanos(step);
        }
        if bucket.tokens > 0 {
            bucket.tokens -= 1;
            return Taken::Allowed {
                limit: limit.capacity,
                remaining: bucket.tokens,
            };
        }
        let wait = bucket.next_refill.saturating_duration_since(now);
        // Whole seconds, rounded up, never 0: waiting that long always finds a token.
        let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Taken::Refused {
            limit,
            retry_after_secs: retry_after_secs.max(1),
        }
    }

    /// Stores a new query under a fresh token; identical bodies still get distinct tokens.
    pub(crate) fn create_query(&self, org_id: &str, query: CostQuery) -> String {
        let token: String = (0..4)
            .map(|_| format!("{:016x}", self.entropy.next()))
            .collect();
        let mut inner = self.lock();
        let polls_left = inner
            .org_polls
            .get(org_id)
            .copied()
            .or(inner.default_polls)
            .unwrap_or(DEFAULT_PROCESSING_POLLS);
        let pending = PendingQuery {
            org_id: org_id.to_owned(),
            query,
            polls_left,
            completed_at: None,
        };
        inner.queries.insert(token.clone(), pending);
        token
    }

    /// Counts one poll of `token`: "processing" until its polls run out, then the query,
    /// kept for the retention period after the first poll that found it done.
    pub(crate) fn poll(&self, org_id: &str, token: &str, now: Instant) -> PollState {
        let mut inner = self.lock();
        let retention = inner.retention.unwrap_or(DEFAULT_RESULT_RETENTION);
        let expired = |q: &PendingQuery| {
            let until = q.completed_at.map(|t| t.checked_add(retention));
            until.is_some_and(|end| end.is_some_and(|end| now >= end))
        };
        inner.queries.retain(|_, q| !expired(q));
        let Some(pending) = inner.queries.get_mut(token) else {
            return PollState::Unknown;
        };
        if pending.org_id != org_id {
            return PollState::Unknown;
        }
        if pending.polls_left > 0 {
            pending.polls_left -= 1;
            return PollState::Processing;
        }
        pending.completed_at.get_or_insert(now);
        PollState::Done(pending.query.clone())
    }
}

impl Entropy {
    fn new() -> Self {
        // RandomState is seeded randomly per process and per instance: tokens from one
        // sandbox never name a query in another, even after a restart.
        let mut hasher = RandomState::new().build_hasher();
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        hasher.write_u128(since_epoch.as_nanos());
        Self {
            seed: hasher.finish(),
            counter: AtomicU64::new(0),
        }
    }

    pub(crate) fn next(&self) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        mix(self.seed ^ mix(n))
    }
}
