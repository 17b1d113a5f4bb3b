//! The quorum model of a rolling change: which servers run with which
//! configuration, whether a quorum holds, and restart orders that keep one.
//!
//! A configuration is a [`Quorum`] (the same rules `straddle check` proves
//! survivability with); a server holding configuration `c` is recorded in
//! [`Running`] by `c`'s index in the plan's list of configurations.

use std::collections::{BTreeMap, BTreeSet};

use serde::ser::{SerializeStruct, Serializer};

use crate::quorum::Quorum;

/// The largest ensemble the overlap check enumerates (2^n subsets).
pub const MAX_SERVERS: usize = 16;

/// Running servers and the configuration (index into `configs`) each holds.
pub type Running = BTreeMap<u32, usize>;

fn has_quorum(q: &Quorum, live: &BTreeSet<u32>) -> bool {
    q.has_quorum(|v| live.contains(&v.id))
}

fn ids(q: &Quorum) -> impl Iterator<Item = u32> + '_ {
    q.voters.iter().map(|v| v.id)
}

/// Whether every quorum of `a` intersects every quorum of `b`: no split of
/// the servers gives each configuration a quorum of its own.
pub fn quorums_overlap(a: &Quorum, b: &Quorum) -> bool {
    let ids: Vec<u32> = ids(a)
        .chain(ids(b))
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
        !(has_quorum(a, &side) && has_quorum(b, &rest))
    })
}

/// Whether the running servers form a quorum in every configuration a
/// running server holds (each server elects and commits with its own).
pub fn has_quorum_everywhere(configs: &[Quorum], running: &Running) -> bool {
    let live: BTreeSet<u32> = running.keys().copied().collect();
    let held: BTreeSet<usize> = running.values().copied().collect();
    !held.is_empty() && held.iter().all(|&c| has_quorum(&configs[c], &live))
}

/// Restarts `id` into configuration `to`: what runs afterwards, if a quorum
/// holds while it is down and once it is back.
fn restart_one(configs: &[Quorum], running: &Running, id: u32, to: usize) -> Option<Running> {
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
pub fn rolling_order(
    configs: &[Quorum],
    running: &Running,
    ids: &[u32],
    to: usize,
    last: Option<u32>,
) -> Option<Vec<u32>> {
    struct Search<'c> {
        configs: &'c [Quorum],
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
pub fn keeps_quorum(configs: &[Quorum], running: &Running, order: &[u32], to: usize) -> bool {
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

/// `straddle plan -o json` writes a configuration as
/// `{name, quorum, servers: [[id, cluster, weight], ...]}`.
pub fn serialize_configs<S: Serializer>(configs: &[Quorum], s: S) -> Result<S::Ok, S::Error> {
    struct Config<'a>(&'a Quorum);
    impl serde::Serialize for Config<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let servers: Vec<(u32, usize, u32)> = self
                .0
                .voters
                .iter()
                .map(|v| (v.id, v.cluster, v.weight))
                .collect();
            let mut st = s.serialize_struct("ZkConfig", 3)?;
            st.serialize_field("name", &self.0.name)?;
            st.serialize_field("quorum", &self.0.kind)?;
            st.serialize_field("servers", &servers)?;
            st.end()
        }
    }
    s.collect_seq(configs.iter().map(Config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::Voter;
    use crate::spec::QuorumType;

    fn config(kind: QuorumType, servers: &[(u32, usize, u32)]) -> Quorum {
        Quorum {
            name: "t".into(),
            kind,
            voters: servers
                .iter()
                .map(|&(id, cluster, weight)| Voter {
                    id,
                    cluster,
                    weight,
                })
                .collect(),
        }
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
            QuorumType::Hierarchical,
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
            let configs = [from.clone(), config(QuorumType::Hierarchical, &servers)];
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
        use QuorumType::{Hierarchical, Majority};
        let three = config(Majority, &[(1, 0, 1), (2, 0, 1), (3, 0, 1)]);
        let four = config(Majority, &[(1, 0, 1), (2, 0, 1), (3, 0, 1), (4, 1, 1)]);
        let both = |kind, w: u32| {
            config(
                kind,
                &[
                    (1, 0, 1),
                    (2, 0, 1),
                    (3, 0, 1),
                    (4, 1, w),
                    (5, 1, w),
                    (6, 1, w),
                ],
            )
        };
        // 2 of 3 and 3 of 4 always meet; 2 of 3 and 4 of 6 need not.
        assert!(quorums_overlap(&three, &four));
        assert!(!quorums_overlap(&three, &both(Majority, 1)));
        // Hierarchical first-cluster (others weight 0) vs final, two groups.
        let first = both(Hierarchical, 0);
        let last = both(Hierarchical, 1);
        assert!(quorums_overlap(&three, &first));
        assert!(quorums_overlap(&first, &last));
    }

    #[test]
    fn configs_serialize_as_before() {
        let json = serde_json::to_string(&SerializeAll(vec![config(
            QuorumType::Hierarchical,
            &[(1, 0, 1), (4, 1, 0)],
        )]))
        .unwrap();
        assert_eq!(
            json,
            r#"[{"name":"t","quorum":"hierarchical","servers":[[1,0,1],[4,1,0]]}]"#
        );
    }

    struct SerializeAll(Vec<Quorum>);
    impl serde::Serialize for SerializeAll {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize_configs(&self.0, s)
        }
    }
}
