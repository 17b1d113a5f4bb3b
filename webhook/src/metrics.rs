//! Prometheus metrics (OpenMetrics text on `/metrics`).
//!
//! Every name starts with `straddle_webhook_`. Label values are drawn from
//! small fixed sets (never from request content), so a caller cannot blow up
//! the number of series.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Latency buckets in seconds: fine below a millisecond, where reviews
/// live, coarse up to the API server's longest webhook timeout.
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.000_025, 0.000_05, 0.000_075, 0.000_1, 0.000_15, 0.000_2, 0.000_3, 0.000_4, 0.000_5,
    0.000_75, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `StatefulSet`, `Service`, `ConfigMap`, `Scale`, or `other`.
    pub kind: &'static str,
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT`.
    pub operation: &'static str,
    /// `allow`, `patch`, `deny`, or `error` (the module gave no verdict).
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    /// `trap`, `timeout`, `memory`, `busy`, `other`.
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `loaded` or `rejected`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `sha256:…` of the module bytes.
    pub digest: String,
    /// The stretch spec's `metadata.name`.
    pub name: String,
    /// The plan digest (`straddle.dev/policy-digest` on mutated objects).
    pub spec_digest: String,
}

pub struct Metrics {
    registry: Registry,
    /// Admission reviews answered (HTTP 200), by kind, operation, verdict.
    pub requests: Family<RequestLabels, Counter>,
    /// `/mutate` requests refused before a verdict (HTTP 4xx/5xx), by reason.
    pub rejected_requests: Family<ReasonLabels, Counter>,
    /// Time from receiving a `/mutate` request's headers to having its
    /// response ready, for every `/mutate` request.
    pub request_duration: Histogram,
    /// Time spent in the policy module (instantiation if no instance is warm, and the call).
    pub review_duration: Histogram,
    /// Reviews without a verdict, by cause (traps, timeouts, memory cap, …).
    pub policy_errors: Family<CauseLabels, Counter>,
    /// The policy in use: one series with value 1.
    pub policy_info: Family<PolicyLabels, Gauge>,
    /// How long loading (compiling or reading the cache) and validating the
    /// policy in use took.
    pub policy_load_seconds: Gauge<f64, AtomicU64>,
    /// Unix time at which the policy in use was loaded.
    pub policy_loaded_timestamp: Gauge<f64, AtomicU64>,
    /// Instances of the policy in use started since it was loaded (set
    /// when scraped): flat while reviews reuse warm instances, one more
    /// after every review that retired its instance.
    pub policy_instances_started: Gauge,
    /// Policy file changes, by result (`loaded`, `rejected`).
    pub policy_reloads: Family<ResultLabels, Counter>,
    /// Certificate/key/client-CA changes, by result (`loaded`, `rejected`).
    pub tls_reloads: Family<ResultLabels, Counter>,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: Counter,
    /// Reviews that ran out of `--inline-review-deadline` and ran again on a
    /// blocking thread.
    pub slow_reviews: Counter,
    /// `/mutate` requests being handled.
    pub in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("straddle_webhook");
        let m = Metrics {
            requests: Family::default(),
            rejected_requests: Family::default(),
            request_duration: Histogram::new(LATENCY_BUCKETS),
            review_duration: Histogram::new(LATENCY_BUCKETS),
            policy_errors: Family::default(),
            policy_info: Family::default(),
            policy_load_seconds: Gauge::default(),
            policy_loaded_timestamp: Gauge::default(),
            policy_instances_started: Gauge::default(),
            policy_reloads: Family::default(),
            tls_reloads: Family::default(),
            tls_handshake_failures: Counter::default(),
            slow_reviews: Counter::default(),
            in_flight: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Admission reviews answered, by object kind, operation and verdict",
            m.requests.clone(),
        );
        registry.register(
            "rejected_requests",
            "Requests to /mutate answered without a policy verdict (HTTP 4xx/5xx, or a denial of an unreadable review), by reason",
            m.rejected_requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a /mutate request's headers to its response",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        registry.register_with_unit(
            "review_duration",
            "Time spent in the policy module per review (instantiation if no instance is warm, and the call)",
            Unit::Seconds,
            m.review_duration.clone(),
        );
        registry.register(
            "policy_errors",
            "Reviews the policy module gave no verdict for, by cause (trap, timeout, memory, busy, other)",
            m.policy_errors.clone(),
        );
        registry.register(
            "policy_info",
            "The policy module in use (value 1)",
            m.policy_info.clone(),
        );
        registry.register_with_unit(
            "policy_load_duration",
            "How long loading and validating the policy module in use took",
            Unit::Seconds,
            m.policy_load_seconds.clone(),
        );
        registry.register_with_unit(
            "policy_loaded_timestamp",
            "Unix time at which the policy module in use was loaded",
            Unit::Seconds,
            m.policy_loaded_timestamp.clone(),
        );
        registry.register(
            "policy_instances_started",
            "Instances of the policy module in use started since it was loaded (reviews reuse warm instances; a review without a verdict retires its instance)",
            m.policy_instances_started.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy file changes, by result (loaded, rejected)",
            m.policy_reloads.clone(),
        );
        registry.register(
            "tls_reloads",
            "Certificate, key or client CA changes, by result (loaded, rejected)",
            m.tls_reloads.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "slow_reviews",
            "Reviews that did not finish within --inline-review-deadline on the connection thread and ran again on a blocking thread",
            m.slow_reviews.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests to /mutate being handled",
            m.in_flight.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejected_requests
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn reload(family: &Family<ResultLabels, Counter>, ok: bool) {
        let result = if ok { "loaded" } else { "rejected" };
        family.get_or_create(&ResultLabels { result }).inc();
    }
}

/// The content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
