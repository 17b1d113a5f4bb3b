//! Hot swap of the policy and rotation of the certificate, under load: no
//! failed request, no restart.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::modules::{Misbehaviour, misbehaving};
use common::*;
use serde_json::Value;
use straddle_policy::Operation;
use straddle_policy_host::{Policy, Request, Runtime, RuntimeConfig, Verdict};

const CLUSTER: &str = "cluster-1";

/// The chart's StatefulSets and Services (the objects the policies patch).
fn objects() -> Vec<Value> {
    fixture_docs("cp-zk-kafka-only")
        .into_iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("StatefulSet" | "Service")))
        .collect()
}

/// What `policy` answers for each object: the patch text, or "" for allow.
fn expected(policy: &Policy, objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            let object = serde_json::to_string(o).unwrap();
            let verdict = policy
                .review(&Request {
                    cluster: CLUSTER,
                    operation: Operation::Create,
                    kind: o["kind"].as_str().unwrap(),
                    namespace: "confluent",
                    name: o["metadata"]["name"].as_str().unwrap(),
                    object: &object,
                    old_object: None,
                })
                .unwrap();
            match verdict {
                Verdict::Patch(p) => p,
                Verdict::Allow => String::new(),
                Verdict::Deny(m) | Verdict::Warn(m) => panic!("denied or warned: {m}"),
            }
        })
        .collect()
}

fn patch_text(response: &Value) -> String {
    use base64::Engine as _;
    response["patch"]
        .as_str()
        .map(|p| {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(p).unwrap()).unwrap()
        })
        .unwrap_or_default()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// 10,000 requests on 8 keep-alive connections while the policy file is
/// replaced twice: by a new good module (it takes over) and by a module that
/// traps on every review (refused; the good one keeps serving). Every request
/// gets HTTP 200 and exactly the patch of one of the two good modules, and a
/// connection never goes back to the old module once it saw the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load() {
    const TOTAL: usize = 10_000;
    const CONNECTIONS: usize = 8;
    let (a, b) = (compile(CP_TWO), compile(CP_STAGE));
    let bad = misbehaving(&a, Misbehaviour::Trap, false);
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let objects = Arc::new(objects());
    let policy_a = runtime.load_cached(&a, &cache_dir()).unwrap();
    let policy_b = runtime.load_cached(&b, &cache_dir()).unwrap();
    let (want_a, want_b) = (expected(&policy_a, &objects), expected(&policy_b, &objects));
    assert!(
        want_a.iter().zip(&want_b).any(|(x, y)| x != y),
        "the two modules must differ"
    );
    let want = Arc::new((want_a, want_b));

    let server = Setup::new("hot-swap", CLUSTER, &a).start().await;
    let sent = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..CONNECTIONS {
        let mut client = server.client().await;
        let (sent, objects, want) = (sent.clone(), objects.clone(), want.clone());
        clients.push(tokio::spawn(async move {
            let (mut seen_b, mut from) = (false, [0usize; 2]);
            let mut failures = Vec::new();
            loop {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                if n >= TOTAL {
                    break;
                }
                let i = (n + c) % objects.len();
                let review = review_for(&objects[i], "confluent", "CREATE", &format!("{c}-{n}"));
                match client.review(&review).await {
                    Ok(r) if r["allowed"] == true => {
                        let patch = patch_text(&r);
                        if patch == want.1[i] && (patch != want.0[i] || seen_b) {
                            seen_b = true;
                            from[1] += 1;
                        } else if patch == want.0[i] && !seen_b {
                            from[0] += 1;
                        } else {
                            failures.push(format!("request {n}: unexpected answer {r}"));
                        }
                    }
                    Ok(r) => failures.push(format!("request {n}: denied {r}")),
                    Err(e) => failures.push(format!("request {n}: {e}")),
                }
            }
            (from, failures)
        }));
    }

    // The swaps, while the clients run.
    let digest_b = straddle_policy::digest::sha256(&b);
    let mut probe = server.client().await;
    wait_for("2,000 requests", Duration::from_secs(60), async || {
        sent.load(Ordering::Relaxed) >= 2_000
    })
    .await;
    replace_file(&server.policy_path(), &b);
    wait_for("the new policy", Duration::from_secs(60), async || {
        probe
            .get("/readyz")
            .await
            .unwrap()
            .text()
            .contains(&digest_b)
    })
    .await;
    let swapped_at = sent.load(Ordering::Relaxed);
    replace_file(&server.policy_path(), &bad);
    wait_for(
        "the bad module's refusal",
        Duration::from_secs(60),
        async || {
            let text = probe.get("/metrics").await.unwrap().text();
            metric(
                &text,
                r#"straddle_webhook_policy_reloads_total{result="rejected"}"#,
            ) == Some(1.0)
        },
    )
    .await;
    let refused_at = sent.load(Ordering::Relaxed);

    let mut from = [0usize; 2];
    let mut failures = Vec::new();
    for client in clients {
        let (f, mut fails) = client.await.unwrap();
        from[0] += f[0];
        from[1] += f[1];
        failures.append(&mut fails);
    }
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(from[0] + from[1], TOTAL);
    assert!(
        refused_at < TOTAL,
        "the bad module was refused only after the load ({refused_at})"
    );
    assert!(
        from[0] >= 2_000 && from[1] > 0,
        "answers by module: {from:?}"
    );
    eprintln!(
        "hot swap: swapped after {swapped_at} requests, refused the bad module after {refused_at}; answers by module {from:?}"
    );

    let text = probe.get("/metrics").await.unwrap().text();
    assert_eq!(
        metric(
            &text,
            r#"straddle_webhook_policy_reloads_total{result="loaded"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"straddle_webhook_policy_reloads_total{result="rejected"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"straddle_webhook_policy_info{{digest="{digest_b}""#
        )),
        "{text}"
    );
    assert!(
        probe
            .get("/readyz")
            .await
            .unwrap()
            .text()
            .contains(&digest_b)
    );
    server.stop().await;
}

/// Other bad replacements are refused on reload too, and the next good one
/// is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_replacements_then_a_good_one() {
    let (a, b) = (compile(CP_TWO), compile(CP_STAGE));
    let server = Setup::new("reload-refusals", CLUSTER, &a).start().await;
    let mut client = server.client().await;
    let bad: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        compile(BITNAMI_THREE),
        straddle_policy_artifact::POLICY_TEMPLATE.to_vec(),
        misbehaving(&a, Misbehaviour::Loop, false),
    ];
    for (i, module) in bad.iter().enumerate() {
        replace_file(&server.policy_path(), module);
        wait_for("a refusal", Duration::from_secs(30), async || {
            let text = client.get("/metrics").await.unwrap().text();
            metric(
                &text,
                r#"straddle_webhook_policy_reloads_total{result="rejected"}"#,
            ) == Some((i + 1) as f64)
        })
        .await;
        let r = client
            .review(&review_for(&objects()[0], "confluent", "CREATE", "x"))
            .await
            .unwrap();
        assert_eq!(r["allowed"], true, "still serving after refusal {i}: {r}");
    }
    // Touching the file with the same bad bytes does not retry; new good bytes load.
    replace_file(&server.policy_path(), &b);
    let digest_b = straddle_policy::digest::sha256(&b);
    wait_for("the good module", Duration::from_secs(30), async || {
        client
            .get("/readyz")
            .await
            .unwrap()
            .text()
            .contains(&digest_b)
    })
    .await;
    server.stop().await;
}

/// The certificate and key are rotated twice while 6,000 requests run on
/// connections that reconnect every 25 requests: no request fails, and new
/// connections get the new certificate. The first rotation writes the two
/// files one after the other (the server sees the new certificate with the
/// old key for a moment, refuses that pair and keeps the old one); the second
/// replaces both by rename.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load() {
    const TOTAL: usize = 6_000;
    let setup = Setup::new("rotation", CLUSTER, &compile(CP_TWO));
    let certs = [pki().server(1), pki().server(2), pki().server(3)];
    std::fs::write(setup.dir.join("tls.crt"), &certs[0].0).unwrap();
    std::fs::write(setup.dir.join("tls.key"), &certs[0].1).unwrap();
    let server = setup.start().await;
    let ders: Vec<Vec<u8>> = certs
        .iter()
        .map(|(pem, _)| {
            use rustls::pki_types::pem::PemObject as _;
            rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                .unwrap()
                .to_vec()
        })
        .collect();

    let sent = Arc::new(AtomicUsize::new(0));
    let addr = server.addr;
    let mut clients = Vec::new();
    for c in 0..4 {
        let (sent, ders) = (sent.clone(), ders.clone());
        clients.push(tokio::spawn(async move {
            let tls = pki().client_config(None, false);
            let review = review_for(&objects()[0], "confluent", "CREATE", "rot");
            let mut seen: HashMap<usize, usize> = HashMap::new();
            let mut failures = Vec::new();
            let mut client: Option<Client> = None;
            let mut on_connection = 0;
            loop {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                if n >= TOTAL {
                    break;
                }
                if client.is_none() || on_connection == 25 {
                    match Client::connect(addr, tls.clone()).await {
                        Ok(new) => {
                            let which = ders.iter().position(|d| *d == new.server_cert);
                            *seen.entry(which.unwrap_or(usize::MAX)).or_default() += 1;
                            client = Some(new);
                            on_connection = 0;
                        }
                        Err(e) => {
                            failures.push(format!("client {c} request {n}: connect: {e:#}"));
                            continue;
                        }
                    }
                }
                on_connection += 1;
                match client.as_mut().unwrap().review(&review).await {
                    Ok(r) if r["allowed"] == true && r["patch"].is_string() => {}
                    Ok(r) => failures.push(format!("request {n}: {r}")),
                    Err(e) => failures.push(format!("request {n}: {e:#}")),
                }
            }
            (seen, failures)
        }));
    }

    let cert_path = server.dir.join("tls.crt");
    let key_path = server.dir.join("tls.key");
    let probe_seen = |index: usize| {
        let ders = ders.clone();
        async move {
            let client = Client::connect(addr, pki().client_config(None, false))
                .await
                .unwrap();
            client.server_cert == ders[index]
        }
    };
    wait_for("1,500 requests", Duration::from_secs(60), async || {
        sent.load(Ordering::Relaxed) >= 1_500
    })
    .await;
    // Rotation 1: certificate first, key 50 ms later.
    std::fs::write(&cert_path, &certs[1].0).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(&key_path, &certs[1].1).unwrap();
    wait_for("certificate 2", Duration::from_secs(30), async || {
        probe_seen(1).await
    })
    .await;
    wait_for("3,500 requests", Duration::from_secs(60), async || {
        sent.load(Ordering::Relaxed) >= 3_500
    })
    .await;
    // Rotation 2: both files renamed into place.
    replace_file(&key_path, certs[2].1.as_bytes());
    replace_file(&cert_path, certs[2].0.as_bytes());
    wait_for("certificate 3", Duration::from_secs(30), async || {
        probe_seen(2).await
    })
    .await;
    let rotated_at = sent.load(Ordering::Relaxed);

    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut failures = Vec::new();
    for client in clients {
        let (s, mut f) = client.await.unwrap();
        for (k, v) in s {
            *seen.entry(k).or_default() += v;
        }
        failures.append(&mut f);
    }
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(
        rotated_at < TOTAL,
        "the second rotation finished after the load"
    );
    assert!(
        !seen.contains_key(&usize::MAX),
        "an unknown certificate was served: {seen:?}"
    );
    assert!(
        seen.get(&0).is_some_and(|n| *n > 0) && seen.get(&1).is_some_and(|n| *n > 0),
        "connections by certificate: {seen:?}"
    );
    eprintln!(
        "rotation: connections by certificate {seen:?}; second rotation done after {rotated_at} requests"
    );

    let mut client = server.client().await;
    assert_eq!(client.server_cert, ders[2]);
    let text = client.get("/metrics").await.unwrap().text();
    assert!(
        metric(
            &text,
            r#"straddle_webhook_tls_reloads_total{result="loaded"}"#
        )
        .unwrap()
            >= 2.0,
        "{text}"
    );
    server.stop().await;
}

/// A review that started on the old module finishes on it, while requests
/// that arrive after the swap get the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_the_module_they_started_with() {
    // The old module spins on StatefulSets until the 2 s deadline, then the
    // webhook fails open: a slow request with a recognisable answer.
    let old = misbehaving(&compile(CP_TWO), Misbehaviour::Loop, true);
    let new = compile(CP_TWO);
    let mut setup = Setup::new("in-flight", CLUSTER, &old);
    setup.config.policy_timeout = Duration::from_secs(2);
    setup.config.on_policy_error = straddle_webhook::OnPolicyError::Allow;
    let server = setup.start().await;
    let sts = objects()
        .into_iter()
        .find(|o| o["kind"] == "StatefulSet")
        .unwrap();
    let review = review_for(&sts, "confluent", "CREATE", "slow");

    let mut slow = server.client().await;
    let slow_review = review.clone();
    let in_flight = tokio::spawn(async move { slow.review(&slow_review).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    replace_file(&server.policy_path(), &new);
    let digest = straddle_policy::digest::sha256(&new);
    let mut client = server.client().await;
    wait_for("the new module", Duration::from_secs(30), async || {
        client
            .get("/readyz")
            .await
            .unwrap()
            .text()
            .contains(&digest)
    })
    .await;
    assert!(
        !in_flight.is_finished(),
        "the slow review ended before the swap"
    );
    let now = client.review(&review).await.unwrap();
    assert!(now["patch"].is_string(), "the new module patches: {now}");
    let then = in_flight.await.unwrap();
    assert_eq!(then["allowed"], true, "{then}");
    assert!(then.get("patch").is_none(), "{then}");
    assert!(
        then["warnings"][0].as_str().unwrap().contains("timeout"),
        "{then}"
    );
    server.stop().await;
}
