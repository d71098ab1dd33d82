//! The job table: a job is one cost query run to its end by one owner task, with one part per provider
//! account. Parts report upstream progress (Atlas polls) as it happens; subscribers watch snapshots.
//! What a job runs is a [`JobWork`] (the engine, as the app wires it), so the table sits below the
//! engine and never imports it.

mod redis;
mod store;

pub use redis::RedisJobStore;
pub use store::{JobStore, MemoryJobStore, StoreError};

use crate::{
    clock::Clock,
    domain::{
        AccountRef, CostQuery, FetchProgress, ProgressObserver, ProviderAccountId, UpstreamError,
        UpstreamQuery,
    },
    sync::lock,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::{
    collections::HashMap,
    fmt,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::watch;

/// What a job runs: a cost query, to its end.
pub trait JobWork: Send + Sync + 'static {
    /// What a job that ran to its end holds; stored whole by a shared store.
    type Report: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Why a job failed as a whole (its accounts' upstream failures are in its report instead).
    type Error: std::error::Error + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Keeps upstream work a caller already started alive for the job.
    type Hold: Send + 'static;

    /// The accounts a job for `query` has parts for.
    fn accounts(&self, query: &CostQuery) -> Vec<AccountRef>;

    /// Runs `query` to its end with no deadline, telling `observe` how each account's work goes.
    fn run<'a>(
        &'a self,
        query: &'a CostQuery,
        observe: &'a ProgressObserver<'a>,
    ) -> impl Future<Output = Result<Self::Report, Self::Error>> + Send + 'a;

    /// An account's failure in a finished report, if it failed.
    fn failure<'r>(
        report: &'r Self::Report,
        account: &ProviderAccountId,
    ) -> Option<&'r UpstreamError>;
}

/// An unguessable job id: 128 random bits in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    fn new() -> Self {
        JobId(format!("{:032x}", rand::random::<u128>()))
    }

    /// Parses a resource name `jobs/{id}`.
    pub fn from_name(name: &str) -> Option<Self> {
        let id = name.strip_prefix("jobs/")?;
        (id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| JobId(id.to_string()))
    }

    /// The resource name, `jobs/{id}`.
    pub fn name(&self) -> String {
        format!("jobs/{}", self.0)
    }

    /// The 32 hex digits alone.
    pub fn as_hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// Lower-case name, as the metrics label it.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// What the latest change to a job was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobChange {
    StateChanged,
    Progress,
}

/// One provider account's share of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartSnapshot {
    pub account: AccountRef,
    pub state: JobState,
    pub note: String,
    pub polls: u32,
    pub next_poll_at: Option<DateTime<Utc>>,
    pub error: Option<UpstreamError>,
    /// The asynchronous upstream query this part waits for (Atlas: org, body, token, created_at, last
    /// status), as the latest progress told.
    pub upstream_query: Option<UpstreamQuery>,
}

/// A job as its subscribers see it.
#[derive(Serialize, Deserialize)]
// The work's own types carry their bounds; the work itself is never stored.
#[serde(bound = "")]
pub struct JobSnapshot<W: JobWork> {
    pub id: JobId,
    /// One more at every change: a store refuses a write older than what it holds.
    pub version: u64,
    pub query: CostQuery,
    pub state: JobState,
    pub parts: Vec<PartSnapshot>,
    /// When SUCCEEDED.
    pub report: Option<Arc<W::Report>>,
    /// When FAILED.
    pub error: Option<Arc<W::Error>>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    /// When a finished job is forgotten.
    pub expire_time: Option<DateTime<Utc>>,
    pub last_change: JobChange,
}

// By hand: derived impls would ask the work itself to be Clone and Debug.
impl<W: JobWork> Clone for JobSnapshot<W> {
    fn clone(&self) -> Self {
        JobSnapshot {
            id: self.id.clone(),
            version: self.version,
            query: self.query.clone(),
            state: self.state,
            parts: self.parts.clone(),
            report: self.report.clone(),
            error: self.error.clone(),
            create_time: self.create_time,
            update_time: self.update_time,
            expire_time: self.expire_time,
            last_change: self.last_change,
        }
    }
}

impl<W: JobWork> fmt::Debug for JobSnapshot<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobSnapshot")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("state", &self.state)
            .field("parts", &self.parts)
            .field("has_report", &self.report.is_some())
            .field("error", &self.error)
            .field("update_time", &self.update_time)
            .finish_non_exhaustive()
    }
}

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
    /// Running jobs of this replica by query, so callers that find work still pending join it rather
    /// than add more.
    running: Mutex<HashMap<CostQuery, JobId>>,
}

impl<W: JobWork> JobManager<W> {
    pub fn new(
        store: Arc<dyn JobStore<W>>,
        work: Arc<W>,
        clock: Arc<dyn Clock>,
        retention: chrono::Duration,
        max_jobs: usize,
    ) -> Arc<Self> {
        Arc::new(JobManager {
            store,
            work,
            clock,
            retention,
            max_jobs,
            running: Mutex::default(),
        })
    }

    /// The job store's kind (`memory` or `redis`), for the metrics.
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// A new job for `query`, running at once; `holds` keep already started upstream work alive for it.
    async fn start(
        self: &Arc<Self>,
        query: CostQuery,
        holds: Vec<W::Hold>,
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
            })
            .collect();
        let job = JobSnapshot {
            id: JobId::new(),
            version: 0,
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
        self.store.insert(&job, self.retention_std()).await?;
        lock(&self.running).insert(query, job.id.clone());
        let manager = self.clone();
        let owner_job = job.clone();
        tokio::spawn(async move { manager.own(owner_job, holds).await });
        Ok(Arc::new(job))
    }

    /// The running job for an identical `query`, or a new one; `holds` keep already started upstream
    /// work alive for a new job (a running one's own fetches hold the same work).
    pub async fn join_or_start(
        self: &Arc<Self>,
        query: CostQuery,
        holds: Vec<W::Hold>,
    ) -> Result<Arc<JobSnapshot<W>>, StartError> {
        let running = lock(&self.running).get(&query).cloned();
        if let Some(id) = running
            && let Some(job) = self.get(&id).await?.filter(|job| !job.state.is_final())
        {
            return Ok(job);
        }
        self.start(query, holds).await
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
            if self.store.publish(&cancelled, self.retention_std()).await? {
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
                    if progress.upstream_query.is_some() {
                        part.upstream_query = progress.upstream_query.clone();
                    }
                }
            })
        };
        // Without a subscription (the store unreachable now) a cancel is still seen: the next write
        // is refused.
        let mut stored = self.store.subscribe(&id).await.ok().flatten();
        let run = self.work.run(&query, &observe);
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                Ok(()) = changed.changed() => {
                    let snapshot = changed.borrow_and_update().clone();
                    if let Ok(false) = self.store.publish(&snapshot, self.retention_std()).await {
                        return self.ended_elsewhere(&snapshot);
                    }
                }
                ended = ended_in_store(&mut stored) => {
                    if ended {
                        return self.ended_elsewhere(&changed.borrow());
                    }
                    stored = None;
                }
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
        self.forget_running(&finished);
        let mut delay = Duration::from_millis(100);
        for _ in 0..FINAL_WRITE_TRIES {
            match self.store.publish(&finished, self.retention_std()).await {
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(job = %finished.id, %error, "final job state not written yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(FINAL_WRITE_MAX_DELAY);
                }
            }
        }
        tracing::error!(job = %finished.id, "final job state lost: the job store stayed unreachable");
    }

    fn ended_elsewhere(&self, job: &JobSnapshot<W>) {
        tracing::debug!(job = %job.id, "job ended in the store; its owner stops");
        self.forget_running(job);
    }

    fn forget_running(&self, job: &JobSnapshot<W>) {
        let mut running = lock(&self.running);
        if running.get(&job.query) == Some(&job.id) {
            running.remove(&job.query);
        }
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
