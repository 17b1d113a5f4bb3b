//! The admission protocol over real TLS, with real policy modules and every
//! object of the real chart fixtures.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};
use straddle_compiler::{manifest, preview};
use straddle_policy::Operation;
use straddle_policy_host::{Runtime, RuntimeConfig};

/// (spec, fixture variants): the same pairs as the golden tests.
const CASES: &[(&str, &[&str])] = &[
    (CP_TWO, &["cp-zk-kafka-only", "cp-default"]),
    (
        BITNAMI_THREE,
        &["bitnami-kafka-kraft-dedicated-shared-sasl"],
    ),
    (
        "tests/specs/cp-three-clusters-mcs.yaml",
        &["cp-zk-kafka-only"],
    ),
    (CP_STAGE, &["cp-zk-kafka-only"]),
    (
        "tests/specs/bitnami-kraft-combined.yaml",
        &["bitnami-kafka-kraft-combined-shared-sasl"],
    ),
];

fn namespace_of<'a>(doc: &'a Value, default: &'a str) -> &'a str {
    doc["metadata"]["namespace"].as_str().unwrap_or(default)
}

/// Every object of every fixture, for every cluster of every spec: the
/// webhook's patch, applied with a JSON Patch library, gives exactly what
/// `straddle mutate` prints (the golden files, and `preview::run` on the same
/// module in this process). UPDATE gives the same patch as CREATE, and the
/// mutated object gets no patch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_object_gives_what_straddle_mutate_prints() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let mut reviews = 0;
    for (spec, variants) in CASES {
        let module = compile(spec);
        let policy = runtime.load_cached(&module, &cache_dir()).unwrap();
        let default_ns = policy.bundle().namespaces.first().map(|n| n.to_string());
        let stem = Path::new(spec)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        for (index, cluster) in policy.bundle().clusters.clone().into_iter().enumerate() {
            let mut setup = Setup::new("fixtures", &cluster, &module);
            // Every other cluster with every review on a blocking thread
            // (--inline-review-deadline 0s): the same answers.
            if index % 2 == 1 {
                setup.config.inline_review_deadline = std::time::Duration::ZERO;
            }
            let server = setup.start().await;
            let mut client = server.client().await;
            for variant in *variants {
                let docs = fixture_docs(variant);
                let expected = preview::run(
                    &docs,
                    &cluster,
                    default_ns.as_deref(),
                    Operation::Create,
                    |r| policy.review(r),
                )
                .unwrap();
                let mut mutated = Vec::new();
                for (i, doc) in docs.iter().enumerate() {
                    let ns = namespace_of(doc, default_ns.as_deref().unwrap_or(""));
                    let what =
                        format!("{spec} {variant} {cluster} {}", manifest::describe(doc, ns));
                    let uid = format!("{cluster}-{variant}-{i}");
                    let create = client
                        .review(&review_for(doc, ns, "CREATE", &uid))
                        .await
                        .unwrap();
                    assert_eq!(create["uid"], uid.as_str(), "{what}");
                    assert_eq!(create["allowed"], true, "{what}: {create}");
                    let update = client
                        .review(&review_for(doc, ns, "UPDATE", &uid))
                        .await
                        .unwrap();
                    assert_eq!(create, update, "CREATE != UPDATE: {what}");
                    let after = apply(doc, &create);
                    assert_eq!(
                        after, expected[i].after,
                        "webhook != straddle mutate: {what}"
                    );
                    let again = client
                        .review(&review_for(&after, ns, "UPDATE", &uid))
                        .await
                        .unwrap();
                    assert!(
                        again.get("patch").is_none(),
                        "not idempotent: {what}: {again}"
                    );
                    mutated.push(after);
                    reviews += 3;
                }
                let printed = manifest::to_yaml(&mutated).unwrap();
                let golden = root().join(format!("tests/golden/{stem}/{variant}/{cluster}.yaml"));
                assert_eq!(
                    printed,
                    std::fs::read_to_string(&golden).unwrap(),
                    "differs from {}",
                    golden.display()
                );

                // The per-object JSON files of the fixture, too.
                let dir = root().join(format!("tests/fixtures/charts/{variant}"));
                for entry in std::fs::read_dir(dir).unwrap() {
                    let file = entry.unwrap().file_name().to_string_lossy().to_string();
                    if !file.ends_with(".json") {
                        continue;
                    }
                    let doc = fixture_json(variant, &file);
                    let ns = namespace_of(&doc, default_ns.as_deref().unwrap_or("")).to_owned();
                    let expected = preview::run(
                        std::slice::from_ref(&doc),
                        &cluster,
                        Some(&ns),
                        Operation::Create,
                        |r| policy.review(r),
                    )
                    .unwrap();
                    let response = client
                        .review(&review_for(&doc, &ns, "CREATE", "json"))
                        .await
                        .unwrap();
                    assert_eq!(
                        apply(&doc, &response),
                        expected[0].after,
                        "{variant}/{file} on {cluster}"
                    );
                    reviews += 1;
                }
            }
            server.stop().await;
        }
    }
    assert!(reviews > 500, "only {reviews} reviews");
}

fn zookeeper_sts() -> Value {
    fixture_json(
        "cp-zk-kafka-only",
        "statefulset-confluent-cp-zookeeper.json",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_dry_run_and_http2() {
    let server = Setup::new("envelope", "cluster-0", &compile(CP_TWO))
        .start()
        .await;
    let mut client = server.client().await;
    let review = review_for(
        &zookeeper_sts(),
        "confluent",
        "CREATE",
        "0df1c0de-aaaa-bbbb-cccc-123456789abc",
    );

    let answer = client
        .mutate(serde_json::to_vec(&review).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "application/json");
    let body = answer.json();
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    let response = &body["response"];
    assert_eq!(response["uid"], "0df1c0de-aaaa-bbbb-cccc-123456789abc");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    assert!(
        response["patch"].is_string(),
        "the patch is base64 text: {response}"
    );
    let patch = patch_of(response).unwrap();
    assert!(!patch.0.is_empty());
    assert!(
        response.get("status").is_none(),
        "no status on an allow: {response}"
    );

    // dryRun: the same answer, no side effects to speak of (the webhook has none).
    let mut dry = review.clone();
    dry["request"]["dryRun"] = json!(true);
    assert_eq!(client.review(&dry).await.unwrap(), *response);

    // HTTP/2 (ALPN h2) gives the same answer.
    let mut h2 = Client::connect(server.addr, pki().client_config(None, true))
        .await
        .unwrap();
    assert_eq!(h2.review(&review).await.unwrap(), *response);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_kinds_groups_and_scale() {
    let server = Setup::new("kinds", "cluster-0", &compile(CP_TWO))
        .start()
        .await;
    let mut client = server.client().await;
    let sts = zookeeper_sts();

    // DELETE: no object, the old one only.
    let mut delete = review_for(&sts, "confluent", "DELETE", "d");
    delete["request"]["oldObject"] = sts.clone();
    delete["request"]["object"] = Value::Null;
    let r = client.review(&delete).await.unwrap();
    assert_eq!(
        (r["allowed"].clone(), r.get("patch")),
        (json!(true), None),
        "{r}"
    );

    // CONNECT (e.g. exec): allowed unchanged.
    let connect_obj = json!({"apiVersion": "v1", "kind": "PodExecOptions", "metadata": {"name": "x"}, "command": ["sh"]});
    let r = client
        .review(&review_for(&connect_obj, "confluent", "CONNECT", "c"))
        .await
        .unwrap();
    assert_eq!(
        (r["allowed"].clone(), r.get("patch")),
        (json!(true), None),
        "{r}"
    );

    // A kind the policy does not handle.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "confluent-cp-zookeeper-0", "namespace": "confluent"}, "spec": {"containers": []}});
    let r = client
        .review(&review_for(&pod, "confluent", "CREATE", "p"))
        .await
        .unwrap();
    assert_eq!(
        (r["allowed"].clone(), r.get("patch")),
        (json!(true), None),
        "{r}"
    );

    // A "Service" of another API group with a chart Service's name passes untouched.
    let knative = json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "confluent-cp-zookeeper-headless", "namespace": "confluent"}, "spec": {}});
    let r = client
        .review(&review_for(&knative, "confluent", "CREATE", "k"))
        .await
        .unwrap();
    assert_eq!(
        (r["allowed"].clone(), r.get("patch")),
        (json!(true), None),
        "{r}"
    );

    // `kubectl scale` (the scale subresource of a StatefulSet).
    let scale = |name: &str, replicas: u32, uid: &str| {
        let object = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": name, "namespace": "confluent"}, "spec": {"replicas": replicas}});
        let mut review = review_for(&object, "confluent", "UPDATE", uid);
        review["request"]["resource"] =
            json!({"group": "apps", "version": "v1", "resource": "statefulsets"});
        review["request"]["subResource"] = json!("scale");
        review
    };
    let r = client
        .review(&scale("confluent-cp-kafka", 11, "s1"))
        .await
        .unwrap();
    assert_eq!(r["allowed"], false, "{r}");
    let message = r["status"]["message"].as_str().unwrap();
    assert!(message.contains("scaling to 11 is refused"), "{message}");
    let r = client
        .review(&scale("confluent-cp-kafka", 5, "s2"))
        .await
        .unwrap();
    assert_eq!(r["allowed"], true, "{r}");
    let r = client
        .review(&scale("confluent-cp-zookeeper", 4, "s3"))
        .await
        .unwrap();
    assert_eq!(r["allowed"], false, "{r}");
    // The scale subresource of a Deployment is not the policy's business.
    let mut deployment_scale = scale("confluent-cp-kafka", 50, "s4");
    deployment_scale["request"]["resource"]["resource"] = json!("deployments");
    let r = client.review(&deployment_scale).await.unwrap();
    assert_eq!(r["allowed"], true, "{r}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics() {
    let mut setup = Setup::new("probes", "cluster-1", &compile(CP_TWO));
    setup.config.probe_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = setup.start().await;
    let mut client = server.client().await;

    let health = client.get("/healthz").await.unwrap();
    assert_eq!(
        (health.status.as_u16(), health.text()),
        (200, "ok\n".to_owned())
    );
    let ready = client.get("/readyz").await.unwrap();
    assert_eq!(ready.status, 200);
    let digest = straddle_policy::digest::sha256(&compile(CP_TWO));
    assert!(ready.text().contains(&digest), "{}", ready.text());
    assert!(
        ready.text().contains("cluster cluster-1"),
        "{}",
        ready.text()
    );

    for i in 0..5 {
        let r = client
            .review(&review_for(
                &zookeeper_sts(),
                "confluent",
                "CREATE",
                &format!("m{i}"),
            ))
            .await
            .unwrap();
        assert_eq!(r["allowed"], true);
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unrelated", "namespace": "confluent"}, "data": {}});
    client
        .review(&review_for(&cm, "confluent", "CREATE", "cm"))
        .await
        .unwrap();

    let metrics = client.get("/metrics").await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.text();
    let series = |s: &str| metric(&text, s).unwrap_or_else(|| panic!("no series {s} in\n{text}"));
    assert_eq!(
        series(
            r#"straddle_webhook_requests_total{kind="StatefulSet",operation="CREATE",verdict="patch"}"#
        ),
        5.0
    );
    assert_eq!(
        series(
            r#"straddle_webhook_requests_total{kind="ConfigMap",operation="CREATE",verdict="allow"}"#
        ),
        1.0
    );
    assert_eq!(
        series("straddle_webhook_request_duration_seconds_count"),
        6.0
    );
    assert_eq!(
        series("straddle_webhook_review_duration_seconds_count"),
        6.0
    );
    // Sub-millisecond buckets.
    assert!(
        metric(
            &text,
            r#"straddle_webhook_request_duration_seconds_bucket{le="0.0001"}"#
        )
        .is_some(),
        "{text}"
    );
    assert!(
        metric(
            &text,
            r#"straddle_webhook_request_duration_seconds_bucket{le="0.0005"}"#
        )
        .is_some(),
        "{text}"
    );
    let info =
        format!(r#"straddle_webhook_policy_info{{digest="{digest}",name="confluent-stretch","#);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&info) && l.ends_with(" 1")),
        "{text}"
    );
    assert!(series("straddle_webhook_policy_load_duration_seconds") > 0.0);
    // The load's canary review and these six, one after another: all in
    // the one warm instance the canary started.
    assert_eq!(series("straddle_webhook_policy_instances_started"), 1.0);
    assert!(series("straddle_webhook_policy_loaded_timestamp_seconds") > 1.7e9);

    // The plain-HTTP probe listener: probes and metrics, never /mutate.
    let probe = server.probe_addr.unwrap();
    assert_eq!(plain_get(probe, "/healthz").await.unwrap().status, 200);
    assert_eq!(plain_get(probe, "/readyz").await.unwrap().status, 200);
    assert!(
        plain_get(probe, "/metrics")
            .await
            .unwrap()
            .text()
            .contains("straddle_webhook_requests_total")
    );
    assert_eq!(plain_get(probe, "/mutate").await.unwrap().status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_with_client_ca() {
    let mut setup = Setup::new("mtls", "cluster-0", &compile(CP_TWO));
    let client_ca = Pki::new();
    let ca_path = setup.dir.join("client-ca.pem");
    std::fs::write(&ca_path, &client_ca.ca_pem).unwrap();
    setup.config.client_ca = Some(ca_path);
    let server = setup.start().await;
    let review = review_for(&zookeeper_sts(), "confluent", "CREATE", "mtls");

    async fn attempt(
        server: &Running,
        tls: std::sync::Arc<rustls::ClientConfig>,
        review: &Value,
    ) -> anyhow::Result<Value> {
        let mut client = Client::connect(server.addr, tls).await?;
        client.review(review).await
    }
    // No client certificate, or one from another CA: refused in the handshake.
    assert!(
        attempt(&server, pki().client_config(None, false), &review)
            .await
            .is_err()
    );
    let stranger = Pki::new().client("kube-apiserver");
    assert!(
        attempt(&server, pki().client_config(Some(stranger), false), &review)
            .await
            .is_err()
    );
    // The API server's certificate.
    let apiserver = client_ca.client("kube-apiserver");
    let r = attempt(
        &server,
        pki().client_config(Some(apiserver.clone()), false),
        &review,
    )
    .await
    .unwrap();
    assert_eq!(r["allowed"], true);

    let mut client = Client::connect(server.addr, pki().client_config(Some(apiserver), false))
        .await
        .unwrap();
    let text = client.get("/metrics").await.unwrap().text();
    assert!(
        metric(&text, "straddle_webhook_tls_handshake_failures_total").unwrap() >= 2.0,
        "{text}"
    );
    server.stop().await;
}
