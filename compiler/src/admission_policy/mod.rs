//! The in-tree backend: one cluster's plan as `MutatingAdmissionPolicy` and
//! `ValidatingAdmissionPolicy` objects (`admissionregistration.k8s.io/v1`,
//! Kubernetes 1.36+) with their bindings. The API server applies the same
//! end values as the wasm module, in CEL: each mutation is a JSON Patch
//! computed from the object as sent, so applying it again changes nothing.
//! Checks become validations with the module's messages.
//!
//! Every operation of the plan has a CEL form (env edits in `env`, edits
//! inside a properties file or a script in `text`, checks in `validate`).
//! The warnings for chart objects the plan does not name are validations
//! bound with the `Warn` action (`watch`). What has no CEL form: a few edge
//! cases of the env edit that only a hand-edited object reaches (see
//! `env`). [`Unsupported`] stays for operations a newer plan may add.

use std::fmt;

use serde_json::{Value, json};
use straddle_policy::plan::{Check, ObjectKind, Op, PATTERN_INDEX};

mod env;
mod text;
mod validate;
mod watch;

use validate::validations;

use crate::charts::PlannedObject;
use crate::compile;
use crate::topology::Topology;

/// Operations of the plan that this backend cannot express yet.
#[derive(Debug)]
pub struct Unsupported(pub Vec<String>);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "this stretch needs operations the admission-policy backend cannot express yet \
             (use the webhook for it):"
        )?;
        for u in &self.0 {
            writeln!(f, "  {u}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Unsupported {}

const API: &str = "admissionregistration.k8s.io/v1";

/// The policies and bindings for cluster `cluster`.
pub fn policies(topo: &Topology, cluster: usize) -> Result<Vec<Value>, Unsupported> {
    let (objects, _) = compile::planned(topo);
    let mut out = Vec::new();
    let mut unsupported = Vec::new();
    let mut named = Vec::new();
    for o in objects.iter().filter(|o| o.cluster == cluster) {
        let target = Target::of(topo, o);
        match mutations(&target, o) {
            Ok(Some(m)) => out.extend(m),
            Ok(None) => {}
            Err(mut u) => unsupported.append(&mut u),
        }
        out.extend(validations(&target, o));
        named.push((target.resource, condition(&target, o)));
    }
    out.extend(watch::warnings(topo, &named));
    if unsupported.is_empty() {
        Ok(out)
    } else {
        Err(Unsupported(unsupported))
    }
}

/// One planned object as the policies match it.
struct Target {
    /// A DNS-1123 name for the policies of this object.
    policy: String,
    /// `Kind ns/name` for messages, as the module writes it.
    label: String,
    group: &'static str,
    resource: &'static str,
    /// CEL: is the request for this object (and, for a per-index name, its index).
    condition: String,
    /// CEL for the per-index object's index (`PATTERN_INDEX` names).
    index: Option<String>,
}

impl Target {
    fn of(topo: &Topology, o: &PlannedObject) -> Target {
        let (group, resource) = match o.kind {
            ObjectKind::StatefulSet => ("apps", "statefulsets"),
            ObjectKind::Service => ("", "services"),
            ObjectKind::ConfigMap => ("", "configmaps"),
            ObjectKind::NetworkPolicy => ("networking.k8s.io", "networkpolicies"),
        };
        let kind = o.kind.as_str().to_lowercase();
        let policy = dns_name(&format!(
            "straddle-{}-{kind}-{}-{}",
            topo.name,
            o.namespace,
            o.name.replace(PATTERN_INDEX, "n")
        ));
        let namespace = format!("request.namespace == {}", lit(&o.namespace));
        let (condition, index) = match o.name.split_once(PATTERN_INDEX) {
            None => (
                format!("{namespace} && request.name == {}", lit(&o.name)),
                None,
            ),
            Some((prefix, suffix)) => {
                let digits = format!(
                    "request.name.substring({}, size(request.name) - {})",
                    prefix.len(),
                    suffix.len()
                );
                let condition = format!(
                    "{namespace} && request.name.startsWith({}) && request.name.endsWith({}) \
                     && size(request.name) > {} && {digits}.matches('^[0-9]+$')",
                    lit(prefix),
                    lit(suffix),
                    prefix.len() + suffix.len(),
                );
                (condition, Some(format!("int({digits})")))
            }
        };
        Target {
            policy,
            label: format!("{} {}/{}", o.kind.as_str(), o.namespace, o.name),
            group,
            resource,
            condition,
            index,
        }
    }

    fn rules(&self, resource: &str) -> Value {
        json!([{
            "apiGroups": [self.group],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": [resource],
        }])
    }
}

/// A CEL string literal.
fn lit(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// A JSON Pointer token (RFC 6901).
fn token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn dns_name(s: &str) -> String {
    let mut out: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(253)
        .collect();
    while out.ends_with(['-', '.']) {
        out.pop();
    }
    out
}

/// `JSONPatch{...}` in CEL; `path` and `value` are CEL expressions.
fn patch(op: &str, path: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("JSONPatch{{op: {}, path: {path}, value: {v}}}", lit(op)),
        None => format!("JSONPatch{{op: {}, path: {path}}}", lit(op)),
    }
}

/// The mutating policy and binding of one object (`None`: nothing to set).
fn mutations(t: &Target, o: &PlannedObject) -> Result<Option<Vec<Value>>, Vec<String>> {
    let mut variables = Vec::new();
    let mut expressions = Vec::new();
    let mut unsupported = Vec::new();
    let mut annotations = Vec::new();
    let mut labels = Vec::new();
    let mut selector = Vec::new();
    let mut ports = Vec::new();
    for (k, op) in o.rule.ops.iter().enumerate() {
        match op {
            Op::Annotation { key, value } => annotations.push((key.to_string(), value.to_string())),
            Op::Label { key, value } => labels.push((key.to_string(), value.to_string())),
            Op::Replicas(n) => expressions.push(format!(
                "[{}]",
                patch("add", &lit("/spec/replicas"), Some(&n.to_string()))
            )),
            // Start 0 is what an absent `ordinals` means: left absent, as the module does.
            Op::OrdinalsStart(0) => expressions.push(format!(
                "has(object.spec.ordinals) && has(object.spec.ordinals.start) && object.spec.ordinals.start != 0 ? [{}] : []",
                patch("replace", &lit("/spec/ordinals/start"), Some("0"))
            )),
            Op::OrdinalsStart(n) => expressions.push(format!(
                "[{}]",
                patch(
                    "add",
                    &lit("/spec/ordinals"),
                    Some(&format!("{{'start': {n}}}"))
                )
            )),
            Op::PublishNotReadyAddresses(b) => expressions.push(format!(
                "[{}]",
                patch("add", &lit("/spec/publishNotReadyAddresses"), Some(&b.to_string()))
            )),
            Op::Env {
                container,
                init,
                set,
                remove,
            } => {
                let (vars, expression) = env::env(k, container, *init, set, remove);
                variables.extend(vars);
                expressions.push(expression);
            }
            Op::PodIndex {
                selector: key,
                label,
                pod_prefix,
                start,
            } => {
                let Some(index) = &t.index else {
                    unsupported.push(format!("{}: PodIndex on a named object", t.label));
                    continue;
                };
                // A value computed in CEL, marked for `cel_map`.
                let pod = format!("\u{0}{} + string({start} + {index})", lit(pod_prefix));
                selector.push((key.to_string(), pod.clone()));
                labels.push((label.to_string(), pod));
            }
            Op::IndexedPort { name, base } => {
                let Some(index) = &t.index else {
                    unsupported.push(format!("{}: IndexedPort on a named object", t.label));
                    continue;
                };
                let j = format!(
                    "object.spec.ports.map(p, has(p.name) ? p.name : '').indexOf({})",
                    lit(name)
                );
                let at = |field: &str| format!("'/spec/ports/' + string({j}) + '/{field}'");
                let port = format!("{base} + {index}");
                expressions.push(format!(
                    "has(object.spec.ports) && {j} >= 0 ? [{}, {}] : []",
                    patch("replace", &at("targetPort"), Some(&port)),
                    patch("add", &at("nodePort"), Some(&port)),
                ));
            }
            Op::Properties { data_key, edits } => {
                let (vars, expression) = text::properties(k, data_key, edits);
                variables.extend(vars);
                expressions.push(expression);
            }
            Op::ScriptLine {
                container,
                prefix,
                line,
            } => {
                if prefix.is_empty() || prefix.trim() != prefix.as_ref() {
                    unsupported.push(format!(
                        "{}: a script line prefix with surrounding spaces",
                        t.label
                    ));
                    continue;
                }
                let (vars, expression) = text::script_line(k, container, prefix, line);
                variables.extend(vars);
                expressions.push(expression);
            }
            Op::ServicePort { name, port } => ports.push((name.to_string(), *port)),
        }
    }
    expressions.extend(service_ports(&ports));
    if !unsupported.is_empty() {
        return Err(unsupported);
    }
    for (field, pointer, wanted) in [
        (
            "object.metadata.annotations",
            "/metadata/annotations",
            &annotations,
        ),
        ("object.metadata.labels", "/metadata/labels", &labels),
        ("object.spec.selector", "/spec/selector", &selector),
    ] {
        expressions.extend(cel_map(field, pointer, wanted));
    }
    if expressions.is_empty() {
        return Ok(None);
    }
    let mutations: Vec<Value> = expressions
        .into_iter()
        .map(|e| json!({"patchType": "JSONPatch", "jsonPatch": {"expression": e}}))
        .collect();
    let policy = object(
        "MutatingAdmissionPolicy",
        &t.policy,
        json!({
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "matchConstraints": {"resourceRules": t.rules(t.resource)},
            "matchConditions": [{"name": "this-object", "expression": condition(t, o)}],
            "variables": variables,
            "mutations": mutations,
        }),
    );
    let binding = object(
        "MutatingAdmissionPolicyBinding",
        &t.policy,
        json!({"policyName": t.policy}),
    );
    Ok(Some(vec![policy, binding]))
}

/// An `admissionregistration.k8s.io/v1` object of `kind` that Straddle manages.
fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": API,
        "kind": kind,
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "straddle"}},
        "spec": spec,
    })
}

/// A string map (`metadata.annotations`, `metadata.labels`,
/// `spec.selector`) that must hold `wanted`: each key added, or the whole
/// map when there is none. A value with a leading NUL is a CEL expression.
fn cel_map(field: &str, pointer: &str, wanted: &[(String, String)]) -> Option<String> {
    if wanted.is_empty() {
        return None;
    }
    let value = |v: &str| match v.strip_prefix('\u{0}') {
        Some(expr) => expr.to_string(),
        None => lit(v),
    };
    let whole = wanted
        .iter()
        .map(|(k, v)| format!("{}: {}", lit(k), value(v)))
        .collect::<Vec<_>>()
        .join(", ");
    let each = wanted
        .iter()
        .map(|(k, v)| {
            patch(
                "add",
                &lit(&format!("{pointer}/{}", token(k))),
                Some(&value(v)),
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "!has({field}) ? [{}] : [{each}]",
        patch("add", &lit(pointer), Some(&format!("{{{whole}}}")))
    ))
}

/// The match condition: this object, and for a per-index name an index
/// the rule covers (`Indices` with no refusal message).
fn condition(t: &Target, o: &PlannedObject) -> String {
    let mut c = t.condition.clone();
    for check in &o.rule.checks {
        if let (Check::Indices { count, beyond }, Some(index)) = (check, &t.index)
            && beyond.is_empty()
        {
            c.push_str(&format!(" && {index} < {count}"));
        }
    }
    c
}

/// The Service ports the plan adds where the Service does not declare the
/// port (a declared port is left as the chart wrote it): appended in the
/// plan's order, or the whole list when there is none.
fn service_ports(ports: &[(String, u16)]) -> Option<String> {
    if ports.is_empty() {
        return None;
    }
    let entry = |name: &str, port: u16| {
        format!(
            "{{'name': dyn({}), 'port': dyn({port}), 'protocol': dyn('TCP'), 'targetPort': dyn({port})}}",
            lit(name)
        )
    };
    let whole = ports
        .iter()
        .map(|(n, p)| entry(n, *p))
        .collect::<Vec<_>>()
        .join(", ");
    let each = ports
        .iter()
        .map(|(n, p)| {
            format!(
                "(object.spec.ports.exists(p, p.port == {p}) ? [] : [{}])",
                patch("add", &lit("/spec/ports/-"), Some(&entry(n, *p)))
            )
        })
        .collect::<Vec<_>>()
        .join(" + ");
    Some(format!(
        "!has(object.spec.ports) ? [{}] : {each}",
        patch("add", &lit("/spec/ports"), Some(&format!("[{whole}]")))
    ))
}
