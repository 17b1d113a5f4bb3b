//! Runs a compiled Straddle policy module: the one implementation of "run the
//! module", shared by `straddle mutate` and the admission webhook.
//!
//! * A [`Runtime`] owns one wasmtime [`Engine`] with the pooling allocator and
//!   epoch interruption, plus a ticker thread that advances the epoch every
//!   [`RuntimeConfig::epoch_tick`] while reviews run, and sleeps when none has
//!   run for a while (the next one wakes it). It is cheap to clone; the
//!   ticker stops when the runtime and every policy loaded from it are dropped.
//! * [`Runtime::load`] (or [`Runtime::load_cached`], with an on-disk cache of
//!   compiled code) compiles a module once, prepares its instantiation and
//!   calls `describe()` once: a [`Policy`].
//! * [`Policy::review`] runs one admission request in an instance of its own
//!   (a `Store` with a memory limit and an epoch deadline) and calls it.
//!   An instance whose review returned normally and left its memory at the
//!   size it was instantiated with goes back to a small idle list, and the
//!   next review runs in it (instantiation and the memory reset cost more
//!   than most reviews); any trap, timeout or memory-limit error drops it,
//!   so a review never runs in an instance that failed. The module is pure
//!   and frees what a review allocated before the call returns, so a warm
//!   instance gives the same verdict as a fresh one
//!   ([`RuntimeConfig::warm_instances`] 0 makes every review fresh).
//!   Failures come back as [`HostError`] (trap, timeout, memory limit,
//!   busy), never as a panic.
//! * [`Policy::review_admission`] hands a whole AdmissionReview body to the
//!   module's `review-admission`, which reads it once
//!   (`straddle_policy::admission`); `None` when the module leaves the body
//!   to the host or predates that export.
//!
//! `Policy` is `Send + Sync` and clones share everything, so a server can put
//! it in an `Arc`/state and call `review` from many threads (it is blocking
//! CPU work: use `spawn_blocking` or a dedicated pool in async code).
//!
//! ```no_run
//! use straddle_policy_host::{Runtime, RuntimeConfig};
//! use straddle_policy::{Operation, Request};
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let policy = runtime.load(&std::fs::read("policy.wasm")?)?;
//! println!("{} ({})", policy.bundle().name, policy.digest());
//! let verdict = policy.review(&Request {
//!     cluster: "east",
//!     operation: Operation::Create,
//!     kind: "StatefulSet",
//!     namespace: "kafka",
//!     name: "cp-zookeeper",
//!     object: "{}",
//!     old_object: None,
//! })?;
//! # anyhow::Ok(())
//! ```

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentType, Func, Lift, Linker, TypedFunc,
};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolConcurrencyLimitError,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};

pub use straddle_policy::admission::Reviewed;
pub use straddle_policy::{BundleInfo, Operation, Request, Verdict};

mod bindings {
    // `reviewer`: what every module exports. The `admission` export of newer
    // modules is looked up by name (see [`super::Bound`]).
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "reviewer",
        // The request's strings are lent to the call, not copied first.
        ownership: Borrowing {
            duplicate_if_necessary: false
        },
    });
}

use bindings::exports::straddle::policy::review as wit;

/// `straddle:policy/admission`'s record.
#[derive(ComponentType, Lift)]
#[component(record)]
struct WitAdmission {
    uid: String,
    kind: String,
    namespace: String,
    name: String,
    operation: wit::Operation,
    #[component(name = "dry-run")]
    dry_run: bool,
    verdict: Option<wit::Verdict>,
}

/// `review-admission`'s parameters and results.
type AdmissionParams<'a> = (&'a str, &'a str);
type AdmissionResults = (Option<WitAdmission>,);

/// Where `review-admission` is among a component's exports.
const ADMISSION_INTERFACE: &str = "straddle:policy/admission@0.1.0";
const REVIEW_ADMISSION: &str = "review-admission";

/// Settings of a [`Runtime`]. Every policy loaded from it uses them.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Most linear memory one review may use, in bytes (the module's initial
    /// memory, its embedded plan, and whatever it allocates). A module whose
    /// initial memory is above this does not load. Default 16 MiB.
    pub memory_limit_bytes: usize,
    /// Wall-clock time one review (instantiate + call) may take. The check
    /// runs every `epoch_tick`, so a review is stopped between `deadline` and
    /// `deadline + epoch_tick` after it starts. Default 250 ms: wall-clock time, which includes time the thread is not scheduled, so a tight value fails healthy reviews on a busy node.
    pub deadline: Duration,
    /// How often the ticker thread advances the engine's epoch while reviews
    /// run (it sleeps 200 ms after the last one). Default 1 ms.
    pub epoch_tick: Duration,
    /// How many reviews may run at the same time (pooling allocator slots);
    /// one more gets [`HostError::Busy`]. Each slot reserves address space
    /// (about 4 GiB of virtual memory, not RAM). Default 64.
    pub max_concurrent_reviews: u32,
    /// Bytes at the start of each pooled linear memory kept mapped between
    /// reviews and reset in place (only the pages a review dirtied, found
    /// with Linux 6.7+ `PAGEMAP_SCAN`, else a `memset`) instead of being
    /// returned to the OS and faulted in again. Default 2 MiB: the guest's
    /// stack, data and the start of its heap arena, which is all a review
    /// of a chart object touches (p50 ~136 -> ~73 us in `tests/benches/latency.rs`
    /// on a loaded 2-core VM; page faults per review ~15 -> ~1).
    pub keep_resident_bytes: usize,
    /// How many idle instances each loaded policy keeps for its next
    /// reviews. Each holds one of the `max_concurrent_reviews` slots and the
    /// memory its reviews touched. 0: a fresh instance for every review.
    /// Default: the number of CPUs (more cannot run at once).
    pub warm_instances: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            memory_limit_bytes: 16 << 20,
            deadline: Duration::from_millis(250),
            epoch_tick: Duration::from_millis(1),
            max_concurrent_reviews: 64,
            keep_resident_bytes: 2 << 20,
            warm_instances: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Why a review produced no verdict.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The module trapped (a bug in the policy engine, e.g. a panic).
    #[error("the policy module trapped: {0}")]
    Trap(String),
    /// The review ran past [`RuntimeConfig::deadline`].
    #[error("the policy module did not finish within its {deadline:?} deadline")]
    Timeout { deadline: Duration },
    /// The module tried to grow its memory past [`RuntimeConfig::memory_limit_bytes`].
    #[error(
        "the policy module exceeded its memory limit of {limit} bytes (it asked for {requested} bytes)"
    )]
    MemoryLimit { limit: usize, requested: usize },
    /// All [`RuntimeConfig::max_concurrent_reviews`] slots were in use.
    #[error("all {0} policy instance slots are busy")]
    Busy(u32),
    /// Anything else (e.g. instantiation failed).
    #[error("running the policy module failed: {0}")]
    Other(String),
}

/// A wasmtime engine set up for policy modules. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

struct Shared {
    engine: Engine,
    config: RuntimeConfig,
    deadline_ticks: u64,
    pacer: Arc<Pacer>,
    ticker: Option<JoinHandle<()>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        *self.pacer.lock() = true;
        self.pacer.wake.notify_one();
        if let Some(thread) = self.ticker.take() {
            let _ = thread.join();
        }
    }
}

/// How long the ticker keeps ticking after the last review ended. It then
/// sleeps until the next review starts: an idle webhook does not wake up
/// hundreds of times a second, and under load no review waits for it.
const LINGER: Duration = Duration::from_millis(200);

/// Between the reviews and the epoch ticker: how many run, and whether the
/// ticker sleeps.
#[derive(Default)]
struct Pacer {
    running: AtomicUsize,
    /// Set by the ticker, under `stop`, before it checks `running` and
    /// waits; a review that sees it wakes the ticker.
    asleep: AtomicBool,
    /// Set when the runtime is dropped: the ticker returns.
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Pacer {
    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.stop.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A review starts: the epoch must advance until it ends.
    fn start(&self) -> Running<'_> {
        // SeqCst on both sides: either the ticker sees this review before
        // it sleeps, or this sees `asleep` and wakes it.
        self.running.fetch_add(1, SeqCst);
        if self.asleep.load(SeqCst) {
            let _stop = self.lock();
            self.wake.notify_one();
        }
        Running(self)
    }

    /// The ticker thread: advances the engine's epoch every `tick` while
    /// reviews run (and for [`LINGER`] after), then sleeps.
    fn tick(&self, engine: &Engine, tick: Duration) {
        let linger_ticks = ticks(LINGER, tick);
        let mut idle_ticks = 0;
        let mut stop = self.lock();
        let mut next = Instant::now() + tick;
        loop {
            // A wait can end early (a spurious wake-up): never tick early,
            // or a review would be stopped before its deadline.
            let now = Instant::now();
            if !*stop && now < next {
                stop = self
                    .wake
                    .wait_timeout(stop, next - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            if *stop {
                return;
            }
            engine.increment_epoch();
            // From now, not from the missed time: after a stall, catching
            // up in a burst would stop a review early.
            next = now + tick;
            if self.running.load(SeqCst) > 0 {
                idle_ticks = 0;
                continue;
            }
            idle_ticks += 1;
            if idle_ticks < linger_ticks {
                continue;
            }
            self.asleep.store(true, SeqCst);
            while !*stop && self.running.load(SeqCst) == 0 {
                stop = self.wake.wait(stop).unwrap_or_else(PoisonError::into_inner);
            }
            self.asleep.store(false, SeqCst);
            idle_ticks = 0;
            // The first tick a full tick after the review that woke it
            // started, so that it is stopped no sooner than its deadline.
            next = Instant::now() + tick;
        }
    }
}

/// A review in progress (see [`Pacer::start`]).
struct Running<'a>(&'a Pacer);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates the engine and starts the epoch ticker thread.
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        anyhow::ensure!(
            !config.epoch_tick.is_zero(),
            "RuntimeConfig::epoch_tick must be positive"
        );
        anyhow::ensure!(
            config.max_concurrent_reviews > 0,
            "RuntimeConfig::max_concurrent_reviews must be positive"
        );
        let slots = config.max_concurrent_reviews;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(4))
            .max_core_instances_per_component(4)
            .total_memories(slots)
            .max_memories_per_component(1)
            .total_tables(slots.saturating_mul(2))
            .max_tables_per_component(2)
            .max_memory_size(config.memory_limit_bytes)
            .linear_memory_keep_resident(config.keep_resident_bytes)
            .table_keep_resident(config.keep_resident_bytes.min(64 << 10))
            // With memory kept resident, reset only the pages a review
            // dirtied (Linux 6.7+ PAGEMAP_SCAN) instead of `memset`ting all
            // of it; no effect when `keep_resident_bytes` is 0.
            .pagemap_scan(Enabled::Auto);

        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = anyhow_result(Engine::new(&wasm)).context("creating the wasmtime engine")?;

        let tick = config.epoch_tick;
        let deadline_ticks = ticks(config.deadline, tick);
        let pacer = Arc::new(Pacer::default());
        let (ticking, ticker_pacer) = (engine.clone(), pacer.clone());
        let thread = std::thread::Builder::new()
            .name("straddle-epoch".into())
            .spawn(move || ticker_pacer.tick(&ticking, tick))
            .context("starting the epoch ticker thread")?;

        Ok(Runtime {
            shared: Arc::new(Shared {
                engine,
                config,
                deadline_ticks,
                pacer,
                ticker: Some(thread),
            }),
        })
    }

    /// The settings this runtime was created with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

    /// Compiles a policy module (a component), prepares it and calls
    /// `describe()` once. A module without a plan (the bare template) loads;
    /// its bundle is empty (see [`Policy::has_plan`]) and it denies every
    /// request.
    pub fn load(&self, module: &[u8]) -> Result<Policy> {
        let component = compile(&self.shared.engine, module)?;
        self.prepare(component, module)
    }

    /// Like [`load`](Self::load), with a cache of compiled code in
    /// `cache_dir`, keyed by the sha256 of `module` and a fingerprint of the
    /// engine configuration (wasmtime version, CPU features, settings). A
    /// missing, stale or unreadable entry is recompiled and rewritten;
    /// failing to write the cache is not an error.
    ///
    /// Compiled code is loaded as native code without further checks:
    /// `cache_dir` must be writable only by users trusted to run code in
    /// this process.
    pub fn load_cached(&self, module: &[u8], cache_dir: &Path) -> Result<Policy> {
        let engine = &self.shared.engine;
        let path = cache_dir.join(format!(
            "{}-{}.cwasm",
            straddle_policy::digest::hex(&Sha256::digest(module)),
            engine_fingerprint(engine)
        ));
        // Read into memory rather than `deserialize_file`: a mapped file that
        // someone truncates or rewrites in place would SIGBUS the process.
        // SAFETY: the bytes were written by `Component::serialize` of an
        // engine with the same fingerprint (see the trust note above);
        // wasmtime checks the version and configuration header.
        let cached = std::fs::read(&path)
            .ok()
            .and_then(|code| unsafe { Component::deserialize(engine, code) }.ok());
        let component = match cached {
            Some(component) => component,
            None => {
                let component = compile(engine, module)?;
                if let Ok(code) = component.serialize() {
                    let _ = write_atomically(cache_dir, &path, &code);
                }
                component
            }
        };
        self.prepare(component, module)
    }

    fn prepare(&self, component: Component, module: &[u8]) -> Result<Policy> {
        let linker = Linker::<Limits>::new(&self.shared.engine);
        let pre = anyhow_result(linker.instantiate_pre(&component))
            .context("the module imports something; a policy module must import nothing")?;
        let pre = anyhow_result(bindings::ReviewerPre::new(pre))
            .context("the module does not export `straddle:policy/review@0.1.0`")?;
        let admission = component
            .get_export_index(None, ADMISSION_INTERFACE)
            .and_then(|interface| component.get_export_index(Some(&interface), REVIEW_ADMISSION));
        // Loading is not on a request's path, and its first instance in a
        // fresh pool slot is slower than a review: give `describe()` at
        // least a second, so a tight review deadline cannot refuse a module.
        let describe_ticks = self
            .shared
            .deadline_ticks
            .max(ticks(Duration::from_secs(1), self.shared.config.epoch_tick));
        let bundle = run_fresh(
            &self.shared,
            &pre,
            admission.as_ref(),
            describe_ticks,
            |store, bound| {
                if let Some(func) = bound.admission {
                    // Once here, so that each call can skip the type check.
                    wasmtime::error::Context::context(
                        func.typed::<AdmissionParams<'_>, AdmissionResults>(&*store),
                        "the module's review-admission has another type",
                    )?;
                }
                bound.policy.straddle_policy_review().call_describe(store)
            },
        )
        .context("calling describe() on the policy module")?;
        Ok(Policy {
            inner: Arc::new(PolicyInner {
                shared: self.shared.clone(),
                pre,
                admission,
                warm: Mutex::new(Vec::new()),
                started: AtomicU64::new(0),
                bundle: BundleInfo {
                    name: Cow::Owned(bundle.name),
                    spec_digest: Cow::Owned(bundle.spec_digest),
                    clusters: bundle.clusters.into_iter().map(Cow::Owned).collect(),
                    namespaces: bundle.namespaces.into_iter().map(Cow::Owned).collect(),
                    compiler_version: Cow::Owned(bundle.compiler_version),
                    watches: Vec::new(),
                },
                digest: straddle_policy::digest::sha256(module),
            }),
        })
    }
}

/// A loaded policy module. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Policy {
    inner: Arc<PolicyInner>,
}

struct PolicyInner {
    shared: Arc<Shared>,
    pre: bindings::ReviewerPre<Limits>,
    /// `review-admission`, if the module has it (and it has the right type).
    admission: Option<ComponentExportIndex>,
    /// Idle (warm) instances that ended their last review cleanly.
    warm: Mutex<Vec<Instance>>,
    /// Instances created for reviews (not counting `describe()` at load).
    started: AtomicU64,
    bundle: BundleInfo<'static>,
    digest: String,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("digest", &self.inner.digest)
            .field("bundle", &self.inner.bundle)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// What `describe()` returned when the module was loaded.
    pub fn bundle(&self) -> &BundleInfo<'static> {
        &self.inner.bundle
    }

    /// Whether the module carries a plan (the bare template does not).
    pub fn has_plan(&self) -> bool {
        !self.inner.bundle.spec_digest.is_empty()
    }

    /// `sha256:<hex>` of the module's bytes.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// How many instances reviews have started so far; with warm instances
    /// this stays near the number of reviews that ran at the same time,
    /// plus one for each review that failed.
    pub fn instances_started(&self) -> u64 {
        self.inner.started.load(SeqCst)
    }

    /// Reviews one request, within [`RuntimeConfig::deadline`].
    pub fn review(&self, req: &Request<'_>) -> Result<Verdict, HostError> {
        self.review_within(req, self.inner.shared.config.deadline)
    }

    /// Reviews one request (in a warm instance if one is idle, else a fresh
    /// one), stopped between `deadline` and `deadline` +
    /// [`RuntimeConfig::epoch_tick`] after it starts
    /// ([`HostError::Timeout`] names `deadline`). The module is pure, so a
    /// review stopped early can be run again with a longer deadline.
    pub fn review_within(
        &self,
        req: &Request<'_>,
        deadline: Duration,
    ) -> Result<Verdict, HostError> {
        let req = wit::Request {
            cluster: req.cluster,
            operation: match req.operation {
                Operation::Create => wit::Operation::Create,
                Operation::Update => wit::Operation::Update,
                Operation::Delete => wit::Operation::Delete,
                Operation::Connect => wit::Operation::Connect,
            },
            kind: req.kind,
            namespace: req.namespace,
            name: req.name,
            object: req.object,
            old_object: req.old_object,
        };
        let shared = &self.inner.shared;
        let verdict = self
            .run(
                ticks(deadline, shared.config.epoch_tick),
                move |store, bound| {
                    bound
                        .policy
                        .straddle_policy_review()
                        .call_review(store, req)
                },
            )
            .map_err(|error| match error {
                HostError::Timeout { .. } => HostError::Timeout { deadline },
                other => other,
            })?;
        Ok(verdict_of(verdict))
    }

    /// [`review_admission_within`](Self::review_admission_within) within
    /// [`RuntimeConfig::deadline`].
    pub fn review_admission(
        &self,
        cluster: &str,
        body: &str,
    ) -> Result<Option<Reviewed>, HostError> {
        self.review_admission_within(cluster, body, self.inner.shared.config.deadline)
    }

    /// Reviews the request of a whole AdmissionReview body, read once by the
    /// module (`straddle_policy::admission`), within `deadline` as
    /// [`review_within`](Self::review_within). `Ok(None)`: the host reads
    /// the body itself and calls [`review`](Self::review), because the
    /// module leaves this body to it, or was built before modules could
    /// read bodies.
    pub fn review_admission_within(
        &self,
        cluster: &str,
        body: &str,
        deadline: Duration,
    ) -> Result<Option<Reviewed>, HostError> {
        if self.inner.admission.is_none() {
            return Ok(None);
        }
        let shared = &self.inner.shared;
        let (admission,) = self
            .run(
                ticks(deadline, shared.config.epoch_tick),
                move |store, bound| {
                    let Some(func) = bound.admission else {
                        return Ok((None,));
                    };
                    // SAFETY: `prepare` checked these types against the module.
                    let func = unsafe {
                        TypedFunc::<AdmissionParams<'_>, AdmissionResults>::new_unchecked(func)
                    };
                    func.call(store, (cluster, body))
                },
            )
            .map_err(|error| match error {
                HostError::Timeout { .. } => HostError::Timeout { deadline },
                other => other,
            })?;
        Ok(admission.map(|a| Reviewed {
            uid: a.uid,
            kind: a.kind,
            namespace: a.namespace,
            name: a.name,
            operation: match a.operation {
                wit::Operation::Create => Operation::Create,
                wit::Operation::Update => Operation::Update,
                wit::Operation::Delete => Operation::Delete,
                wit::Operation::Connect => Operation::Connect,
            },
            dry_run: a.dry_run,
            verdict: a.verdict.map(verdict_of),
        }))
    }

    /// Runs `call` in an idle warm instance, or a fresh one, under one
    /// deadline for instantiation and call; keeps the instance for the next
    /// call only if this one returned normally and grew no memory.
    fn run<R>(
        &self,
        deadline_ticks: u64,
        call: impl FnOnce(&mut Store<Limits>, &Bound) -> wasmtime::Result<R>,
    ) -> Result<R, HostError> {
        let inner = &*self.inner;
        let config = &inner.shared.config;
        let _running = inner.shared.pacer.start();
        let idle = inner
            .warm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut instance = match idle {
            Some(mut warm) => {
                warm.store.set_epoch_deadline(deadline_ticks);
                warm
            }
            None => {
                inner.started.fetch_add(1, SeqCst);
                Instance::instantiate(
                    &inner.shared,
                    &inner.pre,
                    inner.admission.as_ref(),
                    deadline_ticks,
                )?
            }
        };
        let result = call(&mut instance.store, &instance.bound)
            .map_err(|err| classify(err, instance.store.data(), config));
        if result.is_ok() && instance.store.data().memory_size == instance.memory_size {
            let mut idle = inner.warm.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < config.warm_instances {
                idle.push(instance);
            }
        }
        result
    }
}

/// A policy's exports in one instance.
struct Bound {
    policy: bindings::Reviewer,
    admission: Option<Func>,
}

/// An instance of a policy in its own store, fresh or warm.
struct Instance {
    store: Store<Limits>,
    bound: Bound,
    /// Linear memory size right after instantiation.
    memory_size: usize,
}

impl Instance {
    /// A fresh, limited instance of `pre`; the epoch deadline starts now.
    fn instantiate(
        shared: &Shared,
        pre: &bindings::ReviewerPre<Limits>,
        admission: Option<&ComponentExportIndex>,
        deadline_ticks: u64,
    ) -> Result<Instance, HostError> {
        let mut store = Store::new(
            &shared.engine,
            Limits {
                memory_bytes: shared.config.memory_limit_bytes,
                memory_size: 0,
                exceeded: None,
            },
        );
        store.limiter(|limits| limits as &mut dyn ResourceLimiter);
        store.set_epoch_deadline(deadline_ticks);
        store.epoch_deadline_trap();
        let bound = pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| {
                Ok(Bound {
                    policy: bindings::Reviewer::new(&mut store, &instance)?,
                    admission: admission.and_then(|index| instance.get_func(&mut store, index)),
                })
            });
        match bound {
            Ok(bound) => Ok(Instance {
                memory_size: store.data().memory_size,
                store,
                bound,
            }),
            Err(err) => Err(classify(err, store.data(), &shared.config)),
        }
    }
}

fn verdict_of(verdict: wit::Verdict) -> Verdict {
    match verdict {
        wit::Verdict::Allow => Verdict::Allow,
        wit::Verdict::Patch(patch) => Verdict::Patch(patch),
        wit::Verdict::Deny(message) => Verdict::Deny(message),
        wit::Verdict::Warn(message) => Verdict::Warn(message),
    }
}

/// Runs `call` on a fresh, limited instance of `pre` and drops it.
fn run_fresh<R>(
    shared: &Shared,
    pre: &bindings::ReviewerPre<Limits>,
    admission: Option<&ComponentExportIndex>,
    deadline_ticks: u64,
    call: impl FnOnce(&mut Store<Limits>, &Bound) -> wasmtime::Result<R>,
) -> Result<R, HostError> {
    let _running = shared.pacer.start();
    let mut fresh = Instance::instantiate(shared, pre, admission, deadline_ticks)?;
    call(&mut fresh.store, &fresh.bound)
        .map_err(|err| classify(err, fresh.store.data(), &shared.config))
}

fn classify(err: wasmtime::Error, limits: &Limits, config: &RuntimeConfig) -> HostError {
    if let Some(requested) = limits.exceeded {
        return HostError::MemoryLimit {
            limit: limits.memory_bytes,
            requested,
        };
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return match trap {
            Trap::Interrupt => HostError::Timeout {
                deadline: config.deadline,
            },
            _ => HostError::Trap(format!("{err:#}")),
        };
    }
    if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        return HostError::Busy(config.max_concurrent_reviews);
    }
    HostError::Other(format!("{err:#}"))
}

/// The per-store limiter: records a refused growth, so that it can be told
/// apart from other traps, and turns it into a trap at once.
struct Limits {
    memory_bytes: usize,
    /// The linear memory's size after its latest (creation or) growth.
    memory_size: usize,
    exceeded: Option<usize>,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.exceeded = Some(desired);
            wasmtime::bail!(
                "memory limit of {} bytes exceeded (asked for {desired})",
                self.memory_bytes
            );
        }
        self.memory_size = desired;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        8
    }

    fn tables(&self) -> usize {
        8
    }

    fn memories(&self) -> usize {
        2
    }
}

/// Epoch ticks that cover `duration` at one tick per `tick`: one more than
/// the quotient, as the first tick can come at once.
fn ticks(duration: Duration, tick: Duration) -> u64 {
    duration
        .as_nanos()
        .div_ceil(tick.as_nanos())
        .clamp(1, u128::from(u64::MAX / 2)) as u64
        + 1
}

/// `wasmtime::Error` is not a `std::error::Error`; anyhow's `Context` needs one.
fn anyhow_result<T>(result: wasmtime::Result<T>) -> Result<T> {
    result.map_err(anyhow::Error::from)
}

/// Compiles a module on a thread pool of its own, joined before returning.
/// wasmtime compiles functions in parallel on the current rayon pool; the
/// global one would keep its threads, and the stacks and heap arenas
/// Cranelift grew on them, for the life of the process.
fn compile(engine: &Engine, module: &[u8]) -> Result<Component> {
    let compile = || anyhow_result(Component::new(engine, module));
    rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("straddle-compile-{i}"))
        .build_scoped(|thread| thread.run(), |pool| pool.install(compile))
        .unwrap_or_else(|_| compile())
        .context("compiling the policy module")
}

/// A stable (across processes) digest of what makes compiled code reusable.
fn engine_fingerprint(engine: &Engine) -> String {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0 // never used: only the digest is read
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    straddle_policy::digest::hex(&hasher.0.finalize()[..8])
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Runtime>();
    send_sync::<Policy>();
    send_sync::<HostError>();
};
