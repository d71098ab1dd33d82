//! Where jobs live. The store keeps each job's latest snapshot in a `watch` channel: its owner task
//! publishes, and every subscriber sees the latest value — a slow one skips intermediate snapshots but
//! never the last, and nothing queues without bound. The memory store serves one replica; a redis store
//! will implement the same trait for several.

use super::{JobId, JobSnapshot};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio::sync::watch;

pub trait JobStore: Send + Sync + 'static {
    /// Adds a new job.
    fn insert(&self, job: JobSnapshot);
    /// Replaces a job's snapshot and tells its subscribers; unknown jobs are ignored.
    fn publish(&self, job: JobSnapshot);
    fn get(&self, id: &JobId) -> Option<Arc<JobSnapshot>>;
    fn subscribe(&self, id: &JobId) -> Option<watch::Receiver<Arc<JobSnapshot>>>;
    /// Every job, newest first.
    fn list(&self) -> Vec<Arc<JobSnapshot>>;
    /// Forgets a job; its subscribers' streams end.
    fn remove(&self, id: &JobId);
}

/// The default store: in this process's memory.
#[derive(Default)]
pub struct MemoryJobStore {
    jobs: Mutex<HashMap<JobId, watch::Sender<Arc<JobSnapshot>>>>,
}

impl MemoryJobStore {
    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, watch::Sender<Arc<JobSnapshot>>>> {
        // The map holds plain data; a panic elsewhere cannot leave it half-updated.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl JobStore for MemoryJobStore {
    fn insert(&self, job: JobSnapshot) {
        let id = job.id.clone();
        self.jobs().insert(id, watch::Sender::new(Arc::new(job)));
    }

    fn publish(&self, job: JobSnapshot) {
        if let Some(sender) = self.jobs().get(&job.id) {
            sender.send_replace(Arc::new(job));
        }
    }

    fn get(&self, id: &JobId) -> Option<Arc<JobSnapshot>> {
        self.jobs().get(id).map(|sender| sender.borrow().clone())
    }

    fn subscribe(&self, id: &JobId) -> Option<watch::Receiver<Arc<JobSnapshot>>> {
        self.jobs().get(id).map(watch::Sender::subscribe)
    }

    fn list(&self) -> Vec<Arc<JobSnapshot>> {
        let mut jobs: Vec<Arc<JobSnapshot>> = self
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
