//! The job table: a job is one cost query run to its end by one owner task, with one part per provider
//! account. Parts report upstream progress (Atlas polls) as it happens; subscribers watch snapshots.
//! What a job runs is a [`JobWork`] (the engine, as the app wires it), so the table sits below the
//! engine and never imports it.

mod job;
mod redis;
mod store;
mod takeover;

pub use job::{JobChange, JobId, JobSnapshot, JobState, JobWork, PartSnapshot};
pub use redis::{JOB_FORMAT, RedisJobStore, RedisStoreOptions};
pub use store::{JobStore, MemoryJobStore, StoreError, Writer};

use crate::{
    clock::Clock,
    domain::{CostQuery, FetchProgress, ProviderAccountId},
    sync::lock,
};
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::watch;

/// The job table is full: `max_jobs` are held (running, or finished and still within retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{max_jobs} jobs are held, the most allowed")]
pub struct JobsFull {
    pub max_jobs: usize,
}

/// Why no job was started (or joined).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Full(#[from] JobsFull),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many times, and how far apart at most, the owner retries writing a job's final snapshot while
/// the store is unreachable: the final state must not be lost to a short outage.
const FINAL_WRITE_TRIES: usize = 20;
const FINAL_WRITE_MAX_DELAY: Duration = Duration::from_secs(5);
/// How many times a cancel is tried against an owner that keeps writing first.
const CANCEL_TRIES: usize = 8;

/// Starts jobs, runs each in its own owner task, and forgets finished ones after the retention period.
pub struct JobManager<W: JobWork> {
    store: Arc<dyn JobStore<W>>,
    work: Arc<W>,
    clock: Arc<dyn Clock>,
    retention: chrono::Duration,
    /// Jobs held at once, finished ones within retention included.
    max_jobs: usize,
    /// Running jobs of this replica by owner and query, so callers that find work still pending join
    /// their own job rather than add more (another owner's job is never shared; its upstream work is).
    running: Mutex<HashMap<(Option<String>, CostQuery), JobId>>,
    /// Jobs whose owner task runs on this replica (so a lapsed lease of its own is never adopted twice).
    owned: Mutex<HashSet<JobId>>,
    /// The upstream query tokens this replica's jobs poll, each with the jobs naming it: their leases
    /// are renewed at every sweep and released once no job here names them.
    polling: Mutex<HashMap<String, HashSet<JobId>>>,
    /// Set when this replica stops: with a shared store its owners stop and let their jobs go.
    stopping: watch::Sender<bool>,
}

impl<W: JobWork> JobManager<W> {
    pub fn new(
        store: Arc<dyn JobStore<W>>,
        work: Arc<W>,
        clock: Arc<dyn Clock>,
        retention: chrono::Duration,
        max_jobs: usize,
    ) -> Arc<Self> {
        let manager = Arc::new(JobManager {
            store,
            work,
            clock,
            retention,
            max_jobs,
            running: Mutex::default(),
            owned: Mutex::default(),
            polling: Mutex::default(),
            stopping: watch::Sender::new(false),
        });
        manager.start_sweeper();
        manager
    }

    /// The job store's kind (`memory` or `redis`), for the metrics.
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Whether the job store answers now (within its time limit).
    pub async fn probe_store(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// A new job for `query`, owned by `owner` and running at once; `holds` keep already started
    /// upstream work alive for it.
    async fn start(
        self: &Arc<Self>,
        query: CostQuery,
        holds: Vec<W::Hold>,
        owner: Option<String>,
    ) -> Result<Arc<JobSnapshot<W>>, StartError> {
        // `list` forgets expired jobs first, so only jobs still held count.
        if self.list().await?.len() >= self.max_jobs {
            return Err(StartError::Full(JobsFull {
                max_jobs: self.max_jobs,
            }));
        }
        let now = self.clock.now();
        let parts = self
            .work
            .accounts(&query)
            .into_iter()
            .map(|account| PartSnapshot {
                account,
                state: JobState::Queued,
                note: String::new(),
                polls: 0,
                next_poll_at: None,
                error: None,
                upstream_query: None,
                in_flight: Vec::new(),
            })
            .collect();
        let job = JobSnapshot {
            id: JobId::new(),
            version: 0,
            owner: owner.clone(),
            query: query.clone(),
            state: JobState::Queued,
            parts,
            report: None,
            error: None,
            create_time: now,
            update_time: now,
            expire_time: None,
            last_change: JobChange::StateChanged,
        };
        // A job found running but gone by the time it is read (it ended) is no reason to fail: try
        // once more.
        for _ in 0..2 {
            match self.store.insert(&job, self.retention_std()).await? {
                None => {
                    self.spawn_owner(job.clone(), holds);
                    return Ok(Arc::new(job));
                }
                // Another replica runs this owner's identical query: join it (its poller holds the
                // upstream work; this call's holds are let go).
                Some(running) => {
                    if let Some(joined) = self.get(&running).await? {
                        return Ok(joined);
                    }
                }
            }
        }
        Err(StartError::Store(StoreError::Contended))
    }

    /// Runs `job`'s owner task on this replica.
    fn spawn_owner(self: &Arc<Self>, job: JobSnapshot<W>, holds: Vec<W::Hold>) {
        lock(&self.running).insert((job.owner.clone(), job.query.clone()), job.id.clone());
        lock(&self.owned).insert(job.id.clone());
        self.track_tokens(&job);
        let manager = self.clone();
        tokio::spawn(async move { manager.own(job, holds).await });
    }

    /// The running job of `owner` for an identical `query`, or a new one; `holds` keep already started
    /// upstream work alive for a new job (a running one's own fetches hold the same work).
    pub async fn join_or_start(
        self: &Arc<Self>,
        query: CostQuery,
        holds: Vec<W::Hold>,
        owner: Option<String>,
    ) -> Result<Arc<JobSnapshot<W>>, StartError> {
        let key = (owner, query);
        let running = lock(&self.running).get(&key).cloned();
        if let Some(id) = running
            && let Some(job) = self.get(&id).await?.filter(|job| !job.state.is_final())
        {
            return Ok(job);
        }
        let (owner, query) = key;
        self.start(query, holds, owner).await
    }

    /// The running job of `owner` for `query` on another replica, to join rather than fetch what
    /// it fetches. `None` when this replica runs it (its fetches are joined through the chunk
    /// cache), when no replica does, or when the store cannot say: answering needs no store.
    pub async fn running_elsewhere(
        &self,
        owner: &Option<String>,
        query: &CostQuery,
    ) -> Option<Arc<JobSnapshot<W>>> {
        if self.store.lease_ttl().is_none()
            || lock(&self.running).contains_key(&(owner.clone(), query.clone()))
        {
            return None;
        }
        let id = self.store.running_job(owner, query).await.ok()??;
        self.get(&id)
            .await
            .ok()?
            .filter(|job| !job.state.is_final())
    }

    /// A job, unless unknown or past its retention.
    pub async fn get(&self, id: &JobId) -> Result<Option<Arc<JobSnapshot<W>>>, StoreError> {
        let Some(job) = self.store.get(id).await? else {
            return Ok(None);
        };
        if job.expire_time.is_some_and(|at| at <= self.clock.now()) {
            self.store.remove(id).await?;
            return Ok(None);
        }
        Ok(Some(job))
    }

    /// How many live jobs are in each state, every state listed.
    pub async fn count_by_state(&self) -> Result<[(&'static str, usize); 5], StoreError> {
        let jobs = self.list().await?;
        Ok(JobState::ALL.map(|state| {
            (
                state.as_str(),
                jobs.iter().filter(|job| job.state == state).count(),
            )
        }))
    }

    /// Jobs, newest first, without expired ones.
    pub async fn list(&self) -> Result<Vec<Arc<JobSnapshot<W>>>, StoreError> {
        let now = self.clock.now();
        let (expired, live): (Vec<_>, Vec<_>) = self
            .store
            .list()
            .await?
            .into_iter()
            .partition(|job| job.expire_time.is_some_and(|at| at <= now));
        for job in expired {
            self.store.remove(&job.id).await?;
        }
        Ok(live)
    }

    pub async fn subscribe(
        &self,
        id: &JobId,
    ) -> Result<Option<watch::Receiver<Arc<JobSnapshot<W>>>>, StoreError> {
        if self.get(id).await?.is_none() {
            return Ok(None);
        }
        self.store.subscribe(id).await
    }

    /// Stops a job, on whichever replica runs it: the store turns it CANCELLED, and its owner task,
    /// watching the store, ends and with it its waits; upstream work nobody else waits for stops too. A
    /// finished job is returned as it is.
    pub async fn cancel(&self, id: &JobId) -> Result<Option<Arc<JobSnapshot<W>>>, StoreError> {
        // A write refused because the owner wrote first is tried again on what it wrote.
        for _ in 0..CANCEL_TRIES {
            let Some(job) = self.get(id).await? else {
                return Ok(None);
            };
            if job.state.is_final() {
                return Ok(Some(job));
            }
            let now = self.clock.now();
            let mut cancelled = (*job).clone();
            cancelled.version += 1;
            cancelled.state = JobState::Cancelled;
            for part in &mut cancelled.parts {
                if !part.state.is_final() {
                    part.state = JobState::Cancelled;
                    part.note = "cancelled".to_string();
                }
            }
            cancelled.update_time = now;
            cancelled.expire_time = Some(now + self.retention);
            cancelled.last_change = JobChange::StateChanged;
            if self
                .store
                .publish(&cancelled, self.retention_std(), Writer::Other)
                .await?
            {
                self.forget_running(&cancelled);
                return Ok(Some(Arc::new(cancelled)));
            }
        }
        Err(StoreError::Contended)
    }

    fn retention_std(&self) -> Duration {
        self.retention.to_std().unwrap_or(Duration::MAX)
    }

    /// The owner task: runs the query to its end, publishing every change, and stops when the store
    /// says the job ended elsewhere (cancelled, perhaps on another replica).
    async fn own(self: Arc<Self>, job: JobSnapshot<W>, holds: Vec<W::Hold>) {
        let id = job.id.clone();
        let query = job.query.clone();
        // Changes are coalesced here and written by this task alone, in order: a write never waits
        // inside the observer, and a slow store only skips intermediate snapshots.
        let (changes, mut changed) = watch::channel(job);
        let change = |edit: &dyn Fn(&mut JobSnapshot<W>)| {
            changes.send_modify(|job| {
                edit(job);
                job.version += 1;
                job.update_time = self.clock.now();
            })
        };
        change(&|job| {
            job.state = JobState::Running;
            job.last_change = JobChange::StateChanged;
            for part in &mut job.parts {
                part.state = JobState::Running;
            }
        });
        let observe = |account: &ProviderAccountId, progress: &FetchProgress| {
            change(&|job| {
                job.last_change = JobChange::Progress;
                if let Some(part) = job.parts.iter_mut().find(|p| &p.account.id == account) {
                    part.note = progress.note.clone();
                    part.polls = part.polls.max(progress.polls);
                    part.next_poll_at = progress.next_poll_at;
                    if let Some(query) = &progress.upstream_query {
                        part.upstream_query = Some(query.clone());
                        let same_body = |known: &FetchProgress| {
                            known
                                .upstream_query
                                .as_ref()
                                .is_some_and(|known| known.body == query.body)
                        };
                        match part.in_flight.iter_mut().find(|known| same_body(known)) {
                            Some(known) => *known = progress.clone(),
                            None => part.in_flight.push(progress.clone()),
                        }
                    }
                }
            })
        };
        // Without a subscription (the store unreachable now) a cancel is still seen: the next write
        // is refused.
        let mut stored = self.store.subscribe(&id).await.ok().flatten();
        // The lease is renewed at a third of its TTL, so two renewals can fail before it lapses.
        let mut renewals = self.store.lease_ttl().map(|ttl| {
            let mut ticks = tokio::time::interval(ttl / 3);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        let mut stopping = self.stopping.subscribe();
        // Boxed, so a job that ended elsewhere stops its fetches before its leases are let go.
        let mut run = Box::pin(self.work.run(&query, &observe));
        let ran = loop {
            tokio::select! {
                outcome = &mut run => break Ok(outcome),
                Ok(()) = changed.changed() => {
                    let snapshot = changed.borrow_and_update().clone();
                    let written = self
                        .store
                        .publish(&snapshot, self.retention_std(), Writer::Owner)
                        .await;
                    match written {
                        Ok(false) => break Err(snapshot),
                        Ok(true) => self.track_tokens(&snapshot),
                        Err(_) => {}
                    }
                }
                ended = ended_in_store(&mut stored) => {
                    if ended {
                        break Err(changed.borrow().clone());
                    }
                    stored = None;
                }
                () = until_stopping(&mut stopping) => break Err(changed.borrow().clone()),
                () = next_renewal(&mut renewals) => {
                    // Unreachable: go on; the next renewal takes the lease again unless another
                    // replica did, and a write after that is refused.
                    if let Ok(false) = self.store.renew_lease(&id).await {
                        break Err(changed.borrow().clone());
                    }
                }
            }
        };
        drop(run);
        let outcome = match ran {
            Ok(outcome) => outcome,
            Err(snapshot) => {
                drop(holds);
                return self.ended_elsewhere(&snapshot).await;
            }
        };
        drop(holds);
        // The final state and the report go out in one snapshot: a watcher's last event has both.
        let now = self.clock.now();
        let mut finished = changed.borrow().clone();
        finished.version += 1;
        finished.last_change = JobChange::StateChanged;
        finished.update_time = now;
        finished.expire_time = Some(now + self.retention);
        match outcome {
            Ok(report) => {
                finished.state = JobState::Succeeded;
                for part in &mut finished.parts {
                    part.next_poll_at = None;
                    (part.state, part.error, part.note) =
                        match W::failure(&report, &part.account.id) {
                            Some(error) => (
                                JobState::Failed,
                                Some(error.clone()),
                                format!("failed: {}", error.message),
                            ),
                            None => (JobState::Succeeded, None, "done".to_string()),
                        };
                }
                finished.report = Some(Arc::new(report));
            }
            Err(error) => {
                finished.state = JobState::Failed;
                finished.error = Some(Arc::new(error));
            }
        }
        for part in &mut finished.parts {
            // Nothing is left to poll for; the last query stays in `upstream_query` to show.
            part.in_flight.clear();
        }
        self.forget_running(&finished);
        let mut delay = Duration::from_millis(100);
        for _ in 0..FINAL_WRITE_TRIES {
            let written = self
                .store
                .publish(&finished, self.retention_std(), Writer::Owner)
                .await;
            match written {
                Ok(_) => return self.let_go(&id).await,
                Err(error) => {
                    tracing::warn!(job = %finished.id, %error, "final job state not written yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(FINAL_WRITE_MAX_DELAY);
                }
            }
        }
        self.let_go(&id).await;
        tracing::error!(job = %finished.id, "final job state lost: the job store stayed unreachable");
    }

    /// The job ended in the store (cancelled), another replica holds its lease now, or this replica
    /// hands its jobs over: this owner stops, and with it its waits.
    async fn ended_elsewhere(&self, job: &JobSnapshot<W>) {
        tracing::debug!(job = %job.id, "job ended or moved in the store; its owner stops");
        self.forget_running(job);
        self.let_go(&job.id).await;
    }

    fn forget_running(&self, job: &JobSnapshot<W>) {
        let key = (job.owner.clone(), job.query.clone());
        let mut running = lock(&self.running);
        if running.get(&key) == Some(&job.id) {
            running.remove(&key);
        }
    }
}

/// Resolves once the replica hands its jobs over.
async fn until_stopping(stopping: &mut watch::Receiver<bool>) {
    if stopping.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The next lease renewal; with no lease, never.
async fn next_renewal(renewals: &mut Option<tokio::time::Interval>) {
    match renewals {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Waits until the stored job is final (`true`), or its subscription ends (`false`); with no
/// subscription, never.
async fn ended_in_store<W: JobWork>(
    stored: &mut Option<watch::Receiver<Arc<JobSnapshot<W>>>>,
) -> bool {
    let Some(updates) = stored else {
        return std::future::pending().await;
    };
    loop {
        if updates.borrow_and_update().state.is_final() {
            return true;
        }
        if updates.changed().await.is_err() {
            return updates.borrow().state.is_final();
        }
    }
}
