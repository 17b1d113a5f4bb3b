//! Policy compute per request, as the webhook pays it: reviews in a warm
//! instance (the host's default; `STRADDLE_WARM_INSTANCES=0` makes each one
//! fresh: instantiate + call + drop) on real chart StatefulSets, with
//! plans compiled from the examples and from a 10-cluster x 100-node spec.
//! Prints p50 / p99 / max per case, and the native engine for comparison.
//!
//! `cargo bench -p straddle-tests --bench latency` (add `-- --quick` for fewer rounds).
//!
//! Knobs: `STRADDLE_KEEP_RESIDENT_KIB` overrides the host's kept-resident
//! memory; `STRADDLE_LATENCY_PROFILE_ROUNDS=N` runs only N reviews of the first
//! case (wasm, or native with `STRADDLE_LATENCY_PROFILE_NATIVE=1`) and exits,
//! for `perf record -e cpu-clock`; `STRADDLE_LATENCY_CASE=I` picks case I
//! (0-based) instead, and sends its object compact, as the API server does.
//! `STRADDLE_LATENCY_BODY=1` reviews the whole AdmissionReview instead, read
//! once by the module, as the webhook sends it.
//! `tests/tools/review-instructions.sh` runs that under callgrind: instructions
//! per review are stable on a shared VM, where wall time is not.

use std::time::{Duration, Instant};

use straddle_compiler::{check, compile};
use straddle_policy::{Operation, Request, Verdict};
use straddle_policy_host::{Runtime, RuntimeConfig};
use straddle_test_support::review::{KeyOrder, review_text};
use straddle_tests::root;

struct Case {
    name: &'static str,
    spec: &'static str,
    cluster: &'static str,
    fixture: &'static str,
    namespace: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "cp zookeeper sts",
        spec: "../examples/cp-two-clusters.yaml",
        cluster: "cluster-1",
        fixture: "cp-zk-kafka-only/statefulset-confluent-cp-zookeeper.json",
        namespace: "confluent",
    },
    Case {
        name: "cp kafka sts",
        spec: "../examples/cp-two-clusters.yaml",
        cluster: "cluster-1",
        fixture: "cp-zk-kafka-only/statefulset-confluent-cp-kafka.json",
        namespace: "confluent",
    },
    Case {
        name: "bitnami controller sts",
        spec: "../examples/bitnami-kraft-three-clusters.yaml",
        cluster: "west",
        fixture: "bitnami-kafka-kraft-dedicated-shared-sasl/statefulset-kafka-controller.json",
        namespace: "kafka",
    },
    Case {
        name: "bitnami broker sts",
        spec: "../examples/bitnami-kraft-three-clusters.yaml",
        cluster: "west",
        fixture: "bitnami-kafka-kraft-dedicated-shared-sasl/statefulset-kafka-broker.json",
        namespace: "kafka",
    },
    Case {
        name: "10x100: broker sts",
        spec: "specs/bench-ten-clusters.yaml",
        cluster: "dc7",
        fixture: "bitnami-kafka-kraft-dedicated-shared-sasl/statefulset-kafka-broker.json",
        namespace: "kafka",
    },
    Case {
        name: "10x100: controller sts",
        spec: "specs/bench-ten-clusters.yaml",
        cluster: "dc7",
        fixture: "bitnami-kafka-kraft-dedicated-shared-sasl/statefulset-kafka-controller.json",
        namespace: "kafka",
    },
];

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p = |q: f64| us(samples[((samples.len() as f64 - 1.0) * q) as usize]);
    (p(0.50), p(0.99), us(*samples.last().unwrap()))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 2_000 } else { 20_000 };
    let mut config = RuntimeConfig::default();
    if let Some(kib) = std::env::var("STRADDLE_KEEP_RESIDENT_KIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        config.keep_resident_bytes = kib << 10;
    }
    if let Some(warm) = std::env::var("STRADDLE_WARM_INSTANCES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        config.warm_instances = warm;
    }
    if std::env::var_os("STRADDLE_LATENCY_PROFILE_ROUNDS").is_some() {
        // One review at a time: one pooled slot's 4 GiB reservation instead
        // of 64, which valgrind cannot map.
        config.max_concurrent_reviews = 1;
    }
    let runtime = Runtime::new(config).expect("wasmtime engine");
    println!(
        "{:<24} {:>9} {:>9} {:>9}   {:>11} {:>11}   {:>9} {:>8}",
        "case", "wasm p50", "p99", "max", "native p50", "native p99", "plan", "object"
    );
    let only = std::env::var("STRADDLE_LATENCY_CASE").ok().map(|i| {
        i.parse::<usize>()
            .expect("STRADDLE_LATENCY_CASE is a case index")
    });
    for (index, case) in CASES.iter().enumerate() {
        if only.is_some_and(|i| i != index) {
            continue;
        }
        let text = std::fs::read_to_string(root().join("tests").join(case.spec)).unwrap();
        let checked = check(case.spec, &text).unwrap_or_else(|r| panic!("{r}"));
        let (plan, _) = compile::plan(&checked.topology);
        let module = compile::module(&checked.topology).unwrap();
        let policy = runtime.load(&module).unwrap();
        let mut object =
            std::fs::read_to_string(root().join("tests/fixtures/charts").join(case.fixture))
                .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&object).unwrap();
        if only.is_some() {
            object = serde_json::to_string(&doc).unwrap();
        }
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        let req = Request {
            cluster: case.cluster,
            operation: Operation::Create,
            kind: "StatefulSet",
            namespace: case.namespace,
            name: &name,
            object: &object,
            old_object: None,
        };
        let expected = straddle_policy::review(&plan, &req);
        assert!(
            matches!(expected, Verdict::Patch(_)),
            "{}: {expected:?}",
            case.name
        );
        for _ in 0..200 {
            assert_eq!(policy.review(&req).unwrap(), expected);
        }
        if let Ok(n) = std::env::var("STRADDLE_LATENCY_PROFILE_ROUNDS") {
            // A wasm-only loop on the first case, for `perf record`.
            let native = std::env::var_os("STRADDLE_LATENCY_PROFILE_NATIVE").is_some();
            // The webhook's path: the whole AdmissionReview, read once.
            let body = std::env::var_os("STRADDLE_LATENCY_BODY")
                .map(|_| review_text(&doc, case.namespace, "CREATE", "uid-1", KeyOrder::ApiServer));
            if let Some(body) = &body {
                let reviewed = policy.review_admission(case.cluster, body).unwrap();
                let verdict = reviewed.and_then(|r| r.verdict);
                assert_eq!(verdict.as_ref(), Some(&expected), "{}", case.name);
            }
            for _ in 0..n.parse::<usize>().unwrap() {
                if let Some(body) = &body {
                    std::hint::black_box(policy.review_admission(case.cluster, body).unwrap());
                } else if native {
                    std::hint::black_box(straddle_policy::review(&plan, &req));
                } else {
                    std::hint::black_box(policy.review(&req).unwrap());
                }
            }
            return;
        }
        let mut wasm = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            let v = policy.review(&req).unwrap();
            wasm.push(t.elapsed());
            std::hint::black_box(v);
        }
        let mut native = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            let v = straddle_policy::review(&plan, &req);
            native.push(t.elapsed());
            std::hint::black_box(v);
        }
        let mut parse = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            let v = straddle_policy::k8s::StatefulSet::from_json(&object).unwrap();
            parse.push(t.elapsed());
            std::hint::black_box(v);
        }
        let (p50, _, _) = percentiles(parse);
        eprintln!("  ({}: native parse alone p50 {p50:.1}us)", case.name);
        let (w50, w99, wmax) = percentiles(wasm);
        let (n50, n99, _) = percentiles(native);
        println!(
            "{:<24} {:>7.1}us {:>7.1}us {:>7.0}us   {:>9.1}us {:>9.1}us   {:>8}B {:>7}B",
            case.name,
            w50,
            w99,
            wmax,
            n50,
            n99,
            plan.len(),
            object.len()
        );
    }
    println!(
        "module template: {} bytes",
        straddle_policy_artifact::POLICY_TEMPLATE.len()
    );
}
