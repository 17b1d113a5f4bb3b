//! Policy modules that trap, loop or eat memory: every request still gets a
//! clear answer in bounded time, the failure is counted, the server stays
//! healthy. Modules that could not serve at all are refused at start.

mod common;

use std::time::{Duration, Instant};

use common::modules::{Misbehaviour, misbehaving};
use common::*;
use serde_json::{Value, json};
use straddle_webhook::{OnPolicyError, Server};

fn sts_review(uid: &str) -> Value {
    let sts = fixture_json(
        "cp-zk-kafka-only",
        "statefulset-confluent-cp-zookeeper.json",
    );
    review_for(&sts, "confluent", "CREATE", uid)
}

fn service_review(uid: &str) -> Value {
    let svc = fixture_json(
        "cp-zk-kafka-only",
        "service-confluent-cp-zookeeper-headless.json",
    );
    review_for(&svc, "confluent", "CREATE", uid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_looping_and_memory_hungry_modules_get_clear_bounded_answers() {
    let base = compile(CP_TWO);
    let cases = [
        (Misbehaviour::Trap, "trap", "the policy module trapped"),
        (
            Misbehaviour::Loop,
            "timeout",
            "did not finish within its 50ms deadline",
        ),
        (
            Misbehaviour::Grow,
            "memory",
            "exceeded its memory limit of 16777216 bytes",
        ),
    ];
    for (what, cause, needle) in cases {
        // Misbehaves on StatefulSets only, so it passes the canary review.
        let module = misbehaving(&base, what, true);
        let mut setup = Setup::new("misbehaving", "cluster-0", &module);
        setup.config.policy_timeout = Duration::from_millis(50);
        if !matches!(what, Misbehaviour::Loop) {
            // Only the loop should run out of the inline deadline; the
            // default 2 ms is within a loaded CI machine's noise, and a trap
            // that merely ran slow would move to a blocking thread.
            setup.config.inline_review_deadline = Duration::from_millis(40);
        }
        let server = setup.start().await;

        let mut client = server.client().await;
        let started = Instant::now();
        let r = client.review(&sts_review("bad-1")).await.unwrap();
        let took = started.elapsed();
        assert_eq!(r["allowed"], false, "{what:?}: {r}");
        let message = r["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("gave no verdict for StatefulSet confluent/confluent-cp-zookeeper"),
            "{message}"
        );
        assert!(
            message.contains(needle),
            "{what:?}: {needle:?} not in {message:?}"
        );
        assert!(took < Duration::from_secs(1), "{what:?} took {took:?}");

        // Sixteen at once on eight connections (twice the review slots), and
        // a good request in the middle: everything answered, promptly.
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..8 {
            let mut client = server.client().await;
            tasks.push(tokio::spawn(async move {
                let mut denials = 0;
                for i in 0..2 {
                    let r = client
                        .review(&sts_review(&format!("c{c}-{i}")))
                        .await
                        .unwrap();
                    denials += (r["allowed"] == false) as usize;
                }
                denials
            }));
        }
        let r = client.review(&service_review("good")).await.unwrap();
        assert_eq!(r["allowed"], true, "{r}");
        let mut denials = 0;
        for task in tasks {
            denials += task.await.unwrap();
        }
        assert_eq!(denials, 16);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what:?}: {:?}",
            started.elapsed()
        );

        // Healthy, and counting.
        assert_eq!(client.get("/healthz").await.unwrap().status, 200);
        assert_eq!(client.get("/readyz").await.unwrap().status, 200);
        let text = client.get("/metrics").await.unwrap().text();
        let errors = format!(r#"straddle_webhook_policy_errors_total{{cause="{cause}"}}"#);
        assert_eq!(metric(&text, &errors), Some(17.0), "{text}");
        // A looping module runs out of the inline deadline, then reviews
        // skip the inline attempt for a second: a few moved, not 17. A trap
        // or the memory cap is a verdict: never run again.
        let slow = metric(&text, "straddle_webhook_slow_reviews_total").unwrap_or(0.0);
        match what {
            Misbehaviour::Loop => assert!((1.0..17.0).contains(&slow), "{slow}: {text}"),
            _ => assert_eq!(slow, 0.0, "{text}"),
        }
        assert_eq!(
            metric(
                &text,
                r#"straddle_webhook_requests_total{kind="StatefulSet",operation="CREATE",verdict="error"}"#
            ),
            Some(17.0)
        );
        // Every review without a verdict retired its instance.
        let started = metric(&text, "straddle_webhook_policy_instances_started").unwrap_or(0.0);
        assert!(started >= 17.0, "{started}: {text}");
        server.stop().await;
    }
}

/// The real module, no patching: an object too big for the memory cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_module_hits_its_memory_cap_on_a_huge_object() {
    let mut setup = Setup::new("memory-cap", "cluster-0", &compile(CP_TWO));
    setup.config.policy_memory_mib = 4;
    let server = setup.start().await;
    let mut client = server.client().await;
    let mut sts = fixture_json(
        "cp-zk-kafka-only",
        "statefulset-confluent-cp-zookeeper.json",
    );
    sts["metadata"]["annotations"] = json!({ "big": "z".repeat(5 << 20) });
    let started = Instant::now();
    let r = client
        .review(&review_for(&sts, "confluent", "CREATE", "huge"))
        .await
        .unwrap();
    assert_eq!(r["allowed"], false, "{r}");
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("exceeded its memory limit of 4194304 bytes"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The next, normal request gets a fresh instance and its patch.
    let r = client.review(&sts_review("normal")).await.unwrap();
    assert_eq!(r["allowed"], true, "{r}");
    assert!(r["patch"].is_string());
    server.stop().await;
}

/// `--on-policy-error allow`: fail open, with a warning, still counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_admits_unchanged_with_a_warning() {
    let module = misbehaving(&compile(CP_TWO), Misbehaviour::Trap, true);
    let mut setup = Setup::new("fail-open", "cluster-0", &module);
    setup.config.on_policy_error = OnPolicyError::Allow;
    let server = setup.start().await;
    let mut client = server.client().await;
    let r = client.review(&sts_review("open")).await.unwrap();
    assert_eq!(r["allowed"], true, "{r}");
    assert!(r.get("patch").is_none(), "{r}");
    let warning = r["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("admitted this object unchanged") && warning.contains("trap"),
        "{warning}"
    );
    let text = client.get("/metrics").await.unwrap().text();
    assert_eq!(
        metric(
            &text,
            r#"straddle_webhook_policy_errors_total{cause="trap"}"#
        ),
        Some(1.0)
    );
    server.stop().await;
}

/// Modules that must not serve are refused at start, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_that_cannot_serve_are_refused_at_start() {
    let base = compile(CP_TWO);
    let cases: Vec<(&str, Vec<u8>, u32, &str)> = vec![
        (
            "traps on every review",
            misbehaving(&base, Misbehaviour::Trap, false),
            16,
            "fails a test review",
        ),
        (
            "loops on every review",
            misbehaving(&base, Misbehaviour::Loop, false),
            16,
            "fails a test review",
        ),
        (
            "another stretch",
            compile(BITNAMI_THREE),
            16,
            "is not a member of stretch \"kafka-stretch\"",
        ),
        (
            "the bare template",
            straddle_policy_artifact::POLICY_TEMPLATE.to_vec(),
            16,
            "carries no plan",
        ),
        (
            "not wasm",
            b"this is not a policy".to_vec(),
            16,
            "not a usable policy module",
        ),
        (
            "truncated",
            base[..base.len() / 2].to_vec(),
            16,
            "not a usable policy module",
        ),
        (
            "needs more memory than the cap",
            base.clone(),
            1,
            "not a usable policy module",
        ),
    ];
    for (name, module, memory_mib, needle) in cases {
        let mut setup = Setup::new("refused", "cluster-0", &module);
        setup.config.policy_memory_mib = memory_mib;
        setup.config.cache_dir = None;
        let err = match Server::bind(setup.config.clone()).await {
            Ok(_) => panic!("{name}: the server started"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(needle), "{name}: {needle:?} not in {err:?}");
    }
}
