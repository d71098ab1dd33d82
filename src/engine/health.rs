//! Recent upstream outcomes per provider account, for ListProviders.

use crate::{
    domain::{ProviderAccountId, UpstreamError},
    providers::RateLimitReading,
    sync::lock,
};
use chrono::{DateTime, Utc};
use std::{collections::HashMap, sync::Mutex};

/// What ListProviders reports about an account.
#[derive(Debug, Clone, Default)]
pub struct HealthSnapshot {
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
    pub last_error: Option<UpstreamError>,
    pub consecutive_failures: u32,
    pub rate_limit_remaining: Option<i64>,
    /// When the answer that said `rate_limit_remaining` arrived.
    rate_limit_at: Option<std::time::Instant>,
}

impl HealthSnapshot {
    /// Keeps `reading` unless a later answer already said what is left.
    fn read_rate_limit(&mut self, reading: RateLimitReading) {
        if self.rate_limit_at.is_none_or(|at| at <= reading.at) {
            self.rate_limit_remaining = Some(reading.remaining);
            self.rate_limit_at = Some(reading.at);
        }
    }
}

/// One entry per configured account; updated after every chunk.
pub struct HealthBoard {
    entries: HashMap<ProviderAccountId, Mutex<HealthSnapshot>>,
}

impl HealthBoard {
    pub fn new(accounts: impl Iterator<Item = ProviderAccountId>) -> Self {
        HealthBoard {
            entries: accounts
                .map(|id| (id, Mutex::new(HealthSnapshot::default())))
                .collect(),
        }
    }

    pub fn record_success(
        &self,
        account: &ProviderAccountId,
        at: DateTime<Utc>,
        rate_limit: Option<RateLimitReading>,
    ) {
        self.update(account, |entry| {
            entry.last_success = Some(at);
            entry.consecutive_failures = 0;
            if let Some(reading) = rate_limit {
                entry.read_rate_limit(reading);
            }
        });
    }

    pub fn record_failure(
        &self,
        account: &ProviderAccountId,
        at: DateTime<Utc>,
        error: &UpstreamError,
    ) {
        self.update(account, |entry| {
            entry.last_failure = Some(at);
            entry.last_error = Some(error.clone());
            entry.consecutive_failures = entry.consecutive_failures.saturating_add(1);
        });
    }

    /// What the upstream last said of its rate-limit window, from any answer (a 429's too).
    pub fn record_rate_limit(&self, account: &ProviderAccountId, reading: RateLimitReading) {
        self.update(account, |entry| entry.read_rate_limit(reading));
    }

    pub fn snapshot(&self, account: &ProviderAccountId) -> HealthSnapshot {
        self.entries
            .get(account)
            .map(|entry| lock(entry).clone())
            .unwrap_or_default()
    }

    fn update(&self, account: &ProviderAccountId, change: impl FnOnce(&mut HealthSnapshot)) {
        if let Some(entry) = self.entries.get(account) {
            // A panic elsewhere while holding the lock leaves plain data; keep using it.
            let mut guard = lock(entry);
            change(&mut guard);
        }
    }
}
