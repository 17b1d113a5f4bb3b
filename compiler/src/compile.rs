//! The pipeline: parse -> validate/allocate -> prove survivability -> plan -> module.

use sha2::{Digest, Sha256};
use straddle_policy::plan::{BundleInfo, Op, PlanBuilder};

use crate::charts::{self, DIGEST_ANNOTATION};
use crate::diag::{Diagnostic, Report};
use crate::quorum::{self, Survivability};
use crate::spec::StretchCluster;
use crate::topology::{self, Topology};

pub const COMPILER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A spec that passed every check.
#[derive(Debug)]
pub struct Checked {
    pub spec: StretchCluster,
    pub topology: Topology,
    pub survivability: Vec<Survivability>,
    /// Warnings only.
    pub report: Report,
}

/// Parses and checks a spec. `file` is used in messages only.
pub fn check(file: &str, source: &str) -> Result<Checked, Report> {
    let mut report = Report {
        file: file.to_string(),
        diagnostics: Vec::new(),
    };
    let spec: StretchCluster = match serde_saphyr::from_str(source) {
        Ok(spec) => spec,
        Err(e) => {
            let location = e
                .location()
                .map(|l| (l.line() as usize, l.column() as usize));
            let message = parse_message(&e);
            let path = match missing_field(&message) {
                Some(field) => missing_field_path(source, location, field),
                None => location
                    .and_then(|(line, col)| crate::diag::path_at(source, line, col))
                    .filter(|path| !path.is_empty())
                    .unwrap_or_else(|| DOCUMENT_PATH.to_string()),
            };
            report.diagnostics.push(Diagnostic {
                location,
                ..Diagnostic::error(path, message)
                    .fix("compare with `straddle schema` or the examples/ folder")
            });
            return Err(report);
        }
    };
    let topology = match topology::build(&spec) {
        Ok(t) => t,
        Err(diags) => {
            report.diagnostics = diags;
            report.locate(source);
            return Err(report);
        }
    };
    let survivability: Vec<Survivability> = quorum::quorums(&topology)
        .iter()
        .map(|q| quorum::analyse(&topology, q))
        .collect();
    report.diagnostics = survivability_findings(&spec, &topology, &survivability);
    report.locate(source);
    if report.has_errors() {
        return Err(report);
    }
    Ok(Checked {
        spec,
        topology,
        survivability,
        report,
    })
}

/// Data, not just the quorum: with brokers in fewer than three clusters, a
/// replication-factor-3 topic keeps two replicas of some partitions in one
/// cluster, and losing it leaves them below `min.insync.replicas=2`, so
/// `acks=all` writes to them stop (seen with real Kafka).
fn broker_spread(topo: &Topology) -> Option<Diagnostic> {
    let k = topo.kafka.as_ref()?;
    let brokers = k.brokers.as_ref().or(k
        .controllers
        .as_ref()
        .filter(|c| matches!(c.role, crate::topology::Role::Controller { combined: true })))?;
    let clusters: Vec<&str> = brokers
        .slices
        .iter()
        .filter(|s| s.replicas > 0)
        .map(|s| topo.clusters[s.cluster].name.as_str())
        .collect();
    if clusters.is_empty() || clusters.len() >= 3 {
        return None;
    }
    Some(
        Diagnostic::warning(
            format!("{}.replicas", brokers.field),
            format!(
                "brokers run in {} cluster(s) ({}): a topic with replication factor 3 keeps two \
                 replicas of some partitions in one cluster, and losing that cluster leaves \
                 them below min.insync.replicas=2, so acks=all writes to them stop, although \
                 the quorum survives",
                clusters.len(),
                clusters.join(", ")
            ),
        )
        .fix("run brokers in at least three clusters, so that rack-aware placement (broker.rack) puts one replica in each"),
    )
}

/// `X` of serde's "missing field `X`".
fn missing_field(message: &str) -> Option<&str> {
    let (field, _) = message.strip_prefix("missing field `")?.split_once('`')?;
    Some(field)
}

/// The path of a field missing from the mapping that starts at `location`.
/// The parser points at the mapping's start: for a block mapping that is its
/// first key (whose parent is the mapping), for a flow mapping the `{` (the
/// mapping is the last field before it).
fn missing_field_path(source: &str, location: Option<(usize, usize)>, field: &str) -> String {
    let Some((line, col)) = location else {
        return field.to_string();
    };
    let at = crate::diag::path_at(source, line, col).unwrap_or_default();
    let flow = source
        .lines()
        .nth(line.saturating_sub(1))
        .and_then(|l| l.chars().nth(col.saturating_sub(1)))
        == Some('{');
    let parent = if flow {
        at.as_str()
    } else {
        // Drop the first key's own segment: `.key` (or a `[i]` item index).
        let cut = at.rfind(['.', '[']).unwrap_or(0);
        &at[..cut]
    };
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// The path of errors about the whole spec document.
pub const DOCUMENT_PATH: &str = "(document)";

/// serde-saphyr renders a source snippet; keep the first line for our format.
fn parse_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let mut first = text.lines().next().unwrap_or("invalid YAML").trim();
    first = first.strip_prefix("error: ").unwrap_or(first);
    // The location is printed in front already.
    if first.starts_with("line ")
        && let Some((_, rest)) = first.split_once(": ")
    {
        first = rest;
    }
    first.to_string()
}

fn describe_losses(s: &Survivability, keep: bool) -> String {
    s.cluster_losses
        .iter()
        .filter(|l| l.keeps_quorum == keep)
        .map(|l| l.cluster.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn survivability_findings(
    spec: &StretchCluster,
    topo: &Topology,
    all: &[Survivability],
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let must = spec.spec.must_survive.clone().unwrap_or_default();
    let tie_breaker = "run the quorum in at least three clusters (a third, small cluster can be a tie-breaker with a single server or controller)";
    for s in all {
        let field = if s.quorum == "zookeeper" {
            "spec.zookeeper"
        } else {
            "spec.kafka.controllers"
        };
        if !s.healthy {
            out.push(
                Diagnostic::error(
                    format!("{field}.replicas"),
                    format!("{} has no quorum even with every node up", s.quorum),
                )
                .fix("check the weights and replica counts"),
            );
            continue;
        }
        let breaking = describe_losses(s, false);
        if must.any_cluster && !s.survives_any_cluster {
            out.push(
                Diagnostic::error(
                    "spec.mustSurvive.anyCluster",
                    format!(
                        "{} ({}) loses quorum when any of these clusters is lost: {breaking}",
                        s.quorum, s.kind
                    ),
                )
                .fix(tie_breaker),
            );
        }
        for (i, name) in must.clusters.iter().enumerate() {
            if let Some(l) = s.cluster_losses.iter().find(|l| &l.cluster == name)
                && !l.keeps_quorum
            {
                out.push(
                    Diagnostic::error(
                        format!("spec.mustSurvive.clusters[{i}]"),
                        format!("{} ({}) loses quorum when cluster {name:?} is lost", s.quorum, s.kind),
                    )
                    .fix(format!("move voters out of {name:?} or add a cluster, so that the others hold a quorum alone")),
                );
            }
        }
        if must.any_node && !s.survives_any_node {
            out.push(
                Diagnostic::error(
                    "spec.mustSurvive.anyNode",
                    format!("{} ({}) loses quorum when any of these nodes is lost: ids {:?}", s.quorum, s.kind, s.critical_nodes),
                )
                .fix("use at least three voters per group with equal weights, or an odd number of voters"),
            );
        }
        if !s.survives_any_cluster && !must.any_cluster {
            let kept = describe_losses(s, true);
            let message = if kept.is_empty() {
                format!(
                    "{} ({}) survives the loss of NO whole cluster: losing any of {breaking} stops it",
                    s.quorum, s.kind
                )
            } else {
                format!(
                    "{} ({}) survives losing {kept}, but not {breaking}",
                    s.quorum, s.kind
                )
            };
            out.push(Diagnostic::warning(format!("{field}.replicas"), message).fix(tie_breaker));
        }
    }
    if must.any_cluster {
        out.extend(broker_spread(topo));
    }
    if let Some(zk) = &topo.zookeeper
        && zk.stage != crate::spec::RolloutStage::Final
    {
        let voting: Vec<&str> = topo.clusters[..zk.voting_clusters]
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        out.push(
            Diagnostic::warning(
                "spec.zookeeper.quorum.stage",
                format!(
                    "rollout stage {}: only the servers of {} vote; move on (see `straddle plan`) once every cluster's servers follow the leader",
                    zk.stage.as_str(),
                    voting.join(", ")
                ),
            ),
        );
    }
    out
}

/// The plan bytes and their digest.
pub fn plan(topo: &Topology) -> (Vec<u8>, String) {
    let (objects, digest) = planned(topo);
    let mut builder = PlanBuilder::new();
    for o in objects {
        builder.insert(
            &topo.clusters[o.cluster].name,
            o.kind,
            &o.namespace,
            &o.name,
            &o.rule,
        );
    }
    let bundle = BundleInfo {
        name: topo.name.clone().into(),
        spec_digest: digest.clone().into(),
        clusters: topo
            .clusters
            .iter()
            .map(|c| c.name.clone().into())
            .collect(),
        namespaces: topo.namespaces().into_iter().map(Into::into).collect(),
        compiler_version: COMPILER_VERSION.into(),
        watches: charts::watches(topo),
    };
    (builder.finish(&bundle), digest)
}

/// Every object's rule, each stamped with the plan digest (the first op),
/// and the digest: what every backend applies.
pub fn planned(topo: &Topology) -> (Vec<charts::PlannedObject>, String) {
    let mut objects = charts::plan_objects(topo);
    let mut unsigned = PlanBuilder::new();
    for o in &objects {
        unsigned.insert(
            &topo.clusters[o.cluster].name,
            o.kind,
            &o.namespace,
            &o.name,
            &o.rule,
        );
    }
    let mut h = Sha256::new();
    h.update(topo.name.as_bytes());
    h.update([0]);
    h.update(unsigned.rules_bytes());
    let digest = format!("sha256:{:x}", h.finalize());
    for o in &mut objects {
        o.rule.ops.insert(
            0,
            Op::Annotation {
                key: DIGEST_ANNOTATION.into(),
                value: digest.clone().into(),
            },
        );
    }
    (objects, digest)
}

/// The policy module: the prebuilt engine with the plan embedded.
pub fn module(topo: &Topology) -> anyhow::Result<Vec<u8>> {
    let (plan, _) = plan(topo);
    straddle_policy_artifact::embed::embed_plan(straddle_policy_artifact::POLICY_TEMPLATE, &plan)
}
