//! What a job is: the work it runs ([`JobWork`]), its id, its state, and the snapshot of it that
//! stores keep and subscribers see.

use crate::domain::{
    AccountRef, CostQuery, FetchProgress, ProgressObserver, ProviderAccountId, UpstreamError,
    UpstreamQuery,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::{fmt, future::Future, sync::Arc};

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

    /// Tells the work that `account`'s asynchronous upstream query `progress` names was already made
    /// (by a replica that died): a fetch asking the same goes on polling it rather than asking anew.
    fn resume(&self, account: &ProviderAccountId, progress: &FetchProgress);

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
    pub(super) fn new() -> Self {
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
    /// Each asynchronous upstream query of this part still in flight (one per body), as its latest
    /// progress told: what a replica taking the job over goes on polling. Absent in older jobs.
    #[serde(default)]
    pub in_flight: Vec<FetchProgress>,
}

/// A job as its subscribers see it.
#[derive(Serialize, Deserialize)]
// The work's own types carry their bounds; the work itself is never stored.
#[serde(bound = "")]
pub struct JobSnapshot<W: JobWork> {
    pub id: JobId,
    /// One more at every change: a store refuses a write older than what it holds.
    pub version: u64,
    /// The principal that started it; `None` when costd runs without authentication. Absent in
    /// jobs stored before owners existed.
    #[serde(default)]
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

impl<W: JobWork> JobSnapshot<W> {
    /// The upstream query tokens its parts poll (or polled), each once: what its poller holds a
    /// lease on, so that a token has one poller across replicas.
    pub fn tokens_in_flight(&self) -> Vec<&str> {
        let mut tokens: Vec<&str> = self
            .parts
            .iter()
            .flat_map(|part| &part.in_flight)
            .filter_map(|progress| progress.upstream_query.as_ref())
            .map(|query| query.token.as_str())
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        tokens
    }
}

// By hand: derived impls would ask the work itself to be Clone and Debug.
impl<W: JobWork> Clone for JobSnapshot<W> {
    fn clone(&self) -> Self {
        JobSnapshot {
            id: self.id.clone(),
            version: self.version,
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
            .field("version", &self.version)
            .field("state", &self.state)
            .field("parts", &self.parts)
            .field("has_report", &self.report.is_some())
            .field("error", &self.error)
            .field("update_time", &self.update_time)
            .finish_non_exhaustive()
    }
}
