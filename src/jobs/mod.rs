//! The job table: a job is one cost query run to its end by one owner task, with one part per provider
//! account. Parts report upstream progress (Atlas polls) as it happens; subscribers watch snapshots.
//! What a job runs is a [`JobWork`] (the engine, as the app wires it), so the table sits below the
//! engine and never imports it.

mod store;

pub use store::{JobStore, MemoryJobStore};

use crate::{
    clock::Clock,
    domain::{
        AccountRef, CostQuery, FetchProgress, ProgressObserver, ProviderAccountId, UpstreamError,
        UpstreamQuery,
    },
    sync::lock,
};
use chrono::{DateTime, Utc};
use std::{
    collections::HashMap,
    fmt,
    future::Future,
    sync::{Arc, Mutex},
};
use tokio::{sync::watch, task::AbortHandle};

/// What a job runs: a cost query, to its end.
pub trait JobWork: Send + Sync + 'static {
    /// What a job that ran to its end holds.
    type Report: Send + Sync + 'static;
    /// Why a job failed as a whole (its accounts' upstream failures are in its report instead).
    type Error: std::error::Error + Send + Sync + 'static;
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobChange {
    StateChanged,
    Progress,
}

/// One provider account's share of a job.
#[derive(Debug, Clone)]
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
pub struct JobSnapshot<W: JobWork> {
    pub id: JobId,
    /// The principal that started it; `None` when costd runs without authentication.
    pub owner: Option<String>,
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
            owner: self.owner.clone(),
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

/// Starts jobs, runs each in its own owner task, and forgets finished ones after the retention period.
pub struct JobManager<W: JobWork> {
    store: Arc<dyn JobStore<W>>,
    work: Arc<W>,
    clock: Arc<dyn Clock>,
    retention: chrono::Duration,
    /// Jobs held at once, finished ones within retention included.
    max_jobs: usize,
    owners: Mutex<HashMap<JobId, AbortHandle>>,
    /// Running jobs by owner and query, so callers that find work still pending join their own job
    /// rather than add more (another owner's job is never shared; its upstream work is, below).
    running: Mutex<HashMap<(Option<String>, CostQuery), JobId>>,
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
            owners: Mutex::default(),
            running: Mutex::default(),
        })
    }

    /// A new job for `query`, owned by `owner` and running at once; `holds` keep already started
    /// upstream work alive for it.
    fn start(
        self: &Arc<Self>,
        query: CostQuery,
        holds: Vec<W::Hold>,
        owner: Option<String>,
    ) -> Result<Arc<JobSnapshot<W>>, JobsFull> {
        // `list` forgets expired jobs first, so only jobs still held count.
        if self.list().len() >= self.max_jobs {
            return Err(JobsFull {
                max_jobs: self.max_jobs,
            });
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
        self.store.insert(job.clone());
        lock(&self.running).insert((owner, query), job.id.clone());
        let manager = self.clone();
        let owner_job = job.clone();
        let owner = tokio::spawn(async move { manager.own(owner_job, holds).await });
        lock(&self.owners).insert(job.id.clone(), owner.abort_handle());
        Ok(self.store.get(&job.id).unwrap_or_else(|| Arc::new(job)))
    }

    /// The running job of `owner` for an identical `query`, or a new one; `holds` keep already started
    /// upstream work alive for a new job (a running one's own fetches hold the same work).
    pub fn join_or_start(
        self: &Arc<Self>,
        query: CostQuery,
        holds: Vec<W::Hold>,
        owner: Option<String>,
    ) -> Result<Arc<JobSnapshot<W>>, JobsFull> {
        let key = (owner, query);
        let running = lock(&self.running).get(&key).cloned();
        if let Some(job) = running
            .and_then(|id| self.store.get(&id))
            .filter(|job| !job.state.is_final())
        {
            return Ok(job);
        }
        let (owner, query) = key;
        self.start(query, holds, owner)
    }

    /// A job, unless unknown or past its retention.
    pub fn get(&self, id: &JobId) -> Option<Arc<JobSnapshot<W>>> {
        let job = self.store.get(id)?;
        if job.expire_time.is_some_and(|at| at <= self.clock.now()) {
            self.store.remove(id);
            return None;
        }
        Some(job)
    }

    /// How many live jobs are in each state, every state listed.
    pub fn count_by_state(&self) -> [(&'static str, usize); 5] {
        let jobs = self.list();
        JobState::ALL.map(|state| {
            (
                state.as_str(),
                jobs.iter().filter(|job| job.state == state).count(),
            )
        })
    }

    /// Jobs, newest first, without expired ones.
    pub fn list(&self) -> Vec<Arc<JobSnapshot<W>>> {
        let now = self.clock.now();
        let (expired, live): (Vec<_>, Vec<_>) = self
            .store
            .list()
            .into_iter()
            .partition(|job| job.expire_time.is_some_and(|at| at <= now));
        for job in expired {
            self.store.remove(&job.id);
        }
        live
    }

    pub fn subscribe(&self, id: &JobId) -> Option<watch::Receiver<Arc<JobSnapshot<W>>>> {
        self.get(id)?;
        self.store.subscribe(id)
    }

    /// Stops a job: its owner task ends, and with it its waits; upstream work nobody else waits for
    /// stops too. A finished job is returned as it is.
    pub fn cancel(&self, id: &JobId) -> Option<Arc<JobSnapshot<W>>> {
        let job = self.get(id)?;
        if job.state.is_final() {
            return Some(job);
        }
        if let Some(owner) = lock(&self.owners).remove(id) {
            owner.abort();
        }
        let now = self.clock.now();
        let mut cancelled = (*job).clone();
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
        self.forget_running(&cancelled);
        self.store.publish(cancelled);
        self.store.get(id)
    }

    /// The owner task: runs the query to its end, publishing every change.
    async fn own(self: Arc<Self>, job: JobSnapshot<W>, holds: Vec<W::Hold>) {
        let current = Mutex::new(job);
        let publish = |change: &dyn Fn(&mut JobSnapshot<W>)| {
            let mut job = lock(&current);
            change(&mut job);
            job.update_time = self.clock.now();
            self.store.publish(job.clone());
        };
        publish(&|job| {
            job.state = JobState::Running;
            job.last_change = JobChange::StateChanged;
            for part in &mut job.parts {
                part.state = JobState::Running;
            }
        });
        let observe = |account: &ProviderAccountId, progress: &FetchProgress| {
            publish(&|job| {
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
        let query = lock(&current).query.clone();
        let outcome = self.work.run(&query, &observe).await;
        drop(holds);
        // The final state and the report go out in one snapshot: a watcher's last event has both.
        let now = self.clock.now();
        let mut finished = lock(&current).clone();
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
        *lock(&current) = finished.clone();
        self.store.publish(finished.clone());
        self.forget_running(&finished);
        lock(&self.owners).remove(&finished.id);
    }

    fn forget_running(&self, job: &JobSnapshot<W>) {
        let key = (job.owner.clone(), job.query.clone());
        let mut running = lock(&self.running);
        if running.get(&key) == Some(&job.id) {
            running.remove(&key);
        }
    }
}
