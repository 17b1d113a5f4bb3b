//! Property tests over generated specs: the allocation invariants hold for
//! every topology the compiler accepts, and review is idempotent on the
//! objects it produces.

use std::collections::BTreeSet;

use proptest::prelude::*;
use straddle_compiler::{check, compile, quorum};
use straddle_policy::{Operation, Request, Verdict};

/// The networking section for mode choice `net` (0..5).
fn networking(kraft: bool, net: u8) -> &'static str {
    match (net, kraft) {
        (0, _) => "  networking:\n    mode: mcs\n",
        (1, _) => "  networking:\n    mode: external-dns\n    zone: z.example.com\n",
        (2, _) => "  networking:\n    mode: cilium\n",
        (3, false) => "  networking:\n    mode: nodeport\n    quorumMode: linkerd\n",
        (3, true) => {
            "  networking:\n    mode: external-dns\n    quorumMode: cilium\n    zone: z.example.com\n"
        }
        (_, false) => "  networking:\n    mode: cilium\n    quorumMode: linkerd\n",
        (_, true) => "  networking:\n    mode: cilium\n    quorumMode: mcs\n",
    }
}

/// The ZooKeeper charts (for ZooKeeper-mode specs), by choice `zk` (0..3),
/// with their container and id offset (id = ordinal + offset).
const ZK_CHARTS: [(&str, &str, u32); 3] = [
    ("cp-helm-charts", "cp-zookeeper-server", 1),
    ("bitnami", "zookeeper", 1),
    ("cloudpirates", "zookeeper", 0),
];

/// A spec with `replicas[c] = (zk, controllers, brokers)` per cluster.
fn spec_text(
    kraft: bool,
    net: u8,
    zk: u8,
    replicas: &[(u32, u32, u32)],
    block: Option<u32>,
) -> String {
    let mut s = String::from(
        "apiVersion: straddle.dev/v1alpha1\nkind: StretchCluster\nmetadata:\n  name: prop\nspec:\n  clusters:\n",
    );
    for i in 0..replicas.len() {
        s.push_str(&format!("    - name: c{i}\n"));
    }
    s.push_str(networking(kraft, net));
    let map = |f: &dyn Fn(&(u32, u32, u32)) -> u32| {
        let items: Vec<String> = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("c{i}: {}", f(r)))
            .collect();
        format!("{{{}}}", items.join(", "))
    };
    let block = block
        .map(|b| format!("\n      idBlockSize: {b}"))
        .unwrap_or_default();
    if kraft {
        s.push_str(&format!(
            "  kafka:\n    chart: bitnami\n    release: kafka\n    namespace: kafka\n    mode: kraft\n    clusterId: 4L6g3nShT-eMCtK--X86sw\n    controllers:\n      replicas: {}\n    brokers:\n      replicas: {}{block}\n",
            map(&|r| r.1),
            map(&|r| r.2)
        ));
    } else {
        s.push_str(&format!(
            "  zookeeper:\n    chart: {}\n    release: confluent\n    namespace: confluent\n    replicas: {}\n    quorum:\n      type: hierarchical\n  kafka:\n    chart: cp-helm-charts\n    release: confluent\n    namespace: confluent\n    mode: zookeeper\n    brokers:\n      replicas: {}{block}\n",
            ZK_CHARTS[zk as usize].0,
            map(&|r| r.0),
            map(&|r| r.2)
        ));
    }
    s
}

/// (kraft, networking choice, ZooKeeper chart choice, per-cluster (zk,
/// controllers, brokers), broker idBlockSize)
type Layout = (bool, u8, u8, Vec<(u32, u32, u32)>, Option<u32>);

fn layouts() -> impl Strategy<Value = Layout> {
    (
        any::<bool>(),
        0u8..5,
        0u8..3,
        prop::collection::vec((0u32..6, 0u32..4, 0u32..15), 1..7),
        prop::option::of(1u32..40),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn ids_are_unique_across_clusters_and_roles((kraft, net, zk_chart, replicas, block) in layouts()) {
        let text = spec_text(kraft, net, zk_chart, &replicas, block);
        let Ok(checked) = check("prop.yaml", &text) else { return Ok(()) };
        let topo = &checked.topology;
        // ZooKeeper ids: contiguous from the chart's offset, in list order
        // (cp-zookeeper numbers servers by list position).
        if let Some(zk) = &topo.zookeeper {
            let offset = ZK_CHARTS[zk_chart as usize].2;
            let ids: Vec<u32> = zk.group.nodes.iter().map(|n| n.id).collect();
            prop_assert_eq!(ids, (offset..offset + zk.group.nodes.len() as u32).collect::<Vec<_>>());
            for n in &zk.group.nodes {
                prop_assert_eq!(n.id, n.ordinal + offset);
            }
        }
        // Kafka: one ID space across controllers and brokers.
        let mut seen = BTreeSet::new();
        let mut pods = BTreeSet::new();
        for g in topo.kafka.iter().flat_map(|k| k.groups()) {
            for (i, s) in g.slices.iter().enumerate() {
                prop_assert!(s.replicas <= s.block);
                if i > 0 {
                    let prev = &g.slices[i - 1];
                    prop_assert!(prev.ordinal_start + prev.block <= s.ordinal_start);
                }
            }
            for n in &g.nodes {
                prop_assert!(seen.insert(n.id), "duplicate id {}", n.id);
                prop_assert!(pods.insert(n.pod.clone()), "duplicate pod {}", n.pod);
                prop_assert_eq!(n.id, n.ordinal + g.min_id);
                let slice = &g.slices[n.cluster];
                prop_assert!(n.ordinal >= slice.ordinal_start && n.ordinal < slice.ordinal_start + slice.block);
            }
        }
        // Every address is unique: no two nodes advertise the same endpoint.
        // Pod names are unique across clusters in each namespace (Cilium and
        // Linkerd sync hostnames as they are, without conflict resolution).
        let mut addresses = BTreeSet::new();
        let mut hostnames = BTreeSet::new();
        for g in topo.groups() {
            for n in &g.nodes {
                prop_assert!(addresses.insert(n.address.clone()));
                prop_assert!(hostnames.insert((g.namespace.clone(), n.pod.clone())), "duplicate pod {}", n.pod);
                if let Some(m) = &n.mirror {
                    prop_assert!(addresses.insert(m.clone()));
                }
            }
        }
    }

    #[test]
    fn survivability_matches_a_brute_force_majority((kraft, net, zk_chart, replicas, block) in layouts()) {
        let text = spec_text(kraft, net, zk_chart, &replicas, block);
        let Ok(checked) = check("prop.yaml", &text) else { return Ok(()) };
        for q in quorum::quorums(&checked.topology) {
            if q.kind != straddle_compiler::spec::QuorumType::Majority { continue; }
            for c in 0..checked.topology.clusters.len() {
                let alive = q.voters.iter().filter(|v| v.cluster != c).count();
                prop_assert_eq!(q.has_quorum(|v| v.cluster != c), 2 * alive > q.voters.len());
            }
        }
    }

    #[test]
    fn review_of_a_reviewed_statefulset_is_allow(
        (kraft, net, zk_chart, replicas, block) in layouts(),
        env in prop::collection::vec(("[A-Z_]{1,12}", "[a-z0-9.:-]{0,20}"), 0..6),
        chart_replicas in 0u32..9,
        ordinal_start in prop::option::of(0u32..50),
    ) {
        let text = spec_text(kraft, net, zk_chart, &replicas, block);
        let Ok(checked) = check("prop.yaml", &text) else { return Ok(()) };
        let (plan, _) = compile::plan(&checked.topology);
        let topo = &checked.topology;
        for g in topo.groups() {
            let container = match (g.chart, g.role) {
                (_, straddle_compiler::topology::Role::ZooKeeper) => ZK_CHARTS[zk_chart as usize].1,
                (straddle_compiler::spec::Chart::Bitnami, _) => "kafka",
                _ => "cp-kafka-broker",
            };
            let env: Vec<serde_json::Value> = env
                .iter()
                .map(|(k, v)| serde_json::json!({"name": k, "value": v}))
                .collect();
            let mut sts = serde_json::json!({
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": g.statefulset},
                "spec": {
                    "replicas": chart_replicas,
                    "template": {"spec": {
                        "initContainers": [{"name": "prepare-config", "env": env}],
                        "containers": [{"name": container, "env": env}]
                    }}
                }
            });
            if let Some(start) = ordinal_start {
                sts["spec"]["ordinals"] = serde_json::json!({"start": start});
            }
            for c in &topo.clusters {
                let object = sts.to_string();
                let req = Request {
                    cluster: &c.name,
                    operation: Operation::Create,
                    kind: "StatefulSet",
                    namespace: &g.namespace,
                    name: &g.statefulset,
                    object: &object,
                    old_object: None,
                };
                let first = straddle_policy::review(&plan, &req);
                let Verdict::Patch(p) = &first else {
                    prop_assert!(false, "expected a patch, got {:?}", first);
                    continue;
                };
                let mut mutated = sts.clone();
                let patch: json_patch::Patch = serde_json::from_str(p).unwrap();
                json_patch::patch(&mut mutated, &patch).unwrap();
                let again = mutated.to_string();
                let update = straddle_policy::review(&plan, &Request { object: &again, operation: Operation::Update, old_object: Some(&object), ..req });
                prop_assert_eq!(update, Verdict::Allow);

                // The headless Service: mesh annotations, labels and ports too.
                let svc = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": g.headless, "labels": {"app": "x"}},
                    "spec": {"clusterIP": "None", "ports": [{"name": "server", "port": 2888}]}
                });
                let object = svc.to_string();
                let req = Request { kind: "Service", name: &g.headless, object: &object, ..req };
                let first = straddle_policy::review(&plan, &req);
                let Verdict::Patch(p) = &first else {
                    prop_assert!(false, "expected a patch, got {:?}", first);
                    continue;
                };
                let mut mutated = svc.clone();
                let patch: json_patch::Patch = serde_json::from_str(p).unwrap();
                json_patch::patch(&mut mutated, &patch).unwrap();
                let again = mutated.to_string();
                let update = straddle_policy::review(&plan, &Request { object: &again, operation: Operation::Update, old_object: Some(&object), ..req });
                prop_assert_eq!(update, Verdict::Allow);
            }
        }
    }
}
