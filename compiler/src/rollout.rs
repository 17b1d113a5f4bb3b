//! `straddle plan --from-single-cluster`: the ordered steps that grow an
//! existing single-cluster ZooKeeper (and its Kafka) into the stretch.
//!
//! The order is chosen against ZooKeeper's quorum rules, on a conservative
//! model of a rolling change:
//!
//! - *quorum*: while servers hold different configurations, the running
//!   servers must form a quorum in **every** configuration a running server
//!   holds (each server elects and commits with its own configuration);
//! - *overlap*: every quorum of the old configuration must intersect every
//!   quorum of the new one, or two leaders could be elected side by side
//!   while both configurations are live (split brain).
//!
//! With a hierarchical quorum the weights are staged (`first-cluster`, then
//! `first-clusters` N, then `final`), so both hold at every step of a rolling
//! restart. A majority quorum cannot stage weights: growing it in one step
//! breaks the overlap, so the plan says so and prescribes a planned outage.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::quorum::{Quorum, Voter};
use crate::spec::{KafkaMode, QuorumType, RolloutStage};
use crate::topology::{Ensemble, Topology};

/// The largest ensemble the overlap check enumerates (2^n subsets).
const MAX_SERVERS: usize = 16;
/// Where deploy/helm/straddle-webhook is installed, and the ConfigMap that
/// holds its policy (deploy/README.md).
const WEBHOOK_NAMESPACE: &str = "straddle-system";
const POLICY_CONFIGMAP: &str = "straddle-policy";

/// A ZooKeeper rollout stage, as `straddle compile --stage` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    FirstCluster,
    FirstClusters(usize),
    Final,
}

impl Stage {
    pub fn parse(text: &str) -> Result<Stage, String> {
        match text {
            "first-cluster" => Ok(Stage::FirstCluster),
            "final" => Ok(Stage::Final),
            _ => text
                .strip_prefix("first-clusters=")
                .and_then(|n| n.parse().ok())
                .map(Stage::FirstClusters)
                .ok_or_else(|| {
                    format!("unknown stage {text:?}: use first-cluster, first-clusters=N or final")
                }),
        }
    }

    /// The `--stage` argument that selects this stage.
    pub fn arg(self) -> String {
        match self {
            Stage::FirstCluster => "first-cluster".into(),
            Stage::FirstClusters(n) => format!("first-clusters={n}"),
            Stage::Final => "final".into(),
        }
    }
}

/// The topology with its ZooKeeper at another rollout stage (what
/// `straddle compile --stage` compiles).
pub fn at_stage(topo: &Topology, stage: Stage) -> Result<Topology, String> {
    let Some(zk) = &topo.zookeeper else {
        return Err("--stage applies to a ZooKeeper ensemble; this spec has none".into());
    };
    let all = topo.clusters.len();
    let (stage, voting) = match stage {
        Stage::Final => (RolloutStage::Final, all),
        _ if zk.quorum != QuorumType::Hierarchical => {
            return Err(
                "only a hierarchical quorum has rollout stages (spec.zookeeper.quorum.type)".into(),
            );
        }
        Stage::FirstCluster => (RolloutStage::FirstCluster, 1),
        Stage::FirstClusters(n) if n >= 1 && n < all => (RolloutStage::FirstClusters, n),
        Stage::FirstClusters(n) => {
            return Err(format!(
                "first-clusters={n}: with {all} clusters N must be 1 to {}",
                all - 1
            ));
        }
    };
    let mut out = topo.clone();
    out.zookeeper = Some(zk.at_stage(stage, voting));
    Ok(out)
}

/// One ZooKeeper configuration: who is listed, how they vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZkConfig {
    /// `chart` (the single-cluster install as the chart rendered it) or a stage.
    pub name: String,
    pub quorum: &'static str,
    /// (server id, cluster index, weight); weight 1 for majority quorums.
    pub servers: Vec<(u32, usize, u32)>,
}

impl ZkConfig {
    fn quorum(&self) -> Quorum {
        Quorum {
            name: self.name.clone(),
            kind: if self.quorum == "hierarchical" {
                QuorumType::Hierarchical
            } else {
                QuorumType::Majority
            },
            voters: self
                .servers
                .iter()
                .map(|&(id, cluster, weight)| Voter {
                    id,
                    cluster,
                    weight,
                })
                .collect(),
        }
    }

    fn has_quorum(&self, live: &BTreeSet<u32>) -> bool {
        self.quorum().has_quorum(|v| live.contains(&v.id))
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.servers.iter().map(|s| s.0)
    }
}

/// Whether every quorum of `a` intersects every quorum of `b`: no split of
/// the servers gives each configuration a quorum of its own.
pub fn quorums_overlap(a: &ZkConfig, b: &ZkConfig) -> bool {
    let ids: Vec<u32> = a
        .ids()
        .chain(b.ids())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    debug_assert!(ids.len() <= MAX_SERVERS);
    (0u32..1 << ids.len()).all(|mask| {
        let side: BTreeSet<u32> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, &id)| id)
            .collect();
        let rest: BTreeSet<u32> = ids
            .iter()
            .filter(|id| !side.contains(id))
            .copied()
            .collect();
        !(a.has_quorum(&side) && b.has_quorum(&rest))
    })
}

/// Running servers and the configuration (index into `configs`) each holds.
type Running = BTreeMap<u32, usize>;

fn has_quorum_everywhere(configs: &[ZkConfig], running: &Running) -> bool {
    let live: BTreeSet<u32> = running.keys().copied().collect();
    let held: BTreeSet<usize> = running.values().copied().collect();
    !held.is_empty() && held.iter().all(|&c| configs[c].has_quorum(&live))
}

/// Restarts `id` into configuration `to`: what runs afterwards, if a quorum
/// holds while it is down and once it is back.
fn restart_one(configs: &[ZkConfig], running: &Running, id: u32, to: usize) -> Option<Running> {
    let mut during = running.clone();
    during.remove(&id);
    if !has_quorum_everywhere(configs, &during) {
        return None;
    }
    during.insert(id, to);
    has_quorum_everywhere(configs, &during).then_some(during)
}

/// An order in which to restart `ids` from `running` into configuration
/// `to`, one at a time, such that a quorum exists while each server is down
/// and after it is back; with `last`, that server (one of `ids`) goes last.
fn rolling_order(
    configs: &[ZkConfig],
    running: &Running,
    ids: &[u32],
    to: usize,
    last: Option<u32>,
) -> Option<Vec<u32>> {
    struct Search<'c> {
        configs: &'c [ZkConfig],
        to: usize,
        last: Option<u32>,
        order: Vec<u32>,
        dead_ends: BTreeSet<Vec<u32>>,
    }
    impl Search<'_> {
        // Which servers are left determines what runs, so a set of servers
        // left that led nowhere once never will.
        fn run(&mut self, running: &Running, left: &[u32]) -> bool {
            if left.is_empty() {
                return self
                    .last
                    .is_none_or(|id| restart_one(self.configs, running, id, self.to).is_some());
            }
            if self.dead_ends.contains(left) {
                return false;
            }
            for (i, &id) in left.iter().enumerate() {
                let Some(after) = restart_one(self.configs, running, id, self.to) else {
                    continue;
                };
                let mut rest = left.to_vec();
                rest.remove(i);
                self.order.push(id);
                if self.run(&after, &rest) {
                    return true;
                }
                self.order.pop();
            }
            self.dead_ends.insert(left.to_vec());
            false
        }
    }
    let mut search = Search {
        configs,
        to,
        last,
        order: Vec::new(),
        dead_ends: BTreeSet::new(),
    };
    let first: Vec<u32> = ids.iter().copied().filter(|&id| Some(id) != last).collect();
    if !search.run(running, &first) {
        return None;
    }
    let mut order = search.order;
    order.extend(last);
    Some(order)
}

/// Whether restarting `order` from `running` into configuration `to`, one
/// server at a time, keeps a quorum while each is down and after.
fn keeps_quorum(configs: &[ZkConfig], running: &Running, order: &[u32], to: usize) -> bool {
    let mut running = running.clone();
    order
        .iter()
        .all(|&id| match restart_one(configs, &running, id, to) {
            Some(after) => {
                running = after;
                true
            }
            None => false,
        })
}

/// What happens to ZooKeeper servers in one step, and what the plan claims.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZkAction {
    /// `restart` (one pod deleted, comes back with `config`), `start` (new
    /// servers come up with `config`), `restart-all` (every listed server is
    /// stopped at once and comes back with `config`: a planned outage).
    pub action: &'static str,
    pub cluster: String,
    pub pods: Vec<String>,
    pub servers: Vec<u32>,
    pub config: String,
    /// Servers running while the action is under way (restarted ones down).
    pub running_during: Vec<u32>,
    pub quorum_during: bool,
    /// Every running server and the configuration it holds afterwards.
    pub running_after: Vec<(u32, String)>,
    pub quorum_after: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    /// The cluster whose kubectl context the command runs against; none for
    /// local commands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub run: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub number: usize,
    pub title: String,
    /// What the step changes, in plain words.
    pub changes: String,
    pub commands: Vec<Command>,
    pub wait_for: Vec<String>,
    /// ZooKeeper server changes, in order, with the quorum claims.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub zookeeper: Vec<ZkAction>,
    /// Old and new configuration overlap (no split brain while both are live).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configs_overlap: Option<bool>,
    /// ZooKeeper keeps a quorum through the whole step.
    pub keeps_quorum: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub stage: String,
    pub file: String,
    pub digest: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPlan {
    pub stretch: String,
    pub spec: String,
    pub from_cluster: String,
    pub quorum: &'static str,
    /// True when ZooKeeper keeps a quorum at every step.
    pub outage_free: bool,
    pub summary: Vec<String>,
    pub configs: Vec<ZkConfig>,
    pub policies: Vec<Policy>,
    pub steps: Vec<Step>,
}

/// Why a plan cannot be made: names the option or field and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

/// The digest of the policy compiled for one stage (`compile::plan`).
pub type DigestOf<'a> = &'a dyn Fn(&Topology) -> String;

/// Builds the plan. `spec_path` is only used in the printed commands.
pub fn plan(
    topo: &Topology,
    spec_path: &str,
    from: &str,
    digest_of: DigestOf<'_>,
) -> Result<RolloutPlan, PlanError> {
    let Some(home) = topo.cluster_index(from) else {
        let known: Vec<&str> = topo.clusters.iter().map(|c| c.name.as_str()).collect();
        return Err(PlanError(format!(
            "--from-single-cluster {from:?} is not in spec.clusters ({})",
            known.join(", ")
        )));
    };
    if home != 0 {
        return Err(PlanError(format!(
            "{from:?} must be the first entry of spec.clusters: the servers and brokers it already runs keep their IDs (ZooKeeper 1..n, ordinals from 0) only in the first ID block, and the first rollout stage gives the vote to the first cluster; move it to the top of spec.clusters"
        )));
    }
    if let Some(k) = &topo.kafka
        && k.mode == KafkaMode::Kraft
    {
        return Err(PlanError(
            "straddle plan grows ZooKeeper-based stretches; a KRaft quorum grows with `kafka-metadata-quorum add-controller`, which the plan does not cover yet".into(),
        ));
    }
    let Some(zk) = &topo.zookeeper else {
        return Err(PlanError(
            "the spec has no spec.zookeeper: there is no quorum to grow".into(),
        ));
    };
    if zk.group.chart != crate::spec::Chart::CpHelmCharts {
        return Err(PlanError(format!(
            "straddle plan grows cp-helm-charts ZooKeeper ensembles; its steps (restart order, readiness, the commands it prints) are not written for the {} chart yet",
            zk.group.chart.as_str()
        )));
    }
    if zk.group.nodes.len() > MAX_SERVERS {
        return Err(PlanError(format!(
            "{} ZooKeeper servers: the plan checks ensembles of up to {MAX_SERVERS}",
            zk.group.nodes.len()
        )));
    }
    if zk.group.slices[0].replicas == 0 {
        return Err(PlanError(format!(
            "{from:?} runs no ZooKeeper server in the spec (spec.zookeeper.replicas.{from}); list the cluster that already runs ZooKeeper first"
        )));
    }
    Planner::new(topo, spec_path, zk, digest_of).run()
}

struct Planner<'a> {
    topo: &'a Topology,
    spec_path: &'a str,
    zk: &'a Ensemble,
    digest_of: DigestOf<'a>,
    configs: Vec<ZkConfig>,
    policies: Vec<Policy>,
    steps: Vec<Step>,
    running: Running,
    summary: Vec<String>,
}

impl<'a> Planner<'a> {
    fn new(
        topo: &'a Topology,
        spec_path: &'a str,
        zk: &'a Ensemble,
        digest_of: DigestOf<'a>,
    ) -> Self {
        // The chart's own configuration: its servers, a plain majority.
        let chart = ZkConfig {
            name: "chart".into(),
            quorum: "majority",
            servers: zk.group.nodes_in(0).map(|n| (n.id, 0, 1)).collect(),
        };
        let running = chart.servers.iter().map(|s| (s.0, 0)).collect();
        Planner {
            topo,
            spec_path,
            zk,
            digest_of,
            configs: vec![chart],
            policies: Vec::new(),
            steps: Vec::new(),
            running,
            summary: Vec::new(),
        }
    }

    fn cluster(&self, c: usize) -> &str {
        &self.topo.clusters[c].name
    }

    fn ns(&self) -> &str {
        &self.zk.group.namespace
    }

    fn kubectl(&self, c: usize, args: &str) -> Command {
        Command {
            cluster: Some(self.cluster(c).to_string()),
            run: format!(
                "kubectl --context {} -n {} {args}",
                self.cluster(c),
                self.ns()
            ),
        }
    }

    /// Installs the webhook chart in cluster `c` with `file` as its policy,
    /// the way deploy/README.md does (the end-to-end test on real API
    /// servers runs these same steps).
    fn install_webhook(&self, c: usize, file: &str) -> Vec<Command> {
        let name = self.cluster(c);
        let at = |run: String| Command {
            cluster: Some(name.to_string()),
            run,
        };
        vec![
            at(format!(
                "kubectl --context {name} create namespace {WEBHOOK_NAMESPACE}"
            )),
            at(format!(
                "kubectl --context {name} -n {WEBHOOK_NAMESPACE} create configmap {POLICY_CONFIGMAP} --from-file=policy.wasm={file}"
            )),
            at(format!(
                "helm --kube-context {name} upgrade --install straddle-webhook deploy/helm/straddle-webhook -n {WEBHOOK_NAMESPACE} --set cluster={name} --set-json 'webhook.namespaces=[\"{}\"]'",
                self.ns()
            )),
        ]
    }

    /// Replaces the policy of cluster `c`'s webhook: its ConfigMap, which
    /// the webhook reloads without a restart.
    fn replace_policy(&self, c: usize, file: &str) -> Command {
        let name = self.cluster(c);
        Command {
            cluster: Some(name.to_string()),
            run: format!(
                "kubectl --context {name} -n {WEBHOOK_NAMESPACE} create configmap {POLICY_CONFIGMAP} --from-file=policy.wasm={file} --dry-run=client -o yaml | kubectl --context {name} apply -f -"
            ),
        }
    }

    fn local(&self, run: String) -> Command {
        Command { cluster: None, run }
    }

    /// The configuration and policy of a stage.
    fn config_of(&self, stage: Stage) -> (ZkConfig, Policy) {
        let staged = at_stage(self.topo, stage).expect("stages are built from a valid topology");
        let ens = staged.zookeeper.as_ref().expect("checked: has ZooKeeper");
        let name = stage.arg();
        let config = ZkConfig {
            name: name.clone(),
            quorum: match ens.quorum {
                QuorumType::Hierarchical => "hierarchical",
                QuorumType::Majority => "majority",
            },
            servers: ens
                .group
                .nodes
                .iter()
                .map(|n| (n.id, n.cluster, ens.staged_weight(n)))
                .collect(),
        };
        let policy = Policy {
            file: format!("policy-{}.wasm", name.replace('=', "-")),
            stage: name,
            digest: (self.digest_of)(&staged),
        };
        (config, policy)
    }

    /// Adds the configuration of a stage, and its policy.
    fn stage(&mut self, stage: Stage) -> usize {
        let (config, policy) = self.config_of(stage);
        self.configs.push(config);
        self.policies.push(policy);
        self.configs.len() - 1
    }

    fn policy(&self, config: usize) -> &Policy {
        let name = &self.configs[config].name;
        self.policies
            .iter()
            .find(|p| &p.stage == name)
            .expect("every stage config has a policy")
    }

    fn snapshot(&self) -> Vec<(u32, String)> {
        self.running
            .iter()
            .map(|(&id, &c)| (id, self.configs[c].name.clone()))
            .collect()
    }

    fn pod_of(&self, id: u32) -> String {
        self.zk
            .group
            .nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.pod.clone())
            .unwrap_or_default()
    }

    fn cluster_of(&self, id: u32) -> usize {
        self.zk
            .group
            .nodes
            .iter()
            .find(|n| n.id == id)
            .map_or(0, |n| n.cluster)
    }

    /// Restarts `id` with configuration `to`, recording the claims.
    fn restart(&mut self, id: u32, to: usize) -> ZkAction {
        let mut during = self.running.clone();
        during.remove(&id);
        let quorum_during = has_quorum_everywhere(&self.configs, &during);
        self.running.insert(id, to);
        ZkAction {
            action: "restart",
            cluster: self.cluster(self.cluster_of(id)).to_string(),
            pods: vec![self.pod_of(id)],
            servers: vec![id],
            config: self.configs[to].name.clone(),
            running_during: during.keys().copied().collect(),
            quorum_during,
            running_after: self.snapshot(),
            quorum_after: has_quorum_everywhere(&self.configs, &self.running),
        }
    }

    /// Stops `ids` at once; they come back with `to` (a planned outage).
    fn restart_all(&mut self, cluster: usize, ids: &[u32], to: usize) -> ZkAction {
        let mut during = self.running.clone();
        for id in ids {
            during.remove(id);
        }
        let quorum_during = has_quorum_everywhere(&self.configs, &during);
        for &id in ids {
            self.running.insert(id, to);
        }
        ZkAction {
            action: "restart-all",
            cluster: self.cluster(cluster).to_string(),
            pods: ids.iter().map(|&id| self.pod_of(id)).collect(),
            servers: ids.to_vec(),
            config: self.configs[to].name.clone(),
            running_during: during.keys().copied().collect(),
            quorum_during,
            running_after: self.snapshot(),
            quorum_after: has_quorum_everywhere(&self.configs, &self.running),
        }
    }

    /// New servers of `cluster` come up with `to`, one by one (the chart's
    /// StatefulSets start pods in order).
    fn start(&mut self, cluster: usize, to: usize) -> Vec<ZkAction> {
        let ids: Vec<u32> = self.zk.group.nodes_in(cluster).map(|n| n.id).collect();
        ids.into_iter()
            .map(|id| {
                let during: Vec<u32> = self.running.keys().copied().collect();
                let quorum_during = has_quorum_everywhere(&self.configs, &self.running);
                self.running.insert(id, to);
                ZkAction {
                    action: "start",
                    cluster: self.cluster(cluster).to_string(),
                    pods: vec![self.pod_of(id)],
                    servers: vec![id],
                    config: self.configs[to].name.clone(),
                    running_during: during,
                    quorum_during,
                    running_after: self.snapshot(),
                    quorum_after: has_quorum_everywhere(&self.configs, &self.running),
                }
            })
            .collect()
    }

    /// An order in which to restart `ids` into `to`, one at a time, such that
    /// a quorum exists while each server is down and after it is back.
    fn rolling_order(&self, ids: &[u32], to: usize) -> Option<Vec<u32>> {
        rolling_order(&self.configs, &self.running, ids, to, None)
    }

    /// What to tell about the leader for a one-at-a-time restart in `order`.
    ///
    /// The leader goes last. While two configurations run side by side the
    /// servers disagree on who may lead (a weight is 0 in one, 1 in the
    /// other), and restarting the leader early forces an election that no
    /// candidate can win: observed in tests/tests/zookeeper_ensemble.rs,
    /// where plain ordinal order left the ensemble without a leader for
    /// 25 s. Which server leads is only known at run time, so every choice
    /// is checked here: the order with that server moved to the end, or
    /// another order that ends with it.
    fn leader_last(&self, order: &[u32], to: usize) -> String {
        let mut text = "Restart the current leader last (`srvr` prints `Mode: leader`): skip its `delete pod` below and run it after the others. Then the one election happens among servers that all run the new configuration; restarting the leader earlier forces an election while configurations are mixed, which servers that disagree on who may lead can stall.".to_string();
        let mut exceptions = Vec::new();
        for &leader in order {
            let mut moved: Vec<u32> = order.iter().copied().filter(|&id| id != leader).collect();
            moved.push(leader);
            if keeps_quorum(&self.configs, &self.running, &moved, to) {
                continue;
            }
            let pods = |ids: &[u32]| {
                ids.iter()
                    .map(|&id| self.pod_of(id))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            exceptions.push(match rolling_order(&self.configs, &self.running, order, to, Some(leader)) {
                Some(other) => format!(
                    "if {} leads, restart in this order instead: {}",
                    self.pod_of(leader),
                    pods(&other)
                ),
                None => format!(
                    "if {} leads, no order that ends with it keeps a quorum: restart it at its place in the list",
                    self.pod_of(leader)
                ),
            });
        }
        if exceptions.is_empty() {
            text.push_str(
                " Whichever server leads, that order keeps a quorum at every step (checked).",
            );
        } else {
            text.push_str(&format!(
                " Every other choice keeps a quorum at every step (checked); {}.",
                exceptions.join("; ")
            ));
        }
        text
    }

    fn push(&mut self, mut step: Step) {
        step.number = self.steps.len() + 1;
        if let Some(a) = step.zookeeper.first() {
            let c = self.topo.cluster_index(&a.cluster).unwrap_or(0);
            step.wait_for.push(self.srvr_hint(c));
        }
        step.keeps_quorum = step.configs_overlap != Some(false)
            && step
                .zookeeper
                .iter()
                .all(|a| a.quorum_during && a.quorum_after);
        self.steps.push(step);
    }

    fn run(mut self) -> Result<RolloutPlan, PlanError> {
        let zk = self.zk;
        let home = self.cluster(0).to_string();
        let others: Vec<usize> = (1..self.topo.clusters.len())
            .filter(|&c| self.topo.groups().any(|g| g.slices[c].replicas > 0))
            .collect();
        let hierarchical = zk.quorum == QuorumType::Hierarchical;

        // The stages: hierarchical ones step the vote from cluster to
        // cluster, as far as each step's quorums overlap the previous ones.
        let mut stages = Vec::new();
        if hierarchical {
            let mut current = self.stage(Stage::FirstCluster);
            stages.push(current);
            let mut remaining: Vec<Stage> = (2..self.topo.clusters.len())
                .map(Stage::FirstClusters)
                .chain([Stage::Final])
                .collect();
            // Jump to the furthest stage whose quorums still overlap the
            // current one's; stages that change no weight are skipped.
            while !remaining.is_empty() {
                let pick = remaining.iter().rposition(|&cand| {
                    let (cfg, _) = self.config_of(cand);
                    cfg.servers != self.configs[current].servers
                        && quorums_overlap(&self.configs[current], &cfg)
                });
                let Some(j) = pick else { break };
                current = self.stage(remaining[j]);
                stages.push(current);
                remaining.drain(..=j);
            }
            let (final_cfg, _) = self.config_of(Stage::Final);
            if final_cfg.servers != self.configs[current].servers {
                // No overlapping path: promote() plans it as an outage.
                stages.push(self.stage(Stage::Final));
            }
        } else {
            stages.push(self.stage(Stage::Final));
        }

        self.preparation(&stages);
        let first = stages[0];
        let adopt_overlap = quorums_overlap(&self.configs[0], &self.configs[first]);
        self.adopt(first, adopt_overlap);
        if has_quorum_everywhere(&self.configs, &self.running) {
            self.restart_home_brokers(first);
            for &c in &others {
                self.join(c, first);
            }
        } else {
            // A planned outage: the other clusters' servers must join before
            // ZooKeeper (and so the brokers) can work again.
            for &c in &others {
                self.join(c, first);
            }
            self.restart_home_brokers(first);
        }
        for w in stages.windows(2) {
            self.promote(w[0], w[1]);
        }
        self.finish(&home);

        let outage_free = self.steps.iter().all(|s| s.keeps_quorum);
        let quorum = if hierarchical {
            "hierarchical"
        } else {
            "majority"
        };
        let mut summary = vec![format!(
            "Grows the ZooKeeper ensemble of {home} ({} servers, the chart's majority quorum) into {} servers in {} clusters ({} quorum){}.",
            self.configs[0].servers.len(),
            zk.group.nodes.len(),
            self.topo.clusters.len(),
            quorum,
            if self.topo.kafka.is_some() {
                ", with the Kafka brokers"
            } else {
                ""
            }
        )];
        if outage_free {
            summary.push(
                "ZooKeeper keeps a quorum at every step, and at every moment all quorums of the configurations in use overlap (no split brain), provided servers are restarted one at a time and each is back in the ensemble before the next."
                    .into(),
            );
        } else {
            let bad: Vec<String> = self
                .steps
                .iter()
                .filter(|s| !s.keeps_quorum)
                .map(|s| s.number.to_string())
                .collect();
            summary.push(format!(
                "ZooKeeper CANNOT keep a quorum through this change: step(s) {} are a planned outage. {}",
                bad.join(", "),
                if hierarchical {
                    "The staged weights do not give an order that keeps a quorum for these replica counts."
                } else {
                    "A majority quorum has no weights to stage: the existing servers' quorum and the grown ensemble's quorum do not overlap, so the two configurations must not run side by side. Use quorum type hierarchical (one group per cluster) to grow without an outage."
                }
            ));
        }
        summary.extend(std::mem::take(&mut self.summary));
        Ok(RolloutPlan {
            stretch: self.topo.name.clone(),
            spec: self.spec_path.to_string(),
            from_cluster: home,
            quorum,
            outage_free,
            summary,
            configs: self.configs,
            policies: self.policies,
            steps: self.steps,
        })
    }

    fn weights_of(&self, config: usize) -> String {
        let c = &self.configs[config];
        if c.quorum != "hierarchical" {
            return format!("majority of {} servers", c.servers.len());
        }
        (0..self.topo.clusters.len())
            .filter_map(|ci| {
                let w: Vec<String> = c
                    .servers
                    .iter()
                    .filter(|s| s.1 == ci)
                    .map(|s| s.2.to_string())
                    .collect();
                (!w.is_empty()).then(|| format!("{} [{}]", self.cluster(ci), w.join(" ")))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn preparation(&mut self, stages: &[usize]) {
        let spec = self.spec_path.to_string();
        let commands: Vec<Command> = stages
            .iter()
            .map(|&s| {
                let p = self.policy(s);
                self.local(format!(
                    "straddle compile {spec} --stage {} -o {}",
                    p.stage, p.file
                ))
            })
            .collect();
        let listing: Vec<String> = stages
            .iter()
            .map(|&s| {
                let p = self.policy(s);
                format!("{} ({}): weights {}", p.file, p.digest, self.weights_of(s))
            })
            .collect();
        self.push(Step {
            number: 0,
            title: "Compile one policy per rollout stage".into(),
            changes: format!(
                "Nothing in the clusters yet. Each stage is the same stretch with different ZooKeeper weights; the webhook injects the weights of the stage it runs. {}",
                listing.join("; ")
            ),
            commands,
            wait_for: vec!["each compile prints the digest listed above".into()],
            zookeeper: vec![],
            configs_overlap: None,
            keeps_quorum: true,
        });
        let mut commands = Vec::new();
        for c in 0..self.topo.clusters.len() {
            // `kubectl apply` refuses empty input: skip clusters with nothing.
            if crate::render::companions(self.topo, c).is_empty() {
                continue;
            }
            commands.push(Command {
                cluster: Some(self.cluster(c).to_string()),
                run: format!(
                    "straddle render {spec} --cluster {name} | kubectl --context {name} apply -f -",
                    name = self.cluster(c)
                ),
            });
        }
        let what = match self.zk.group.mode {
            crate::spec::NetworkingMode::Mcs => "one ServiceExport per headless Service",
            crate::spec::NetworkingMode::ExternalDns => {
                "per-node LoadBalancer Services (with their external-dns hostnames) at home and ExternalName Services elsewhere"
            }
            crate::spec::NetworkingMode::Nodeport => "per-broker NodePort Services",
            crate::spec::NetworkingMode::Cilium | crate::spec::NetworkingMode::Linkerd => {
                "the brokers' NodePort Services (the quorum's mesh is configured on the chart's headless Services by the policy)"
            }
        };
        let wait = match self.zk.group.mode {
            crate::spec::NetworkingMode::ExternalDns => {
                "every LoadBalancer has an address and its hostname resolves from every cluster (`nslookup <hostname>` from a pod)"
            }
            crate::spec::NetworkingMode::Mcs => {
                "a ServiceImport for each exported Service exists in every cluster"
            }
            crate::spec::NetworkingMode::Cilium => {
                "the clusters are connected (`cilium clustermesh status`) with endpoint-slice synchronization enabled"
            }
            crate::spec::NetworkingMode::Linkerd => {
                "every cluster is linked to every other one with the link named after the spec's cluster name (`linkerd multicluster check`)"
            }
            crate::spec::NetworkingMode::Nodeport => "the Services exist",
        };
        let what = if commands.is_empty() {
            "no objects: the mesh is configured on the chart's own headless Services, which the policy annotates or labels"
        } else {
            what
        };
        self.push(Step {
            number: 0,
            title: "Create the cross-cluster networking objects".into(),
            changes: format!("Adds {what}. Running pods are not touched."),
            commands,
            wait_for: vec![wait.into()],
            zookeeper: vec![],
            configs_overlap: None,
            keeps_quorum: true,
        });
    }

    /// The statefulset-patch command that makes the webhook write its values
    /// without restarting any pod (OnDelete), and the check that it did.
    fn freeze(&self, c: usize, sts: &str, digest: &str) -> (Command, String) {
        let patch = r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#;
        (
            self.kubectl(
                c,
                &format!("patch statefulset {sts} --type merge -p '{patch}'"),
            ),
            format!(
                "{sts} in {} carries the annotation straddle.dev/policy-digest={digest} (`kubectl --context {} -n {} get statefulset {sts} -o jsonpath='{{.metadata.annotations.straddle\\.dev/policy-digest}}'`)",
                self.cluster(c),
                self.cluster(c),
                self.ns()
            ),
        )
    }

    fn zk_ready(&self, pods: &[String], _c: usize) -> String {
        format!(
            "{} serve again before anything else restarts: `srvr` prints `Mode: follower` or `Mode: leader`",
            pods.join(", ")
        )
    }

    /// How to ask one server for `srvr` (the cp image has bash, not nc).
    fn srvr_hint(&self, c: usize) -> String {
        format!(
            "how to check a server: `kubectl --context {} -n {} exec <pod> -- bash -c 'exec 3<>/dev/tcp/127.0.0.1/2181; echo srvr >&3; cat <&3'` (\"not currently serving requests\" means no quorum)",
            self.cluster(c),
            self.ns()
        )
    }

    fn adopt(&mut self, to: usize, overlap: bool) {
        let digest = self.policy(to).digest.clone();
        let file = self.policy(to).file.clone();
        let zk_sts = self.zk.group.statefulset.clone();
        let home = self.cluster(0).to_string();
        self.push(Step {
            number: 0,
            title: format!("Install the webhook in {home} with {file}"),
            changes: format!(
                "From now on every StatefulSet, Service and ConfigMap of the release admitted in {home} gets the stretch values. Nothing restarts yet: existing objects change only when they are next written."
            ),
            commands: self.install_webhook(0, &file),
            wait_for: vec![format!("the webhook's /readyz reports policy {digest}")],
            zookeeper: vec![],
            configs_overlap: None,
            keeps_quorum: true,
        });

        let (freeze, check) = self.freeze(0, &zk_sts, &digest);
        let ids: Vec<u32> = self.configs[0].ids().collect();
        let order = if overlap {
            self.rolling_order(&ids, to)
        } else {
            None
        };
        let leader_note = order.as_deref().map(|order| self.leader_last(order, to));
        let (actions, commands, wait_for) = match order {
            Some(order) => {
                let mut commands = vec![freeze];
                let mut waits = vec![check];
                let mut actions = Vec::new();
                for id in order {
                    let pod = self.pod_of(id);
                    commands.push(self.kubectl(0, &format!("delete pod {pod}")));
                    waits.push(self.zk_ready(std::slice::from_ref(&pod), 0));
                    actions.push(self.restart(id, to));
                }
                (actions, commands, waits)
            }
            None => {
                let pods: Vec<String> = ids.iter().map(|&id| self.pod_of(id)).collect();
                let commands = vec![
                    freeze,
                    self.kubectl(0, &format!("delete pod {}", pods.join(" "))),
                ];
                let action = self.restart_all(0, &ids, to);
                let ready = if action.quorum_after {
                    self.zk_ready(&pods, 0)
                } else {
                    format!(
                        "{} are Running; they cannot serve yet: the next step starts the servers the new configuration needs for a quorum",
                        pods.join(", ")
                    )
                };
                (vec![action], commands, vec![check, ready])
            }
        };
        let kept = actions.iter().all(|a| a.quorum_during && a.quorum_after) && overlap;
        let how = match (kept, leader_note) {
            (true, Some(leader)) => format!(
                "The patch switches the StatefulSet to OnDelete, so the webhook writes the new values without restarting anything; then each server is restarted by hand, one at a time (the chart has no readiness probe, so a normal rolling update would not wait for a server to rejoin before stopping the next). {leader}"
            ),
            _ => "PLANNED OUTAGE: the old and the new configuration must not run side by side (their quorums do not overlap), so all servers restart together; ZooKeeper is unavailable until enough servers of the new configuration run. Kafka keeps serving partitions whose leaders do not change, but cannot elect leaders or change topics meanwhile.".to_string(),
        };
        let changes = format!(
            "{home}'s ZooKeeper servers move from the chart's list ({} servers, majority) to the stretch list with {} ({}). {how}",
            self.configs[0].servers.len(),
            self.configs[to].name,
            self.weights_of(to),
        );
        self.push(Step {
            number: 0,
            title: format!("Move {home}'s ZooKeeper servers to the stretch configuration"),
            changes,
            commands,
            wait_for,
            zookeeper: actions,
            configs_overlap: Some(overlap),
            keeps_quorum: true,
        });
    }

    /// The first cluster's brokers restart with the stretch settings (only
    /// while ZooKeeper has a quorum: a broker cannot register without one).
    fn restart_home_brokers(&mut self, config: usize) {
        let digest = self.policy(config).digest.clone();
        let home = self.cluster(0).to_string();
        let topo = self.topo;
        if let Some(k) = topo.kafka.as_ref().and_then(|k| k.brokers.as_ref()) {
            let sts = k.statefulset.clone();
            let (freeze, check) = self.freeze(0, &sts, &digest);
            let mut commands = vec![freeze];
            let mut waits = vec![check];
            for n in k.nodes_in(0) {
                commands.push(self.kubectl(0, &format!("delete pod {}", n.pod)));
                waits.push(format!(
                    "{} is Running and no partition is under-replicated (`kafka-topics --bootstrap-server <broker>:9092 --describe --under-replicated-partitions` prints nothing)",
                    n.pod
                ));
            }
            self.push(Step {
                number: 0,
                title: format!("Restart {home}'s Kafka brokers with the stretch settings"),
                changes: format!(
                    "Each broker comes back with the full zookeeper.connect list, broker.rack {} and an advertised listener that the other clusters can reach. Brokers restart one at a time, each only once its partitions are back in sync.",
                    self.topo.clusters[0].rack
                ),
                commands,
                wait_for: waits,
                zookeeper: vec![],
                configs_overlap: None,
                keeps_quorum: true,
            });
        }
    }

    fn join(&mut self, c: usize, config: usize) {
        let name = self.cluster(c).to_string();
        let file = self.policy(config).file.clone();
        let weight_note = if self.configs[config].quorum == "hierarchical" {
            "as weight-0 followers: they copy the data but do not vote yet"
        } else {
            "as voting members"
        };
        // The joining servers' configuration against every one in use.
        let held: BTreeSet<usize> = self.running.values().copied().collect();
        let overlap = held
            .iter()
            .all(|&h| quorums_overlap(&self.configs[h], &self.configs[config]));
        let actions = self.start(c, config);
        let pods: Vec<String> = actions.iter().flat_map(|a| a.pods.clone()).collect();
        let mut waits = Vec::new();
        if !pods.is_empty() {
            waits.push(self.zk_ready(&pods, c));
        }
        if let Some(b) = self.topo.kafka.as_ref().and_then(|k| k.brokers.as_ref()) {
            let ids: Vec<String> = b.nodes_in(c).map(|n| n.id.to_string()).collect();
            if !ids.is_empty() {
                waits.push(format!(
                    "brokers {} are registered (`zookeeper-shell <zookeeper>:2181 ls /brokers/ids` lists them)",
                    ids.join(", ")
                ));
            }
        }
        self.push(Step {
            number: 0,
            title: format!("Install the webhook and the release in {name}"),
            changes: format!(
                "{name} gets the webhook with {file}, then the same Helm release with the same values as {home}. The webhook sets each StatefulSet's replicas and first ordinal ({name}'s ID block), so {} start {weight_note}.",
                if pods.is_empty() {
                    "its pods".to_string()
                } else {
                    pods.join(", ")
                },
                home = self.cluster(0)
            ),
            commands: [
                self.install_webhook(c, &file),
                vec![Command {
                    cluster: Some(name.clone()),
                    run: format!(
                        "helm --kube-context {name} install <release> <chart> -n {} -f <values>   # the release name, chart version and values of {}",
                        self.ns(),
                        self.cluster(0)
                    ),
                }],
            ]
            .concat(),
            wait_for: waits,
            configs_overlap: (!actions.is_empty()).then_some(overlap),
            zookeeper: actions,
            keeps_quorum: true,
        });
    }

    fn promote(&mut self, from: usize, to: usize) {
        let overlap = quorums_overlap(&self.configs[from], &self.configs[to]);
        let file = self.policy(to).file.clone();
        let digest = self.policy(to).digest.clone();
        let sts = self.zk.group.statefulset.clone();
        let clusters: Vec<usize> = (0..self.topo.clusters.len())
            .filter(|&c| self.zk.group.slices[c].replicas > 0)
            .collect();
        let mut commands = Vec::new();
        let mut waits = Vec::new();
        for &c in &clusters {
            commands.push(self.replace_policy(c, &file));
        }
        for &c in &clusters {
            let (freeze, check) = self.freeze(c, &sts, &digest);
            commands.push(freeze);
            waits.push(check);
        }
        let ids: Vec<u32> = self.running.keys().copied().collect();
        let order = if overlap {
            self.rolling_order(&ids, to)
        } else {
            None
        };
        let leader_note = order.as_deref().map(|order| self.leader_last(order, to));
        let actions = match order {
            Some(order) => order
                .into_iter()
                .map(|id| {
                    let c = self.cluster_of(id);
                    let pod = self.pod_of(id);
                    commands.push(self.kubectl(c, &format!("delete pod {pod}")));
                    waits.push(self.zk_ready(std::slice::from_ref(&pod), c));
                    self.restart(id, to)
                })
                .collect::<Vec<_>>(),
            None => clusters
                .iter()
                .map(|&c| {
                    let ids: Vec<u32> = self.zk.group.nodes_in(c).map(|n| n.id).collect();
                    let pods: Vec<String> = ids.iter().map(|&id| self.pod_of(id)).collect();
                    commands.push(self.kubectl(c, &format!("delete pod {}", pods.join(" "))));
                    waits.push(self.zk_ready(&pods, c));
                    self.restart_all(c, &ids, to)
                })
                .collect(),
        };
        let kept = overlap && actions.iter().all(|a| a.quorum_during && a.quorum_after);
        let voting: Vec<&str> = (0..self.topo.clusters.len())
            .filter(|&c| self.configs[to].servers.iter().any(|s| s.1 == c && s.2 > 0))
            .map(|c| self.cluster(c))
            .collect();
        self.push(Step {
            number: 0,
            title: format!(
                "Switch to stage {} (voting: {})",
                self.configs[to].name,
                voting.join(", ")
            ),
            changes: format!(
                "Weights become {}. {}",
                self.weights_of(to),
                match (kept, leader_note) {
                    (true, Some(leader)) => format!(
                        "Every quorum of the previous stage overlaps every quorum of this one, and the order below keeps a quorum while each server restarts. Restart strictly one server at a time. {leader}"
                    ),
                    _ => "PLANNED OUTAGE: no restart order keeps a quorum (or the two stages' quorums do not overlap), so each cluster's servers restart together.".to_string(),
                }
            ),
            commands,
            wait_for: waits,
            zookeeper: actions,
            configs_overlap: Some(overlap),
            keeps_quorum: true,
        });
    }

    fn finish(&mut self, home: &str) {
        let mut commands = Vec::new();
        let mut sts: Vec<String> = vec![self.zk.group.statefulset.clone()];
        if let Some(b) = self.topo.kafka.as_ref().and_then(|k| k.brokers.as_ref()) {
            sts.push(b.statefulset.clone());
        }
        for c in 0..self.topo.clusters.len() {
            for s in &sts {
                commands.push(self.kubectl(
                    c,
                    &format!(
                        "patch statefulset {s} --type merge -p '{{\"spec\":{{\"updateStrategy\":{{\"type\":\"RollingUpdate\"}}}}}}'"
                    ),
                ));
            }
        }
        let mut changes = "Puts the StatefulSets back on the chart's RollingUpdate strategy (a later `helm upgrade` does the same). Nothing restarts: the pod templates are unchanged.".to_string();
        if let Some(b) = self.topo.kafka.as_ref().and_then(|k| k.brokers.as_ref()) {
            let ids: Vec<String> = b.nodes.iter().map(|n| n.id.to_string()).collect();
            changes.push_str(&format!(
                " Existing partitions still live only on {home}'s brokers: move replicas onto the new brokers with kafka-reassign-partitions (broker list {}), so that every rack holds a replica.",
                ids.join(",")
            ));
            commands.push(Command {
                cluster: Some(home.to_string()),
                run: format!(
                    "kafka-reassign-partitions --bootstrap-server <broker>:9092 --topics-to-move-json-file topics.json --broker-list {} --generate   # review, then --execute",
                    ids.join(",")
                ),
            });
        }
        self.push(Step {
            number: 0,
            title: "Restore the update strategy and spread the data".into(),
            changes,
            commands,
            wait_for: vec![format!(
                "`straddle explain {}` matches what runs; the reassignment (if any) reports completion",
                self.spec_path
            )],
            zookeeper: vec![],
            configs_overlap: None,
            keeps_quorum: true,
        });
        self.summary.push(
            "Do not run `helm upgrade` on the release while the plan is under way: it would put the StatefulSets back on RollingUpdate and restart every server without waiting for it to rejoin, the outage the manual procedure warns about."
                .into(),
        );
    }
}

/// The human-readable plan.
pub fn to_text(p: &RolloutPlan) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "plan: grow {} from {} into the stretch ({} quorum)\n",
        p.stretch, p.from_cluster, p.quorum
    );
    for s in &p.summary {
        let _ = writeln!(o, "{}", wrap(s, 0));
    }
    let _ = writeln!(
        o,
        "\nCommands use one kubectl context per cluster, named after the cluster.\n"
    );
    for step in &p.steps {
        let _ = writeln!(
            o,
            "step {}: {}{}",
            step.number,
            step.title,
            if step.keeps_quorum {
                ""
            } else {
                "   [ZOOKEEPER OUTAGE]"
            }
        );
        let _ = writeln!(o, "{}", wrap(&format!("changes: {}", step.changes), 2));
        if !step.commands.is_empty() {
            let _ = writeln!(o, "  run:");
            for c in &step.commands {
                let _ = writeln!(o, "    {}", c.run);
            }
        }
        if !step.zookeeper.is_empty() {
            let _ = writeln!(o, "  zookeeper:");
            for a in &step.zookeeper {
                let verb = match a.action {
                    "restart" => "restart",
                    "start" => "start  ",
                    _ => "restart ALL",
                };
                let _ = writeln!(
                    o,
                    "    {verb} {:<28} -> {:<18} quorum while down/starting: {:<3}  after: {}",
                    a.pods.join(" "),
                    a.config,
                    if a.quorum_during { "yes" } else { "NO" },
                    if a.quorum_after { "yes" } else { "NO" },
                );
            }
            if let Some(overlap) = step.configs_overlap {
                let _ = writeln!(
                    o,
                    "    old and new configuration quorums overlap: {}",
                    if overlap {
                        "yes"
                    } else {
                        "NO (split brain possible if both run)"
                    }
                );
            }
        }
        if !step.wait_for.is_empty() {
            let _ = writeln!(o, "  wait for:");
            for w in &step.wait_for {
                let _ = writeln!(o, "{}", wrap(&format!("- {w}"), 4));
            }
        }
        let _ = writeln!(o);
    }
    o
}

/// Wraps text at 100 columns with an indent.
fn wrap(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut lines = vec![pad.clone()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("at least one line");
        if line.len() > indent && line.len() + word.len() + 1 > 100 {
            lines.push(format!("{pad}  {word}"));
        } else {
            if line.len() > indent {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(quorum: &'static str, servers: &[(u32, usize, u32)]) -> ZkConfig {
        ZkConfig {
            name: "t".into(),
            quorum,
            servers: servers.to_vec(),
        }
    }

    #[test]
    fn stages_parse_and_print_alike() {
        for text in ["first-cluster", "first-clusters=2", "final"] {
            assert_eq!(Stage::parse(text).unwrap().arg(), text);
        }
        assert!(Stage::parse("first-clusters=x").is_err());
        assert!(
            Stage::parse("second")
                .unwrap_err()
                .contains("first-clusters=N")
        );
    }

    /// Every order of `ids` (small `ids` only).
    fn permutations(ids: &[u32]) -> Vec<Vec<u32>> {
        if ids.is_empty() {
            return vec![vec![]];
        }
        let mut all = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let mut rest = ids.to_vec();
            rest.remove(i);
            for mut tail in permutations(&rest) {
                tail.insert(0, id);
                all.push(tail);
            }
        }
        all
    }

    /// The search finds an order (ending with the given server, when asked)
    /// exactly when one exists, and the order it finds keeps a quorum:
    /// checked against every permutation, from a first-cluster-like stage
    /// (cluster 1 weighted out) to every weighting of five servers.
    #[test]
    fn rolling_order_is_found_exactly_when_one_exists() {
        let from = config(
            "hierarchical",
            &[(1, 0, 1), (2, 0, 1), (3, 0, 1), (4, 1, 0), (5, 1, 0)],
        );
        let ids = [1, 2, 3, 4, 5];
        let running: Running = ids.iter().map(|&id| (id, 0)).collect();
        let orders = permutations(&ids);
        let (mut found, mut refused, mut leader_matters) = (0, 0, 0);
        for weights in 0..1u32 << ids.len() {
            let servers: Vec<(u32, usize, u32)> = ids
                .iter()
                .enumerate()
                .map(|(i, &id)| (id, usize::from(id > 3), weights >> i & 1))
                .collect();
            let configs = [from.clone(), config("hierarchical", &servers)];
            let mut free_order = false;
            for last in std::iter::once(None).chain(ids.iter().copied().map(Some)) {
                let exists = orders.iter().any(|order| {
                    last.is_none_or(|l| order.last() == Some(&l))
                        && keeps_quorum(&configs, &running, order, 1)
                });
                let order = rolling_order(&configs, &running, &ids, 1, last);
                assert_eq!(
                    order.is_some(),
                    exists,
                    "weights {weights:05b}, last {last:?}"
                );
                free_order |= last.is_none() && exists;
                leader_matters += usize::from(free_order && !exists);
                if let Some(order) = order {
                    let mut sorted = order.clone();
                    sorted.sort();
                    assert_eq!(sorted, ids, "{order:?}");
                    assert!(last.is_none_or(|l| order.last() == Some(&l)));
                    assert!(keeps_quorum(&configs, &running, &order, 1));
                    found += 1;
                } else {
                    refused += 1;
                }
            }
        }
        // Both outcomes occur, so neither side of the check is vacuous; and
        // some weightings have an order, but none that ends with a given
        // server (the plan's "if X leads" case).
        assert!(found > 0 && refused > 0, "{found} found, {refused} refused");
        assert!(leader_matters > 0);
    }

    #[test]
    fn overlap_follows_quorum_sizes() {
        let three = config("majority", &[(1, 0, 1), (2, 0, 1), (3, 0, 1)]);
        let four = config("majority", &[(1, 0, 1), (2, 0, 1), (3, 0, 1), (4, 1, 1)]);
        let six = config(
            "majority",
            &[
                (1, 0, 1),
                (2, 0, 1),
                (3, 0, 1),
                (4, 1, 1),
                (5, 1, 1),
                (6, 1, 1),
            ],
        );
        // 2 of 3 and 3 of 4 always meet; 2 of 3 and 4 of 6 need not.
        assert!(quorums_overlap(&three, &four));
        assert!(!quorums_overlap(&three, &six));
        // Hierarchical first-cluster (others weight 0) vs final, two groups.
        let first = config(
            "hierarchical",
            &[
                (1, 0, 1),
                (2, 0, 1),
                (3, 0, 1),
                (4, 1, 0),
                (5, 1, 0),
                (6, 1, 0),
            ],
        );
        let last = config(
            "hierarchical",
            &[
                (1, 0, 1),
                (2, 0, 1),
                (3, 0, 1),
                (4, 1, 1),
                (5, 1, 1),
                (6, 1, 1),
            ],
        );
        assert!(quorums_overlap(&three, &first));
        assert!(quorums_overlap(&first, &last));
    }
}
