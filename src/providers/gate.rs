//! What every request to one provider account passes through, whichever query sent it: a bound on
//! requests in flight, an optional request rate, a pause after a 429's Retry-After, a circuit breaker,
//! and a retry budget. Per account, not per query: 200 concurrent queries at one account are one
//! account's worth of politeness, not 200.

use crate::{
    clock::Clock,
    config::{AccountSettings, UpstreamConfig},
    domain::{CircuitReading, ProviderAccountId, UpstreamError, UpstreamErrorKind},
    sync::lock,
};
use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::{
    collections::{HashMap, VecDeque},
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::{Semaphore, SemaphorePermit};
use tower::retry::budget::{Budget, TpsBudget};

/// When the breaker opens, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Failures in a row that open it.
    pub consecutive_failures: u32,
    /// Share of the last `window` outcomes, in percent, that opens it once the window is full.
    pub failure_rate_percent: u32,
    pub window: usize,
    /// Open for this long times the number of openings since the account last recovered.
    pub base_open: Duration,
    pub max_open: Duration,
    /// A probe not answered within this long is given up, and another may go.
    pub probe_timeout: Duration,
}

impl BreakerPolicy {
    pub fn of(config: &UpstreamConfig) -> Self {
        BreakerPolicy {
            consecutive_failures: config.breaker_consecutive_failures,
            failure_rate_percent: config.breaker_failure_rate_percent,
            window: config.breaker_window,
            base_open: Duration::from_millis(config.breaker_open_ms),
            max_open: Duration::from_millis(config.breaker_max_open_ms),
            probe_timeout: Duration::from_millis(config.request_timeout_ms),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: DateTime<Utc> },
    HalfOpen { probe_sent: Option<DateTime<Utc>> },
}

/// A circuit breaker on an injected clock, so tests move time instead of waiting. Hand-written
/// rather than `failsafe`: its half-open state lets every caller through until the first outcome,
/// where this one lets exactly one probe go, and its clock cannot be moved by a test.
#[derive(Debug)]
struct Breaker {
    policy: BreakerPolicy,
    state: State,
    failures_in_a_row: u32,
    /// `true` for a failure, newest last.
    recent: VecDeque<bool>,
    openings: u32,
}

/// How an attempt's outcome counts for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The upstream answered (any status but 5xx and 429: the account is reachable).
    Answered,
    /// No answer, a timeout or a 5xx.
    Failed,
    /// A 429: the account is fine, only busy; the pause handles it.
    Neutral,
}

impl Breaker {
    fn new(policy: BreakerPolicy) -> Self {
        Breaker {
            policy,
            state: State::Closed,
            failures_in_a_row: 0,
            recent: VecDeque::with_capacity(policy.window),
            openings: 0,
        }
    }

    /// Whether a request may go now; if not, how long until one may.
    fn admit(&mut self, now: DateTime<Utc>) -> Result<(), Duration> {
        match self.state {
            State::Closed => Ok(()),
            State::Open { until } if now < until => Err(wait(now, until)),
            State::Open { .. } => {
                self.state = State::HalfOpen {
                    probe_sent: Some(now),
                };
                Ok(())
            }
            State::HalfOpen {
                probe_sent: Some(sent),
            } if now < sent + chrono_of(self.policy.probe_timeout) => {
                Err(wait(now, sent + chrono_of(self.policy.probe_timeout)))
            }
            State::HalfOpen { .. } => {
                self.state = State::HalfOpen {
                    probe_sent: Some(now),
                };
                Ok(())
            }
        }
    }

    /// Returns true when this outcome opened the circuit.
    fn record(&mut self, health: Health, now: DateTime<Utc>) -> bool {
        let failed = match health {
            Health::Neutral => return false,
            Health::Answered => false,
            Health::Failed => true,
        };
        if self.recent.len() == self.policy.window {
            self.recent.pop_front();
        }
        self.recent.push_back(failed);
        if !failed {
            self.failures_in_a_row = 0;
            if matches!(self.state, State::HalfOpen { .. }) {
                self.state = State::Closed;
                self.openings = 0;
                self.recent.clear();
            }
            return false;
        }
        self.failures_in_a_row += 1;
        let failures = self.recent.iter().filter(|f| **f).count();
        let rate_exceeded = self.recent.len() == self.policy.window
            && failures * 100 >= self.policy.window * self.policy.failure_rate_percent as usize;
        let opens = match self.state {
            State::HalfOpen { .. } => true,
            State::Closed => {
                self.failures_in_a_row >= self.policy.consecutive_failures || rate_exceeded
            }
            State::Open { .. } => false,
        };
        if opens {
            self.openings += 1;
            let open_for = self
                .policy
                .base_open
                .saturating_mul(self.openings)
                .min(self.policy.max_open);
            self.state = State::Open {
                until: now + chrono_of(open_for),
            };
            self.recent.clear();
        }
        opens
    }

    fn reading(&self) -> CircuitReading {
        match self.state {
            State::Closed => CircuitReading::Closed,
            State::Open { until } => CircuitReading::Open {
                until,
                openings: self.openings,
            },
            State::HalfOpen { .. } => CircuitReading::HalfOpen,
        }
    }
}

fn wait(now: DateTime<Utc>, until: DateTime<Utc>) -> Duration {
    (until - now).to_std().unwrap_or(Duration::ZERO)
}

fn chrono_of(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// One account's gate.
pub struct AccountGate {
    in_flight: Semaphore,
    rate: Option<DefaultDirectRateLimiter>,
    paused_until: Mutex<Option<tokio::time::Instant>>,
    breaker: Mutex<Breaker>,
    /// gRFC A6's retry throttling, as tower implements it: retries are a share of recent calls.
    retry_budget: TpsBudget,
}

impl AccountGate {
    fn new(config: &UpstreamConfig, requests_per_second: Option<NonZeroU32>) -> Self {
        AccountGate {
            in_flight: Semaphore::new(config.max_concurrency_per_account),
            rate: requests_per_second.map(|rate| RateLimiter::direct(Quota::per_second(rate))),
            paused_until: Mutex::new(None),
            breaker: Mutex::new(Breaker::new(BreakerPolicy::of(config))),
            retry_budget: TpsBudget::new(
                Duration::from_secs(10),
                config.retry_budget_min_per_second,
                config.retry_budget_percent as f32 / 100.0,
            ),
        }
    }

    /// Waits for the account's turn: the breaker's leave, a free slot, the end of any pause, the rate.
    /// The pause is checked after the slot is taken, so callers that queued for a slot while a 429
    /// was on its way wait for the pause it set too. The permit is held while the request is in flight.
    pub async fn enter(&self, now: DateTime<Utc>) -> Result<SemaphorePermit<'_>, UpstreamError> {
        {
            let mut breaker = lock(&self.breaker);
            if let Err(retry_in) = breaker.admit(now) {
                return Err(circuit_open(retry_in, &breaker));
            }
        }
        let permit = self.in_flight.acquire().await.map_err(|_| {
            UpstreamError::new(UpstreamErrorKind::Unavailable, "the server is stopping")
        })?;
        // A 429 answered while this caller slept may have moved the pause on: wait for the last.
        loop {
            let paused = *lock(&self.paused_until);
            match paused {
                Some(until) if until > tokio::time::Instant::now() => {
                    tokio::time::sleep_until(until).await
                }
                _ => break,
            }
        }
        if let Some(rate) = &self.rate {
            rate.until_ready().await;
        }
        Ok(permit)
    }

    /// Records an attempt's outcome; returns true when it opened the circuit.
    pub fn record(&self, health: Health, now: DateTime<Utc>) -> bool {
        lock(&self.breaker).record(health, now)
    }

    /// Pauses every request to the account for `wait` (a 429's Retry-After).
    pub fn pause(&self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        let mut paused = lock(&self.paused_until);
        *paused = Some(paused.map_or(until, |current| current.max(until)));
    }

    /// A logical call begins: it earns its share of retries.
    pub fn call_started(&self) {
        self.retry_budget.deposit();
    }

    /// Whether the budget allows one more retry (and spends it).
    pub fn may_retry(&self) -> bool {
        self.retry_budget.withdraw()
    }

    pub fn circuit(&self) -> CircuitReading {
        lock(&self.breaker).reading()
    }
}

fn circuit_open(retry_in: Duration, breaker: &Breaker) -> UpstreamError {
    let seconds = retry_in.as_secs_f64().ceil();
    UpstreamError {
        retry_after: Some(retry_in),
        ..UpstreamError::new(
            UpstreamErrorKind::CircuitOpen,
            format!(
                "the account's circuit is open after {} openings in a row; the next probe may go in {seconds} s",
                breaker.openings.max(1)
            ),
        )
    }
}

/// Every account's gate, made at start from the configured accounts.
pub struct Gates {
    by_account: HashMap<ProviderAccountId, Arc<AccountGate>>,
    /// For accounts not configured (tests that build requests by hand).
    fallback: Arc<AccountGate>,
    clock: Arc<dyn Clock>,
}

impl Gates {
    pub fn new(
        config: &UpstreamConfig,
        accounts: &[AccountSettings],
        clock: Arc<dyn Clock>,
    ) -> Self {
        Gates {
            by_account: accounts
                .iter()
                .map(|account| {
                    (
                        account.id.clone(),
                        Arc::new(AccountGate::new(config, account.requests_per_second)),
                    )
                })
                .collect(),
            fallback: Arc::new(AccountGate::new(config, None)),
            clock,
        }
    }

    pub fn of(&self, account: &ProviderAccountId) -> &AccountGate {
        self.by_account.get(account).unwrap_or(&self.fallback)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: 3,
            failure_rate_percent: 50,
            window: 10,
            base_open: Duration::from_secs(10),
            max_open: Duration::from_secs(25),
            probe_timeout: Duration::from_secs(5),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("an instant")
    }

    #[test]
    fn consecutive_failures_open_for_base_times_openings_then_one_probe_decides() {
        let mut breaker = Breaker::new(policy());
        for _ in 0..2 {
            assert!(!breaker.record(Health::Failed, at(0)));
        }
        assert!(breaker.record(Health::Failed, at(0)), "the third opens it");
        assert_eq!(breaker.admit(at(9)), Err(Duration::from_secs(1)));
        assert_eq!(breaker.admit(at(10)), Ok(()), "the probe goes");
        assert!(breaker.admit(at(10)).is_err(), "only one probe");
        assert!(
            breaker.record(Health::Failed, at(11)),
            "a failed probe reopens"
        );
        assert_eq!(
            breaker.reading(),
            CircuitReading::Open {
                until: at(31),
                openings: 2
            },
            "twice the base time"
        );
        assert_eq!(breaker.admit(at(31)), Ok(()));
        assert!(breaker.record(Health::Failed, at(31)));
        assert_eq!(
            breaker.reading(),
            CircuitReading::Open {
                until: at(56),
                openings: 3
            },
            "capped at the longest"
        );
        assert_eq!(breaker.admit(at(56)), Ok(()));
        assert!(!breaker.record(Health::Answered, at(56)));
        assert_eq!(breaker.reading(), CircuitReading::Closed);
        assert_eq!(breaker.admit(at(56)), Ok(()));
    }

    #[test]
    fn a_failure_rate_opens_it_and_a_busy_answer_counts_for_nothing() {
        let mut breaker = Breaker::new(policy());
        // Never three failures in a row; the tenth outcome fills the window, half of it failures.
        for i in 0..10 {
            let health = if i % 2 == 1 {
                Health::Failed
            } else {
                Health::Answered
            };
            assert_eq!(breaker.record(health, at(0)), i == 9, "outcome {i}");
            assert!(!breaker.record(Health::Neutral, at(0)));
        }
        assert!(matches!(breaker.reading(), CircuitReading::Open { .. }));
    }

    #[test]
    fn an_unanswered_probe_is_given_up_after_its_timeout() {
        let mut breaker = Breaker::new(policy());
        for _ in 0..3 {
            breaker.record(Health::Failed, at(0));
        }
        assert_eq!(breaker.admit(at(10)), Ok(()));
        assert_eq!(breaker.admit(at(14)), Err(Duration::from_secs(1)));
        assert_eq!(breaker.admit(at(15)), Ok(()), "another probe");
    }
}
