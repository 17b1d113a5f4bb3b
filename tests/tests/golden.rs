//! The real path on real chart output: spec -> compiler -> wasm module ->
//! review of every object of every fixture variant, for every cluster.
//!
//! For each (spec, fixture variant, cluster) this checks:
//! - the mutated manifests equal the golden file (`STRADDLE_BLESS=1` rewrites them);
//! - the wasm module and the native engine give byte-identical verdicts;
//! - CREATE and UPDATE give the same verdict;
//! - reviewing a mutated object yields no patch (idempotence);
//! - server, voter and connect lists are identical in every cluster.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use straddle_compiler::{check, compile, explain, manifest, preview, render};
use straddle_policy::admission::{Admission, Reviewed, in_scope, review_admission};
use straddle_policy::{Operation, Verdict};
use straddle_policy_host::{Policy, Runtime, RuntimeConfig};
use straddle_test_support::review::{KeyOrder, review_text};

use straddle_tests::golden::{CORPUS as CASES, check as golden};
use straddle_tests::root;

struct Compiled {
    plan: Vec<u8>,
    policy: Policy,
    checked: straddle_compiler::Checked,
    digest: String,
}

fn compile_spec(runtime: &Runtime, spec: &str) -> Compiled {
    let path = root().join("tests").join(spec);
    let text = std::fs::read_to_string(&path).unwrap();
    let checked = check(spec, &text).unwrap_or_else(|r| panic!("{spec}:\n{r}"));
    let (plan, digest) = compile::plan(&checked.topology);
    let module = compile::module(&checked.topology).unwrap();
    let policy = runtime.load(&module).unwrap();
    assert_eq!(policy.bundle().spec_digest, digest);
    Compiled {
        plan,
        policy,
        checked,
        digest,
    }
}

/// Values every cluster must agree on, found in mutated objects.
fn shared_values(docs: &[Value]) -> BTreeMap<String, String> {
    const ENV: &[&str] = &[
        "ZOOKEEPER_SERVERS",
        "ZOOKEEPER_GROUPS",
        "ZOOKEEPER_WEIGHTS",
        "KAFKA_ZOOKEEPER_CONNECT",
        "KAFKA_INITIAL_CONTROLLERS",
        "KAFKA_KRAFT_CLUSTER_ID",
    ];
    const PROPS: &[&str] = &[
        "controller.quorum.bootstrap.servers",
        "controller.quorum.voters",
    ];
    let mut out = BTreeMap::new();
    for doc in docs {
        let name = doc["metadata"]["name"].as_str().unwrap_or("");
        for list in ["containers", "initContainers"] {
            for c in doc["spec"]["template"]["spec"][list]
                .as_array()
                .into_iter()
                .flatten()
            {
                for e in c["env"].as_array().into_iter().flatten() {
                    let var = e["name"].as_str().unwrap_or("");
                    // bitnami/zookeeper: ZOO_SERVERS, ZOO_CFG_group_<n>, ZOO_CFG_weight_<id>.
                    let zoo = var == "ZOO_SERVERS"
                        || var.starts_with("ZOO_CFG_group_")
                        || var.starts_with("ZOO_CFG_weight_");
                    if (ENV.contains(&var) || zoo)
                        && let Some(v) = e["value"].as_str()
                    {
                        out.insert(format!("{name}/{var}"), v.to_string());
                    }
                }
            }
        }
        if let Some(text) = doc["data"]["server.properties"].as_str() {
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=')
                    && PROPS.contains(&k)
                {
                    out.insert(format!("{name}/{k}"), v.to_string());
                }
            }
        }
        // zoo.cfg (official image): every id-keyed line.
        if let Some(text) = doc["data"]["zoo.cfg"].as_str() {
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=')
                    && ["server.", "group.", "weight."]
                        .iter()
                        .any(|p| k.starts_with(p))
                {
                    out.insert(format!("{name}/{k}"), v.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn fixtures_through_the_wasm_module() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    for (spec, variants) in CASES {
        let c = compile_spec(&runtime, spec);
        let stem = Path::new(spec)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let explanation = explain::explain(&c.checked, &c.digest);
        golden(
            &root().join(format!("tests/golden/{stem}/explain.txt")),
            &explain::to_text(&explanation),
        );
        golden(
            &root().join(format!("tests/golden/{stem}/explain.json")),
            &(serde_json::to_string_pretty(&explanation).unwrap() + "\n"),
        );
        for (ci, cluster) in c.checked.topology.clusters.iter().enumerate() {
            let companions = render::companions(&c.checked.topology, ci);
            golden(
                &root().join(format!("tests/golden/{stem}/render/{}.yaml", cluster.name)),
                &manifest::to_yaml(&companions).unwrap(),
            );
        }
        let namespaces = c.checked.topology.namespaces();
        let default_ns = namespaces.first().map(String::as_str);
        for variant in *variants {
            let rendered = root().join(format!("tests/fixtures/charts/{variant}/rendered.yaml"));
            let docs = manifest::parse(&std::fs::read_to_string(rendered).unwrap()).unwrap();
            let mut per_cluster_shared = Vec::new();
            for cluster in &c.checked.topology.clusters {
                let cluster = cluster.name.as_str();
                let wasm = preview::run(&docs, cluster, default_ns, Operation::Create, |r| {
                    c.policy.review(r)
                })
                .unwrap();
                let native = preview::run(&docs, cluster, default_ns, Operation::Create, |r| {
                    Ok::<_, anyhow::Error>(straddle_policy::review(&c.plan, r))
                })
                .unwrap();
                let update = preview::run(&docs, cluster, default_ns, Operation::Update, |r| {
                    c.policy.review(r)
                })
                .unwrap();
                let mutated: Vec<Value> = wasm.iter().map(|o| o.after.clone()).collect();
                let again = preview::run(&mutated, cluster, default_ns, Operation::Update, |r| {
                    c.policy.review(r)
                })
                .unwrap();
                let mut patched = 0;
                for (i, o) in wasm.iter().enumerate() {
                    let what = format!(
                        "{spec} {variant} {cluster} {}",
                        manifest::describe(&o.before, &o.namespace)
                    );
                    assert_eq!(o.verdict, native[i].verdict, "wasm != native: {what}");
                    assert_eq!(o.verdict, update[i].verdict, "CREATE != UPDATE: {what}");
                    assert!(o.denial().is_none(), "denied: {what}: {:?}", o.verdict);
                    assert_eq!(again[i].verdict, Verdict::Allow, "not idempotent: {what}");
                    read_once_agrees(&c.plan, cluster, &o.before, &o.namespace, &o.verdict, &what);
                    patched += matches!(o.verdict, Verdict::Patch(_)) as usize;
                }
                assert!(
                    patched > 0,
                    "{spec} {variant} {cluster}: nothing was mutated"
                );
                golden(
                    &root().join(format!("tests/golden/{stem}/{variant}/{cluster}.yaml")),
                    &manifest::to_yaml(&mutated).unwrap(),
                );
                per_cluster_shared.push((cluster.to_string(), shared_values(&mutated)));
            }
            // linkerd: each cluster names remote servers by their mirror
            // (`<svc>-<cluster>`); apart from that, the lists are the same.
            let topo = &c.checked.topology;
            if topo
                .networking
                .uses(straddle_compiler::spec::NetworkingMode::Linkerd)
            {
                for (_, values) in &mut per_cluster_shared {
                    for v in values.values_mut() {
                        for g in topo.groups() {
                            for cl in &topo.clusters {
                                *v = v.replace(
                                    &format!(".{}-{}.", g.headless, cl.name),
                                    &format!(".{}.", g.headless),
                                );
                            }
                        }
                    }
                }
            }
            let (first_cluster, first) = &per_cluster_shared[0];
            assert!(!first.is_empty(), "{spec} {variant}: no shared lists found");
            for (cluster, values) in &per_cluster_shared[1..] {
                assert_eq!(
                    first, values,
                    "{spec} {variant}: {cluster} disagrees with {first_cluster} on a shared list"
                );
            }
        }
    }
}

/// The whole AdmissionReview read once ([`review_admission`]) answers as the
/// webhook's own path does (the object's verdict, or no review out of
/// scope), whichever order the request's keys come in.
fn read_once_agrees(
    plan: &[u8],
    cluster: &str,
    object: &Value,
    namespace: &str,
    verdict: &Verdict,
    what: &str,
) {
    let plan = straddle_policy::Plan::parse(plan).unwrap();
    let api_version = object["apiVersion"].as_str().unwrap_or("");
    let kind = object["kind"].as_str().unwrap_or("");
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let reviewed = in_scope(group, kind, group, &plural);
    for order in [KeyOrder::ApiServer, KeyOrder::Sorted] {
        for (operation, op) in [("CREATE", Operation::Create), ("UPDATE", Operation::Update)] {
            let body = review_text(object, namespace, operation, "u-1", order);
            let expected = Admission::Reviewed(Reviewed {
                uid: "u-1".into(),
                kind: kind.into(),
                namespace: namespace.into(),
                name: object["metadata"]["name"].as_str().unwrap().into(),
                operation: op,
                dry_run: false,
                verdict: reviewed.then(|| verdict.clone()),
            });
            assert_eq!(
                review_admission(&plan, cluster, &body),
                expected,
                "read once ({order:?}, {operation}): {what}"
            );
        }
    }
}

/// `tests/fixtures/charts` is a verbatim copy of `shared/fixtures/charts`
/// (kept in the repo so a fresh clone works alone); it must not drift.
#[test]
fn vendored_fixtures_match_the_shared_ones() {
    let shared = root().join("../shared/fixtures/charts");
    if !shared.exists() {
        eprintln!("skipped: {} is not present", shared.display());
        return;
    }
    let mut compared = 0;
    for variant in std::fs::read_dir(&shared).unwrap() {
        let variant = variant.unwrap().path();
        if !variant.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&variant).unwrap() {
            let file = file.unwrap().path();
            let rel = file.strip_prefix(&shared).unwrap();
            let ours = root().join("tests/fixtures/charts").join(rel);
            assert_eq!(
                std::fs::read(&file).unwrap(),
                std::fs::read(&ours).unwrap_or_default(),
                "{} differs from the shared fixture",
                ours.display()
            );
            compared += 1;
        }
    }
    assert!(compared > 30);
}
