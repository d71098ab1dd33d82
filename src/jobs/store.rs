//! Where jobs live. A store keeps each job's latest snapshot and tells subscribers through a `watch`
//! channel: every subscriber sees the latest value — a slow one skips intermediate snapshots but never
//! the last, and nothing queues without bound. Every write is a compare-and-set on the job's version:
//! a write older than the stored snapshot, or onto a final one, is refused, so a late writer never
//! turns a terminal state back. The memory store serves one replica; [`super::RedisJobStore`] several.

use super::{JobId, JobSnapshot, JobWork};
use crate::{domain::CostQuery, sync::lock};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::watch;

/// Why a store call failed. Never carries the store's address or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time, or refused the connection.
    #[error("the job store is unreachable ({0})")]
    Unavailable(&'static str),
    /// A stored job this build cannot read.
    #[error("a stored job cannot be read")]
    Unreadable,
    /// Another writer kept changing the job first.
    #[error("the job kept changing; try again")]
    Contended,
    /// A job stored by a newer costd (during a rolling upgrade): refused rather than misread.
    #[error(
        "the job was stored by a newer costd (format {found}; this one reads up to {known}); ask a replica of the newer version"
    )]
    NewerFormat { found: u32, known: u32 },
}

/// Who writes a snapshot: the replica that holds the job's lease (its owner task), or any other
/// replica (a cancel). An owner's write is refused once another replica holds the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    Owner,
    Other,
}

#[async_trait::async_trait]
pub trait JobStore<W: JobWork>: Send + Sync + 'static {
    /// Adds a new job, leased to this replica and kept for `retention` after its last write; unless
    /// the store already runs a job of the same owner's identical query (another replica's): then
    /// nothing is written and that job's id is returned, to join.
    async fn insert(
        &self,
        job: &JobSnapshot<W>,
        retention: Duration,
    ) -> Result<Option<JobId>, StoreError>;
    /// Replaces a job's snapshot and tells its subscribers, unless the stored one is final or not
    /// older, or `writer` is the owner and another replica holds the lease (`Ok(false)`; unknown jobs
    /// too). A final snapshot is kept for `retention`.
    async fn publish(
        &self,
        job: &JobSnapshot<W>,
        retention: Duration,
        writer: Writer,
    ) -> Result<bool, StoreError>;
    async fn get(&self, id: &JobId) -> Result<Option<Arc<JobSnapshot<W>>>, StoreError>;
    /// The job's latest snapshot now, and every newer one; `None` for an unknown job.
    async fn subscribe(
        &self,
        id: &JobId,
    ) -> Result<Option<watch::Receiver<Arc<JobSnapshot<W>>>>, StoreError>;
    /// Every job, newest first.
    async fn list(&self) -> Result<Vec<Arc<JobSnapshot<W>>>, StoreError>;
    /// Forgets a job; its subscribers' streams end.
    async fn remove(&self, id: &JobId) -> Result<(), StoreError>;
    /// Keeps this replica's lease on a running job; `false` once the job ended or another replica
    /// holds the lease (this replica's owner then stops).
    async fn renew_lease(&self, id: &JobId) -> Result<bool, StoreError>;
    /// Gives this replica's lease on a job up; another replica's lease is left alone.
    async fn release_lease(&self, id: &JobId) -> Result<(), StoreError>;
    /// Running jobs whose lease lapsed (their replica died), each now leased to this replica, which
    /// goes on with their upstream work, together with the leases on the upstream query tokens they
    /// poll. A job polling a token another replica holds is left to that replica, so every token
    /// ends up with one poller.
    async fn claim_orphans(&self) -> Result<Vec<Arc<JobSnapshot<W>>>, StoreError>;
    /// Keeps this replica's leases on the upstream query tokens its jobs poll: renews them, or takes
    /// those that lapsed while nobody else took them. Answers how many another replica holds.
    async fn hold_tokens(&self, tokens: &[String]) -> Result<usize, StoreError>;
    /// Gives this replica's leases on `tokens` up; another replica's are left alone.
    async fn release_tokens(&self, tokens: &[String]) -> Result<(), StoreError>;
    /// How long a lease lasts unless renewed; `None` for a store only this replica uses.
    fn lease_ttl(&self) -> Option<Duration>;
    /// The job of `owner` running `query` on any replica, as the store knows it; `None` for a store
    /// only this replica uses (the job table knows its own).
    async fn running_job(
        &self,
        owner: &Option<String>,
        query: &CostQuery,
    ) -> Result<Option<JobId>, StoreError>;
    /// Whether the store answers now.
    async fn ping(&self) -> Result<(), StoreError>;
    /// `memory` or `redis`, as the metrics label it.
    fn kind(&self) -> &'static str;
}

/// Whether `new` may replace `stored`: never onto a final snapshot, never an older or equal version.
pub(super) fn replaces<W: JobWork>(stored: &JobSnapshot<W>, new: &JobSnapshot<W>) -> bool {
    !stored.state.is_final() && new.version > stored.version
}

/// Newest first; ties by id, so pages neither repeat nor skip a job.
pub(super) fn newest_first<W: JobWork>(jobs: &mut [Arc<JobSnapshot<W>>]) {
    jobs.sort_by(|a, b| {
        b.create_time
            .cmp(&a.create_time)
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// The default store: in this process's memory. Retention is the job table's own (expire times).
pub struct MemoryJobStore<W: JobWork> {
    jobs: Mutex<HashMap<JobId, watch::Sender<Arc<JobSnapshot<W>>>>>,
}

impl<W: JobWork> Default for MemoryJobStore<W> {
    fn default() -> Self {
        MemoryJobStore {
            jobs: Mutex::default(),
        }
    }
}

impl<W: JobWork> MemoryJobStore<W> {
    fn jobs(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<JobId, watch::Sender<Arc<JobSnapshot<W>>>>> {
        lock(&self.jobs)
    }

    fn publish_now(&self, job: &JobSnapshot<W>) -> bool {
        let jobs = self.jobs();
        let Some(sender) = jobs.get(&job.id) else {
            return false;
        };
        sender.send_if_modified(|stored| {
            let replaced = replaces(stored, job);
            if replaced {
                *stored = Arc::new(job.clone());
            }
            replaced
        })
    }
}

#[async_trait::async_trait]
impl<W: JobWork> JobStore<W> for MemoryJobStore<W> {
    /// Identical queries are joined by the job table itself: one replica sees all of them.
    async fn insert(&self, job: &JobSnapshot<W>, _: Duration) -> Result<Option<JobId>, StoreError> {
        let id = job.id.clone();
        self.jobs()
            .insert(id, watch::Sender::new(Arc::new(job.clone())));
        Ok(None)
    }

    async fn publish(
        &self,
        job: &JobSnapshot<W>,
        _: Duration,
        _: Writer,
    ) -> Result<bool, StoreError> {
        Ok(self.publish_now(job))
    }

    async fn get(&self, id: &JobId) -> Result<Option<Arc<JobSnapshot<W>>>, StoreError> {
        Ok(self.jobs().get(id).map(|sender| sender.borrow().clone()))
    }

    async fn subscribe(
        &self,
        id: &JobId,
    ) -> Result<Option<watch::Receiver<Arc<JobSnapshot<W>>>>, StoreError> {
        Ok(self.jobs().get(id).map(watch::Sender::subscribe))
    }

    async fn list(&self) -> Result<Vec<Arc<JobSnapshot<W>>>, StoreError> {
        let mut jobs: Vec<Arc<JobSnapshot<W>>> = self
            .jobs()
            .values()
            .map(|sender| sender.borrow().clone())
            .collect();
        newest_first(&mut jobs);
        Ok(jobs)
    }

    async fn remove(&self, id: &JobId) -> Result<(), StoreError> {
        self.jobs().remove(id);
        Ok(())
    }

    /// Every job is this replica's: a lease is always held, never lapses.
    async fn renew_lease(&self, id: &JobId) -> Result<bool, StoreError> {
        Ok(self
            .jobs()
            .get(id)
            .is_some_and(|sender| !sender.borrow().state.is_final()))
    }

    async fn release_lease(&self, _: &JobId) -> Result<(), StoreError> {
        Ok(())
    }

    async fn claim_orphans(&self) -> Result<Vec<Arc<JobSnapshot<W>>>, StoreError> {
        Ok(Vec::new())
    }

    /// One replica polls every token: nobody else holds one.
    async fn hold_tokens(&self, _: &[String]) -> Result<usize, StoreError> {
        Ok(0)
    }

    async fn release_tokens(&self, _: &[String]) -> Result<(), StoreError> {
        Ok(())
    }

    fn lease_ttl(&self) -> Option<Duration> {
        None
    }

    async fn running_job(
        &self,
        _: &Option<String>,
        _: &CostQuery,
    ) -> Result<Option<JobId>, StoreError> {
        Ok(None)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::{
        domain::{
            AccountRef, CostFilter, CostQuery, FetchProgress, Granularity, Period,
            ProgressObserver, ProviderAccountId, UpstreamError,
        },
        jobs::{JobChange, JobId, JobState},
    };

    /// Work that is never run: the store only keeps snapshots.
    pub struct NoWork;

    impl JobWork for NoWork {
        type Report = ();
        type Error = UpstreamError;
        type Hold = ();

        fn accounts(&self, _: &CostQuery) -> Vec<AccountRef> {
            Vec::new()
        }

        async fn run<'a>(
            &'a self,
            _: &'a CostQuery,
            _: &'a ProgressObserver<'a>,
        ) -> Result<(), UpstreamError> {
            Ok(())
        }

        fn resume(&self, _: &ProviderAccountId, _: &FetchProgress) {}

        fn failure<'r>(_: &'r (), _: &ProviderAccountId) -> Option<&'r UpstreamError> {
            None
        }
    }

    pub fn job(id: &JobId, version: u64, state: JobState) -> JobSnapshot<NoWork> {
        let start = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        JobSnapshot {
            id: id.clone(),
            version,
            owner: None,
            query: CostQuery {
                period: Period::new(start, start + chrono::Duration::days(1)).unwrap(),
                filter: CostFilter::default(),
                group_by: vec![],
                granularity: Granularity::None,
                max_staleness: None,
            },
            state,
            parts: vec![],
            report: None,
            error: None,
            create_time: start,
            update_time: start + chrono::Duration::seconds((version % 1000) as i64),
            expire_time: None,
            last_change: JobChange::Progress,
        }
    }

    const KEPT: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_subscriber_that_never_reads_holds_one_snapshot_the_last() {
        let store = MemoryJobStore::<NoWork>::default();
        let id = JobId::from_name(&format!("jobs/{}", "a".repeat(32))).unwrap();
        store
            .insert(&job(&id, 0, JobState::Running), KEPT)
            .await
            .unwrap();
        let mut unread = store.subscribe(&id).await.unwrap().unwrap();
        for version in 1..10_000 {
            store
                .publish(&job(&id, version, JobState::Running), KEPT, Writer::Owner)
                .await
                .unwrap();
        }
        store
            .publish(&job(&id, 10_000, JobState::Succeeded), KEPT, Writer::Owner)
            .await
            .unwrap();

        assert!(unread.has_changed().unwrap());
        assert_eq!(
            unread.borrow_and_update().state,
            JobState::Succeeded,
            "the final snapshot, never lost"
        );
        assert!(
            !unread.has_changed().unwrap(),
            "nothing else was queued for it"
        );
    }

    #[tokio::test]
    async fn a_late_writer_never_turns_a_cancelled_job_back() {
        let store = MemoryJobStore::<NoWork>::default();
        let id = JobId::from_name(&format!("jobs/{}", "b".repeat(32))).unwrap();
        store
            .insert(&job(&id, 0, JobState::Running), KEPT)
            .await
            .unwrap();

        let cancelled = store
            .publish(&job(&id, 1, JobState::Cancelled), KEPT, Writer::Other)
            .await
            .unwrap();
        let late = store
            .publish(&job(&id, 2, JobState::Succeeded), KEPT, Writer::Owner)
            .await
            .unwrap();
        let stale = store
            .publish(&job(&id, 1, JobState::Running), KEPT, Writer::Owner)
            .await
            .unwrap();

        assert!(cancelled);
        assert!(!late, "the late write is refused");
        assert!(!stale);
        let stored = store.get(&id).await.unwrap().unwrap();
        assert_eq!((stored.state, stored.version), (JobState::Cancelled, 1));
    }
}
