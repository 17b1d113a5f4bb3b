//! The steps of the plan: what to run, what to wait for, and what each
//! step does to the ZooKeeper servers (with the quorum claims).

use std::collections::{BTreeMap, BTreeSet};

use super::search::{has_quorum_everywhere, keeps_quorum, quorums_overlap, rolling_order};
use super::{ActionKind, Command, Planner, Step, ZkAction, client_port};
use crate::charts::{self, ZkTools};
use crate::spec::{NetworkingMode, QuorumType};

/// A step before it is numbered and its quorum claim is derived from its
/// actions (both happen once, in [`Planner::push`]).
struct Draft {
    title: String,
    changes: String,
    commands: Vec<Command>,
    wait_for: Vec<String>,
    zookeeper: Vec<ZkAction>,
    configs_overlap: Option<bool>,
}

impl Draft {
    fn new(title: String, changes: String, commands: Vec<Command>, wait_for: Vec<String>) -> Draft {
        Draft {
            title,
            changes,
            commands,
            wait_for,
            zookeeper: Vec::new(),
            configs_overlap: None,
        }
    }

    fn zookeeper(mut self, actions: Vec<ZkAction>, overlap: Option<bool>) -> Draft {
        self.zookeeper = actions;
        self.configs_overlap = overlap;
        self
    }
}

/// Servers restarted into a new configuration: one at a time in an order
/// that keeps a quorum, or each cluster's servers together (an outage).
struct Roll {
    actions: Vec<ZkAction>,
    /// The `delete pod` commands, in order.
    commands: Vec<Command>,
    waits: Vec<String>,
    /// What to do about the leader, for a one-at-a-time restart.
    leader: Option<String>,
}

impl Roll {
    /// Whether ZooKeeper keeps a quorum through the whole roll.
    fn kept(&self, overlap: bool) -> bool {
        overlap
            && self
                .actions
                .iter()
                .all(|a| a.quorum_during && a.quorum_after)
    }
}

impl Planner<'_> {
    fn push(&mut self, mut draft: Draft) {
        if let Some(a) = draft.zookeeper.first() {
            let c = self.cluster_of(a.servers[0]);
            draft.wait_for.push(self.srvr_hint(c));
        }
        let keeps_quorum = draft.configs_overlap != Some(false)
            && draft
                .zookeeper
                .iter()
                .all(|a| a.quorum_during && a.quorum_after);
        self.steps.push(Step {
            number: self.steps.len() + 1,
            title: draft.title,
            changes: draft.changes,
            commands: draft.commands,
            wait_for: draft.wait_for,
            zookeeper: draft.zookeeper,
            configs_overlap: draft.configs_overlap,
            keeps_quorum,
        });
    }

    /// `ids` (of one cluster) stop, or start, and run `to` afterwards;
    /// records who runs meanwhile and whether a quorum holds.
    fn act(&mut self, action: ActionKind, ids: &[u32], to: usize) -> ZkAction {
        let mut during = self.running.clone();
        if action != ActionKind::Start {
            for id in ids {
                during.remove(id);
            }
        }
        let quorum_during = has_quorum_everywhere(&self.configs, &during);
        for &id in ids {
            self.running.insert(id, to);
        }
        ZkAction {
            action,
            cluster: self.cluster(self.cluster_of(ids[0])).to_string(),
            pods: ids.iter().map(|&id| self.pod_of(id)).collect(),
            servers: ids.to_vec(),
            config: self.configs[to].name.clone(),
            running_during: during.keys().copied().collect(),
            quorum_during,
            running_after: self
                .running
                .iter()
                .map(|(&id, &c)| (id, self.configs[c].name.clone()))
                .collect(),
            quorum_after: has_quorum_everywhere(&self.configs, &self.running),
        }
    }

    /// Restarts running servers `ids` into `to`: one at a time when the
    /// configurations overlap and an order keeps a quorum, else each
    /// cluster's servers at once. `not_serving` is what to wait for when a
    /// cluster's servers come back without a quorum (the default: they serve).
    fn roll(&mut self, ids: &[u32], to: usize, overlap: bool, not_serving: Option<&str>) -> Roll {
        let order = overlap
            .then(|| rolling_order(&self.configs, &self.running, ids, to, None))
            .flatten();
        let mut roll = Roll {
            actions: Vec::new(),
            commands: Vec::new(),
            waits: Vec::new(),
            leader: order.as_deref().map(|order| self.leader_last(order, to)),
        };
        match order {
            Some(order) => {
                for id in order {
                    let pod = self.pod_of(id);
                    let c = self.cluster_of(id);
                    roll.commands
                        .push(self.kubectl(c, &format!("delete pod {pod}")));
                    roll.waits.push(self.zk_ready(std::slice::from_ref(&pod)));
                    roll.actions.push(self.act(ActionKind::Restart, &[id], to));
                }
            }
            None => {
                let mut by_cluster: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
                for &id in ids {
                    by_cluster.entry(self.cluster_of(id)).or_default().push(id);
                }
                for (c, ids) in by_cluster {
                    let pods: Vec<String> = ids.iter().map(|&id| self.pod_of(id)).collect();
                    roll.commands
                        .push(self.kubectl(c, &format!("delete pod {}", pods.join(" "))));
                    let action = self.act(ActionKind::RestartAll, &ids, to);
                    roll.waits.push(match not_serving {
                        Some(why) if !action.quorum_after => {
                            format!(
                                "{} are Running; they cannot serve yet: {why}",
                                pods.join(", ")
                            )
                        }
                        _ => self.zk_ready(&pods),
                    });
                    roll.actions.push(action);
                }
            }
        }
        roll
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
        let mut text = format!(
            "Restart the current leader last ({} prints `Mode: leader`): skip its `delete pod` below and run it after the others. Then the one election happens among servers that all run the new configuration; restarting the leader earlier forces an election while configurations are mixed, which servers that disagree on who may lead can stall.",
            self.zk_tools().status_name
        );
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

    pub(super) fn preparation(&mut self, stages: &[usize]) {
        let spec = self.spec_path.to_string();
        let commands: Vec<Command> = stages
            .iter()
            .map(|&s| {
                let p = self.policy(s);
                Command {
                    cluster: None,
                    run: format!("straddle compile {spec} --stage {} -o {}", p.stage, p.file),
                }
            })
            .collect();
        let listing: Vec<String> = stages
            .iter()
            .map(|&s| {
                let p = self.policy(s);
                format!("{} ({}): weights {}", p.file, p.digest, self.weights_of(s))
            })
            .collect();
        self.push(Draft::new(
            "Compile one policy per rollout stage".into(),
            format!(
                "Nothing in the clusters yet. Each stage is the same stretch with different ZooKeeper weights; the webhook injects the weights of the stage it runs. {}",
                listing.join("; ")
            ),
            commands,
            vec!["each compile prints the digest listed above".into()],
        ));
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
        let mode = self.zk.group.mode;
        let what = match mode {
            _ if commands.is_empty() => {
                "no objects: the mesh is configured on the chart's own headless Services, which the policy annotates or labels"
            }
            NetworkingMode::Mcs => "one ServiceExport per headless Service",
            NetworkingMode::ExternalDns => {
                "per-node LoadBalancer Services (with their external-dns hostnames) at home and ExternalName Services elsewhere"
            }
            NetworkingMode::Nodeport => "per-broker NodePort Services",
            NetworkingMode::Cilium | NetworkingMode::Linkerd => {
                "the brokers' NodePort Services (the quorum's mesh is configured on the chart's headless Services by the policy)"
            }
        };
        let wait = match mode {
            NetworkingMode::ExternalDns => {
                "every LoadBalancer has an address and its hostname resolves from every cluster (`nslookup <hostname>` from a pod)"
            }
            NetworkingMode::Mcs => {
                "a ServiceImport for each exported Service exists in every cluster"
            }
            NetworkingMode::Cilium => {
                "the clusters are connected (`cilium clustermesh status`) with endpoint-slice synchronization enabled"
            }
            NetworkingMode::Linkerd => {
                "every cluster is linked to every other one with the link named after the spec's cluster name (`linkerd multicluster check`)"
            }
            NetworkingMode::Nodeport => "the Services exist",
        };
        self.push(Draft::new(
            "Create the cross-cluster networking objects".into(),
            format!("Adds {what}. Running pods are not touched."),
            commands,
            vec![wait.into()],
        ));
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

    /// The ZooKeeper image's tools, from the chart module.
    fn zk_tools(&self) -> ZkTools {
        charts::shape(self.zk.group.chart).zookeeper_tools(client_port(&self.zk.group))
    }

    fn zk_ready(&self, pods: &[String]) -> String {
        format!(
            "{} serve again before anything else restarts: {} prints `Mode: follower` or `Mode: leader`",
            pods.join(", "),
            self.zk_tools().status_name
        )
    }

    /// How to ask one server whether it serves, with its image's tools.
    fn srvr_hint(&self, c: usize) -> String {
        let tools = self.zk_tools();
        format!(
            "how to check a server: `kubectl --context {} -n {} exec <pod> -- {}` ({} means no quorum)",
            self.cluster(c),
            self.ns(),
            tools.status,
            tools.not_serving
        )
    }

    pub(super) fn adopt(&mut self, to: usize, overlap: bool) {
        let digest = self.policy(to).digest.clone();
        let file = self.policy(to).file.clone();
        let zk_sts = self.zk.group.statefulset.clone();
        let home = self.cluster(0).to_string();
        self.push(Draft::new(
            format!("Install the webhook in {home} with {file}"),
            format!(
                "From now on every StatefulSet, Service and ConfigMap of the release admitted in {home} gets the stretch values. Nothing restarts yet: existing objects change only when they are next written."
            ),
            self.install_webhook(0, &file),
            vec![format!("the webhook's /readyz reports policy {digest}")],
        ));

        let (freeze, check) = self.freeze(0, &zk_sts, &digest);
        let ids: Vec<u32> = self.configs[0].voters.iter().map(|v| v.id).collect();
        let roll = self.roll(
            &ids,
            to,
            overlap,
            Some("the next step starts the servers the new configuration needs for a quorum"),
        );
        let how = match (roll.kept(overlap), &roll.leader) {
            (true, Some(leader)) => format!(
                "The patch switches the StatefulSet to OnDelete, so the webhook writes the new values without restarting anything; then each server is restarted by hand, one at a time (the chart has no readiness probe, so a normal rolling update would not wait for a server to rejoin before stopping the next). {leader}"
            ),
            _ => "PLANNED OUTAGE: the old and the new configuration must not run side by side (their quorums do not overlap), so all servers restart together; ZooKeeper is unavailable until enough servers of the new configuration run. Kafka keeps serving partitions whose leaders do not change, but cannot elect leaders or change topics meanwhile.".to_string(),
        };
        let changes = format!(
            "{home}'s ZooKeeper servers move from the chart's list ({} servers, majority) to the stretch list with {} ({}). {how}",
            self.configs[0].voters.len(),
            self.configs[to].name,
            self.weights_of(to),
        );
        self.push(
            Draft::new(
                format!("Move {home}'s ZooKeeper servers to the stretch configuration"),
                changes,
                [vec![freeze], roll.commands].concat(),
                [vec![check], roll.waits].concat(),
            )
            .zookeeper(roll.actions, Some(overlap)),
        );
    }

    /// The first cluster's brokers restart with the stretch settings (only
    /// while ZooKeeper has a quorum: a broker cannot register without one).
    /// Kafka on ZooKeeper is cp-helm-charts only, so the Kafka tools are the
    /// cp-kafka image's (`kafka-topics`, no `.sh`).
    pub(super) fn restart_home_brokers(&mut self, config: usize) {
        let Some(k) = self.topo.kafka.as_ref().and_then(|k| k.brokers.as_ref()) else {
            return;
        };
        let digest = self.policy(config).digest.clone();
        let home = self.cluster(0).to_string();
        let (freeze, check) = self.freeze(0, &k.statefulset, &digest);
        let mut commands = vec![freeze];
        let mut waits = vec![check];
        for n in k.nodes_in(0) {
            commands.push(self.kubectl(0, &format!("delete pod {}", n.pod)));
            waits.push(format!(
                "{} is Running and no partition is under-replicated (`kafka-topics --bootstrap-server <broker>:{} --describe --under-replicated-partitions` prints nothing)",
                n.pod,
                client_port(k)
            ));
        }
        self.push(Draft::new(
            format!("Restart {home}'s Kafka brokers with the stretch settings"),
            format!(
                "Each broker comes back with the full zookeeper.connect list, broker.rack {} and an advertised listener that the other clusters can reach. Brokers restart one at a time, each only once its partitions are back in sync.",
                self.topo.clusters[0].rack
            ),
            commands,
            waits,
        ));
    }

    pub(super) fn join(&mut self, c: usize, config: usize) {
        let name = self.cluster(c).to_string();
        let file = self.policy(config).file.clone();
        let weight_note = match self.configs[config].kind {
            QuorumType::Hierarchical => {
                "as weight-0 followers: they copy the data but do not vote yet"
            }
            QuorumType::Majority => "as voting members",
        };
        // The joining servers' configuration against every one in use.
        let held: BTreeSet<usize> = self.running.values().copied().collect();
        let overlap = held
            .iter()
            .all(|&h| quorums_overlap(&self.configs[h], &self.configs[config]));
        // New servers come up one by one (the chart's StatefulSets start
        // pods in order).
        let ids: Vec<u32> = self.zk.group.nodes_in(c).map(|n| n.id).collect();
        let actions: Vec<ZkAction> = ids
            .iter()
            .map(|&id| self.act(ActionKind::Start, &[id], config))
            .collect();
        let pods: Vec<String> = actions.iter().flat_map(|a| a.pods.clone()).collect();
        let mut waits = Vec::new();
        if !pods.is_empty() {
            waits.push(self.zk_ready(&pods));
        }
        if let Some(b) = self.topo.kafka.as_ref().and_then(|k| k.brokers.as_ref()) {
            let ids: Vec<String> = b.nodes_in(c).map(|n| n.id.to_string()).collect();
            if !ids.is_empty() {
                waits.push(format!(
                    "brokers {} are registered (`{}` lists them)",
                    ids.join(", "),
                    self.zk_tools().list_brokers
                ));
            }
        }
        let changes = format!(
            "{name} gets the webhook with {file}, then the same Helm release with the same values as {home}. The webhook sets each StatefulSet's replicas and first ordinal ({name}'s ID block), so {} start {weight_note}.",
            if pods.is_empty() {
                "its pods".to_string()
            } else {
                pods.join(", ")
            },
            home = self.cluster(0)
        );
        let release = Command {
            cluster: Some(name.clone()),
            run: format!(
                "helm --kube-context {name} install <release> <chart> -n {} -f <values>   # the release name, chart version and values of {}",
                self.ns(),
                self.cluster(0)
            ),
        };
        let overlap = (!actions.is_empty()).then_some(overlap);
        self.push(
            Draft::new(
                format!("Install the webhook and the release in {name}"),
                changes,
                [self.install_webhook(c, &file), vec![release]].concat(),
                waits,
            )
            .zookeeper(actions, overlap),
        );
    }

    pub(super) fn promote(&mut self, from: usize, to: usize) {
        let overlap = quorums_overlap(&self.configs[from], &self.configs[to]);
        let file = self.policy(to).file.clone();
        let digest = self.policy(to).digest.clone();
        let sts = self.zk.group.statefulset.clone();
        let clusters: Vec<usize> = (0..self.topo.clusters.len())
            .filter(|&c| self.zk.group.slices[c].replicas > 0)
            .collect();
        let mut commands: Vec<Command> = clusters
            .iter()
            .map(|&c| self.replace_policy(c, &file))
            .collect();
        let mut waits = Vec::new();
        for &c in &clusters {
            let (freeze, check) = self.freeze(c, &sts, &digest);
            commands.push(freeze);
            waits.push(check);
        }
        let ids: Vec<u32> = self.running.keys().copied().collect();
        let roll = self.roll(&ids, to, overlap, None);
        let voting: Vec<&str> = (0..self.topo.clusters.len())
            .filter(|&c| {
                self.configs[to]
                    .voters
                    .iter()
                    .any(|v| v.cluster == c && v.weight > 0)
            })
            .map(|c| self.cluster(c))
            .collect();
        let how = match (roll.kept(overlap), &roll.leader) {
            (true, Some(leader)) => format!(
                "Every quorum of the previous stage overlaps every quorum of this one, and the order below keeps a quorum while each server restarts. Restart strictly one server at a time. {leader}"
            ),
            _ => "PLANNED OUTAGE: no restart order keeps a quorum (or the two stages' quorums do not overlap), so each cluster's servers restart together.".to_string(),
        };
        let draft = Draft::new(
            format!(
                "Switch to stage {} (voting: {})",
                self.configs[to].name,
                voting.join(", ")
            ),
            format!("Weights become {}. {how}", self.weights_of(to)),
            [commands, roll.commands].concat(),
            [waits, roll.waits].concat(),
        );
        self.push(draft.zookeeper(roll.actions, Some(overlap)));
    }

    pub(super) fn finish(&mut self, home: &str) {
        let mut commands = Vec::new();
        let brokers = self.topo.kafka.as_ref().and_then(|k| k.brokers.as_ref());
        let mut sts: Vec<&str> = vec![&self.zk.group.statefulset];
        sts.extend(brokers.map(|b| b.statefulset.as_str()));
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
        if let Some(b) = brokers {
            let ids: Vec<String> = b.nodes.iter().map(|n| n.id.to_string()).collect();
            changes.push_str(&format!(
                " Existing partitions still live only on {home}'s brokers: move replicas onto the new brokers with kafka-reassign-partitions (broker list {}), so that every rack holds a replica.",
                ids.join(",")
            ));
            commands.push(Command {
                cluster: Some(home.to_string()),
                run: format!(
                    "kafka-reassign-partitions --bootstrap-server <broker>:{} --topics-to-move-json-file topics.json --broker-list {} --generate   # review, then --execute",
                    client_port(b),
                    ids.join(",")
                ),
            });
        }
        self.push(Draft::new(
            "Restore the update strategy and spread the data".into(),
            changes,
            commands,
            vec![format!(
                "`straddle explain {}` matches what runs; the reassignment (if any) reports completion",
                self.spec_path
            )],
        ));
        self.summary.push(
            "Do not run `helm upgrade` on the release while the plan is under way: it would put the StatefulSets back on RollingUpdate and restart every server without waiting for it to rejoin, the outage the manual procedure warns about."
                .into(),
        );
    }
}
