//! Load-and-soak: the `straddle-webhook` binary of this build, as a child
//! process, answers a long run of mixed requests over HTTPS keep-alive
//! connections with exactly the expected answer every time, its memory does
//! not grow, and its `/metrics` counts every request.
//!
//! The mix: the chart's StatefulSets and Services (patched), objects the
//! spec does not name (allowed), already-mutated objects (allowed), CREATE
//! and UPDATE, a `kubectl scale` beyond the ID block (denied), and bad
//! bodies (not JSON: HTTP 400; unreadable with a uid: a denial). Every
//! connection also reconnects now and then, so TLS handshakes are part of
//! the soak.
//!
//! `STRADDLE_SOAK_REQUESTS` sets the count (default 20,000, a few seconds);
//! `.ci/run` runs 200,000 against the release build:
//!
//! ```sh
//! STRADDLE_SOAK_REQUESTS=200000 cargo test --release -p straddle-webhook --test soak -- --nocapture
//! ```

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hyper::body::Bytes;
use serde_json::{Value, json};
use straddle_test_support::webhook_child::{ChildServer, mib, ms, quantile, rss};

/// Connections sending at once (closed loop).
const CONNECTIONS: usize = 8;
/// Requests on one connection before it reconnects.
const PER_CONNECTION: usize = 2_500;
/// RSS sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// The part of the run counted as warm-up (pools, caches, allocator arenas).
const WARM_UP: f64 = 0.2;
/// How much the last quarter's RSS peak may exceed the first quarter's.
const RSS_MARGIN: u64 = 4 << 20;

/// One kind of request and the answer it must get.
struct Case {
    name: String,
    body: Bytes,
    /// The metric series this request increments by one.
    series: String,
    /// Checked on the first answer; later answers must be byte-identical.
    expect: Expect,
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    Patch,
    Allow,
    Deny,
    Status(u16),
}

fn case(name: &str, review: &Value, kind: &str, operation: &str, expect: Expect) -> Case {
    let verdict = match expect {
        Expect::Patch => "patch",
        Expect::Allow => "allow",
        Expect::Deny => "deny",
        Expect::Status(_) => unreachable!("use bad_case"),
    };
    Case {
        name: name.to_owned(),
        body: Bytes::from(serde_json::to_vec(review).unwrap()),
        series: format!(
            "straddle_webhook_requests_total{{kind=\"{kind}\",operation=\"{operation}\",verdict=\"{verdict}\"}}"
        ),
        expect,
    }
}

fn bad_case(name: &str, body: &[u8], reason: &str, expect: Expect) -> Case {
    Case {
        name: name.to_owned(),
        body: Bytes::copy_from_slice(body),
        series: format!("straddle_webhook_rejected_requests_total{{reason=\"{reason}\"}}"),
        expect,
    }
}

/// The request mix, from the real chart fixture and the compiled policy.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let module = compile(CP_TWO);
    let plan =
        straddle_policy_artifact::embed::read_plan(&module).expect("the module carries a plan");
    for file in [
        "statefulset-confluent-cp-zookeeper.json",
        "statefulset-confluent-cp-kafka.json",
        "service-confluent-cp-zookeeper-headless.json",
        "service-confluent-cp-kafka-headless.json",
        "service-confluent-cp-kafka.json",
    ] {
        let object = fixture_json("cp-zk-kafka-only", file);
        let kind = object["kind"].as_str().unwrap().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        // What the policy does to it (the native engine, same plan): the
        // chart's objects are patched or allowed; once patched, allowed.
        let verdict = straddle_policy::review(
            &plan,
            &straddle_policy::Request {
                cluster: "cluster-0",
                operation: straddle_policy::Operation::Create,
                kind: &kind,
                namespace: "confluent",
                name: &name,
                object: &object.to_string(),
                old_object: None,
            },
        );
        let (expect, mutated) = match verdict {
            straddle_policy::Verdict::Patch(patch) => {
                let mut mutated = object.clone();
                let patch: json_patch::Patch = serde_json::from_str(&patch).unwrap();
                json_patch::patch(&mut mutated, &patch).unwrap();
                (Expect::Patch, Some(mutated))
            }
            straddle_policy::Verdict::Allow => (Expect::Allow, None),
            straddle_policy::Verdict::Deny(m) | straddle_policy::Verdict::Warn(m) => {
                panic!("{file} denied or warned: {m}")
            }
        };
        for operation in ["CREATE", "UPDATE"] {
            let review = review_for(
                &object,
                "confluent",
                operation,
                &format!("{file}-{operation}"),
            );
            cases.push(case(
                &format!("{file} {operation}"),
                &review,
                &kind,
                operation,
                expect,
            ));
        }
        if let Some(mutated) = mutated {
            let review = review_for(&mutated, "confluent", "UPDATE", &format!("{file}-mutated"));
            cases.push(case(
                &format!("{file} mutated"),
                &review,
                &kind,
                "UPDATE",
                Expect::Allow,
            ));
        }
    }
    // An object the spec does not name.
    let mut other = fixture_json("cp-default", "service-confluent-cp-schema-registry.json");
    other["metadata"]["name"] = json!("unrelated");
    let review = review_for(&other, "confluent", "CREATE", "unrelated");
    cases.push(case(
        "unnamed Service",
        &review,
        "Service",
        "CREATE",
        Expect::Allow,
    ));
    // kubectl scale far beyond the broker ID block.
    let scale = json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "confluent-cp-kafka", "namespace": "confluent"},
        "spec": {"replicas": 500}
    });
    let mut review = review_for(&scale, "confluent", "UPDATE", "scale");
    review["request"]["kind"] = json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
    review["request"]["resource"] =
        json!({"group": "apps", "version": "v1", "resource": "statefulsets"});
    review["request"]["subResource"] = json!("scale");
    cases.push(case(
        "scale beyond the block",
        &review,
        "Scale",
        "UPDATE",
        Expect::Deny,
    ));
    // Bad bodies.
    cases.push(bad_case(
        "not JSON",
        b"{ not json",
        "malformed",
        Expect::Status(400),
    ));
    let unreadable = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"bad-1","operation":"EXPLODE"}}"#;
    cases.push(bad_case(
        "unreadable with a uid",
        unreadable,
        "unreadable_review",
        Expect::Deny,
    ));
    cases
}

/// Checks the first answer of a case against its expectation.
fn check_first(case: &Case, status: u16, body: &Bytes) {
    let text = String::from_utf8_lossy(body);
    if let Expect::Status(code) = case.expect {
        assert_eq!(status, code, "{}: {text}", case.name);
        return;
    }
    assert_eq!(status, 200, "{}: {text}", case.name);
    let review: Value = serde_json::from_slice(body).unwrap();
    let response = &review["response"];
    let (allowed, patched) = (response["allowed"] == true, response.get("patch").is_some());
    let ok = match case.expect {
        Expect::Patch => allowed && patched,
        Expect::Allow => allowed && !patched,
        Expect::Deny => {
            !allowed
                && response["status"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
        }
        Expect::Status(_) => unreachable!(),
    };
    assert!(ok, "{}: expected {:?}, got {text}", case.name, case.expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_answers_every_request_right_with_flat_memory() {
    let total: usize = std::env::var("STRADDLE_SOAK_REQUESTS")
        .ok()
        .map(|v| v.parse().expect("STRADDLE_SOAK_REQUESTS is a number"))
        .unwrap_or(20_000);
    let cases = Arc::new(cases());
    let dir = Scratch::new("soak").unwrap();
    std::fs::write(dir.join("policy.wasm"), compile(CP_TWO)).unwrap();
    pki().write(dir.path());
    let server = ChildServer::start(dir.path(), &cache_dir(), &[])
        .await
        .unwrap();
    let tls = pki().client_config(None, false);

    // The expected answers: each case once, checked.
    let mut client = Client::connect(server.addr, tls.clone()).await.unwrap();
    let mut expected = Vec::new();
    for case in cases.iter() {
        let answer = client.mutate(case.body.clone()).await.unwrap();
        check_first(case, answer.status.as_u16(), &answer.body);
        expected.push((answer.status, answer.body));
    }
    let expected = Arc::new(expected);
    let before = client.get("/metrics").await.unwrap().text();
    drop(client);

    // RSS sampling while the load runs.
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let running = running.clone();
        let pid = server.pid;
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while running.load(Ordering::Relaxed) {
                if let Ok((rss, _)) = rss(pid) {
                    samples.push(rss);
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            samples
        })
    };
    let (rss_start, _) = rss(server.pid).unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let (cases, expected, tls, addr) =
            (cases.clone(), expected.clone(), tls.clone(), server.addr);
        // Requests c, c + CONNECTIONS, ...: case i mod the number of cases.
        let mine: Vec<usize> = (c..total).step_by(CONNECTIONS).collect();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(mine.len());
            let mut counts = vec![0u64; cases.len()];
            for chunk in mine.chunks(PER_CONNECTION) {
                let mut client = Client::connect(addr, tls.clone()).await.unwrap();
                for &i in chunk {
                    let k = i % cases.len();
                    let sent = Instant::now();
                    let answer = client
                        .mutate(cases[k].body.clone())
                        .await
                        .unwrap_or_else(|e| panic!("request {i} ({}): {e:#}", cases[k].name));
                    latencies.push(sent.elapsed());
                    assert!(
                        answer.status == expected[k].0 && answer.body == expected[k].1,
                        "request {i} ({}): unexpected answer {} {}",
                        cases[k].name,
                        answer.status,
                        answer.text()
                    );
                    counts[k] += 1;
                }
            }
            (latencies, counts)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut counts = vec![0u64; cases.len()];
    for task in tasks {
        let (l, c) = task.await.unwrap();
        latencies.extend(l);
        for (sum, n) in counts.iter_mut().zip(c) {
            *sum += n;
        }
    }
    let took = started.elapsed();
    running.store(false, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let (rss_end, rss_peak) = rss(server.pid).unwrap();

    // Every request counted under its own series.
    let after = Client::connect(server.addr, tls.clone())
        .await
        .unwrap()
        .get("/metrics")
        .await
        .unwrap()
        .text();
    let mut by_series: BTreeMap<&str, u64> = BTreeMap::new();
    for (case, n) in cases.iter().zip(&counts) {
        *by_series.entry(&case.series).or_default() += n;
    }
    for (series, n) in &by_series {
        let delta = metric(&after, series).unwrap_or(0.0) - metric(&before, series).unwrap_or(0.0);
        assert_eq!(
            delta as u64, *n,
            "{series}: /metrics counted {delta}, the client sent {n}"
        );
    }
    assert_eq!(latencies.len(), total);

    latencies.sort();
    let rate = total as f64 / took.as_secs_f64();
    println!(
        "soak: {total} requests ({} kinds) on {CONNECTIONS} HTTPS keep-alive connections \
         (reconnecting every {PER_CONNECTION}) in {:.1} s = {rate:.0}/s, 0 unexpected answers",
        cases.len(),
        took.as_secs_f64()
    );
    println!(
        "soak: latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.99)),
        ms(quantile(&latencies, 0.999)),
        ms(*latencies.last().unwrap())
    );

    // Memory: after warm-up, the last quarter's peak is no higher than the
    // first quarter's plus a small margin (a leak grows steadily).
    let steady = &samples[(samples.len() as f64 * WARM_UP) as usize..];
    assert!(steady.len() >= 8, "only {} RSS samples", samples.len());
    let quarter = steady.len() / 4;
    let first = *steady[..quarter].iter().max().unwrap();
    let last = *steady[steady.len() - quarter..].iter().max().unwrap();
    println!(
        "soak: RSS start {:.1} MiB, end {:.1} MiB, peak {:.1} MiB; after warm-up first-quarter max \
         {:.1} MiB, last-quarter max {:.1} MiB ({} samples)",
        mib(rss_start),
        mib(rss_end),
        mib(rss_peak),
        mib(first),
        mib(last),
        samples.len()
    );
    assert!(
        last <= first + RSS_MARGIN,
        "RSS grows: last-quarter max {:.1} MiB > first-quarter max {:.1} MiB + {:.0} MiB",
        mib(last),
        mib(first),
        mib(RSS_MARGIN)
    );
    server.stop().await.unwrap();
}
