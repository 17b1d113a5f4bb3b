//! The real template, a small plan embedded with the artifact crate's
//! embedder, run through the host.

use std::time::Duration;

use straddle_policy::admission::{Admission, review_admission};
use straddle_policy::{Operation, Plan, Request, Verdict};
use straddle_policy_host::{HostError, Runtime, RuntimeConfig};
use straddle_test_support::host_plan::{self, CLUSTER, ZOOKEEPER, request};
use straddle_test_support::review::{KeyOrder, review_text};

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).unwrap()
}

#[test]
fn describe_round_trips_the_bundle() {
    let plan = host_plan::plan();
    let module = host_plan::module(&plan);
    let policy = runtime().load(&module).unwrap();
    let expected = Plan::parse(&plan).unwrap().bundle().unwrap();
    assert_eq!(policy.bundle(), &expected);
    assert!(policy.has_plan());
    assert!(policy.digest().starts_with("sha256:"));
    assert_eq!(policy.digest().len(), "sha256:".len() + 64);
}

#[test]
fn review_agrees_with_the_native_engine() {
    let plan = host_plan::plan();
    let policy = runtime().load(&host_plan::module(&plan)).unwrap();
    let ok = host_plan::statefulset(3, "hello");
    let many = host_plan::statefulset(9, "hello");
    let requests = [
        request("north", ZOOKEEPER, &ok),   // unknown cluster
        request(CLUSTER, "other-sts", &ok), // a name the spec does not use
        request(CLUSTER, ZOOKEEPER, &ok),   // named: patched
        request("west", ZOOKEEPER, &ok),
        request(CLUSTER, ZOOKEEPER, &many), // more replicas
        request(CLUSTER, ZOOKEEPER, "{not json"),
        Request {
            operation: Operation::Delete,
            ..request(CLUSTER, ZOOKEEPER, &ok)
        },
        Request {
            operation: Operation::Update,
            old_object: Some(&ok),
            ..request(CLUSTER, ZOOKEEPER, &ok)
        },
    ];
    // Three rounds: every request after the first runs in the instance the
    // one before it used, and still gets the fresh-instance verdict.
    for _ in 0..3 {
        for req in &requests {
            let native = straddle_policy::review(&plan, req);
            let hosted = policy.review(req).unwrap();
            assert_eq!(hosted, native, "{req:?}");
        }
    }
    assert_eq!(policy.instances_started(), 1);
    // A request for an unknown cluster gives whatever the engine says (today: a denial).
    let unknown = policy.review(&requests[0]).unwrap();
    assert_eq!(unknown, straddle_policy::review(&plan, &requests[0]));
}

#[test]
fn a_warm_instance_frees_what_each_review_allocated() {
    let plan = host_plan::plan();
    let policy = runtime().load(&host_plan::module(&plan)).unwrap();
    // 256 KiB per request, lowered into the module's memory on every call:
    // kept, 100 of them would pass the 16 MiB memory limit, and any growth
    // retires the instance.
    let big = host_plan::statefulset(3, &"x".repeat(256 << 10));
    let req = request(CLUSTER, ZOOKEEPER, &big);
    let native = straddle_policy::review(&plan, &req);
    for _ in 0..100 {
        assert_eq!(policy.review(&req).unwrap(), native);
    }
    assert_eq!(policy.instances_started(), 1);
    // A review that had to grow memory (past the 2 MiB arena) retires its
    // instance: the next one starts fresh.
    let grows = host_plan::statefulset(3, &"x".repeat(3 << 20));
    assert!(policy.review(&request(CLUSTER, ZOOKEEPER, &grows)).is_ok());
    assert_eq!(policy.review(&req).unwrap(), native);
    assert_eq!(policy.instances_started(), 2);
}

#[test]
fn without_warm_instances_every_review_is_fresh() {
    let plan = host_plan::plan();
    let runtime = Runtime::new(RuntimeConfig {
        warm_instances: 0,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let policy = runtime.load(&host_plan::module(&plan)).unwrap();
    let req_object = host_plan::statefulset(3, "hello");
    let req = request(CLUSTER, ZOOKEEPER, &req_object);
    for _ in 0..3 {
        assert_eq!(
            policy.review(&req).unwrap(),
            straddle_policy::review(&plan, &req)
        );
    }
    assert_eq!(policy.instances_started(), 3);
}

#[test]
fn a_whole_body_agrees_with_the_native_engine() {
    let plan = host_plan::plan();
    let parsed = Plan::parse(&plan).unwrap();
    let policy = runtime().load(&host_plan::module(&plan)).unwrap();
    let sts: serde_json::Value = serde_json::from_str(&host_plan::statefulset(3, "hello")).unwrap();
    let mut bodies = Vec::new();
    for order in [KeyOrder::ApiServer, KeyOrder::Sorted] {
        for operation in ["CREATE", "UPDATE", "DELETE"] {
            bodies.push(review_text(
                &sts,
                host_plan::NAMESPACE,
                operation,
                "u-1",
                order,
            ));
        }
    }
    // Left to the host: not an AdmissionReview.
    bodies.push("{}".into());
    for _ in 0..3 {
        for cluster in [CLUSTER, "west", "north"] {
            for body in &bodies {
                let native = match review_admission(&parsed, cluster, body) {
                    Admission::Reviewed(reviewed) => Some(reviewed),
                    Admission::Fallback => None,
                };
                let hosted = policy
                    .review_admission_within(cluster, body, Duration::from_secs(5))
                    .unwrap();
                assert_eq!(hosted, native, "{cluster}: {body}");
            }
        }
    }
    assert_eq!(policy.instances_started(), 1);
}

/// The guest's reader finds the end of a string's plain run 16 bytes at a
/// time with wasm SIMD, the native engine 8 at a time: the two agree on
/// every string up to 40 bytes with a stop (quote, escape, control
/// character) or a non-ASCII character at any place, in a key, in a value
/// the engine reads and in one it skips.
#[test]
fn strings_of_every_length_agree_with_the_native_engine() {
    let plan = host_plan::plan();
    let policy = runtime().load(&host_plan::module(&plan)).unwrap();
    let stops = [
        "\\\"", "\\\\", "\\u0041", "\u{1}", "\u{1f}", " ", "\u{7f}", "é", "\"",
    ];
    for len in 0..=40 {
        for at in 0..=len {
            for stop in stops {
                let text = format!("{}{stop}{}", "a".repeat(at), "b".repeat(len - at));
                let read = host_plan::statefulset(3, &text);
                let key = read.replace("\"note\"", &format!("\"{text}\""));
                let skipped = host_plan::statefulset(3, "").replace(
                    "\"selector\":",
                    &format!("\"x\":[\"{text}\"],\"selector\":"),
                );
                for object in [&read, &key, &skipped] {
                    let req = request(CLUSTER, ZOOKEEPER, object);
                    let native = straddle_policy::review(&plan, &req);
                    assert_eq!(policy.review(&req).unwrap(), native, "{object}");
                }
            }
        }
    }
}

/// A module compiled before modules could read whole bodies
/// (`examples/cp-two-clusters.yaml`, straddle 0.1.0 at `a3e57c6`): it still
/// loads and reviews, and leaves every body to the host.
#[test]
fn older_modules_leave_whole_bodies_to_the_host() {
    let module = include_bytes!("data/cp-two-clusters-before-review-admission.wasm");
    let policy = runtime().load(module).unwrap();
    assert_eq!(policy.bundle().clusters, ["cluster-0", "cluster-1"]);
    let sts: serde_json::Value = serde_json::from_str(&host_plan::statefulset(3, "hello")).unwrap();
    let body = review_text(&sts, "confluent", "CREATE", "u-1", KeyOrder::ApiServer);
    assert_eq!(policy.review_admission("cluster-1", &body), Ok(None));
    let object = sts.to_string();
    let verdict = policy
        .review(&request("cluster-1", ZOOKEEPER, &object))
        .unwrap();
    assert!(matches!(verdict, Verdict::Patch(_)), "{verdict:?}");
}

#[test]
fn bare_template_loads_and_denies_everything() {
    let policy = runtime()
        .load(straddle_policy_artifact::POLICY_TEMPLATE)
        .unwrap();
    assert!(!policy.has_plan());
    assert_eq!(policy.bundle().name, "");
    assert!(policy.bundle().clusters.is_empty());
    let object = host_plan::statefulset(3, "x");
    match policy
        .review(&request(CLUSTER, ZOOKEEPER, &object))
        .unwrap()
    {
        Verdict::Deny(message) => {
            assert!(
                message.starts_with("policy module has no valid plan: "),
                "{message}"
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    // Its body path leaves everything to `review`, which says why.
    let sts: serde_json::Value = serde_json::from_str(&object).unwrap();
    let body = review_text(
        &sts,
        host_plan::NAMESPACE,
        "CREATE",
        "u-1",
        KeyOrder::ApiServer,
    );
    assert_eq!(policy.review_admission(CLUSTER, &body), Ok(None));
}

#[test]
fn a_corrupt_plan_denies_and_describes_empty() {
    let module = host_plan::module(b"definitely not a Straddle plan");
    let policy = runtime().load(&module).unwrap();
    assert!(!policy.has_plan());
    let object = host_plan::statefulset(3, "x");
    let verdict = policy
        .review(&request(CLUSTER, ZOOKEEPER, &object))
        .unwrap();
    assert!(
        matches!(&verdict, Verdict::Deny(m) if m.starts_with("policy module has no valid plan: ")),
        "{verdict:?}"
    );
}

#[test]
fn a_memory_limit_below_the_initial_memory_fails_to_load_without_panicking() {
    let runtime = Runtime::new(RuntimeConfig {
        memory_limit_bytes: 64 << 10,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let err = runtime
        .load(&host_plan::module(&host_plan::plan()))
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("memory"), "{message}");
}

#[test]
fn growing_past_the_memory_limit_is_a_memory_limit_error() {
    let runtime = Runtime::new(RuntimeConfig {
        memory_limit_bytes: 4 << 20,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let policy = runtime
        .load(&host_plan::module(&host_plan::plan()))
        .unwrap();
    let huge = host_plan::statefulset(3, &"x".repeat(8 << 20));
    let err = policy
        .review(&request(CLUSTER, ZOOKEEPER, &huge))
        .unwrap_err();
    assert!(
        matches!(err, HostError::MemoryLimit { limit, requested } if limit == 4 << 20 && requested > limit),
        "{err:?}"
    );
    assert!(err.to_string().contains("memory limit"), "{err}");
    // The next request gets a fresh instance and works.
    let small = host_plan::statefulset(3, "x");
    assert!(policy.review(&request(CLUSTER, ZOOKEEPER, &small)).is_ok());
    assert_eq!(policy.instances_started(), 2);
}

#[test]
fn running_past_the_deadline_is_a_timeout() {
    let runtime = Runtime::new(RuntimeConfig {
        memory_limit_bytes: 256 << 20,
        deadline: Duration::from_millis(1),
        epoch_tick: Duration::from_millis(1),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let policy = runtime
        .load(&host_plan::module(&host_plan::plan()))
        .unwrap();
    let slow = host_plan::slow_statefulset(1 << 20);
    let err = policy
        .review(&request(CLUSTER, ZOOKEEPER, &slow))
        .unwrap_err();
    assert_eq!(
        err,
        HostError::Timeout {
            deadline: Duration::from_millis(1)
        }
    );
    assert!(err.to_string().contains("deadline"), "{err}");
    // The stopped instance is dropped; the next review starts another.
    let small = host_plan::statefulset(3, "x");
    let req = request(CLUSTER, ZOOKEEPER, &small);
    let verdict = policy.review_within(&req, Duration::from_secs(5)).unwrap();
    assert_eq!(verdict, straddle_policy::review(&host_plan::plan(), &req));
    assert_eq!(policy.instances_started(), 2);
}

#[test]
fn policies_are_shared_across_threads() {
    let plan = host_plan::plan();
    let policy = runtime().load(&host_plan::module(&plan)).unwrap();
    let object = host_plan::statefulset(3, "x");
    let expected = straddle_policy::review(&plan, &request(CLUSTER, ZOOKEEPER, &object));
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let policy = policy.clone();
            let (object, expected) = (&object, &expected);
            scope.spawn(move || {
                for _ in 0..25 {
                    let verdict = policy.review(&request(CLUSTER, ZOOKEEPER, object));
                    assert_eq!(verdict.as_ref(), Ok(expected));
                }
            });
        }
    });
}

#[test]
fn policies_outlive_their_runtime() {
    let policy = runtime()
        .load(&host_plan::module(&host_plan::plan()))
        .unwrap();
    let object = host_plan::statefulset(3, "x");
    assert!(policy.review(&request(CLUSTER, ZOOKEEPER, &object)).is_ok());
}

#[test]
fn load_cached_reuses_and_repairs_the_cache() {
    let dir = std::env::temp_dir().join(format!("straddle-host-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = runtime();
    let module = host_plan::module(&host_plan::plan());

    let first = runtime.load_cached(&module, &dir).unwrap();
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(entries.len(), 1);
    let entry = entries[0].as_ref().unwrap().path();
    assert!(entry.to_str().unwrap().ends_with(".cwasm"));

    let second = runtime.load_cached(&module, &dir).unwrap();
    assert_eq!(first.bundle(), second.bundle());
    assert_eq!(first.digest(), second.digest());

    std::fs::write(&entry, b"garbage").unwrap();
    let third = runtime.load_cached(&module, &dir).unwrap();
    assert_eq!(third.bundle(), first.bundle());
    assert_ne!(std::fs::read(&entry).unwrap(), b"garbage");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn modules_that_are_not_policies_are_refused() {
    let err = runtime().load(b"\0asm\x0d\0\x01\0").unwrap_err();
    assert!(format!("{err:#}").contains("review"), "{err:#}");
    assert!(runtime().load(b"junk").is_err());
}
