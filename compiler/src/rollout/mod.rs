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

mod search;
mod steps;
mod text;

use serde::Serialize;

use crate::charts;
use crate::quorum::{Quorum, Voter};
use crate::spec::{Chart, KafkaMode, QuorumType, RolloutStage};
use crate::topology::{Ensemble, RoleGroup, Topology};

pub use search::quorums_overlap;
use search::{MAX_SERVERS, Running};
pub use text::to_text;

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

/// Why `--stage` does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    #[error("unknown stage {0:?}: use first-cluster, first-clusters=N or final")]
    Unknown(String),
    #[error("--stage applies to a ZooKeeper ensemble; this spec has none")]
    NoZooKeeper,
    #[error("only a hierarchical quorum has rollout stages (spec.zookeeper.quorum.type)")]
    NotHierarchical,
    #[error("first-clusters={n}: with {clusters} clusters N must be 1 to {max}")]
    OutOfRange {
        n: usize,
        clusters: usize,
        max: usize,
    },
}

impl Stage {
    pub fn parse(text: &str) -> Result<Stage, StageError> {
        match text {
            "first-cluster" => Ok(Stage::FirstCluster),
            "final" => Ok(Stage::Final),
            _ => text
                .strip_prefix("first-clusters=")
                .and_then(|n| n.parse().ok())
                .map(Stage::FirstClusters)
                .ok_or_else(|| StageError::Unknown(text.to_string())),
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
pub fn at_stage(topo: &Topology, stage: Stage) -> Result<Topology, StageError> {
    let Some(zk) = &topo.zookeeper else {
        return Err(StageError::NoZooKeeper);
    };
    let all = topo.clusters.len();
    let (stage, voting) = match stage {
        Stage::Final => (RolloutStage::Final, all),
        _ if zk.quorum != QuorumType::Hierarchical => return Err(StageError::NotHierarchical),
        Stage::FirstCluster => (RolloutStage::FirstCluster, 1),
        Stage::FirstClusters(n) if n >= 1 && n < all => (RolloutStage::FirstClusters, n),
        Stage::FirstClusters(n) => {
            return Err(StageError::OutOfRange {
                n,
                clusters: all,
                max: all - 1,
            });
        }
    };
    let mut out = topo.clone();
    out.zookeeper = Some(zk.at_stage(stage, voting));
    Ok(out)
}

/// What a [`ZkAction`] does to its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// One pod deleted; it comes back with the new configuration.
    Restart,
    /// New servers come up with the configuration.
    Start,
    /// Every listed server is stopped at once and comes back with the new
    /// configuration: a planned outage.
    RestartAll,
}

/// What happens to ZooKeeper servers in one step, and what the plan claims.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZkAction {
    pub action: ActionKind,
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
    pub quorum: QuorumType,
    /// True when ZooKeeper keeps a quorum at every step.
    pub outage_free: bool,
    pub summary: Vec<String>,
    /// `chart` (the single-cluster install as the chart rendered it), then
    /// one configuration per stage; weight 1 for majority quorums.
    #[serde(serialize_with = "search::serialize_configs")]
    pub configs: Vec<Quorum>,
    pub policies: Vec<Policy>,
    pub steps: Vec<Step>,
}

/// Why a plan cannot be made: names the option or field and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("--from-single-cluster {from:?} is not in spec.clusters ({known})")]
    UnknownCluster { from: String, known: String },
    #[error(
        "{0:?} must be the first entry of spec.clusters: the servers and brokers it already runs keep their IDs (ZooKeeper 1..n, ordinals from 0) only in the first ID block, and the first rollout stage gives the vote to the first cluster; move it to the top of spec.clusters"
    )]
    NotFirst(String),
    #[error(
        "straddle plan grows ZooKeeper-based stretches; a KRaft quorum grows with `kafka-metadata-quorum add-controller`, which the plan does not cover yet"
    )]
    Kraft,
    #[error("the spec has no spec.zookeeper: there is no quorum to grow")]
    NoZooKeeper,
    #[error(
        "straddle plan grows cp-helm-charts ZooKeeper ensembles; its restart order and readiness waits are not written for the {chart} chart yet", chart = .0.as_str()
    )]
    Chart(Chart),
    #[error("{0} ZooKeeper servers: the plan checks ensembles of up to {max}", max = MAX_SERVERS)]
    TooManyServers(usize),
    #[error(
        "{0:?} runs no ZooKeeper server in the spec (spec.zookeeper.replicas.{0}); list the cluster that already runs ZooKeeper first"
    )]
    NoServers(String),
}

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
        return Err(PlanError::UnknownCluster {
            from: from.to_string(),
            known: known.join(", "),
        });
    };
    if home != 0 {
        return Err(PlanError::NotFirst(from.to_string()));
    }
    if let Some(k) = &topo.kafka
        && k.mode == KafkaMode::Kraft
    {
        return Err(PlanError::Kraft);
    }
    let Some(zk) = &topo.zookeeper else {
        return Err(PlanError::NoZooKeeper);
    };
    if zk.group.chart != Chart::CpHelmCharts {
        return Err(PlanError::Chart(zk.group.chart));
    }
    if zk.group.nodes.len() > MAX_SERVERS {
        return Err(PlanError::TooManyServers(zk.group.nodes.len()));
    }
    if zk.group.slices[0].replicas == 0 {
        return Err(PlanError::NoServers(from.to_string()));
    }
    Ok(Planner::new(topo, spec_path, zk, digest_of).run())
}

/// The port clients use for a role, from its chart module.
fn client_port(group: &RoleGroup) -> u16 {
    let ports = charts::ports(group);
    ports
        .iter()
        .find(|(name, _)| *name == "client")
        .or(ports.first())
        .map_or(0, |&(_, port)| port)
}

struct Planner<'a> {
    topo: &'a Topology,
    spec_path: &'a str,
    zk: &'a Ensemble,
    digest_of: DigestOf<'a>,
    configs: Vec<Quorum>,
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
        let chart = Quorum {
            name: "chart".into(),
            kind: QuorumType::Majority,
            voters: zk
                .group
                .nodes_in(0)
                .map(|n| Voter {
                    id: n.id,
                    cluster: 0,
                    weight: 1,
                })
                .collect(),
        };
        let running = chart.voters.iter().map(|v| (v.id, 0)).collect();
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

    /// The configuration and policy of a stage.
    fn config_of(&self, stage: Stage) -> (Quorum, Policy) {
        let staged = at_stage(self.topo, stage).expect("stages are built from a valid topology");
        let ens = staged.zookeeper.as_ref().expect("checked: has ZooKeeper");
        let name = stage.arg();
        let config = Quorum {
            name: name.clone(),
            kind: ens.quorum,
            voters: ens
                .group
                .nodes
                .iter()
                .map(|n| Voter {
                    id: n.id,
                    cluster: n.cluster,
                    weight: ens.staged_weight(n),
                })
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

    fn node(&self, id: u32) -> Option<&crate::topology::Node> {
        self.zk.group.nodes.iter().find(|n| n.id == id)
    }

    fn pod_of(&self, id: u32) -> String {
        self.node(id).map(|n| n.pod.clone()).unwrap_or_default()
    }

    fn cluster_of(&self, id: u32) -> usize {
        self.node(id).map_or(0, |n| n.cluster)
    }

    fn weights_of(&self, config: usize) -> String {
        let c = &self.configs[config];
        if c.kind != QuorumType::Hierarchical {
            return format!("majority of {} servers", c.voters.len());
        }
        (0..self.topo.clusters.len())
            .filter_map(|ci| {
                let w: Vec<String> = c
                    .voters
                    .iter()
                    .filter(|v| v.cluster == ci)
                    .map(|v| v.weight.to_string())
                    .collect();
                (!w.is_empty()).then(|| format!("{} [{}]", self.cluster(ci), w.join(" ")))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The stages to go through: hierarchical ones step the vote from
    /// cluster to cluster, as far as each step's quorums overlap the
    /// previous ones; a majority quorum has only `final`.
    fn stages(&mut self) -> Vec<usize> {
        if self.zk.quorum != QuorumType::Hierarchical {
            return vec![self.stage(Stage::Final)];
        }
        let mut current = self.stage(Stage::FirstCluster);
        let mut stages = vec![current];
        let mut remaining: Vec<Stage> = (2..self.topo.clusters.len())
            .map(Stage::FirstClusters)
            .chain([Stage::Final])
            .collect();
        // Jump to the furthest stage whose quorums still overlap the
        // current one's; stages that change no weight are skipped.
        while !remaining.is_empty() {
            let pick = remaining.iter().rposition(|&cand| {
                let (cfg, _) = self.config_of(cand);
                cfg.voters != self.configs[current].voters
                    && quorums_overlap(&self.configs[current], &cfg)
            });
            let Some(j) = pick else { break };
            current = self.stage(remaining[j]);
            stages.push(current);
            remaining.drain(..=j);
        }
        let (final_cfg, _) = self.config_of(Stage::Final);
        if final_cfg.voters != self.configs[current].voters {
            // No overlapping path: promote() plans it as an outage.
            stages.push(self.stage(Stage::Final));
        }
        stages
    }

    fn run(mut self) -> RolloutPlan {
        let zk = self.zk;
        let home = self.cluster(0).to_string();
        let others: Vec<usize> = (1..self.topo.clusters.len())
            .filter(|&c| self.topo.groups().any(|g| g.slices[c].replicas > 0))
            .collect();
        let stages = self.stages();

        self.preparation(&stages);
        let first = stages[0];
        let adopt_overlap = quorums_overlap(&self.configs[0], &self.configs[first]);
        self.adopt(first, adopt_overlap);
        if search::has_quorum_everywhere(&self.configs, &self.running) {
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
        let mut summary = vec![format!(
            "Grows the ZooKeeper ensemble of {home} ({} servers, the chart's majority quorum) into {} servers in {} clusters ({} quorum){}.",
            self.configs[0].voters.len(),
            zk.group.nodes.len(),
            self.topo.clusters.len(),
            zk.quorum.as_str(),
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
                match zk.quorum {
                    QuorumType::Hierarchical => "The staged weights do not give an order that keeps a quorum for these replica counts.",
                    QuorumType::Majority => "A majority quorum has no weights to stage: the existing servers' quorum and the grown ensemble's quorum do not overlap, so the two configurations must not run side by side. Use quorum type hierarchical (one group per cluster) to grow without an outage.",
                }
            ));
        }
        summary.extend(std::mem::take(&mut self.summary));
        RolloutPlan {
            stretch: self.topo.name.clone(),
            spec: self.spec_path.to_string(),
            from_cluster: home,
            quorum: zk.quorum,
            outage_free,
            summary,
            configs: self.configs,
            policies: self.policies,
            steps: self.steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_parse_and_print_alike() {
        for text in ["first-cluster", "first-clusters=2", "final"] {
            assert_eq!(Stage::parse(text).unwrap().arg(), text);
        }
        assert!(Stage::parse("first-clusters=x").is_err());
        assert!(
            Stage::parse("second")
                .unwrap_err()
                .to_string()
                .contains("first-clusters=N")
        );
    }
}
