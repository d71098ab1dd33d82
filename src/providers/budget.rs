//! An Atlas organization's request budget: its Invoices token bucket, from which both cost-explorer
//! calls draw. With one replica the bucket lives in the process (governor). When replicas share redis
//! it lives there, as GCRA in one Lua script on redis' own clock, so every replica draws from the same
//! bucket and a restart does not refill it. While redis cannot be reached a replica draws from a local
//! bucket at its share (the budget divided by the replicas seen in the last minute), and says so: a
//! warning, and `costd_atlas_budget_shared` at 0.

use crate::{
    metrics::Metrics,
    redis_link::{RedisLink, Unreachable},
    sync::lock,
};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use redis::Script;
use std::{
    num::NonZeroU32,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};
use tokio::task::AbortHandle;

/// How long a replica counts as live after it last said so, in milliseconds.
const REPLICA_WINDOW_MS: u64 = 60_000;
/// How often a replica says it is live (and learns how many are), drawing or not.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Records a replica as live and answers how many are.
static HEARTBEAT_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]) * 1000)
return redis.call('ZCARD', KEYS[1])
",
    )
});

/// Takes one request from a bucket, GCRA: the bucket is its theoretical arrival time (TAT), in
/// microseconds of redis' clock. A request is allowed when, after it, the TAT is at most `capacity`
/// emission intervals ahead; otherwise the answer is how long to wait. Also records this replica as
/// live and answers how many are.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]) * 1000)
local replicas = redis.call('ZCARD', KEYS[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local after = tat + interval
local wait = after - now - interval * tonumber(ARGV[1])
if wait > 0 then return {math.ceil(wait), replicas} end
redis.call('SET', KEYS[1], string.format('%d', after), 'PX', math.ceil((after - now) / 1000) + 1)
return {0, replicas}
",
    )
});

/// A bucket's shape: `capacity` requests, refilled at `refill_per_minute`.
#[derive(Debug, Clone, Copy)]
pub struct BucketShape {
    pub capacity: NonZeroU32,
    pub refill_per_minute: NonZeroU32,
}

impl BucketShape {
    fn local(self) -> DefaultDirectRateLimiter {
        RateLimiter::direct(Quota::per_minute(self.refill_per_minute).allow_burst(self.capacity))
    }

    /// One replica's share of the bucket among `replicas`: each part divided, at least one.
    fn share(self, replicas: u32) -> BucketShape {
        let part = |whole: NonZeroU32| {
            NonZeroU32::new(whole.get() / replicas.max(1)).unwrap_or(NonZeroU32::MIN)
        };
        BucketShape {
            capacity: part(self.capacity),
            refill_per_minute: part(self.refill_per_minute),
        }
    }

    fn interval_micros(self) -> u64 {
        60_000_000 / u64::from(self.refill_per_minute.get())
    }
}

/// What every shared bucket of this replica uses: the link, the key prefix, this replica's name and
/// what it last learnt.
pub struct SharedBudgets {
    state: Arc<Replica>,
    heartbeat: AbortHandle,
}

struct Replica {
    link: Arc<RedisLink>,
    key_prefix: String,
    name: String,
    /// Live replicas, as redis last said (at a draw or a heartbeat).
    replicas_seen: AtomicU32,
    shared: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Drop for SharedBudgets {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl SharedBudgets {
    /// Budgets in redis through `link`; says every [`HEARTBEAT`] that this replica is live, so that
    /// each replica knows its share before redis goes away, whether it draws or not.
    pub fn new(link: Arc<RedisLink>, key_prefix: &str, metrics: Arc<Metrics>) -> Self {
        metrics.set_atlas_budget_shared(true);
        let state = Arc::new(Replica {
            link,
            key_prefix: key_prefix.to_string(),
            name: format!("{:016x}", rand::random::<u64>()),
            replicas_seen: AtomicU32::new(1),
            shared: AtomicBool::new(true),
            metrics,
        });
        let beating = state.clone();
        let heartbeat = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(HEARTBEAT);
            loop {
                ticks.tick().await;
                let replicas = beating.replicas_key();
                let live: Result<u32, _> = beating
                    .link
                    .call(|mut redis| {
                        let mut invocation = HEARTBEAT_SCRIPT.key(&replicas);
                        invocation.arg(&beating.name).arg(REPLICA_WINDOW_MS);
                        async move { invocation.invoke_async(&mut redis).await }
                    })
                    .await;
                // A missed heartbeat changes nothing: a draw is what finds redis gone.
                if let Ok(live) = live {
                    beating.replicas_seen.store(live.max(1), Ordering::Relaxed);
                }
            }
        })
        .abort_handle();
        SharedBudgets { state, heartbeat }
    }

    /// The budget of organization `org`, in redis.
    pub fn organization(&self, org: &str, shape: BucketShape) -> OrgBudget {
        OrgBudget {
            shape,
            metrics: self.state.metrics.clone(),
            place: Place::Shared {
                budgets: self.state.clone(),
                key: format!("{}:atlas:budget:{org}", self.state.key_prefix),
                fallback: Mutex::new(None),
            },
        }
    }
}

impl Replica {
    fn replicas_key(&self) -> String {
        format!("{}:replicas", self.key_prefix)
    }

    /// Takes one request from `key`: how long to wait first (zero: taken), and the live replicas.
    async fn take(&self, key: &str, shape: BucketShape) -> Result<(Duration, u32), Unreachable> {
        let replicas = self.replicas_key();
        let (wait, live): (u64, u32) = self
            .link
            .call(|mut redis| {
                let mut invocation = TAKE.key(key);
                invocation
                    .key(&replicas)
                    .arg(shape.capacity.get())
                    .arg(shape.interval_micros())
                    .arg(&self.name)
                    .arg(REPLICA_WINDOW_MS);
                async move { invocation.invoke_async(&mut redis).await }
            })
            .await?;
        Ok((Duration::from_micros(wait), live))
    }

    fn reached(&self, replicas: u32) {
        self.replicas_seen.store(replicas.max(1), Ordering::Relaxed);
        if !self.shared.swap(true, Ordering::Relaxed) {
            tracing::warn!("atlas budgets: redis answers again, drawing from the shared buckets");
            self.metrics.set_atlas_budget_shared(true);
        }
    }

    fn missed(&self, error: Unreachable) -> u32 {
        let replicas = self.replicas_seen.load(Ordering::Relaxed);
        if self.shared.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                %error,
                replicas,
                "atlas budgets: redis unreachable, drawing from this replica's share of each bucket"
            );
            self.metrics.set_atlas_budget_shared(false);
        }
        replicas
    }
}

/// One organization's bucket.
pub struct OrgBudget {
    shape: BucketShape,
    metrics: Arc<Metrics>,
    place: Place,
}

enum Place {
    Local(DefaultDirectRateLimiter),
    Shared {
        budgets: Arc<Replica>,
        key: String,
        /// The local bucket drawn from while redis is unreachable, with the replica count it shares.
        fallback: Mutex<Option<(u32, Arc<DefaultDirectRateLimiter>)>>,
    },
}

impl OrgBudget {
    /// A bucket of this process alone.
    pub fn local(shape: BucketShape, metrics: Arc<Metrics>) -> Self {
        OrgBudget {
            shape,
            metrics,
            place: Place::Local(shape.local()),
        }
    }

    /// Waits until a request may be sent, and takes it.
    pub async fn until_ready(&self) {
        match &self.place {
            Place::Local(bucket) => self.draw_locally(bucket).await,
            Place::Shared {
                budgets,
                key,
                fallback,
            } => {
                let mut held = None;
                loop {
                    match budgets.take(key, self.shape).await {
                        Ok((wait, replicas)) => {
                            budgets.reached(replicas);
                            if wait.is_zero() {
                                return;
                            }
                            held.get_or_insert_with(|| self.metrics.atlas_budget_held());
                            tokio::time::sleep(wait).await;
                        }
                        Err(error) => {
                            let replicas = budgets.missed(error);
                            let bucket = {
                                let mut fallback = lock(fallback);
                                match fallback.as_ref() {
                                    Some((shared_by, bucket)) if *shared_by == replicas => {
                                        bucket.clone()
                                    }
                                    _ => {
                                        let bucket = Arc::new(self.shape.share(replicas).local());
                                        *fallback = Some((replicas, bucket.clone()));
                                        bucket
                                    }
                                }
                            };
                            drop(held);
                            return self.draw_locally(&bucket).await;
                        }
                    }
                }
            }
        }
    }

    async fn draw_locally(&self, bucket: &DefaultDirectRateLimiter) {
        if bucket.check().is_ok() {
            return;
        }
        let _held = self.metrics.atlas_budget_held();
        bucket.until_ready().await;
    }
}
