//! The job store shared by several replicas, in redis. Each job is a hash (`version`, `final`,
//! `format`, `doc`: the whole snapshot as JSON) that expires `retention` after its last write; an index
//! sorted set lists jobs by creation; every write is one Lua script that compares versions and refuses
//! a write onto a final job, then publishes `{id}:{version}` on one channel. Subscribers on any replica
//! are fed by one listener task per store: a message only wakes it, and it re-reads the job, and
//! re-reads every watched job after each (re)subscribe, so a message lost to a reconnect never loses
//! the final event. A running job is leased to the replica that polls for it (`SET NX PX`, renewed and
//! released by scripts that compare the holder's own value), and the owner's writes are refused once
//! another replica holds the lease. The Atlas query tokens its jobs poll are leased the same way, and
//! an orphaned job is taken only with its tokens' leases: one poller per token. Every call gives up after [`CALL_TIMEOUT`]: redis trouble is an
//! error, never a hang.

use super::{
    JobId, JobSnapshot, JobWork,
    store::{JobStore, StoreError, Writer, newest_first, replaces},
};
use crate::{domain::CostQuery, redis_link::RedisLink, sync::lock};
use futures::StreamExt;
use redis::{AsyncCommands, Script, aio::ConnectionManager};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{sync::watch, task::AbortHandle};

mod scripts;
use scripts::{CLAIM, HOLD_TOKENS, INSERT, PUBLISH, RELEASE, RELEASE_TOKENS, RENEW};

/// How long one store call may take, connecting included: job RPCs answer within a second.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(800);
/// How long the listener waits before subscribing again after losing its connection.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(200);

/// The format of the stored job JSON this build writes. A job stored in a newer format is refused,
/// never misread or overwritten: an older replica in a rolling upgrade answers FAILED_PRECONDITION for
/// it. Jobs stored before formats existed have no `format` field and read as format 1.
pub const JOB_FORMAT: u32 = 1;

/// The key names under one prefix (see ARCHITECTURE.md's table).
struct Keys {
    prefix: String,
}

impl Keys {
    fn job(&self, id: &JobId) -> String {
        format!("{}:job:{}", self.prefix, id.as_hex())
    }

    fn index(&self) -> String {
        format!("{}:jobs", self.prefix)
    }

    fn changes(&self) -> String {
        format!("{}:jobs:changed", self.prefix)
    }

    /// The ids of jobs not yet final: what a sweep for orphans looks through.
    fn running_set(&self) -> String {
        format!("{}:jobs:running", self.prefix)
    }

    /// What a job key is before its id, for scripts that find a job by an id they read.
    fn job_prefix(&self) -> String {
        format!("{}:job:", self.prefix)
    }

    /// Which replica polls for a running job.
    fn lease(&self, id: &JobId) -> String {
        format!("{}:lease:{}", self.prefix, id.as_hex())
    }

    /// The running job of an owner's query: the SHA-256 of both, as JSON (its sets are ordered, so
    /// every replica writes the same text for the same query).
    fn running(&self, owner: &Option<String>, query: &CostQuery) -> String {
        let text = serde_json::to_vec(&(owner, query)).unwrap_or_default();
        format!("{}:running:{}", self.prefix, sha256_hex(&text))
    }

    /// Which replica polls an upstream query token: by its SHA-256, so key listings never show it.
    fn token_lease(&self, token: &str) -> String {
        format!("{}:poll:{}", self.prefix, sha256_hex(token.as_bytes()))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// How a redis job store is set up beside its URL.
#[derive(Debug, Clone)]
pub struct RedisStoreOptions {
    /// Prefix of every key and channel.
    pub key_prefix: String,
    /// How long a lease on a running job lasts unless renewed.
    pub lease_ttl: Duration,
    /// PEM certificates a `rediss://` server's chain must lead to, instead of the web's roots.
    pub ca_certificates: Option<Vec<u8>>,
}

/// What the store and its listener task share.
struct Shared<W: JobWork> {
    link: RedisLink,
    keys: Keys,
    /// This store's own lease value: random, so a restarted replica never mistakes an old lease for
    /// its own.
    holder: String,
    lease_ttl: Duration,
    /// The jobs watched on this replica, each fed by the listener.
    watched: Mutex<HashMap<JobId, watch::Sender<Arc<JobSnapshot<W>>>>>,
}

/// Jobs in redis, for several replicas.
pub struct RedisJobStore<W: JobWork> {
    shared: Arc<Shared<W>>,
    listener: AbortHandle,
}

impl<W: JobWork> Drop for RedisJobStore<W> {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl<W: JobWork> RedisJobStore<W> {
    /// A store on `url` (`redis://` or `rediss://`, a password in it if any). Nothing is sent until
    /// the first call; the error names no part of the URL.
    pub fn new(url: &SecretString, options: RedisStoreOptions) -> Result<Self, StoreError> {
        let link = RedisLink::new(url, options.ca_certificates.as_deref(), CALL_TIMEOUT)
            .map_err(|error| StoreError::Unavailable(error.0))?;
        let shared = Arc::new(Shared {
            link,
            keys: Keys {
                prefix: options.key_prefix,
            },
            holder: format!("{:032x}", rand::random::<u128>()),
            lease_ttl: options.lease_ttl,
            watched: Mutex::default(),
        });
        let listener = tokio::spawn(listen(shared.clone())).abort_handle();
        Ok(RedisJobStore { shared, listener })
    }
}

impl<W: JobWork> Shared<W> {
    /// Runs one call against redis within [`CALL_TIMEOUT`], connecting first if needed.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.link
            .call(call)
            .await
            .map_err(|error| StoreError::Unavailable(error.0))
    }

    async fn read(&self, id: &JobId) -> Result<Option<Arc<JobSnapshot<W>>>, StoreError> {
        let key = &self.keys.job(id);
        let (doc, format): (Option<Vec<u8>>, Option<u32>) = self
            .call(|mut redis| async move { redis.hget(key, &["doc", "format"]).await })
            .await?;
        doc.map(|doc| decode(&doc, format)).transpose()
    }

    /// Runs a lease script on `id`'s lease with this store's holder value.
    async fn lease_script(&self, script: &Script, id: &JobId) -> Result<bool, StoreError> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys.lease(id))
            .key(self.keys.job(id))
            .arg(&self.holder)
            .arg(millis(self.lease_ttl));
        let invocation = &invocation;
        self.call(|mut redis| async move { invocation.invoke_async::<i64>(&mut redis).await })
            .await
            .map(|done| done == 1)
    }

    /// Runs a token lease script on `tokens`' leases with this store's holder value.
    async fn token_script(&self, script: &Script, tokens: &[String]) -> Result<usize, StoreError> {
        if tokens.is_empty() {
            return Ok(0);
        }
        let mut invocation = script.prepare_invoke();
        for token in tokens {
            invocation.key(self.keys.token_lease(token));
        }
        invocation.arg(&self.holder).arg(millis(self.lease_ttl));
        let invocation = &invocation;
        self.call(|mut redis| async move { invocation.invoke_async::<usize>(&mut redis).await })
            .await
    }

    /// Brings one watched job up to date; a job gone from redis ends its watchers' streams.
    async fn refresh(&self, id: &JobId) {
        if !lock(&self.watched).contains_key(id) {
            return;
        }
        match self.read(id).await {
            Ok(Some(job)) => {
                let mut watched = lock(&self.watched);
                if let Some(sender) = watched.get(id) {
                    let finished = job.state.is_final();
                    sender.send_if_modified(|stored| {
                        let newer = replaces(stored, &job);
                        if newer {
                            *stored = job.clone();
                        }
                        newer
                    });
                    // The final snapshot stays with the receivers; nothing follows it.
                    if finished || sender.receiver_count() == 0 {
                        watched.remove(id);
                    }
                }
            }
            Ok(None) => {
                lock(&self.watched).remove(id);
            }
            // Unreachable: the next (re)subscribe re-reads it.
            Err(_) => {}
        }
    }

    async fn refresh_all(&self) {
        let ids: Vec<JobId> = lock(&self.watched).keys().cloned().collect();
        for id in ids {
            self.refresh(&id).await;
        }
    }
}

/// The listener: subscribes to the changes channel, re-reads every watched job once subscribed, then
/// each job a message names; on a lost connection, subscribes again.
async fn listen<W: JobWork>(shared: Arc<Shared<W>>) {
    loop {
        let subscribed = tokio::time::timeout(CALL_TIMEOUT, async {
            let mut pubsub = shared.link.client().get_async_pubsub().await?;
            pubsub.subscribe(shared.keys.changes()).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(mut pubsub)) = subscribed {
            shared.refresh_all().await;
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let payload = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
                let named = payload
                    .split_once(':')
                    .and_then(|(id, _)| JobId::from_name(&format!("jobs/{id}")));
                if let Some(id) = named {
                    shared.refresh(&id).await;
                }
            }
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

fn encode<W: JobWork>(job: &JobSnapshot<W>) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(job).map_err(|_| StoreError::Unreadable)
}

/// A stored job in `format` (none: stored before formats existed, the first one).
fn decode<W: JobWork>(doc: &[u8], format: Option<u32>) -> Result<Arc<JobSnapshot<W>>, StoreError> {
    let format = format.unwrap_or(1);
    if format > JOB_FORMAT {
        return Err(StoreError::NewerFormat {
            found: format,
            known: JOB_FORMAT,
        });
    }
    serde_json::from_slice(doc)
        .map(Arc::new)
        .map_err(|_| StoreError::Unreadable)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[async_trait::async_trait]
impl<W: JobWork> JobStore<W> for RedisJobStore<W> {
    async fn insert(
        &self,
        job: &JobSnapshot<W>,
        retention: Duration,
    ) -> Result<Option<JobId>, StoreError> {
        let shared = &self.shared;
        let keys = &shared.keys;
        let mut invocation = INSERT.prepare_invoke();
        invocation
            .key(keys.job(&job.id))
            .key(keys.index())
            .key(keys.running(&job.owner, &job.query))
            .key(keys.lease(&job.id))
            .key(keys.running_set())
            .arg(job.version)
            .arg(u8::from(job.state.is_final()))
            .arg(encode(job)?)
            .arg(millis(retention))
            .arg(job.create_time.timestamp_millis())
            .arg(job.id.as_hex())
            .arg(keys.changes())
            .arg(&shared.holder)
            .arg(millis(shared.lease_ttl))
            .arg(JOB_FORMAT)
            .arg(keys.job_prefix());
        let invocation = &invocation;
        let running: Option<String> = shared
            .call(|mut redis| async move { invocation.invoke_async(&mut redis).await })
            .await?;
        Ok(running.and_then(|hex| JobId::from_name(&format!("jobs/{hex}"))))
    }

    async fn publish(
        &self,
        job: &JobSnapshot<W>,
        retention: Duration,
        writer: Writer,
    ) -> Result<bool, StoreError> {
        let shared = &self.shared;
        let keys = &shared.keys;
        let mut invocation = PUBLISH.prepare_invoke();
        invocation
            .key(keys.job(&job.id))
            .key(keys.lease(&job.id))
            .key(keys.running(&job.owner, &job.query))
            .key(keys.running_set())
            .arg(job.version)
            .arg(u8::from(job.state.is_final()))
            .arg(encode(job)?)
            .arg(millis(retention))
            .arg(keys.changes())
            .arg(job.id.as_hex())
            .arg(match writer {
                Writer::Owner => shared.holder.as_str(),
                Writer::Other => "",
            })
            .arg(JOB_FORMAT);
        let invocation = &invocation;
        let written: i64 = shared
            .call(|mut redis| async move { invocation.invoke_async(&mut redis).await })
            .await?;
        match written {
            1 => Ok(true),
            newer if newer < 0 => Err(StoreError::NewerFormat {
                found: u32::try_from(-newer).unwrap_or(u32::MAX),
                known: JOB_FORMAT,
            }),
            _ => Ok(false),
        }
    }

    async fn renew_lease(&self, id: &JobId) -> Result<bool, StoreError> {
        self.shared.lease_script(&RENEW, id).await
    }

    async fn release_lease(&self, id: &JobId) -> Result<(), StoreError> {
        self.shared.lease_script(&RELEASE, id).await.map(drop)
    }

    async fn claim_orphans(&self) -> Result<Vec<Arc<JobSnapshot<W>>>, StoreError> {
        let shared = &self.shared;
        let keys = &shared.keys;
        let running = &keys.running_set();
        let ids: Vec<String> = shared
            .call(|mut redis| async move { redis.smembers(running).await })
            .await?;
        let ids: Vec<JobId> = ids
            .iter()
            .filter_map(|hex| JobId::from_name(&format!("jobs/{hex}")))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut look = redis::pipe();
        for id in &ids {
            look.hget(keys.job(id), "final").exists(keys.lease(id));
        }
        let look = &look;
        let seen: Vec<(Option<String>, bool)> = shared
            .call(|mut redis| async move { look.query_async(&mut redis).await })
            .await?;
        let mut claimed = Vec::new();
        let mut gone = Vec::new();
        for (id, (final_flag, leased)) in ids.iter().zip(seen) {
            match final_flag.as_deref() {
                Some("0") if !leased => {}
                // Expired while running (its replica died and nobody took it for a retention):
                // nothing is left to take over.
                None => {
                    gone.push(id.as_hex().to_string());
                    continue;
                }
                _ => continue,
            }
            let job = match shared.read(id).await {
                Ok(Some(job)) if !job.state.is_final() => job,
                // Ended since it was looked at, or stored by a newer costd, which polls for it.
                Ok(_) | Err(StoreError::NewerFormat { .. }) => continue,
                Err(error) => return Err(error),
            };
            let mut invocation = CLAIM.prepare_invoke();
            invocation.key(keys.lease(id)).key(keys.job(id));
            for token in job.tokens_in_flight() {
                invocation.key(keys.token_lease(token));
            }
            invocation.arg(&shared.holder).arg(millis(shared.lease_ttl));
            let invocation = &invocation;
            let taken: i64 = shared
                .call(|mut redis| async move { invocation.invoke_async(&mut redis).await })
                .await?;
            if taken == 1 {
                claimed.push(job);
            }
        }
        if !gone.is_empty() {
            let gone = &gone;
            shared
                .call(|mut redis| async move { redis.srem::<_, _, i64>(running, gone).await })
                .await?;
        }
        Ok(claimed)
    }

    async fn hold_tokens(&self, tokens: &[String]) -> Result<usize, StoreError> {
        self.shared.token_script(&HOLD_TOKENS, tokens).await
    }

    async fn release_tokens(&self, tokens: &[String]) -> Result<(), StoreError> {
        self.shared
            .token_script(&RELEASE_TOKENS, tokens)
            .await
            .map(drop)
    }

    fn lease_ttl(&self) -> Option<Duration> {
        Some(self.shared.lease_ttl)
    }

    async fn running_job(
        &self,
        owner: &Option<String>,
        query: &CostQuery,
    ) -> Result<Option<JobId>, StoreError> {
        let key = &self.shared.keys.running(owner, query);
        let running: Option<String> = self
            .shared
            .call(|mut redis| async move { redis.get(key).await })
            .await?;
        Ok(running.and_then(|hex| JobId::from_name(&format!("jobs/{hex}"))))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.shared
            .call(|mut redis| async move { redis::cmd("PING").query_async::<()>(&mut redis).await })
            .await
    }

    async fn get(&self, id: &JobId) -> Result<Option<Arc<JobSnapshot<W>>>, StoreError> {
        self.shared.read(id).await
    }

    async fn subscribe(
        &self,
        id: &JobId,
    ) -> Result<Option<watch::Receiver<Arc<JobSnapshot<W>>>>, StoreError> {
        if let Some(sender) = lock(&self.shared.watched).get(id) {
            return Ok(Some(sender.subscribe()));
        }
        let Some(job) = self.shared.read(id).await? else {
            return Ok(None);
        };
        if job.state.is_final() {
            // Nothing will follow: the receiver keeps the final snapshot after its sender goes.
            return Ok(Some(watch::Sender::new(job).subscribe()));
        }
        let receiver = lock(&self.shared.watched)
            .entry(id.clone())
            .or_insert_with(|| watch::Sender::new(job))
            .subscribe();
        // A change between the read and the registration woke nobody: read once more.
        self.shared.refresh(id).await;
        Ok(Some(receiver))
    }

    async fn list(&self) -> Result<Vec<Arc<JobSnapshot<W>>>, StoreError> {
        let keys = &self.shared.keys;
        let index = &keys.index();
        let ids: Vec<String> = self
            .shared
            .call(|mut redis| async move { redis.zrevrange(index, 0, -1).await })
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut fetch = redis::pipe();
        for id in &ids {
            fetch.hget(format!("{}{id}", keys.job_prefix()), &["doc", "format"]);
        }
        let fetch = &fetch;
        let docs: Vec<(Option<Vec<u8>>, Option<u32>)> = self
            .shared
            .call(|mut redis| async move { fetch.query_async(&mut redis).await })
            .await?;
        let mut jobs = Vec::with_capacity(docs.len());
        let mut expired = Vec::new();
        for (id, (doc, format)) in ids.iter().zip(docs) {
            match doc {
                Some(doc) => jobs.push(decode(&doc, format)?),
                None => expired.push(id.clone()),
            }
        }
        if !expired.is_empty() {
            // Retention is the hash's TTL; the index forgets an expired job when it is next listed.
            let expired = &expired;
            self.shared
                .call(|mut redis| async move { redis.zrem::<_, _, i64>(index, expired).await })
                .await?;
        }
        newest_first(&mut jobs);
        Ok(jobs)
    }

    async fn remove(&self, id: &JobId) -> Result<(), StoreError> {
        let keys = &self.shared.keys;
        let (job, index, running, member) = (
            &keys.job(id),
            &keys.index(),
            &keys.running_set(),
            id.as_hex(),
        );
        self.shared
            .call(|mut redis| async move {
                redis::pipe()
                    .del(job)
                    .zrem(index, member)
                    .srem(running, member)
                    .query_async::<()>(&mut redis)
                    .await
            })
            .await?;
        lock(&self.shared.watched).remove(id);
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
