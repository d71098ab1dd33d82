//! How long ready work waits for the runtime: the delay admission sheds on when it stays high.
//!
//! The call limit counts calls in progress, but a cheap call waits mostly before admission sees it,
//! in its socket and in the runtime's run queue (ARCHITECTURE, "What the call limit does not bound").
//! The probe measures that wait the way a connection meets it: it makes a socket of its own readable
//! and times how long the runtime takes to run the task waiting on it — the same I/O-driver wake and
//! the same run queue as a connection whose request has arrived. CoDel's rule (Nichols and Jacobson)
//! decides: the server is delayed once every sample for a whole `interval` was above `target`, and
//! stops being so at the first sample below it, so a burst or one long poll never sheds.

use crate::metrics::Metrics;
use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::net::UnixDatagram;

/// What the probe found, read by every call's admission.
pub struct QueueDelay {
    /// `server.max_queue_delay_us`.
    target: Duration,
    /// Between two samples; also how often a call is let through while the server is delayed.
    period: Duration,
    delayed: AtomicBool,
    /// When the last call let through while delayed was, in µs since `started`.
    last_let_through_us: AtomicU64,
    started: Instant,
}

impl QueueDelay {
    /// Starts the probe on the current runtime; it stops when the returned value is dropped.
    pub fn start(target: Duration, interval: Duration, metrics: Arc<Metrics>) -> Arc<QueueDelay> {
        let delay = Arc::new(QueueDelay {
            target,
            // Enough samples in an interval that "every one was above" means the whole of it.
            period: (interval / 20).clamp(Duration::from_micros(500), Duration::from_millis(10)),
            delayed: AtomicBool::new(false),
            last_let_through_us: AtomicU64::new(0),
            started: Instant::now(),
        });
        tokio::spawn(probe(Arc::downgrade(&delay), interval, metrics));
        delay
    }

    pub fn target(&self) -> Duration {
        self.target
    }

    /// Whether a new call is refused: while the server is delayed, all but one call each `period`
    /// — so callers that never back off still get some answers, rather than none.
    pub fn refuses(&self) -> bool {
        if !self.delayed.load(Ordering::Relaxed) {
            return false;
        }
        let now = self.started.elapsed().as_micros() as u64;
        let last = self.last_let_through_us.load(Ordering::Relaxed);
        let period = self.period.as_micros() as u64;
        !(now.saturating_sub(last) >= period
            && self
                .last_let_through_us
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok())
    }
}

async fn probe(delay: Weak<QueueDelay>, interval: Duration, metrics: Arc<Metrics>) {
    let (send, receive) = match UnixDatagram::pair() {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(%error, "no queue-delay probe: calls are shed by count only");
            return;
        }
    };
    let mut byte = [0u8; 1];
    let mut above_since: Option<Instant> = None;
    loop {
        // The socket is drained (so its readiness is cleared) before the byte goes out: the wait
        // below is then for the I/O driver to see it and the run queue to reach this task.
        while receive.try_recv(&mut byte).is_ok() {}
        let sent = Instant::now();
        if send.try_send(&[0]).is_err() || receive.recv(&mut byte).await.is_err() {
            tracing::warn!("queue-delay probe socket failed: calls are shed by count only");
            return;
        }
        let now = Instant::now();
        let waited = now - sent;
        let Some(state) = delay.upgrade() else {
            return;
        };
        let delayed = if waited < state.target {
            above_since = None;
            false
        } else {
            now - *above_since.get_or_insert(now) >= interval
        };
        if state.delayed.swap(delayed, Ordering::Relaxed) != delayed {
            tracing::debug!(?waited, delayed, "queue delay");
        }
        metrics.set_queue_delay(waited, delayed);
        let period = state.period;
        drop(state);
        tokio::time::sleep(period).await;
    }
}
