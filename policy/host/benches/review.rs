//! Review latency on the cp-zookeeper StatefulSet fixture with a small plan:
//! in a fresh instance (Store + instantiate + review() + drop) and in a warm
//! one (review() only, as the webhook runs most reviews).
//!
//! The object is read at run time from `STRADDLE_BENCH_OBJECT`, else from
//! `/work/shared/fixtures/charts/cp-zk-kafka-only/statefulset-confluent-cp-zookeeper.json`;
//! without it the object benches are skipped and only the built-in object runs.
//!
//! `cargo bench -p straddle-policy-host --bench review`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use straddle_policy::{Request, Verdict};
use straddle_policy_host::{Runtime, RuntimeConfig};
use straddle_test_support::host_plan;

const FIXTURE: &str =
    "/work/shared/fixtures/charts/cp-zk-kafka-only/statefulset-confluent-cp-zookeeper.json";

fn fixture() -> Option<String> {
    let path = std::env::var("STRADDLE_BENCH_OBJECT").unwrap_or_else(|_| FIXTURE.to_owned());
    match std::fs::read_to_string(&path) {
        // The fixture is indented; the API server sends compact JSON, and
        // half of the indented bytes would be whitespace to skip. (Keys may
        // come out reordered; the engine does not depend on key order.)
        Ok(object) => Some(
            serde_json::from_str::<serde_json::Value>(&object)
                .and_then(|v| serde_json::to_string(&v))
                .expect("the fixture is JSON"),
        ),
        Err(err) => {
            eprintln!("skipping the fixture benches: {path}: {err}");
            None
        }
    }
}

fn request(object: &str) -> Request<'_> {
    host_plan::request(host_plan::CLUSTER, host_plan::ZOOKEEPER, object)
}

/// p50/p99 over plain timed calls, printed next to criterion's mean.
fn percentiles(label: &str, mut f: impl FnMut()) {
    for _ in 0..200 {
        f();
    }
    let mut samples: Vec<Duration> = (0..5000)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    eprintln!(
        "{label}: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        at(0.50),
        at(0.90),
        at(0.99),
        samples[samples.len() - 1]
    );
}

fn bench(c: &mut Criterion) {
    let plan = host_plan::plan();
    let module = host_plan::module(&plan);
    let mut objects = vec![("built-in", host_plan::statefulset(3, "hello"))];
    if let Some(object) = fixture() {
        objects.push(("cp-zookeeper-fixture", object));
    }

    {
        let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
        let start = Instant::now();
        black_box(runtime.load(&module).expect("load"));
        eprintln!(
            "load (compile + describe) of a {}-byte module: {:?}",
            module.len(),
            start.elapsed()
        );
        let dir = std::env::temp_dir().join(format!("straddle-bench-cache-{}", std::process::id()));
        black_box(runtime.load_cached(&module, &dir).expect("load_cached"));
        let start = Instant::now();
        black_box(runtime.load_cached(&module, &dir).expect("load_cached"));
        eprintln!("load_cached, cache hit: {:?}", start.elapsed());
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Fresh instances with and without memory kept resident, then reviews
    // in a warm instance (the default).
    for (keep_resident, warm) in [(0usize, 0usize), (1 << 20, 0), (1 << 20, 1)] {
        let runtime = Runtime::new(RuntimeConfig {
            keep_resident_bytes: keep_resident,
            warm_instances: warm,
            ..RuntimeConfig::default()
        })
        .expect("runtime");
        let policy = runtime.load(&module).expect("load");
        for (name, object) in &objects {
            let req = request(object);
            let native = straddle_policy::review(&plan, &req);
            assert_eq!(policy.review(&req).expect("review"), native);
            if !matches!(native, Verdict::Patch(_)) {
                eprintln!("note: {name} gives {native:?}, not a patch");
            }
            let label = format!(
                "{}_review/{name}/{}B/keep_resident={}KiB",
                if warm > 0 { "warm" } else { "fresh" },
                object.len(),
                keep_resident >> 10
            );
            percentiles(&label, || {
                black_box(policy.review(black_box(&req)).unwrap());
            });
            c.bench_function(&label, |b| {
                b.iter(|| policy.review(black_box(&req)).unwrap())
            });
        }
    }

    if let Some((_, object)) = objects.last() {
        let req = request(object);
        c.bench_function("native_review", |b| {
            b.iter(|| straddle_policy::review(black_box(&plan), black_box(&req)))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
