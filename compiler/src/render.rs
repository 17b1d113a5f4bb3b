//! `straddle render`: the companion objects a mutating webhook cannot create.
//!
//! - `mcs`: one `ServiceExport` per headless Service with pods in the cluster.
//! - `external-dns`: per node, a LoadBalancer Service (named after the pod,
//!   annotated with its external-dns hostname) in the node's own cluster, and
//!   an `ExternalName` Service of the same name pointing at that hostname in
//!   every other cluster: seed 000's topology without copy-pasted ELB names.
//! - `nodeport`: per broker of the cluster, a NodePort Service named
//!   `<pod>-nodeport` exposing `firstListenerPort + id` on every node (the
//!   chart's own `nodeport.enabled` must stay false: its Services number pods
//!   from 0 in every cluster and would claim the same NodePorts).
//! - `cilium` and `linkerd`: nothing; they are configured on the chart's own
//!   headless Services (annotations, labels, ports), which the policy sets.

use serde_json::{Value, json};

use crate::charts::{self, STRETCH_ANNOTATION};
use crate::spec::NetworkingMode;
use crate::topology::Topology;

fn labels(topo: &Topology) -> Value {
    json!({
        "app.kubernetes.io/managed-by": "straddle",
        STRETCH_ANNOTATION: topo.name,
    })
}

/// Companion objects for one cluster, in apply order.
pub fn companions(topo: &Topology, cluster: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for g in topo.groups() {
        match g.mode {
            NetworkingMode::Cilium | NetworkingMode::Linkerd => {}
            NetworkingMode::Nodeport => {
                let base = u32::from(topo.networking.first_listener_port);
                for n in g.nodes_in(cluster) {
                    let port = base + n.id;
                    out.push(json!({
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {
                            "name": format!("{}-nodeport", n.pod),
                            "namespace": g.namespace,
                            "labels": labels(topo),
                        },
                        "spec": {
                            "type": "NodePort",
                            "publishNotReadyAddresses": true,
                            "selector": {"statefulset.kubernetes.io/pod-name": n.pod},
                            "ports": [{
                                "name": "external",
                                "port": port,
                                "targetPort": port,
                                "nodePort": port,
                                "protocol": "TCP",
                            }],
                        },
                    }));
                }
            }
            NetworkingMode::Mcs => {
                if g.slices[cluster].replicas > 0 {
                    out.push(json!({
                        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                        "kind": "ServiceExport",
                        "metadata": {
                            "name": g.headless,
                            "namespace": g.namespace,
                            "labels": labels(topo),
                        },
                    }));
                }
            }
            NetworkingMode::ExternalDns => {
                let ports: Vec<Value> = charts::ports(g)
                    .into_iter()
                    .map(|(name, port)| json!({"name": name, "port": port, "targetPort": port, "protocol": "TCP"}))
                    .collect();
                for n in &g.nodes {
                    let metadata = |annotations: Option<Value>| {
                        let mut m = json!({
                            "name": n.pod,
                            "namespace": g.namespace,
                            "labels": labels(topo),
                        });
                        if let Some(a) = annotations {
                            m["annotations"] = a;
                        }
                        m
                    };
                    let service = if n.cluster == cluster {
                        json!({
                            "apiVersion": "v1",
                            "kind": "Service",
                            "metadata": metadata(Some(json!({"external-dns.alpha.kubernetes.io/hostname": n.address}))),
                            "spec": {
                                "type": "LoadBalancer",
                                // Quorum peers must reach a member before it is ready.
                                "publishNotReadyAddresses": true,
                                "selector": {"statefulset.kubernetes.io/pod-name": n.pod},
                                "ports": ports,
                            },
                        })
                    } else {
                        json!({
                            "apiVersion": "v1",
                            "kind": "Service",
                            "metadata": metadata(None),
                            "spec": {
                                "type": "ExternalName",
                                "externalName": n.address,
                            },
                        })
                    };
                    out.push(service);
                }
            }
        }
    }
    out
}
