//! Survivability: which losses each quorum survives.
//!
//! ZooKeeper hierarchical quorums follow `QuorumHierarchical.containsQuorum`
//! exactly: a group has a majority when the live weight is strictly greater
//! than half its total weight (integer division); groups of total weight 0
//! are discarded; a set is a quorum when strictly more than half of the
//! remaining groups have a majority. Majority quorums (ZooKeeper `QuorumMaj`,
//! KRaft) need strictly more than half of the voters.

use serde::Serialize;

use crate::spec::QuorumType;
use crate::topology::{Topology, ZK_MAX_ID};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Voter {
    pub id: u32,
    pub cluster: usize,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct Quorum {
    pub name: String,
    pub kind: QuorumType,
    pub voters: Vec<Voter>,
}

impl Quorum {
    /// Whether the voters for which `alive` holds form a quorum.
    pub fn has_quorum(&self, alive: impl Fn(&Voter) -> bool) -> bool {
        match self.kind {
            QuorumType::Majority => {
                let live = self.voters.iter().filter(|v| alive(v)).count();
                live > self.voters.len() / 2
            }
            QuorumType::Hierarchical => {
                let groups: std::collections::BTreeSet<usize> =
                    self.voters.iter().map(|v| v.cluster).collect();
                let mut counted = 0u32;
                let mut majorities = 0u32;
                for g in groups {
                    let members = self.voters.iter().filter(|v| v.cluster == g);
                    let total: u64 = members.clone().map(|v| u64::from(v.weight)).sum();
                    if total == 0 {
                        continue;
                    }
                    counted += 1;
                    let live: u64 = members
                        .filter(|v| alive(v))
                        .map(|v| u64::from(v.weight))
                        .sum();
                    if live > total / 2 {
                        majorities += 1;
                    }
                }
                counted > 0 && majorities > counted / 2
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterLoss {
    pub cluster: String,
    pub keeps_quorum: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Survivability {
    pub quorum: String,
    pub kind: &'static str,
    pub healthy: bool,
    pub cluster_losses: Vec<ClusterLoss>,
    /// Voters whose loss alone breaks the quorum.
    pub critical_nodes: Vec<u32>,
    pub survives_any_cluster: bool,
    pub survives_any_node: bool,
}

impl Survivability {
    /// Per member cluster: (cluster, whether the quorum survives its loss).
    pub fn losses(&self) -> Vec<(&str, bool)> {
        self.cluster_losses
            .iter()
            .map(|l| (l.cluster.as_str(), l.keeps_quorum))
            .collect()
    }
}

pub fn analyse(topo: &Topology, q: &Quorum) -> Survivability {
    let healthy = q.has_quorum(|_| true);
    let cluster_losses: Vec<ClusterLoss> = topo
        .clusters
        .iter()
        .enumerate()
        .map(|(ci, c)| ClusterLoss {
            cluster: c.name.clone(),
            keeps_quorum: q.has_quorum(|v| v.cluster != ci),
        })
        .collect();
    let critical_nodes: Vec<u32> = q
        .voters
        .iter()
        .filter(|lost| !q.has_quorum(|v| v.id != lost.id))
        .map(|v| v.id)
        .collect();
    Survivability {
        quorum: q.name.clone(),
        kind: q.kind.as_str(),
        healthy,
        survives_any_cluster: cluster_losses.iter().all(|l| l.keeps_quorum),
        survives_any_node: healthy && critical_nodes.is_empty(),
        cluster_losses,
        critical_nodes,
    }
}

/// The quorums of a topology, as deployed at its current rollout stage.
pub fn quorums(topo: &Topology) -> Vec<Quorum> {
    let mut out = Vec::new();
    if let Some(zk) = &topo.zookeeper {
        debug_assert!(zk.group.nodes.iter().all(|n| n.id <= ZK_MAX_ID));
        out.push(Quorum {
            name: "zookeeper".into(),
            kind: zk.quorum,
            voters: zk
                .group
                .nodes
                .iter()
                .map(|n| Voter {
                    id: n.id,
                    cluster: n.cluster,
                    weight: zk.staged_weight(n),
                })
                .collect(),
        });
    }
    if let Some(c) = topo.kafka.as_ref().and_then(|k| k.controllers.as_ref()) {
        out.push(Quorum {
            name: "kraft-controllers".into(),
            kind: QuorumType::Majority,
            voters: c
                .nodes
                .iter()
                .map(|n| Voter {
                    id: n.id,
                    cluster: n.cluster,
                    weight: 1,
                })
                .collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(kind: QuorumType, layout: &[&[u32]]) -> Quorum {
        let mut voters = Vec::new();
        let mut id = 1;
        for (cluster, weights) in layout.iter().enumerate() {
            for &weight in *weights {
                voters.push(Voter {
                    id,
                    cluster,
                    weight,
                });
                id += 1;
            }
        }
        Quorum {
            name: "t".into(),
            kind,
            voters,
        }
    }

    fn lose_cluster(q: &Quorum, c: usize) -> bool {
        q.has_quorum(|v| v.cluster != c)
    }

    #[test]
    fn two_equal_groups_survive_no_cluster_loss() {
        // Measured on real ZooKeeper 3.8 (research/zookeeper-netns-notes.md).
        let h = q(QuorumType::Hierarchical, &[&[1, 1, 1], &[1, 1, 1]]);
        assert!(h.has_quorum(|_| true));
        assert!(!lose_cluster(&h, 0) && !lose_cluster(&h, 1));
        let m = q(QuorumType::Majority, &[&[1, 1, 1], &[1, 1, 1]]);
        assert!(!lose_cluster(&m, 0) && !lose_cluster(&m, 1));
    }

    #[test]
    fn three_groups_with_a_tie_breaker_survive_any_cluster_loss() {
        let h = q(QuorumType::Hierarchical, &[&[1, 1, 1], &[1, 1, 1], &[1]]);
        assert!((0..3).all(|c| lose_cluster(&h, c)));
    }

    #[test]
    fn zero_weight_groups_are_discarded() {
        // Seed 000 step 8: the second cluster weighted out; the first keeps quorum alone.
        let h = q(QuorumType::Hierarchical, &[&[1, 1, 1], &[0, 0, 0]]);
        assert!(h.has_quorum(|v| v.cluster == 0));
        assert!(!h.has_quorum(|v| v.cluster == 1));
    }

    #[test]
    fn even_group_weight_needs_every_member() {
        let h = q(QuorumType::Hierarchical, &[&[1, 1], &[1, 1, 1], &[1]]);
        assert!(!h.has_quorum(|v| v.id != 1 && v.cluster != 2));
        assert!(h.has_quorum(|v| v.id != 1));
    }

    #[test]
    fn heavy_server_is_critical() {
        // Altinity: weight 10 on one server makes it mandatory for its group.
        let h = q(QuorumType::Hierarchical, &[&[10, 1, 1]]);
        assert!(!h.has_quorum(|v| v.id != 1));
        assert!(h.has_quorum(|v| v.id != 2));
    }

    #[test]
    fn majority_needs_strictly_more_than_half() {
        let m = q(QuorumType::Majority, &[&[1, 1], &[1, 1]]);
        assert!(!m.has_quorum(|v| v.id <= 2));
        assert!(m.has_quorum(|v| v.id <= 3));
    }
}
