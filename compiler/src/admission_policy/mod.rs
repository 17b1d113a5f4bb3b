//! The in-tree backend: one cluster's plan as `MutatingAdmissionPolicy` and
//! `ValidatingAdmissionPolicy` objects (`admissionregistration.k8s.io/v1`,
//! Kubernetes 1.36+) with their bindings. The API server applies the same
//! end values as the wasm module, in CEL: each mutation is a JSON Patch
//! computed from the object as sent, so applying it again changes nothing.
//! Checks become validations with the module's messages.
//!
//! Not every operation has a CEL form yet: edits inside a properties file
//! or a script (`Properties`, `ScriptLine`), a chart list moved behind
//! placeholders (`EnvValue::Prefixed`) and ports added to a Service
//! (`ServicePort`) are reported as [`Unsupported`], and the warnings for
//! objects the plan does not name have no equivalent.

use std::fmt;

use serde_json::{Value, json};
use straddle_policy::plan::{Check, EnvValue, EnvVar, ObjectKind, Op, PATTERN_INDEX};

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
    for o in objects.iter().filter(|o| o.cluster == cluster) {
        let target = Target::of(topo, o);
        match mutations(&target, o) {
            Ok(Some(m)) => out.extend(m),
            Ok(None) => {}
            Err(mut u) => unsupported.append(&mut u),
        }
        out.extend(validations(&target, o));
    }
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
            } => match env(k, container, *init, set, remove) {
                Ok((vars, expression)) => {
                    variables.extend(vars);
                    expressions.push(expression);
                }
                Err(e) => unsupported.push(format!("{}: {e}", t.label)),
            },
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
            Op::Properties { data_key, .. } => unsupported.push(format!(
                "{}: edits of the properties file in data key {data_key}",
                t.label
            )),
            Op::ScriptLine { prefix, .. } => unsupported.push(format!(
                "{}: the script line starting with {prefix}",
                t.label
            )),
            Op::ServicePort { name, .. } => {
                unsupported.push(format!("{}: adding the Service port {name}", t.label))
            }
        }
    }
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
    let policy = json!({
        "apiVersion": API,
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": t.policy, "labels": {"app.kubernetes.io/managed-by": "straddle"}},
        "spec": {
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "matchConstraints": {"resourceRules": t.rules(t.resource)},
            "matchConditions": [{"name": "this-object", "expression": condition(t, o)}],
            "variables": variables,
            "mutations": mutations,
        },
    });
    let binding = json!({
        "apiVersion": API,
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": t.policy, "labels": {"app.kubernetes.io/managed-by": "straddle"}},
        "spec": {"policyName": t.policy},
    });
    Ok(Some(vec![policy, binding]))
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

/// CEL for one env var as the module writes it: a plain map (values of
/// the API's Go types do not convert back to JSON in a patch value).
fn env_value(var: &EnvVar<'_>) -> Result<String, String> {
    let name = lit(&var.name);
    match &var.value {
        EnvValue::Literal(v) => Ok(format!("{{'name': dyn({name}), 'value': dyn({})}}", lit(v))),
        EnvValue::FieldRef(path) => Ok(format!(
            "{{'name': dyn({name}), 'valueFrom': dyn({{'fieldRef': {{'apiVersion': 'v1', 'fieldPath': {}}}}})}}",
            lit(path)
        )),
        EnvValue::Prefixed { .. } => Err(format!(
            "the chart list {} moved behind per-ordinal placeholders",
            var.name
        )),
    }
}

/// The variables and JSON Patch of an `Op::Env`, in the module's order:
/// removed names go (ascending indices, each shifted by the removals before
/// it), then each set variable is replaced in place, inserted before the
/// variable it must precede, or appended. Only names and indices are read
/// from the object; values are written whole.
fn env(
    k: usize,
    container: &str,
    init: bool,
    set: &[EnvVar<'_>],
    remove: &[std::borrow::Cow<'_, str>],
) -> Result<(Vec<Value>, String), String> {
    let list = if init { "initContainers" } else { "containers" };
    let spec = format!("object.spec.template.spec.{list}");
    let (c, names, gone, kept) = (
        format!("c{k}"),
        format!("names{k}"),
        format!("gone{k}"),
        format!("kept{k}"),
    );
    let set_names = set
        .iter()
        .map(|v| lit(&v.name))
        .collect::<Vec<_>>()
        .join(", ");
    let removed = remove
        .iter()
        .map(|r| match r.strip_suffix('*') {
            Some(prefix) => format!("n.startsWith({})", lit(prefix)),
            None => format!("n == {}", lit(r)),
        })
        .collect::<Vec<_>>();
    let goes = if removed.is_empty() {
        "false".to_string()
    } else {
        format!("({}) && !(n in [{set_names}])", removed.join(" || "))
    };
    let variables = vec![
        json!({"name": c, "expression": format!(
            "has({spec}) ? {spec}.map(c, c.name).indexOf({}) : -1", lit(container)
        )}),
        json!({"name": names, "expression": format!(
            "variables.{c} >= 0 && has({spec}[variables.{c}].env) ? {spec}[variables.{c}].env.map(e, e.name) : []"
        )}),
        // Indices of the entries to remove, ascending.
        json!({"name": gone, "expression": format!(
            "variables.{names}.filter(n, {goes}).map(n, variables.{names}.indexOf(n))"
        )}),
        json!({"name": kept, "expression": format!("variables.{names}.filter(n, !({goes}))")}),
    ];
    let base = format!("'/spec/template/spec/{list}/' + string(variables.{c}) + '/env'");
    let removals = format!(
        "variables.{gone}.map(i, {})",
        patch(
            "remove",
            &format!("{base} + '/' + string(i - size(variables.{gone}.filter(j, j < i)))"),
            None
        )
    );
    let mut replaces = Vec::new();
    let mut inserts = Vec::new();
    let mut appends = Vec::new();
    for var in set {
        let value = env_value(var)?;
        let at = format!("variables.{kept}.indexOf({})", lit(&var.name));
        let replace = patch(
            "replace",
            &format!("{base} + '/' + string({at})"),
            Some(&value),
        );
        let append = patch("add", &format!("{base} + '/-'"), Some(&value));
        replaces.push(format!("({at} >= 0 ? [{replace}] : [])"));
        match &var.before {
            Some(before) => {
                let b = format!("variables.{kept}.indexOf({})", lit(before));
                let insert = patch("add", &format!("{base} + '/' + string({b})"), Some(&value));
                inserts.push(format!(
                    "({at} >= 0 ? [] : {b} >= 0 ? [{insert}] : [{append}])"
                ));
            }
            None => appends.push(format!("({at} >= 0 ? [] : [{append}])")),
        }
    }
    // No env at all: the list is added with the set variables, in order.
    let whole = set
        .iter()
        .map(env_value)
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    let mut parts = vec![removals];
    parts.extend(replaces);
    parts.extend(inserts);
    parts.extend(appends);
    let expression = format!(
        "variables.{c} < 0 ? [] : !has({spec}[variables.{c}].env) ? [{}] : {}",
        patch("add", &base, Some(&format!("[{whole}]"))),
        parts.join(" + ")
    );
    Ok((variables, expression))
}

/// The validating policy and binding of one object's checks.
fn validations(t: &Target, o: &PlannedObject) -> Vec<Value> {
    let pod = "object.spec.template.spec";
    let containers = |init: bool| {
        let list = if init { "initContainers" } else { "containers" };
        format!("(has({pod}.{list}) ? {pod}.{list} : [])")
    };
    let mut object_rules = Vec::new();
    let mut scale_rules = Vec::new();
    let deny =
        |expression: String, message: String| json!({"expression": expression, "message": message});
    for check in &o.rule.checks {
        match check {
            Check::ScaleLimit { max, exact, field } => {
                let (ok, why) = if *exact {
                    (
                        format!("object.spec.replicas == {max}"),
                        format!(
                            "runs exactly {max} quorum members ({field}) and every cluster's \
                             server list names them; change {field} in the stretch spec, \
                             recompile and roll the policy out"
                        ),
                    )
                } else {
                    (
                        format!("object.spec.replicas <= {max}"),
                        format!(
                            "has {max} IDs for this role ({field}); more pods would take IDs \
                             from the next cluster's block"
                        ),
                    )
                };
                scale_rules.push(json!({
                    "expression": ok,
                    "messageExpression": format!(
                        "{} + ': scaling to ' + string(object.spec.replicas) + ' is refused: this cluster ' + {}",
                        lit(&t.label),
                        lit(&why)
                    ),
                }));
            }
            Check::Refuse { message } => {
                object_rules.push(deny("false".into(), format!("{}: {message}", t.label)))
            }
            Check::Indices { count, beyond } if !beyond.is_empty() => {
                if let Some(index) = &t.index {
                    object_rules.push(deny(
                        format!("{index} < {count}"),
                        format!("{}: index is beyond {count}: {beyond}", t.label),
                    ));
                }
            }
            Check::Indices { .. } => {}
            Check::Env {
                container,
                init,
                name,
                value,
                message,
            } => object_rules.push(deny(
                format!(
                    "!{}.exists(c, c.name == {} && has(c.env) && c.env.exists(e, e.name == {} && (has(e.value) ? e.value : '') != {}))",
                    containers(*init),
                    lit(container),
                    lit(name),
                    lit(value)
                ),
                format!("{}: {name} contradicts the stretch spec: {message}", t.label),
            )),
            Check::ContainerPort {
                container,
                name,
                port,
                message,
            } => object_rules.push(deny(
                format!(
                    "!{}.exists(c, c.name == {} && has(c.ports) && c.ports.exists(p, has(p.name) && p.name == {} && p.containerPort != {port}))",
                    containers(false),
                    lit(container),
                    lit(name)
                ),
                format!(
                    "{}: container port \"{name}\" differs from {port}, which the stretch spec needs: {message}",
                    t.label
                ),
            )),
            Check::NoContainer {
                name,
                init,
                message,
            } => object_rules.push(deny(
                format!("!{}.exists(c, c.name == {})", containers(*init), lit(name)),
                format!("{}: has container \"{name}\": {message}", t.label),
            )),
            Check::PortCount {
                container,
                prefix,
                min,
                max,
                message,
            } => {
                let count = format!(
                    "size(c.ports.filter(p, has(p.name) && p.name.startsWith({})))",
                    lit(prefix)
                );
                object_rules.push(deny(
                    format!(
                        "!{}.exists(c, c.name == {} && has(c.ports) && {count} > 0 && ({count} < {min} || {count} > {max}))",
                        containers(false),
                        lit(container)
                    ),
                    format!(
                        "{}: declares \"{prefix}*\" ports, one per node, outside {min} to {max}: {message}",
                        t.label
                    ),
                ));
            }
            Check::NoSecret { name, message } => {
                let n = lit(name);
                let env_uses = format!(
                    "c.env.exists(e, has(e.valueFrom) && has(e.valueFrom.secretKeyRef) && e.valueFrom.secretKeyRef.name == {n})"
                );
                let from_uses = format!(
                    "c.envFrom.exists(f, has(f.secretRef) && f.secretRef.name == {n})"
                );
                let container_uses = format!(
                    "(has(c.env) && {env_uses}) || (has(c.envFrom) && {from_uses})"
                );
                let volume_uses = format!(
                    "(has(v.secret) && v.secret.secretName == {n}) || (has(v.projected) && has(v.projected.sources) && v.projected.sources.exists(s, has(s.secret) && s.secret.name == {n}))"
                );
                object_rules.push(deny(
                    format!(
                        "!({}.exists(c, {container_uses}) || {}.exists(c, {container_uses}) || (has({pod}.volumes) && {pod}.volumes.exists(v, {volume_uses})))",
                        containers(false),
                        containers(true)
                    ),
                    format!("{}: uses Secret \"{name}\": {message}", t.label),
                ));
            }
            Check::NoVolume { name, message } => object_rules.push(deny(
                format!(
                    "!(has({pod}.volumes) && {pod}.volumes.exists(v, v.name == {}))",
                    lit(name)
                ),
                format!("{}: has volume \"{name}\": {message}", t.label),
            )),
        }
    }
    // The module denies a StatefulSet without the container an op edits.
    for op in &o.rule.ops {
        if let Op::Env {
            container, init, ..
        } = op
        {
            object_rules.push(deny(
                format!(
                    "{}.exists(c, c.name == {})",
                    containers(*init),
                    lit(container)
                ),
                format!(
                    "{}: container \"{container}\" not found; the object does not have the \
                     chart shape {} expects (check the chart kind and version in the stretch spec)",
                    t.label, o.rule.field
                ),
            ));
        }
    }
    let mut out = Vec::new();
    let mut policy = |suffix: &str, resource: String, rules: Vec<Value>| {
        if rules.is_empty() {
            return;
        }
        let name = format!("{}{suffix}", t.policy);
        out.push(json!({
            "apiVersion": API,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "straddle"}},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": t.rules(&resource)},
                "matchConditions": [{"name": "this-object", "expression": condition(t, o)}],
                "validations": rules,
            },
        }));
        out.push(json!({
            "apiVersion": API,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "straddle"}},
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        }));
    };
    policy("", t.resource.to_string(), object_rules);
    policy("-scale", format!("{}/scale", t.resource), scale_rules);
    out
}
