//! Where jobs live. The store keeps each job's latest snapshot in a `watch` channel: its owner task
//! publishes, and every subscriber sees the latest value — a slow one skips intermediate snapshots but
//! never the last, and nothing queues without bound. The memory store serves one replica; a redis store
//! will implement the same trait for several.

use super::{JobId, JobSnapshot, JobWork};
use crate::sync::lock;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio::sync::watch;

pub trait JobStore<W: JobWork>: Send + Sync + 'static {
    /// Adds a new job.
    fn insert(&self, job: JobSnapshot<W>);
    /// Replaces a job's snapshot and tells its subscribers; unknown jobs are ignored.
    fn publish(&self, job: JobSnapshot<W>);
    fn get(&self, id: &JobId) -> Option<Arc<JobSnapshot<W>>>;
    fn subscribe(&self, id: &JobId) -> Option<watch::Receiver<Arc<JobSnapshot<W>>>>;
    /// Every job, newest first.
    fn list(&self) -> Vec<Arc<JobSnapshot<W>>>;
    /// Forgets a job; its subscribers' streams end.
    fn remove(&self, id: &JobId);
}

/// The default store: in this process's memory.
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
}

impl<W: JobWork> JobStore<W> for MemoryJobStore<W> {
    fn insert(&self, job: JobSnapshot<W>) {
        let id = job.id.clone();
        self.jobs().insert(id, watch::Sender::new(Arc::new(job)));
    }

    fn publish(&self, job: JobSnapshot<W>) {
        if let Some(sender) = self.jobs().get(&job.id) {
            sender.send_replace(Arc::new(job));
        }
    }

    fn get(&self, id: &JobId) -> Option<Arc<JobSnapshot<W>>> {
        self.jobs().get(id).map(|sender| sender.borrow().clone())
    }

    fn subscribe(&self, id: &JobId) -> Option<watch::Receiver<Arc<JobSnapshot<W>>>> {
        self.jobs().get(id).map(watch::Sender::subscribe)
    }

    fn list(&self) -> Vec<Arc<JobSnapshot<W>>> {
        let mut jobs: Vec<Arc<JobSnapshot<W>>> = self
            .jobs()
            .values()
            .map(|sender| sender.borrow().clone())
            .collect();
        jobs.sort_by(|a, b| {
            b.create_time
                .cmp(&a.create_time)
                .then_with(|| a.id.cmp(&b.id))
        });
        jobs
    }

    fn remove(&self, id: &JobId) {
        self.jobs().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{
            AccountRef, CostFilter, CostQuery, Granularity, Period, ProgressObserver,
            ProviderAccountId, UpstreamError,
        },
        jobs::{JobChange, JobId, JobState},
    };

    /// Work that is never run: the store only keeps snapshots.
    struct NoWork;

    impl JobWork for NoWork {
        type Report = ();
        type Error = std::fmt::Error;
        type Hold = ();

        fn accounts(&self, _: &CostQuery) -> Vec<AccountRef> {
            Vec::new()
        }

        async fn run<'a>(
            &'a self,
            _: &'a CostQuery,
            _: &'a ProgressObserver<'a>,
        ) -> Result<(), std::fmt::Error> {
            Ok(())
        }

        fn failure<'r>(_: &'r (), _: &ProviderAccountId) -> Option<&'r UpstreamError> {
            None
        }
    }

    fn job(id: &JobId, version: u32) -> JobSnapshot<NoWork> {
        let start = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        JobSnapshot {
            id: id.clone(),
            owner: None,
            query: CostQuery {
                period: Period::new(start, start + chrono::Duration::days(1)).unwrap(),
                filter: CostFilter::default(),
                group_by: vec![],
                granularity: Granularity::None,
                max_staleness: None,
            },
            state: if version == u32::MAX {
                JobState::Succeeded
            } else {
                JobState::Running
            },
            parts: vec![],
            report: None,
            error: None,
            create_time: start,
            update_time: start + chrono::Duration::seconds(i64::from(version % 1000)),
            expire_time: None,
            last_change: JobChange::Progress,
        }
    }

    #[test]
    fn a_subscriber_that_never_reads_holds_one_snapshot_the_last() {
        let store = MemoryJobStore::<NoWork>::default();
        let id = JobId::from_name(&format!("jobs/{}", "a".repeat(32))).unwrap();
        store.insert(job(&id, 0));
        let mut unread = store.subscribe(&id).unwrap();
        for version in 1..10_000 {
            store.publish(job(&id, version));
        }
        store.publish(job(&id, u32::MAX));

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
}
