//! Leases across replicas: what a replica that stops hands over, the Atlas tokens its jobs poll, and
//! the sweep that takes over the jobs of a replica that died. With a store only this replica uses
//! there are no leases, and each of these does nothing.

use super::{JobId, JobManager, JobSnapshot, JobWork};
use crate::sync::lock;
use std::sync::Arc;

impl<W: JobWork> JobManager<W> {
    /// This replica stops: with a shared store, its owner tasks end and their leases are released, so
    /// another replica takes their jobs over at its next sweep rather than when the leases lapse. With
    /// a store of its own, jobs run on for as long as the process does.
    pub async fn hand_over(&self) {
        if self.store.lease_ttl().is_none() {
            return;
        }
        self.stopping.send_replace(true);
        let owned: Vec<JobId> = lock(&self.owned).iter().cloned().collect();
        for id in owned {
            if let Err(error) = self.store.release_lease(&id).await {
                tracing::warn!(job = %id, %error, "lease left to expire");
            }
        }
        // The tokens too, now: a job whose lease is free is not taken while its token is held.
        let tokens: Vec<String> = lock(&self.polling)
            .drain()
            .map(|(token, _)| token)
            .collect();
        if let Err(error) = self.store.release_tokens(&tokens).await {
            tracing::warn!(%error, "token leases left to expire");
        }
    }

    /// Notes the tokens `job`'s parts poll as this replica's (with a shared store: alone, every
    /// token is this replica's).
    pub(super) fn track_tokens(&self, job: &JobSnapshot<W>) {
        let tokens = job.tokens_in_flight();
        if tokens.is_empty() || self.store.lease_ttl().is_none() {
            return;
        }
        let mut polling = lock(&self.polling);
        for token in tokens {
            polling
                .entry(token.to_string())
                .or_default()
                .insert(job.id.clone());
        }
    }

    /// Renews this replica's leases on the tokens its jobs poll, until it hands its jobs over.
    async fn hold_tokens(&self) {
        if *self.stopping.borrow() {
            return;
        }
        let tokens: Vec<String> = lock(&self.polling).keys().cloned().collect();
        match self.store.hold_tokens(&tokens).await {
            Ok(0) => {}
            // Only a race at a takeover leads here; polls are idempotent, so answers stay exact.
            Ok(elsewhere) => {
                tracing::warn!(
                    tokens = elsewhere,
                    "upstream queries also polled by another replica"
                )
            }
            Err(error) => tracing::debug!(%error, "token leases not renewed"),
        }
    }

    /// `id` no longer runs here: it lets its lease go, and the leases of tokens no other job here
    /// polls.
    pub(super) async fn let_go(&self, id: &JobId) {
        lock(&self.owned).remove(id);
        if let Err(error) = self.store.release_lease(id).await {
            tracing::debug!(job = %id, %error, "lease left to expire");
        }
        let unpolled: Vec<String> = {
            let mut polling = lock(&self.polling);
            let mut unpolled = Vec::new();
            polling.retain(|token, jobs| {
                let named = jobs.remove(id);
                let kept = !jobs.is_empty();
                if named && !kept {
                    unpolled.push(token.clone());
                }
                kept
            });
            unpolled
        };
        if let Err(error) = self.store.release_tokens(&unpolled).await {
            tracing::debug!(job = %id, %error, "token leases left to expire");
        }
    }

    /// Takes over the running jobs whose replica died (their lease lapsed), every fifth of the lease
    /// TTL while this job table exists: a lease is renewed every third of it, so a dead replica's
    /// jobs are taken within about 1.2x the TTL of its last renewal. A store only this replica uses
    /// has no leases and no sweeper.
    pub(super) fn start_sweeper(self: &Arc<Self>) {
        let Some(ttl) = self.store.lease_ttl() else {
            return;
        };
        let manager = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(ttl / 5);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                manager.hold_tokens().await;
                manager.adopt_orphans().await;
            }
        });
    }

    /// Claims the orphaned running jobs and goes on with each: the same upstream queries polled on,
    /// nothing asked anew.
    async fn adopt_orphans(self: &Arc<Self>) {
        if *self.stopping.borrow() {
            return;
        }
        let orphans = match self.store.claim_orphans().await {
            Ok(orphans) => orphans,
            Err(error) => {
                tracing::debug!(%error, "no orphaned jobs looked for");
                return;
            }
        };
        for job in orphans {
            if lock(&self.owned).contains(&job.id) {
                continue;
            }
            tracing::info!(job = %job.id, "taking over a job whose replica stopped renewing its lease");
            for part in &job.parts {
                for progress in &part.in_flight {
                    self.work.resume(&part.account.id, progress);
                }
            }
            self.spawn_owner((*job).clone(), Vec::new());
        }
    }
}
