//! What every request handler and background task shares: the cluster, the
//! active policy, the metrics and the request limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::config::{Config, OnPolicyError};
use crate::metrics::Metrics;
use crate::policy::Active;

/// Shared by every request.
pub struct App {
    pub cluster: String,
    pub active: Active,
    pub metrics: Metrics,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) on_policy_error: OnPolicyError,
    pub(crate) max_body_bytes: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) queue_timeout: Duration,
    /// `--inline-review-deadline`; `None` (0s): every review on a blocking thread.
    inline_deadline: Option<Duration>,
    /// Until when (µs since `started`) reviews go straight to blocking
    /// threads, after one did not finish within `inline_deadline`.
    inline_paused_until: AtomicU64,
    started: Instant,
    shutting_down: AtomicBool,
}

/// How long reviews skip the inline attempt after one ran out of time: a
/// looping module then costs the async threads one short deadline per
/// second, not one per request.
const INLINE_PAUSE: Duration = Duration::from_secs(1);

impl App {
    /// No policy yet: [`Active::swap`] one in.
    pub fn new(config: &Config) -> App {
        App {
            cluster: config.cluster.clone(),
            active: Active::default(),
            metrics: Metrics::new(),
            slots: Arc::new(Semaphore::new(config.max_concurrent_reviews as usize)),
            on_policy_error: config.on_policy_error,
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout,
            queue_timeout: config.queue_timeout,
            inline_deadline: Some(config.inline_review_deadline).filter(|d| !d.is_zero()),
            inline_paused_until: AtomicU64::new(0),
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Ready: a valid policy is loaded and no shutdown has begun.
    pub fn ready(&self) -> bool {
        self.active.get().is_some() && !self.shutting_down.load(Ordering::Relaxed)
    }

    /// The deadline of a review run on the async thread that received it,
    /// or `None` when it must go to a blocking thread.
    pub(crate) fn inline_deadline(&self) -> Option<Duration> {
        let paused_until = self.inline_paused_until.load(Ordering::Relaxed);
        if paused_until != 0 && self.micros_since_start() < paused_until {
            return None;
        }
        self.inline_deadline
    }

    /// A review ran out of its inline deadline: send reviews to blocking
    /// threads for a while. Returns the pause, for
    /// [`resume_inline_reviews`](Self::resume_inline_reviews).
    pub(crate) fn pause_inline_reviews(&self) -> u64 {
        let until = self.micros_since_start() + INLINE_PAUSE.as_micros() as u64;
        self.inline_paused_until.store(until, Ordering::Relaxed);
        until
    }

    /// Ends `pause` early, unless a later slow review has renewed it: the
    /// review that caused it ran again quickly, so the thread had been
    /// descheduled (a loaded machine), not held by the module.
    pub(crate) fn resume_inline_reviews(&self, pause: u64) {
        let _ = self.inline_paused_until.compare_exchange(
            pause,
            0,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn micros_since_start(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// From now on `/readyz` fails, so the endpoints drop this pod.
    pub(crate) fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        App::new(&crate::config::Config::new(
            "east", "p.wasm", "c.pem", "k.pem",
        ))
    }

    #[test]
    fn a_pause_ends_early_only_if_no_later_slow_review_renewed_it() {
        let app = app();
        assert!(app.inline_deadline().is_some());
        let first = app.pause_inline_reviews();
        assert_eq!(app.inline_deadline(), None);
        app.resume_inline_reviews(first);
        assert!(app.inline_deadline().is_some());

        let first = app.pause_inline_reviews();
        std::thread::sleep(Duration::from_millis(2));
        let renewed = app.pause_inline_reviews();
        app.resume_inline_reviews(first);
        assert_eq!(
            app.inline_deadline(),
            None,
            "a stale pause lifted a renewed one"
        );
        app.resume_inline_reviews(renewed);
        assert!(app.inline_deadline().is_some());
    }
}
