//! What every request handler and background task shares: the cluster, the
//! active policy, the metrics and the request limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
    shutting_down: AtomicBool,
}

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
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Ready: a valid policy is loaded and no shutdown has begun.
    pub fn ready(&self) -> bool {
        self.active.get().is_some() && !self.shutting_down.load(Ordering::Relaxed)
    }

    /// From now on `/readyz` fails, so the endpoints drop this pod.
    pub(crate) fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}
