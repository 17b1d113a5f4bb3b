//! The policy in use, and how a new one becomes it.
//!
//! Loading goes through `straddle-policy-host` (the same runtime as
//! `straddle mutate`), then [`validate`]: the module must carry a plan, its
//! bundle must list `--cluster`, and a canary review must give a verdict.
//! Only then does [`Active::swap`] publish it. Requests take the current
//! policy once, at the start, so in-flight reviews finish on the module they
//! started with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwapOption;
use straddle_policy_host::{Operation, Policy, Request, Runtime, RuntimeConfig};

use crate::metrics::{Metrics, PolicyLabels};

/// Loads policy modules for one cluster.
pub struct Loader {
    runtime: Runtime,
    cluster: String,
    cache_dir: Option<PathBuf>,
}

impl Loader {
    pub fn new(config: RuntimeConfig, cluster: &str, cache_dir: Option<PathBuf>) -> Result<Loader> {
        Ok(Loader {
            runtime: Runtime::new(config).context("starting the wasmtime runtime")?,
            cluster: cluster.to_owned(),
            cache_dir,
        })
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn runtime_config(&self) -> &RuntimeConfig {
        self.runtime.config()
    }

    /// Compiles (or reads from the cache) and validates a module. Blocking:
    /// compiling takes up to about a second.
    pub fn load(&self, module: &[u8]) -> Result<Loaded> {
        let started = Instant::now();
        let policy = match &self.cache_dir {
            Some(dir) => self.runtime.load_cached(module, dir),
            None => self.runtime.load(module),
        };
        release_freed_heap();
        let policy = policy.context("not a usable policy module")?;
        validate(&policy, &self.cluster)?;
        Ok(Loaded {
            policy,
            load_time: started.elapsed(),
            loaded_at: SystemTime::now(),
        })
    }
}

/// Gives the allocator's free pages back to the OS. Compiling a module
/// (Cranelift, on the compile threads) leaves about 6 MiB of freed heap
/// that glibc would keep in its arenas for the life of the process: a
/// sixth of a webhook's RSS after a start without a cached module.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the OS; it takes no
    // pointers and is thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A validated policy and when it was loaded.
pub struct Loaded {
    pub policy: Policy,
    pub load_time: Duration,
    pub loaded_at: SystemTime,
}

/// The checks a module must pass before it serves.
pub fn validate(policy: &Policy, cluster: &str) -> Result<()> {
    let bundle = policy.bundle();
    if !policy.has_plan() {
        bail!(
            "the module carries no plan (is it the bare template?); compile a stretch spec with `straddle compile`"
        );
    }
    if !bundle.clusters.iter().any(|c| c == cluster) {
        bail!(
            "cluster {cluster:?} is not a member of stretch {:?} (spec.clusters: {}); a webhook \
             must not mutate anything in a cluster its policy does not know: fix --cluster or \
             add the cluster to the spec and recompile",
            bundle.name,
            bundle.clusters.join(", ")
        );
    }
    // A module that cannot review a plain object (it traps, loops, runs out
    // of memory) must not replace one that can.
    let canary = Request {
        cluster,
        operation: Operation::Create,
        kind: "ConfigMap",
        namespace: "straddle-webhook-canary",
        name: "straddle-webhook-canary",
        object: r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"straddle-webhook-canary","namespace":"straddle-webhook-canary"},"data":{}}"#,
        old_object: None,
    };
    policy
        .review(&canary)
        .context("the module fails a test review of a plain ConfigMap")?;
    // The same through the path that reads whole bodies (modules that have it).
    let body = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"straddle-webhook-canary","kind":{{"group":"","version":"v1","kind":"ConfigMap"}},"resource":{{"group":"","version":"v1","resource":"configmaps"}},"name":"straddle-webhook-canary","namespace":"straddle-webhook-canary","operation":"CREATE","userInfo":{{}},"object":{}}}}}"#,
        canary.object
    );
    policy
        .review_admission(cluster, &body)
        .context("the module fails a test review of an AdmissionReview of a plain ConfigMap")?;
    Ok(())
}

/// The policy requests are reviewed with.
#[derive(Default)]
pub struct Active {
    current: ArcSwapOption<Policy>,
}

impl Active {
    /// The current policy, if one is loaded. Cheap (an atomic reference count).
    pub fn get(&self) -> Option<Arc<Policy>> {
        self.current.load_full()
    }

    /// Makes `loaded` the current policy and updates the metrics.
    pub fn swap(&self, loaded: Loaded, metrics: &Metrics) {
        let policy = loaded.policy;
        metrics.policy_info.clear();
        metrics.policy_info.get_or_create(&labels(&policy)).set(1);
        metrics
            .policy_load_seconds
            .set(loaded.load_time.as_secs_f64());
        metrics.policy_loaded_timestamp.set(
            loaded
                .loaded_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        self.current.store(Some(Arc::new(policy)));
    }
}

fn labels(policy: &Policy) -> PolicyLabels {
    let bundle = policy.bundle();
    PolicyLabels {
        digest: policy.digest().to_owned(),
        name: bundle.name.to_string(),
        spec_digest: bundle.spec_digest.to_string(),
    }
}
