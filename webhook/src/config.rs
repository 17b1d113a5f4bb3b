//! Command-line flags (each also settable through a `STRADDLE_*` environment
//! variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use straddle_policy_host::RuntimeConfig;

/// What to answer when the policy module produces no verdict (it trapped, ran
/// past its deadline or memory cap) or the server has no free review slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnPolicyError {
    /// Refuse the object, naming the cause (fail closed).
    Deny,
    /// Admit the object unchanged, with a warning naming the cause (fail open).
    Allow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `straddle-webhook`: the Straddle mutating admission webhook.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "straddle-webhook",
    version,
    about = "Serve a compiled Straddle policy module as a mutating admission webhook (AdmissionReview v1 over TLS)"
)]
pub struct Config {
    /// The member cluster this webhook runs in. The server refuses to start
    /// (and refuses new policy modules) unless the policy lists it.
    #[arg(long, env = "STRADDLE_CLUSTER")]
    pub cluster: String,

    /// The compiled policy module (`straddle compile`). Reloaded when the
    /// file changes; replace it atomically (write elsewhere, then rename).
    /// Or a bundle in an OCI registry (`straddle push`):
    /// `oci://REGISTRY/REPO@sha256:…` (pinned), or `oci://REGISTRY/REPO:TAG`
    /// (resolved every --policy-poll-interval, a new digest hot-swapped).
    #[arg(long, env = "STRADDLE_POLICY")]
    pub policy: PathBuf,

    /// PEM public key (`straddle keygen`'s .pub, or cosign.pub): a bundle
    /// from the registry runs only with a valid cosign-format signature by it.
    #[arg(long, env = "STRADDLE_VERIFY_KEY", value_name = "FILE")]
    pub verify_key: Option<PathBuf>,

    /// How often an `oci://…:TAG` policy is resolved again.
    #[arg(long, env = "STRADDLE_POLICY_POLL_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub policy_poll_interval: Duration,

    /// Registry access for an `oci://` policy.
    #[command(flatten)]
    pub registry: straddle_oci::RegistryFlags,

    /// PEM certificate chain served on --listen. Reloaded when it changes.
    #[arg(long, env = "STRADDLE_TLS_CERT")]
    pub tls_cert: PathBuf,

    /// PEM private key of --tls-cert. Reloaded when it changes.
    #[arg(long, env = "STRADDLE_TLS_KEY")]
    pub tls_key: PathBuf,

    /// PEM CA bundle. When set, every TLS client must present a certificate
    /// signed by one of these CAs (give the API server one with
    /// `--admission-control-config-file`). Reloaded when it changes.
    #[arg(long, env = "STRADDLE_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,

    /// HTTPS address: `POST /mutate`, `/healthz`, `/readyz`, `/metrics`.
    #[arg(long, env = "STRADDLE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Optional plain-HTTP address serving only `/healthz`, `/readyz` and
    /// `/metrics` (never `/mutate`): for kubelet probes and Prometheus when
    /// --client-ca is set.
    #[arg(long, env = "STRADDLE_PROBE_LISTEN")]
    pub probe_listen: Option<SocketAddr>,

    /// Directory for compiled policy code, keyed by the module's sha256 and
    /// the engine configuration, so that a restart skips compilation; and for
    /// verified bundles of an `oci://` policy, so that the webhook starts
    /// while the registry is down. Must be writable only by this process's
    /// user: its files are loaded as code.
    #[arg(long, env = "STRADDLE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Answer when the module fails (trap, timeout, memory cap) or no review
    /// slot frees up in time: `deny` (fail closed) or `allow` (fail open, with
    /// a warning). Either way the failure is logged and counted.
    #[arg(
        long,
        env = "STRADDLE_ON_POLICY_ERROR",
        value_enum,
        default_value = "deny"
    )]
    pub on_policy_error: OnPolicyError,

    /// Wall-clock deadline of one review (instantiate + run). A review takes
    /// tens of microseconds; the deadline stops a runaway module. It counts
    /// time the process is descheduled or CPU-throttled, so keep it above
    /// the throttling period (100ms) and well under the webhook's
    /// `timeoutSeconds`.
    #[arg(long, env = "STRADDLE_POLICY_TIMEOUT", default_value = "250ms", value_parser = parse_duration)]
    pub policy_timeout: Duration,

    /// Linear memory one review may use, in MiB.
    #[arg(long, env = "STRADDLE_POLICY_MEMORY_MIB", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub policy_memory_mib: u32,

    /// KiB of each pooled instance memory kept resident between reviews
    /// (only the pages a review dirtied are reset, found with Linux 6.7+
    /// `PAGEMAP_SCAN`) instead of being returned to the OS. Returning memory
    /// costs a page-table update with a TLB shootdown across the process's
    /// CPUs per review; 0 returns everything.
    #[arg(long, env = "STRADDLE_KEEP_RESIDENT_KIB", default_value_t = 2048)]
    pub keep_resident_kib: usize,

    /// Connection threads, each a single-threaded async runtime serving
    /// whole connections: TLS, HTTP and the reviews that finish within
    /// --inline-review-deadline. Default: the CPUs this process may use; half
    /// of them when reviews run on blocking threads (--inline-review-deadline
    /// 0s).
    #[arg(long, env = "STRADDLE_IO_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub io_threads: Option<u16>,

    /// Deadline of a review run on the async thread that received the
    /// request (no hand-off to another thread). One that runs out of it is
    /// run again on a blocking thread with --policy-timeout, and for the next
    /// second every review goes there; the module is pure, so the second
    /// run gives the verdict the first would have. It is stopped between this
    /// and twice this (at least 1 ms). 0s: every review on a blocking thread.
    #[arg(long, env = "STRADDLE_INLINE_REVIEW_DEADLINE", default_value = "2ms", value_parser = parse_duration)]
    pub inline_review_deadline: Duration,

    /// Idle policy instances kept for the next reviews, so that a review
    /// skips instantiation and the reset of the instance's memory. An
    /// instance is kept only after a review that returned a verdict without
    /// growing its memory; a trap, timeout or memory-limit error drops it.
    /// Default: --io-threads, at most --max-concurrent-reviews. 0: a fresh
    /// instance for every review.
    #[arg(long, env = "STRADDLE_WARM_INSTANCES", value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub warm_instances: Option<u32>,

    /// Reviews that may run at the same time (each with its own pooled
    /// instance). Further requests wait up to --queue-timeout.
    #[arg(long, env = "STRADDLE_MAX_CONCURRENT_REVIEWS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrent_reviews: u32,

    /// How long a request may wait for a free review slot; after that it gets
    /// HTTP 503 and the API server applies the webhook's `failurePolicy`.
    #[arg(long, env = "STRADDLE_QUEUE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub queue_timeout: Duration,

    /// Largest request body accepted, in bytes (larger: HTTP 413). The API
    /// server sends the object and, on UPDATE, the old object.
    #[arg(long, env = "STRADDLE_MAX_BODY_BYTES", default_value_t = 6 << 20)]
    pub max_body_bytes: usize,

    /// Time allowed for a TLS handshake, for request headers, and for a
    /// request body to arrive.
    #[arg(long, env = "STRADDLE_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How often the policy, certificate, key and client-CA files are checked
    /// for changes.
    #[arg(long, env = "STRADDLE_RELOAD_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub reload_interval: Duration,

    /// After SIGTERM, keep serving (reporting not ready) this long before
    /// closing the listener, so endpoints drop the pod first.
    #[arg(long, env = "STRADDLE_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// After closing the listener, how long in-flight requests may take to
    /// finish before the process exits anyway.
    #[arg(long, env = "STRADDLE_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log format: `text`, or `json` (one object per line).
    #[arg(long, env = "STRADDLE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Self-managed certificates (`--self-managed-certs` and its flags).
    #[command(flatten)]
    pub self_managed: crate::certs_kube::SelfManagedCerts,

    /// Log filter: a level (`info`, `debug`: one line per review) or
    /// `target=level` directives, e.g. `warn,straddle_webhook=debug`.
    #[arg(long, env = "STRADDLE_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    /// A configuration with defaults for everything but the required paths;
    /// for tests and embedding.
    pub fn new(
        cluster: impl Into<String>,
        policy: impl Into<PathBuf>,
        tls_cert: impl Into<PathBuf>,
        tls_key: impl Into<PathBuf>,
    ) -> Config {
        let cluster = cluster.into();
        let policy = policy.into();
        let tls_cert = tls_cert.into();
        let tls_key = tls_key.into();
        let mut config = Config::parse_from([
            "straddle-webhook",
            "--cluster",
            "x",
            "--policy",
            "x",
            "--tls-cert",
            "x",
            "--tls-key",
            "x",
        ]);
        config.cluster = cluster;
        config.policy = policy;
        config.tls_cert = tls_cert;
        config.tls_key = tls_key;
        config
    }

    /// Connection threads (--io-threads): the CPUs this process may use
    /// unless given; half of them when reviews never run inline.
    pub fn connection_threads(&self) -> usize {
        self.io_threads.map(usize::from).unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get());
            if self.inline_review_deadline.is_zero() {
                cpus.div_ceil(2)
            } else {
                cpus
            }
        })
    }

    /// The ticker wakes up once per tick; a fiftieth of the deadline is
    /// precise enough and keeps it from waking every millisecond, but an
    /// inline review must stop soon after its own, shorter deadline.
    fn epoch_tick(&self) -> Duration {
        let tick = (self.policy_timeout / 50).clamp(MIN_TICK, Duration::from_millis(10));
        if self.inline_review_deadline.is_zero() {
            tick
        } else {
            tick.min(self.inline_review_deadline.max(MIN_TICK))
        }
    }

    /// The policy runtime's settings (the one place they follow from flags).
    pub fn runtime_config(&self) -> RuntimeConfig {
        // `..default()` keeps this compiling when the host gains settings.
        #[allow(clippy::needless_update)]
        RuntimeConfig {
            memory_limit_bytes: (self.policy_memory_mib as usize) << 20,
            deadline: self.policy_timeout,
            epoch_tick: self.epoch_tick(),
            // Room for every review slot twice (a replaced module's idle
            // instances live until its last in-flight review ends) and two
            // for validating a new module while every request slot is busy.
            max_concurrent_reviews: self.max_concurrent_reviews * 2 + 2,
            keep_resident_bytes: self.keep_resident_kib << 10,
            warm_instances: self
                .warm_instances
                .map_or_else(|| self.connection_threads(), |n| n as usize)
                .min(self.max_concurrent_reviews as usize),
            ..RuntimeConfig::default()
        }
    }
}

/// `250us`, `50ms`, `2s`, `1m`; a bare number is milliseconds.
const MIN_TICK: Duration = Duration::from_millis(1);

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 50ms, 2s)"))?;
    let seconds = match unit.trim() {
        "us" | "µs" => value / 1e6,
        "" | "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use us, ms, s or m)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("20"), Ok(Duration::from_millis(20)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn defaults() {
        let c = Config::new("east", "p.wasm", "c.pem", "k.pem");
        assert_eq!(c.cluster, "east");
        assert_eq!(c.policy_timeout, Duration::from_millis(250));
        assert_eq!(c.on_policy_error, OnPolicyError::Deny);
        assert_eq!(c.listen, "0.0.0.0:8443".parse().unwrap());
    }

    #[test]
    fn warm_instances_follow_the_threads_within_the_review_slots() {
        let mut c = Config::new("east", "p.wasm", "c.pem", "k.pem");
        c.io_threads = Some(4);
        c.max_concurrent_reviews = 8;
        let runtime = c.runtime_config();
        assert_eq!(runtime.warm_instances, 4);
        // Room for a replaced module's idle instances next to every slot.
        assert_eq!(runtime.max_concurrent_reviews, 18);
        c.max_concurrent_reviews = 2;
        assert_eq!(c.runtime_config().warm_instances, 2);
        c.warm_instances = Some(0);
        assert_eq!(c.runtime_config().warm_instances, 0);
    }
}
