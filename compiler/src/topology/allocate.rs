//! Allocation per role: replica counts per cluster, ID blocks, ordinals,
//! node IDs and cross-cluster addresses, with the checks that protect them.

use super::*;

pub(super) struct Ctx<'a> {
    pub(super) clusters: &'a [Cluster],
    pub(super) networking: &'a Networking,
}

impl Ctx<'_> {
    /// Replicas per cluster in cluster order; unknown cluster keys are errors.
    pub(super) fn per_cluster(
        &self,
        errs: &mut Vec<Diagnostic>,
        path: &str,
        map: &PerCluster,
    ) -> Vec<u32> {
        for name in map.keys() {
            if !self.clusters.iter().any(|c| &c.name == name) {
                errs.push(unknown_cluster(
                    &format!("{path}.{name}"),
                    name,
                    self.clusters,
                ));
            }
        }
        self.clusters
            .iter()
            .map(|c| map.get(&c.name).copied().unwrap_or(0))
            .collect()
    }

    /// (address, in-cluster alias, mirror name) of a node reached through `mode`.
    pub(super) fn address(
        &self,
        mode: NetworkingMode,
        pod: &str,
        id: u32,
        cluster: usize,
        headless: &str,
        namespace: &str,
    ) -> (String, Option<String>, Option<String>) {
        let n = self.networking;
        let domain = &n.cluster_domain;
        let cluster_name = &self.clusters[cluster].name;
        match mode {
            NetworkingMode::Mcs => (
                format!("{pod}.{cluster_name}.{headless}.{namespace}.svc.{MCS_ZONE}"),
                None,
                None,
            ),
            NetworkingMode::ExternalDns => (
                format!("{pod}.{headless}.{namespace}.svc.{}", n.zone),
                Some(format!("{pod}.{namespace}.svc.{domain}")),
                None,
            ),
            // Remote EndpointSlices (with hostnames) are synced into every
            // cluster, so the native per-pod name resolves everywhere.
            NetworkingMode::Cilium => (
                format!("{pod}.{headless}.{namespace}.svc.{domain}"),
                None,
                None,
            ),
            NetworkingMode::Linkerd => (
                format!("{pod}.{headless}.{namespace}.svc.{domain}"),
                None,
                Some(format!(
                    "{pod}.{headless}-{cluster_name}.{namespace}.svc.{domain}"
                )),
            ),
            // Not a DNS name: the IP of the pod's node (the chart's
            // `${HOST_IP}`), known only when the container starts.
            NetworkingMode::Nodeport => (
                format!("<node-ip>:{}", u32::from(n.first_listener_port) + id),
                None,
                None,
            ),
        }
    }

    /// Lays out a role: slices in cluster order, then its nodes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn group(
        &self,
        role: Role,
        chart: Chart,
        namespace: &str,
        release: &str,
        fullname: &str,
        field: &str,
        min_id: u32,
        replicas: &[u32],
        block: Option<u32>,
    ) -> RoleGroup {
        let (statefulset, headless) = charts::shape(chart).statefulset_names(role, fullname);
        let mode = self.networking.mode_of(role);
        let mut slices = Vec::new();
        let mut nodes = Vec::new();
        let mut next_start = 0;
        for (cluster, &n) in replicas.iter().enumerate() {
            let block = block.unwrap_or(n);
            slices.push(Slice {
                cluster,
                replicas: n,
                ordinal_start: next_start,
                block,
            });
            for ordinal in next_start..next_start + n {
                let pod = format!("{statefulset}-{ordinal}");
                let id = ordinal + min_id;
                let (address, alias, mirror) =
                    self.address(mode, &pod, id, cluster, &headless, namespace);
                nodes.push(Node {
                    cluster,
                    ordinal,
                    id,
                    pod,
                    address,
                    alias,
                    mirror,
                    weight: 1,
                });
            }
            next_start += block;
        }
        RoleGroup {
            role,
            chart,
            namespace: namespace.to_string(),
            release: release.to_string(),
            fullname: fullname.to_string(),
            statefulset,
            headless,
            mode,
            field: field.to_string(),
            min_id,
            slices,
            nodes,
        }
    }

    pub(super) fn ensemble(
        &self,
        z: &spec::ZooKeeperSpec,
        errs: &mut Vec<Diagnostic>,
    ) -> Option<Ensemble> {
        let before = errs.len();
        errs.extend(charts::shape(z.chart).check_zookeeper());
        check_dns_label(errs, "spec.zookeeper.release", &z.release);
        check_dns_label(errs, "spec.zookeeper.namespace", &z.namespace);
        let replicas = self.per_cluster(errs, "spec.zookeeper.replicas", &z.replicas);
        let total: u32 = replicas.iter().sum();
        if total == 0 {
            errs.push(
                Diagnostic::error("spec.zookeeper.replicas", "no ZooKeeper servers")
                    .fix("give at least one cluster a server count, e.g. replicas: {cluster-0: 3}"),
            );
        }
        if total + z.min_id.unwrap_or(1) > ZK_MAX_ID + 1 {
            errs.push(
                Diagnostic::error(
                    "spec.zookeeper.replicas",
                    format!("{total} servers, but ZooKeeper server ids must be 1..={ZK_MAX_ID}"),
                )
                .fix("run fewer ZooKeeper servers: 3 to 7 per ensemble is the usual range"),
            );
        }
        let q = &z.quorum;
        let voting_clusters = self.voting_clusters(q, errs);
        if q.kind == QuorumType::Majority {
            if q.stage != RolloutStage::Final {
                errs.push(
                    Diagnostic::error(
                        "spec.zookeeper.quorum.stage",
                        format!("stage {} needs a hierarchical quorum: a majority quorum cannot weight the other clusters out", q.stage.as_str()),
                    )
                    .fix("set spec.zookeeper.quorum.type: hierarchical, or stage: final"),
                );
            }
            if !q.weights.is_empty() {
                errs.push(
                    Diagnostic::error(
                        "spec.zookeeper.quorum.weights",
                        "weights only apply to a hierarchical quorum",
                    )
                    .fix("set spec.zookeeper.quorum.type: hierarchical, or remove the weights"),
                );
            }
        }
        if q.stage != RolloutStage::Final && replicas.first() == Some(&0) {
            errs.push(
                Diagnostic::error(
                    "spec.zookeeper.quorum.stage",
                    format!(
                        "stage {} keeps quorum in the first cluster ({}), which runs no ZooKeeper server",
                        q.stage.as_str(),
                        self.clusters[0].name
                    ),
                )
                .fix("list the cluster that already runs ZooKeeper first in spec.clusters"),
            );
        }
        if errs.len() > before {
            return None;
        }
        let fullname = charts::fullname(
            z.chart,
            charts::Component::ZooKeeper,
            &z.release,
            z.fullname_override.as_deref(),
        );
        let min_id = min_id(errs, z.chart, Role::ZooKeeper, "spec.zookeeper", z.min_id);
        // cp-zookeeper numbers servers by their position in ZOOKEEPER_SERVERS
        // and takes id = ordinal + 1, so ids must be contiguous: no headroom.
        let mut group = self.group(
            Role::ZooKeeper,
            z.chart,
            &z.namespace,
            &z.release,
            &fullname,
            "spec.zookeeper",
            min_id,
            &replicas,
            None,
        );
        for (name, w) in &q.weights {
            let path = format!("spec.zookeeper.quorum.weights.{name}");
            let Some(ci) = self.clusters.iter().position(|c| &c.name == name) else {
                errs.push(unknown_cluster(&path, name, self.clusters));
                continue;
            };
            let n = replicas[ci] as usize;
            let weights: Vec<u32> = match w {
                Weights::Uniform(w) => vec![*w; n],
                Weights::PerServer(list) => {
                    if list.len() != n {
                        errs.push(
                            Diagnostic::error(
                                &path,
                                format!("{} weights for {n} servers in cluster {name:?}", list.len()),
                            )
                            .fix(format!("give exactly {n} weights (one per server, in ordinal order) or a single number")),
                        );
                        continue;
                    }
                    list.clone()
                }
            };
            for (node, w) in group
                .nodes
                .iter_mut()
                .filter(|n| n.cluster == ci)
                .zip(weights)
            {
                node.weight = w;
            }
        }
        if q.kind == QuorumType::Hierarchical && group.nodes.iter().all(|n| n.weight == 0) {
            errs.push(
                Diagnostic::error(
                    "spec.zookeeper.quorum.weights",
                    "every server has weight 0: nothing can vote",
                )
                .fix("give at least a majority of clusters servers with weight >= 1"),
            );
        }
        if errs.len() > before {
            return None;
        }
        Some(Ensemble {
            group,
            quorum: q.kind,
            stage: q.stage,
            voting_clusters,
        })
    }

    /// How many of the first clusters vote at the spec's rollout stage.
    pub(super) fn voting_clusters(
        &self,
        q: &spec::ZooKeeperQuorum,
        errs: &mut Vec<Diagnostic>,
    ) -> usize {
        let all = self.clusters.len();
        match (q.stage, q.voting_clusters) {
            (RolloutStage::FirstClusters, Some(n)) if n >= 1 && (n as usize) < all => n as usize,
            (RolloutStage::FirstClusters, Some(n)) => {
                errs.push(
                    Diagnostic::error(
                        "spec.zookeeper.quorum.votingClusters",
                        format!(
                            "{n} voting clusters: with {all} member clusters it must be 1 to {}",
                            all.saturating_sub(1)
                        ),
                    )
                    .fix("use stage: final once every cluster votes"),
                );
                all
            }
            (RolloutStage::FirstClusters, None) => {
                errs.push(
                    Diagnostic::error(
                        "spec.zookeeper.quorum.stage",
                        "stage first-clusters needs spec.zookeeper.quorum.votingClusters",
                    )
                    .fix("add votingClusters: 2 (the first two clusters in spec.clusters vote)"),
                );
                all
            }
            (_, Some(_)) => {
                errs.push(
                    Diagnostic::error(
                        "spec.zookeeper.quorum.votingClusters",
                        format!(
                            "votingClusters only applies to stage: first-clusters, not {}",
                            q.stage.as_str()
                        ),
                    )
                    .fix("remove votingClusters, or set stage: first-clusters"),
                );
                all
            }
            (RolloutStage::FirstCluster, None) => 1,
            (_, None) => all,
        }
    }

    pub(super) fn kafka(
        &self,
        k: &spec::KafkaSpec,
        have_zk: bool,
        errs: &mut Vec<Diagnostic>,
    ) -> Option<Kafka> {
        let before = errs.len();
        check_dns_label(errs, "spec.kafka.release", &k.release);
        check_dns_label(errs, "spec.kafka.namespace", &k.namespace);
        errs.extend(charts::shape(k.chart).check_kafka(k));
        match k.mode {
            KafkaMode::Zookeeper => {
                if !have_zk {
                    errs.push(
                        Diagnostic::error(
                            "spec.kafka.mode",
                            "ZooKeeper mode needs a stretched ZooKeeper",
                        )
                        .fix("add spec.zookeeper, or use mode: kraft"),
                    );
                }
                if k.controllers.is_some() {
                    errs.push(
                        Diagnostic::error(
                            "spec.kafka.controllers",
                            "controllers only exist in KRaft mode",
                        )
                        .fix("remove spec.kafka.controllers, or set mode: kraft"),
                    );
                }
                if k.brokers.is_none() {
                    errs.push(
                        Diagnostic::error("spec.kafka.brokers", "no brokers")
                            .fix("add spec.kafka.brokers.replicas with a count per cluster"),
                    );
                }
                if k.cluster_id.is_some() {
                    errs.push(
                        Diagnostic::error("spec.kafka.clusterId", "a cluster ID is only set in KRaft mode; ZooKeeper mode keeps it in ZooKeeper")
                            .fix("remove spec.kafka.clusterId"),
                    );
                }
            }
            KafkaMode::Kraft => {
                match &k.cluster_id {
                    None => errs.push(
                        Diagnostic::error(
                            "spec.kafka.clusterId",
                            "KRaft needs one cluster ID for the whole stretch",
                        )
                        .fix(format!(
                            "add clusterId: {} (or any output of `kafka-storage.sh random-uuid`)",
                            suggested_cluster_id(&k.release)
                        )),
                    ),
                    Some(id) => {
                        if URL_SAFE_NO_PAD.decode(id).map(|b| b.len()) != Ok(16) || id.len() != 22 {
                            errs.push(
                                Diagnostic::error(
                                    "spec.kafka.clusterId",
                                    format!("{id:?} is not a Kafka cluster ID (22 characters of base64url, 16 bytes)"),
                                )
                                .fix("generate one with `kafka-storage.sh random-uuid`"),
                            );
                        }
                    }
                }
                match &k.controllers {
                    None => errs.push(
                        Diagnostic::error("spec.kafka.controllers", "KRaft needs controllers")
                            .fix("add spec.kafka.controllers.replicas, e.g. {east: 1, west: 1, witness: 1}"),
                    ),
                    Some(c) if c.combined && k.brokers.is_some() => errs.push(
                        Diagnostic::error(
                            "spec.kafka.brokers",
                            "combined controllers already act as brokers; the bitnami chart then runs no broker StatefulSet",
                        )
                        .fix("remove spec.kafka.brokers, or set spec.kafka.controllers.combined: false"),
                    ),
                    Some(_) => {}
                }
            }
        }
        if errs.len() > before {
            return None;
        }
        let fullname = charts::fullname(
            k.chart,
            charts::Component::Kafka,
            &k.release,
            k.fullname_override.as_deref(),
        );
        let mut layout = |role: Role, field: &str, r: &spec::RoleSpec| {
            let replicas = self.per_cluster(errs, &format!("{field}.replicas"), &r.replicas);
            let max = replicas.iter().copied().max().unwrap_or(0);
            let block = r
                .id_block_size
                .unwrap_or_else(|| max.max(1).div_ceil(10) * 10);
            if block == 0 {
                errs.push(
                    Diagnostic::error(
                        format!("{field}.idBlockSize"),
                        "an ID block of 0 holds no node",
                    )
                    .fix("use at least the largest replica count"),
                );
            }
            for (ci, &n) in replicas.iter().enumerate() {
                if n > block {
                    errs.push(
                        Diagnostic::error(
                            format!("{field}.replicas.{}", self.clusters[ci].name),
                            format!("{n} nodes do not fit the ID block of {block} IDs per cluster"),
                        )
                        .fix(format!(
                            "raise {field}.idBlockSize to at least {n}, or lower the replicas"
                        )),
                    );
                }
            }
            if replicas.iter().all(|&n| n == 0) {
                errs.push(
                    Diagnostic::error(
                        format!("{field}.replicas"),
                        format!("no {} nodes in any cluster", role.label()),
                    )
                    .fix("give at least one cluster a count"),
                );
            }
            let min_id = min_id(errs, k.chart, role, field, r.min_id);
            self.group(
                role,
                k.chart,
                &k.namespace,
                &k.release,
                &fullname,
                field,
                min_id,
                &replicas,
                Some(block),
            )
        };
        let controllers = k.controllers.as_ref().map(|c| {
            layout(
                Role::Controller {
                    combined: c.combined,
                },
                "spec.kafka.controllers",
                &c.role(),
            )
        });
        let brokers = k
            .brokers
            .as_ref()
            .map(|b| layout(Role::Broker, "spec.kafka.brokers", b));
        if let (Some(c), Some(b)) = (&controllers, &brokers) {
            let (c_lo, c_hi) = c.id_range();
            let (b_lo, b_hi) = b.id_range();
            if c_lo < b_hi && b_lo < c_hi {
                errs.push(
                    Diagnostic::error(
                        "spec.kafka.brokers.minId",
                        format!(
                            "broker IDs {b_lo}..{} overlap controller IDs {c_lo}..{}: KRaft nodes share one ID space",
                            b_hi - 1,
                            c_hi - 1
                        ),
                    )
                    .fix(format!("set spec.kafka.brokers.minId to at least {c_hi}, or shrink the ID blocks")),
                );
            }
        }
        if let Some(b) = brokers
            .as_ref()
            .filter(|b| b.mode == NetworkingMode::Nodeport)
        {
            let first = u32::from(self.networking.first_listener_port);
            let (_, end) = b.id_range();
            let last_id = end.saturating_sub(1);
            if first + last_id > NODE_PORT_MAX {
                errs.push(
                    Diagnostic::error(
                        "spec.kafka.brokers.idBlockSize",
                        format!(
                            "broker IDs reach {last_id}: their NodePorts firstListenerPort + id = {first} + {last_id} exceed {NODE_PORT_MAX}, the top of the NodePort range"
                        ),
                    )
                    .fix("use smaller ID blocks (idBlockSize), or a lower spec.networking.firstListenerPort (and the chart's nodeport.firstListenerPort)"),
                );
            }
        }
        if errs.len() > before {
            return None;
        }
        Some(Kafka {
            mode: k.mode,
            brokers,
            controllers,
            cluster_id: k.cluster_id.clone(),
            follower_fetching: k.follower_fetching,
        })
    }
}
