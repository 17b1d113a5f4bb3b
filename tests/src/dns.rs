//! What each cluster's DNS answers, built from the objects that exist there:
//! the chart's headless Services (Kubernetes DNS: `<pod>.<svc>.<ns>` and
//! `<pod>.<svc>.<ns>.svc.<clusterDomain>` for local pods only), Straddle's
//! companion objects (`render::companions`: ServiceExports for MCS;
//! per-pod LoadBalancer and ExternalName Services for external-dns) and
//! what those publish to every cluster (MCS
//! `<pod>.<cluster>.<svc>.<ns>.svc.clusterset.local`, external-dns hostnames
//! of LoadBalancers), and with `cilium` the headless Services the policy
//! marks global with endpoint-slice sync (ClusterMesh copies the remote
//! EndpointSlices, hostnames included, so every cluster's DNS answers the
//! native per-pod names of all clusters). A Service with a pod selector answers with the pod's
//! IP (in the real system its ClusterIP or load balancer forwards there);
//! an ExternalName follows its target. A name nothing publishes does not
//! resolve.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::Value;
use straddle_compiler::render;
use straddle_compiler::spec::NetworkingMode;
use straddle_compiler::topology::Topology;

/// One pod and the headless Service that governs it.
#[derive(Debug, Clone)]
pub struct PodAddress {
    pub cluster: usize,
    pub namespace: String,
    pub headless: String,
    pub pod: String,
    pub ip: Ipv4Addr,
}

/// Name -> address, as one cluster resolves it.
pub type View = BTreeMap<String, Ipv4Addr>;

/// One view per cluster of `topo`.
pub fn views(topo: &Topology, pods: &[PodAddress]) -> Vec<View> {
    let domain = &topo.networking.cluster_domain;
    let pod_ip = |ci: usize, name: &str| {
        pods.iter()
            .find(|p| p.cluster == ci && p.pod == name)
            .map(|p| p.ip)
    };
    let companions: Vec<Vec<Value>> = (0..topo.clusters.len())
        .map(|ci| render::companions(topo, ci))
        .collect();
    let meta = |o: &Value| {
        (
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            o["metadata"]["name"].as_str().unwrap_or("").to_string(),
        )
    };
    let selected_pod = |o: &Value| {
        o["spec"]["selector"]["statefulset.kubernetes.io/pod-name"]
            .as_str()
            .map(str::to_string)
    };

    // Published to every cluster.
    let mut global = View::new();
    for p in pods {
        let cilium = topo.groups().any(|g| {
            g.mode == NetworkingMode::Cilium
                && g.headless == p.headless
                && g.namespace == p.namespace
        });
        if cilium {
            let (pod, svc, ns) = (&p.pod, &p.headless, &p.namespace);
            global.insert(format!("{pod}.{svc}.{ns}"), p.ip);
            global.insert(format!("{pod}.{svc}.{ns}.svc.{domain}"), p.ip);
        }
    }
    for (ci, objects) in companions.iter().enumerate() {
        let cluster = &topo.clusters[ci].name;
        for o in objects {
            let (ns, name) = meta(o);
            if o["kind"] == "ServiceExport" {
                for p in pods
                    .iter()
                    .filter(|p| p.cluster == ci && p.namespace == ns && p.headless == name)
                {
                    global.insert(
                        format!("{}.{cluster}.{name}.{ns}.svc.clusterset.local", p.pod),
                        p.ip,
                    );
                }
            }
            if o["kind"] == "Service" && o["spec"]["type"] == "LoadBalancer" {
                let host =
                    o["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"]
                        .as_str();
                if let (Some(host), Some(ip)) = (host, selected_pod(o).and_then(|p| pod_ip(ci, &p)))
                {
                    global.insert(host.to_string(), ip);
                }
            }
        }
    }

    (0..topo.clusters.len())
        .map(|ci| {
            let mut view = global.clone();
            for p in pods.iter().filter(|p| p.cluster == ci) {
                let (pod, svc, ns) = (&p.pod, &p.headless, &p.namespace);
                view.insert(format!("{pod}.{svc}.{ns}"), p.ip);
                view.insert(format!("{pod}.{svc}.{ns}.svc.{domain}"), p.ip);
            }
            for o in companions[ci].iter().filter(|o| o["kind"] == "Service") {
                let (ns, name) = meta(o);
                let ip = if o["spec"]["type"] == "ExternalName" {
                    o["spec"]["externalName"]
                        .as_str()
                        .and_then(|target| global.get(target).copied())
                } else {
                    selected_pod(o).and_then(|p| pod_ip(ci, &p))
                };
                if let Some(ip) = ip {
                    view.insert(format!("{name}.{ns}.svc.{domain}"), ip);
                }
            }
            view
        })
        .collect()
}
