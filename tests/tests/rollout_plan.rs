//! `straddle plan --from-single-cluster`, checked step by step.
//!
//! The test does not trust the plan's own model. For every policy stage the
//! plan names, it compiles that stage (`compile --stage`), runs the policy on
//! the real cp-helm-charts output, and reads the ZooKeeper configuration each
//! cluster's servers would get the way the cp-zookeeper image builds it
//! (`server.N` by position, `group.N`, `weight.N`). The chart's own list is
//! the starting configuration. Then it replays the plan's actions (which
//! servers run, which restart or start, with which stage) and decides with
//! its own implementation of ZooKeeper's quorum rules whether a quorum exists
//! while each action is under way and after it, and whether the quorums of
//! the old and new configuration overlap. Every claim of the plan must match.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use straddle_compiler::rollout::{self, ActionKind, RolloutPlan, Stage};
use straddle_compiler::{check, compile, manifest, preview};
use straddle_policy::Operation;

const FIXTURE: &str = "tests/fixtures/charts/cp-zk-kafka-only/rendered.yaml";
const ZK_STATEFULSET: &str = "confluent-cp-zookeeper";
use straddle_compiler::charts::cp::ZOOKEEPER_CONTAINER as ZK_CONTAINER;
use straddle_tests::root;

/// A ZooKeeper configuration as the image writes it into zoo.cfg.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ZooCfg {
    servers: BTreeSet<u32>,
    /// group id -> member server ids (empty: majority quorum).
    groups: BTreeMap<u32, Vec<u32>>,
    weights: BTreeMap<u32, u64>,
}

impl ZooCfg {
    /// From the env the cp-zookeeper image reads (split on `;`, 1-based).
    fn from_env(env: &BTreeMap<String, String>) -> ZooCfg {
        let servers = env["ZOOKEEPER_SERVERS"]
            .split(';')
            .enumerate()
            .map(|(i, _)| i as u32 + 1)
            .collect();
        let mut groups = BTreeMap::new();
        if let Some(g) = env.get("ZOOKEEPER_GROUPS") {
            for (i, members) in g.split(';').enumerate() {
                groups.insert(
                    i as u32 + 1,
                    members.split(':').map(|m| m.parse().unwrap()).collect(),
                );
            }
        }
        let mut weights = BTreeMap::new();
        if let Some(w) = env.get("ZOOKEEPER_WEIGHTS") {
            for (i, w) in w.split(';').enumerate() {
                weights.insert(i as u32 + 1, w.parse().unwrap());
            }
        }
        ZooCfg {
            servers,
            groups,
            weights,
        }
    }

    /// `QuorumMaj` / `QuorumHierarchical.containsQuorum`, written from the
    /// ZooKeeper rules (not from the compiler's module).
    fn contains_quorum(&self, live: &BTreeSet<u32>) -> bool {
        if self.groups.is_empty() {
            let n = self.servers.len();
            let up = self.servers.iter().filter(|s| live.contains(s)).count();
            return up > n / 2;
        }
        let weight = |s: &u32| self.weights.get(s).copied().unwrap_or(1);
        let mut counted = 0;
        let mut majorities = 0;
        for members in self.groups.values() {
            let total: u64 = members.iter().map(weight).sum();
            if total == 0 {
                continue; // "Groups that have zero weight are discarded"
            }
            counted += 1;
            let up: u64 = members
                .iter()
                .filter(|s| live.contains(s))
                .map(weight)
                .sum();
            if up > total / 2 {
                majorities += 1;
            }
        }
        majorities > counted / 2
    }
}

/// Quorum exists when the live servers form one in every configuration a
/// live server holds.
fn quorum(running: &BTreeMap<u32, (String, ZooCfg)>) -> bool {
    let live: BTreeSet<u32> = running.keys().copied().collect();
    !running.is_empty() && running.values().all(|(_, c)| c.contains_quorum(&live))
}

/// No split of the servers gives both configurations a quorum each.
fn overlap(a: &ZooCfg, b: &ZooCfg) -> bool {
    let ids: Vec<u32> = a.servers.union(&b.servers).copied().collect();
    (0u32..1 << ids.len()).all(|mask| {
        let (x, y): (Vec<u32>, Vec<u32>) = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (mask >> i & 1 == 1, id))
            .fold((vec![], vec![]), |(mut x, mut y), (side, id)| {
                if side {
                    x.push(id)
                } else {
                    y.push(id)
                }
                (x, y)
            });
        !(a.contains_quorum(&x.into_iter().collect())
            && b.contains_quorum(&y.into_iter().collect()))
    })
}

fn zk_env(doc: &Value) -> BTreeMap<String, String> {
    let containers = doc["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let c = containers
        .iter()
        .find(|c| c["name"] == ZK_CONTAINER)
        .unwrap();
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

struct Case {
    spec: &'static str,
    from: &'static str,
    outage_free: bool,
    stages: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        spec: "../examples/cp-two-clusters.yaml",
        from: "cluster-0",
        outage_free: true,
        stages: &["first-cluster", "final"],
    },
    // Three clusters: first-cluster and final do not overlap (a final quorum
    // of cluster-1 + tie-breaker misses cluster-0), so the plan needs a stage
    // in between.
    Case {
        spec: "specs/cp-three-clusters-mcs.yaml",
        from: "cluster-0",
        outage_free: true,
        stages: &["first-cluster", "first-clusters=2", "final"],
    },
    // A majority quorum has no weights to stage: 3 -> 3 + 3 is an outage.
    Case {
        spec: "specs/cp-two-clusters-majority.yaml",
        from: "cluster-0",
        outage_free: false,
        stages: &["final"],
    },
];

/// Each cluster's ZooKeeper configuration at a stage, from the policy's
/// actual output on the chart.
fn stage_configs(
    checked: &straddle_compiler::Checked,
    docs: &[Value],
    stage: &str,
) -> BTreeMap<String, ZooCfg> {
    let topo = rollout::at_stage(&checked.topology, Stage::parse(stage).unwrap()).unwrap();
    let (plan, _) = compile::plan(&topo);
    let mut out = BTreeMap::new();
    for c in &topo.clusters {
        let outcomes = preview::run(docs, &c.name, Some("confluent"), Operation::Create, |r| {
            Ok::<_, anyhow::Error>(straddle_policy::review(&plan, r))
        })
        .unwrap();
        let sts = outcomes
            .iter()
            .find(|o| {
                o.after["kind"] == "StatefulSet" && o.after["metadata"]["name"] == ZK_STATEFULSET
            })
            .unwrap();
        out.insert(c.name.clone(), ZooCfg::from_env(&zk_env(&sts.after)));
    }
    out
}

fn make_plan(spec: &str, from: &str) -> (straddle_compiler::Checked, RolloutPlan) {
    let text = std::fs::read_to_string(root().join("tests").join(spec)).unwrap();
    let checked = check(spec, &text).unwrap_or_else(|r| panic!("{spec}:\n{r}"));
    let digest_of = |t: &straddle_compiler::topology::Topology| compile::plan(t).1;
    let plan = rollout::plan(&checked.topology, spec, from, &digest_of).unwrap();
    (checked, plan)
}

#[test]
fn every_step_of_the_plan_matches_zookeeper_quorum_rules() {
    let docs = manifest::parse(&std::fs::read_to_string(root().join(FIXTURE)).unwrap()).unwrap();
    let chart_sts = docs
        .iter()
        .find(|d| d["kind"] == "StatefulSet" && d["metadata"]["name"] == ZK_STATEFULSET)
        .unwrap();
    let chart = ZooCfg::from_env(&zk_env(chart_sts));
    for case in CASES {
        let (checked, plan) = make_plan(case.spec, case.from);
        let stages: Vec<&str> = plan.policies.iter().map(|p| p.stage.as_str()).collect();
        assert_eq!(stages, case.stages, "{}: stages", case.spec);
        assert_eq!(plan.outage_free, case.outage_free, "{}", case.spec);

        let topo = &checked.topology;
        let zk = topo.zookeeper.as_ref().unwrap();
        let cluster_of: BTreeMap<u32, String> = zk
            .group
            .nodes
            .iter()
            .map(|n| (n.id, topo.clusters[n.cluster].name.clone()))
            .collect();
        assert_eq!(
            chart.servers.len(),
            zk.group.slices[0].replicas as usize,
            "{}: the fixture's chart runs as many servers as the spec's first cluster",
            case.spec
        );
        // What each server is configured with at each stage (its own cluster's view).
        let mut configs: BTreeMap<String, BTreeMap<String, ZooCfg>> = BTreeMap::new();
        for s in &stages {
            configs.insert(s.to_string(), stage_configs(&checked, &docs, s));
        }
        let config_for =
            |stage: &str, id: u32| -> ZooCfg { configs[stage][&cluster_of[&id]].clone() };

        let mut running: BTreeMap<u32, (String, ZooCfg)> = chart
            .servers
            .iter()
            .map(|&id| (id, ("chart".to_string(), chart.clone())))
            .collect();
        let mut actions = 0;
        for step in &plan.steps {
            let what = format!("{} step {} ({})", case.spec, step.number, step.title);
            let mut step_quorum = true;
            let mut step_overlap = true;
            let before = running.clone();
            for a in &step.zookeeper {
                actions += a.servers.len();
                let mut during = running.clone();
                if a.action != ActionKind::Start {
                    for id in &a.servers {
                        let (_, old) = during
                            .remove(id)
                            .unwrap_or_else(|| panic!("{what}: {id} is not running"));
                        step_overlap &= overlap(&old, &config_for(&a.config, *id));
                    }
                } else {
                    for id in &a.servers {
                        assert!(!running.contains_key(id), "{what}: {id} already runs");
                        // A joining server's configuration must overlap every one in use.
                        for (_, held) in running.values() {
                            step_overlap &= overlap(held, &config_for(&a.config, *id));
                        }
                    }
                }
                assert_eq!(
                    a.running_during,
                    during.keys().copied().collect::<Vec<_>>(),
                    "{what}: servers running during {:?}",
                    a.pods
                );
                let q_during = quorum(&during);
                assert_eq!(
                    a.quorum_during, q_during,
                    "{what}: quorum during {:?}",
                    a.pods
                );
                for id in &a.servers {
                    running.insert(*id, (a.config.clone(), config_for(&a.config, *id)));
                }
                let after: Vec<(u32, String)> = running
                    .iter()
                    .map(|(id, (n, _))| (*id, n.clone()))
                    .collect();
                assert_eq!(a.running_after, after, "{what}: running after {:?}", a.pods);
                let q_after = quorum(&running);
                assert_eq!(a.quorum_after, q_after, "{what}: quorum after {:?}", a.pods);
                step_quorum &= q_during && q_after;
            }
            if let Some(claim) = step.configs_overlap {
                assert_eq!(claim, step_overlap, "{what}: configurations overlap");
            }
            // "The current leader last ... whichever server leads": the
            // listed order with any one server moved to the end keeps a
            // quorum too.
            let leader_last = step.changes.contains("Restart the current leader last");
            let one_at_a_time = step
                .zookeeper
                .iter()
                .all(|a| a.action == ActionKind::Restart);
            assert_eq!(
                leader_last,
                one_at_a_time && step_quorum && !step.zookeeper.is_empty(),
                "{what}: the leader-last advice goes with every one-at-a-time restart"
            );
            if leader_last {
                assert!(
                    step.changes.contains("Whichever server leads"),
                    "{what}: {}",
                    step.changes
                );
                let order: Vec<(u32, &str)> = step
                    .zookeeper
                    .iter()
                    .map(|a| (a.servers[0], a.config.as_str()))
                    .collect();
                for &(leader, _) in &order {
                    let mut moved: Vec<(u32, &str)> = order
                        .iter()
                        .copied()
                        .filter(|(id, _)| *id != leader)
                        .collect();
                    moved.extend(order.iter().copied().filter(|(id, _)| *id == leader));
                    let mut live = before.clone();
                    for (id, stage) in moved {
                        live.remove(&id);
                        assert!(
                            quorum(&live),
                            "{what}: leader {leader} last: no quorum while {id} is down"
                        );
                        live.insert(id, (stage.to_string(), config_for(stage, id)));
                        assert!(
                            quorum(&live),
                            "{what}: leader {leader} last: no quorum after {id}"
                        );
                    }
                }
            }
            assert_eq!(
                step.keeps_quorum,
                step_quorum && step.configs_overlap != Some(false),
                "{what}: keeps quorum"
            );
        }
        assert!(
            actions >= zk.group.nodes.len(),
            "{}: too few actions",
            case.spec
        );
        // The end state is the spec: every server runs the final configuration.
        let last = *stages.last().unwrap();
        assert_eq!(running.len(), zk.group.nodes.len(), "{}", case.spec);
        for (id, (name, cfg)) in &running {
            assert_eq!(name, last, "{}: server {id}", case.spec);
            assert_eq!(*cfg, config_for("final", *id), "{}: server {id}", case.spec);
        }
    }
}

/// The reason for the intermediate stage, proven on the policies' output:
/// with three voting clusters, first-cluster and final quorums can be disjoint.
#[test]
fn three_clusters_need_an_intermediate_stage() {
    let docs = manifest::parse(&std::fs::read_to_string(root().join(FIXTURE)).unwrap()).unwrap();
    let text =
        std::fs::read_to_string(root().join("tests/specs/cp-three-clusters-mcs.yaml")).unwrap();
    let checked = check("three", &text).unwrap();
    let first = &stage_configs(&checked, &docs, "first-cluster")["cluster-0"];
    let middle = &stage_configs(&checked, &docs, "first-clusters=2")["cluster-0"];
    let last = &stage_configs(&checked, &docs, "final")["cluster-0"];
    assert!(!overlap(first, last));
    assert!(overlap(first, middle) && overlap(middle, last));
}

#[test]
fn plan_refuses_what_it_cannot_do() {
    let text = std::fs::read_to_string(root().join("examples/cp-two-clusters.yaml")).unwrap();
    let checked = check("two", &text).unwrap();
    let digest_of = |t: &straddle_compiler::topology::Topology| compile::plan(t).1;
    let err = rollout::plan(&checked.topology, "two", "cluster-1", &digest_of).unwrap_err();
    assert!(
        err.to_string()
            .contains("must be the first entry of spec.clusters"),
        "{err}"
    );
    let err = rollout::plan(&checked.topology, "two", "nowhere", &digest_of).unwrap_err();
    assert!(err.to_string().contains("not in spec.clusters"), "{err}");
    let text =
        std::fs::read_to_string(root().join("examples/bitnami-kraft-three-clusters.yaml")).unwrap();
    let checked = check("kraft", &text).unwrap();
    let err = rollout::plan(&checked.topology, "kraft", "east", &digest_of).unwrap_err();
    assert!(err.to_string().contains("KRaft"), "{err}");
}

/// The text a person reads: golden, and it states the outage plainly.
#[test]
fn plan_text_is_golden() {
    for case in CASES {
        let (_, plan) = make_plan(case.spec, case.from);
        let text = rollout::to_text(&plan);
        assert_eq!(
            text.contains("CANNOT keep a quorum"),
            !case.outage_free,
            "{}",
            case.spec
        );
        let stem = Path::new(case.spec)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let path = root().join(format!("tests/golden/plan/{stem}.txt"));
        if std::env::var_os("STRADDLE_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("missing {}; run with STRADDLE_BLESS=1", path.display()));
        assert_eq!(
            want,
            text,
            "{} differs from the golden file",
            path.display()
        );
    }
}
