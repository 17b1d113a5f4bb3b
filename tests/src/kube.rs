//! What Kubernetes does with a StatefulSet before a container starts: the
//! pod's name and the container's environment.
//!
//! Rules (Kubernetes API reference, `EnvVar` and "Define dependent
//! environment variables",
//! <https://kubernetes.io/docs/tasks/inject-data-application/define-interdependent-environment-variables/>):
//! - entries are evaluated in order; a literal `value` may reference an
//!   earlier variable of the same container as `$(NAME)`; `$$` escapes a
//!   `$`; a reference to an unknown variable is left as written;
//! - `valueFrom.fieldRef` reads the pod (`metadata.name`,
//!   `metadata.namespace`, `status.podIP`, `status.hostIP`, and the labels
//!   the StatefulSet controller sets: pod index and pod name);
//! - a StatefulSet pod is named `<statefulset>-<ordinal>` and its
//!   `HOSTNAME` is that name.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The facts about one pod that its container environment can read.
#[derive(Debug, Clone)]
pub struct PodFacts {
    pub name: String,
    /// The ordinal, which the StatefulSet controller also writes into the
    /// label `apps.kubernetes.io/pod-index`.
    pub index: u32,
    pub namespace: String,
    pub pod_ip: String,
    pub host_ip: String,
}

impl PodFacts {
    /// Pod `<statefulset>-<ordinal>` of a StatefulSet.
    pub fn of(sts: &Value, namespace: &str, ordinal: u32) -> PodFacts {
        let name = sts["metadata"]["name"].as_str().unwrap_or_default();
        PodFacts {
            name: format!("{name}-{ordinal}"),
            index: ordinal,
            namespace: namespace.to_string(),
            pod_ip: "192.0.2.10".into(),
            host_ip: "192.0.2.20".into(),
        }
    }
}

/// The container named `name` (or init container, with `init`).
pub fn container<'a>(sts: &'a Value, name: &str, init: bool) -> Result<&'a Value> {
    let list = if init { "initContainers" } else { "containers" };
    sts["spec"]["template"]["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .with_context(|| {
            format!(
                "{}: no {list} entry named {name}",
                sts["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
}

/// Expands `$(NAME)` references as the kubelet does.
pub fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(')
            && let Some(end) = tail.find(')')
            && let Some(v) = env.get(&tail[..end])
        {
            out.push_str(v);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The environment of `container` in `pod`, `HOSTNAME` included.
/// `secret(name, key)` supplies `secretKeyRef` values (Secrets are per
/// install; callers decide what stands for them).
pub fn environment(
    container: &Value,
    pod: &PodFacts,
    secret: &dyn Fn(&str, &str) -> String,
) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    env.insert("HOSTNAME".to_string(), pod.name.clone());
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"]
            .as_str()
            .with_context(|| format!("{}: an env entry has no name", pod.name))?;
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &env)
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => pod.name.clone(),
                "metadata.namespace" => pod.namespace.clone(),
                "status.podIP" => pod.pod_ip.clone(),
                "status.hostIP" => pod.host_ip.clone(),
                "metadata.labels['apps.kubernetes.io/pod-index']" => pod.index.to_string(),
                "metadata.labels['statefulset.kubernetes.io/pod-name']" => pod.name.clone(),
                other => bail!("{}: env {name}: fieldRef {other} is not modelled", pod.name),
            }
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let get = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
            secret(get("name"), get("key"))
        } else if e.get("value").is_none() && e.get("valueFrom").is_none() {
            String::new()
        } else {
            bail!(
                "{}: env {name} has a source this model does not know: {e}",
                pod.name
            )
        };
        env.insert(name.to_string(), value);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> PodFacts {
        PodFacts {
            name: "kafka-broker-10".into(),
            index: 10,
            namespace: "kafka".into(),
            pod_ip: "10.0.0.1".into(),
            host_ip: "10.1.0.1".into(),
        }
    }

    /// Kubernetes: `$(VAR)` of an earlier variable expands, `$$(VAR)` stays
    /// literal (one `$` removed), an unknown reference is left as written.
    #[test]
    fn dependent_variables_expand_in_order() {
        let c = json!({"env": [
            {"name": "REAL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAME", "value": "$(REAL).east"},
            {"name": "ESCAPED", "value": "$$(REAL)"},
            {"name": "UNKNOWN", "value": "$(LATER)-$(REAL"},
            {"name": "LATER", "value": "x"},
            {"name": "IPS", "value": "$(POD_IP)"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ]});
        let env = environment(&c, &pod(), &|_, _| unreachable!()).unwrap();
        assert_eq!(env["POD_NAME"], "kafka-broker-10.east");
        assert_eq!(env["ESCAPED"], "$(REAL)");
        assert_eq!(env["UNKNOWN"], "$(LATER)-$(REAL");
        assert_eq!(env["IPS"], "$(POD_IP)", "a later variable is not visible");
        assert_eq!(env["POD_IP"], "10.0.0.1");
        assert_eq!(env["HOSTNAME"], "kafka-broker-10");
    }

    #[test]
    fn secrets_come_from_the_caller_and_unknown_sources_are_errors() {
        let c = json!({"env": [
            {"name": "ID", "valueFrom": {"secretKeyRef": {"name": "kafka-kraft", "key": "cluster-id"}}},
        ]});
        let env = environment(&c, &pod(), &|n, k| format!("{n}/{k}")).unwrap();
        assert_eq!(env["ID"], "kafka-kraft/cluster-id");
        let bad = json!({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]});
        let err = environment(&bad, &pod(), &|_, _| String::new()).unwrap_err();
        assert!(err.to_string().contains("spec.nodeName"), "{err}");
    }
}
