//! review(): the decision for one admission request.
//!
//! Every op in a rule states an end value. The engine compares the object
//! with those values and patches only the differences, which makes review
//! idempotent (a mutated object yields no patch) and independent of the
//! operation (CREATE and UPDATE give the same values; the old object is never
//! consulted).

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::k8s;
use crate::patch::{PatchWriter, escape_token, json_string, push_json_string};
use crate::plan::{BundleInfo, Check, EnvValue, EnvVar, ObjectKind, ObjectRule, Op, Plan};
use crate::props;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

/// One admission request, reduced to what the policy needs (mirrors the WIT record).
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub cluster: &'a str,
    pub operation: Operation,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: &'a str,
    pub old_object: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// An RFC 6902 JSON Patch, as a JSON array.
    Patch(String),
    Deny(String),
    /// Admit unchanged, with a warning for the user (kubectl and Helm print it).
    Warn(String),
}

/// Reviews one request against a plan given as bytes.
pub fn review(plan: &[u8], req: &Request<'_>) -> Verdict {
    match Plan::parse(plan) {
        Ok(plan) => review_plan(&plan, req),
        Err(e) => Verdict::Deny(format!("policy module has no valid plan: {e}")),
    }
}

/// Reviews one request against a parsed plan.
pub fn review_plan(plan: &Plan<'_>, req: &Request<'_>) -> Verdict {
    if matches!(req.operation, Operation::Delete | Operation::Connect) {
        return Verdict::Allow;
    }
    // A Scale names the StatefulSet it resizes.
    let is_scale = req.kind == "Scale";
    let kind = if is_scale {
        ObjectKind::StatefulSet
    } else {
        match ObjectKind::parse(req.kind) {
            Some(kind) => kind,
            None => return Verdict::Allow,
        }
    };
    let target = Target {
        kind,
        namespace: req.namespace,
        name: req.name,
        cluster: req.cluster,
    };
    let found = match plan.lookup(req.cluster, kind, req.namespace, req.name) {
        Ok(Some(rule)) => Ok(Some((rule, None))),
        Ok(None) => per_index(plan, req, kind),
        Err(e) => Err(e),
    };
    let (rule, index) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return unnamed_object(plan, req, kind),
        Err(e) => return Verdict::Deny(format!("policy module has no valid plan: {e}")),
    };
    for check in &rule.checks {
        if let (Check::Indices { count, beyond }, Some(i)) = (check, index)
            && i >= *count
        {
            if beyond.is_empty() {
                return unnamed_object(plan, req, kind);
            }
            return Verdict::Deny(format!("{target}: index {i} is beyond {count}: {beyond}"));
        }
    }
    if is_scale {
        return scale(&target, &rule, req.object);
    }
    for check in &rule.checks {
        if let Check::Refuse { message } = check {
            return Verdict::Deny(format!("{target}: {message}"));
        }
    }
    let result = match kind {
        ObjectKind::StatefulSet => statefulset(&target, &rule, req.object),
        ObjectKind::Service => service(&target, &rule, req.object, index),
        ObjectKind::ConfigMap => configmap(&target, &rule, req.object),
        // Only refused (above) or left alone.
        ObjectKind::NetworkPolicy => Ok(PatchWriter::new()),
    };
    match result {
        Ok(patch) => patch.finish().map_or(Verdict::Allow, Verdict::Patch),
        Err(message) => Verdict::Deny(message),
    }
}

/// The rule of a per-index object (`<prefix>-<i>-<suffix>`), and its index.
fn per_index<'p>(
    plan: &Plan<'p>,
    req: &Request<'_>,
    kind: ObjectKind,
) -> Result<Option<(ObjectRule<'p>, Option<u32>)>, crate::plan::PlanError> {
    let Some((pattern, index)) = crate::plan::pattern_of(req.name) else {
        return Ok(None);
    };
    let rule = plan.lookup(req.cluster, kind, req.namespace, &pattern)?;
    Ok(rule.map(|rule| (rule, Some(index))))
}

/// Objects the spec does not name pass untouched, but only in a member
/// cluster: a host configured with a cluster the bundle does not know must
/// not admit anything, or it would run chart objects unmutated. One that
/// looks like part of a chart the spec stretches gets a warning.
fn unnamed_object(plan: &Plan<'_>, req: &Request<'_>, kind: ObjectKind) -> Verdict {
    let cluster = req.cluster;
    match plan.bundle() {
        Ok(b) if b.clusters.iter().any(|c| c == cluster) => {
            watched(&b, req, kind).map_or(Verdict::Allow, Verdict::Warn)
        }
        Ok(b) => {
            let known: Vec<&str> = b.clusters.iter().map(|c| c.as_ref()).collect();
            Verdict::Deny(format!(
                "cluster \"{cluster}\" is not a member of stretch \"{}\" (spec.clusters: {}); \
                 start the webhook with --cluster set to one of them, or add the cluster to \
                 spec.clusters and recompile",
                b.name,
                known.join(", ")
            ))
        }
        Err(e) => Verdict::Deny(format!("policy module has no valid plan: {e}")),
    }
}

/// The warning for an unnamed object that carries the labels of a chart the
/// spec stretches (see [`Watch`]).
fn watched(bundle: &BundleInfo<'_>, req: &Request<'_>, kind: ObjectKind) -> Option<String> {
    if bundle.watches.is_empty() || req.kind == "Scale" {
        return None;
    }
    let object: k8s::Object = serde_json::from_str(req.object).ok()?;
    let labels = object.metadata.labels?;
    let watch = bundle
        .watches
        .iter()
        .find(|w| labels.get(&w.label) == Some(w.value.as_ref()))?;
    let release = labels.get(&watch.release_label).unwrap_or("");
    let known = release == watch.release && req.namespace == watch.namespace;
    if known && kind != ObjectKind::StatefulSet {
        return None;
    }
    let why = if known {
        "the spec names no StatefulSet of that name (check the chart's name or \
         fullname override against the spec)"
            .to_string()
    } else {
        format!(
            "the spec names release \"{}\" in namespace \"{}\"",
            watch.release, watch.namespace
        )
    };
    let field = &watch.field;
    Some(format!(
        "{} {}/{} (release \"{release}\") has the labels of chart {} ({}={}), but stretch \"{}\" \
         does not name it: {why}. It passes unmutated, so this cluster would run its own \
         ensemble with colliding IDs: install the chart as {field}.release and {field}.namespace \
         say, or correct them (and {field}.fullnameOverride) and recompile.",
        kind.as_str(),
        req.namespace,
        req.name,
        watch.chart,
        watch.label,
        watch.value,
        bundle.name,
    ))
}

struct Target<'a> {
    kind: ObjectKind,
    namespace: &'a str,
    name: &'a str,
    cluster: &'a str,
}

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

type Annotations<'a> = Option<k8s::StrMap<'a>>;

fn statefulset(t: &Target<'_>, rule: &ObjectRule<'_>, object: &str) -> Result<PatchWriter, String> {
    let sts: k8s::StatefulSet =
        serde_json::from_str(object).map_err(|e| format!("{t}: cannot read the object ({e})"))?;
    let spec = sts
        .spec
        .ok_or_else(|| format!("{t}: the object has no spec"))?;
    let mut patch = PatchWriter::new();
    annotations(&mut patch, &sts.metadata.annotations, &rule.ops);
    labels(&mut patch, &sts.metadata.labels, &rule.ops);
    let pod = spec.template.as_ref().and_then(|t| t.spec.as_ref());
    for check in &rule.checks {
        contradiction(t, pod, check)?;
    }
    for op in &rule.ops {
        match op {
            Op::Replicas(want) => {
                if spec.replicas != Some(i64::from(*want)) {
                    patch.add("/spec/replicas", &want.to_string());
                }
            }
            Op::OrdinalsStart(want) => {
                let start = spec.ordinals.as_ref().map(|o| o.start.unwrap_or(0));
                match start {
                    Some(s) if s == i64::from(*want) => {}
                    None if *want == 0 => {}
                    Some(_) => patch.add("/spec/ordinals/start", &want.to_string()),
                    None => patch.add("/spec/ordinals", &format!("{{\"start\":{want}}}")),
                }
            }
            Op::Env {
                container,
                init,
                set,
                remove,
            } => {
                let list_name = if *init {
                    "initContainers"
                } else {
                    "containers"
                };
                let containers = pod.and_then(|p| {
                    if *init {
                        p.init_containers.as_ref()
                    } else {
                        p.containers.as_ref()
                    }
                });
                let found = containers.and_then(|cs| {
                    cs.iter()
                        .enumerate()
                        .find(|(_, c)| c.name == container.as_ref())
                });
                let Some((index, c)) = found else {
                    return Err(format!(
                        "{t}: container \"{container}\" not found in spec.template.spec.{list_name}; \
                         the object does not have the chart shape {} expects (check the chart \
                         kind and version in the stretch spec)",
                        rule.field
                    ));
                };
                let current = c.env.as_deref().unwrap_or(&[]);
                let resolved;
                let set = if set
                    .iter()
                    .any(|v| matches!(v.value, EnvValue::Prefixed { .. }))
                {
                    resolved = resolve_prefixed(t, current, set)?;
                    &resolved[..]
                } else {
                    &set[..]
                };
                if let Some(env) = desired_env(t, current, set, remove)? {
                    let path = format!("/spec/template/spec/{list_name}/{index}/env");
                    if c.env.is_some() {
                        patch.replace(&path, &env);
                    } else {
                        patch.add(&path, &env);
                    }
                }
            }
            Op::ScriptLine {
                container,
                prefix,
                line,
            } => script_line(t, &mut patch, pod, container, prefix, line)?,
            Op::Annotation { .. } | Op::Label { .. } => {}
            Op::PublishNotReadyAddresses(_)
            | Op::Properties { .. }
            | Op::ServicePort { .. }
            | Op::PodIndex { .. }
            | Op::IndexedPort { .. } => {
                return Err(mismatched_op(t));
            }
        }
    }
    Ok(patch)
}

/// Sets the script line starting with `prefix` in a container's `command`
/// or `args`; a script without such a line is not the chart shape expected.
fn script_line(
    t: &Target<'_>,
    patch: &mut PatchWriter,
    pod: Option<&k8s::PodSpec<'_>>,
    container: &str,
    prefix: &str,
    line: &str,
) -> Result<(), String> {
    let containers = pod.and_then(|p| p.containers.as_ref());
    let found = containers.and_then(|cs| cs.iter().enumerate().find(|(_, c)| c.name == container));
    let Some((index, c)) = found else {
        return Err(format!(
            "{t}: container \"{container}\" not found; the object does not have the chart shape \
             the policy expects (check the chart kind and version in the stretch spec)"
        ));
    };
    for (field, raw) in [("command", c.command), ("args", c.args)] {
        let words: Vec<Cow<'_, str>> = match raw {
            Some(raw) => serde_json::from_str(raw.get())
                .map_err(|e| format!("{t}: cannot read the container's {field} ({e})"))?,
            None => continue,
        };
        for (at, word) in words.iter().enumerate() {
            let mut found = false;
            let mut changed = false;
            let mut out = String::with_capacity(word.len() + line.len());
            for (i, current) in word.split('\n').enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                let body = current.trim_start();
                if body.starts_with(prefix) {
                    found = true;
                    out.push_str(&current[..current.len() - body.len()]);
                    out.push_str(line);
                    changed |= body != line;
                } else {
                    out.push_str(current);
                }
            }
            if found {
                if changed {
                    let path = format!("/spec/template/spec/containers/{index}/{field}/{at}");
                    patch.replace(&path, &json_string(&out));
                }
                return Ok(());
            }
        }
    }
    Err(format!(
        "{t}: no line starting with \"{prefix}\" in the script of container \"{container}\"; \
         the object does not have the chart shape the policy expects (check the chart kind and \
         version in the stretch spec)"
    ))
}

/// A value of the pod template that contradicts the spec is a denial: the
/// policy cannot make such a chart variant right by setting values.
fn contradiction(
    t: &Target<'_>,
    pod: Option<&k8s::PodSpec<'_>>,
    check: &Check<'_>,
) -> Result<(), String> {
    let container = |name: &str, init: bool| {
        pod.and_then(|p| {
            if init {
                p.init_containers.as_ref()
            } else {
                p.containers.as_ref()
            }
        })
        .and_then(|cs| cs.iter().find(|c| c.name == name))
    };
    match check {
        Check::Env {
            container: c,
            init,
            name,
            value,
            message,
        } => {
            let Some(c) = container(c, *init) else {
                return Ok(());
            };
            let mut found = None;
            for raw in c.env.as_deref().unwrap_or(&[]) {
                let entry: k8s::EnvEntry = serde_json::from_str(raw.get())
                    .map_err(|e| format!("{t}: cannot read an env entry ({e})"))?;
                if entry.name == *name {
                    found = Some(entry.value.unwrap_or_default());
                }
            }
            if let Some(found) = found
                && found != value.as_ref()
            {
                return Err(format!(
                    "{t}: {name}={found} contradicts the stretch spec: {message}"
                ));
            }
        }
        Check::ContainerPort {
            container: c,
            name,
            port,
            message,
        } => {
            let declared = container(c, false)
                .and_then(|c| c.ports.as_ref())
                .and_then(|ps| ps.iter().find(|p| p.name.as_deref() == Some(name.as_ref())));
            if let Some(p) = declared
                && p.container_port != Some(i64::from(*port))
            {
                return Err(format!(
                    "{t}: container port \"{name}\" is {} where the stretch spec needs {port}: \
                     {message}",
                    p.container_port.unwrap_or(0)
                ));
            }
        }
        Check::NoContainer {
            name,
            init,
            message,
        } => {
            if container(name, *init).is_some() {
                return Err(format!("{t}: has container \"{name}\": {message}"));
            }
        }
        Check::PortCount {
            container: c,
            prefix,
            min,
            max,
            message,
        } => {
            let count = container(c, false)
                .and_then(|c| c.ports.as_ref())
                .map_or(0, |ps| {
                    ps.iter()
                        .filter(|p| {
                            p.name
                                .as_deref()
                                .is_some_and(|n| n.starts_with(prefix.as_ref()))
                        })
                        .count()
                });
            if count > 0 && !(*min as usize..=*max as usize).contains(&count) {
                return Err(format!(
                    "{t}: declares {count} \"{prefix}*\" ports, one per node, where this cluster \
                     needs {min} to {max}: {message}"
                ));
            }
        }
        Check::NoSecret { name, message } => {
            if uses_secret(t, pod, name)? {
                return Err(format!("{t}: uses Secret \"{name}\": {message}"));
            }
        }
        Check::NoVolume { name, message } => {
            if has_volume(t, pod, name)? {
                return Err(format!("{t}: has volume \"{name}\": {message}"));
            }
        }
        Check::ScaleLimit { .. } | Check::Refuse { .. } | Check::Indices { .. } => {}
    }
    Ok(())
}

/// Whether the pod template declares a volume named `name`.
fn has_volume(t: &Target<'_>, pod: Option<&k8s::PodSpec<'_>>, name: &str) -> Result<bool, String> {
    let Some(raw) = pod.and_then(|p| p.volumes) else {
        return Ok(false);
    };
    let volumes: Vec<k8s::Named> = serde_json::from_str(raw.get())
        .map_err(|e| format!("{t}: cannot read the pod's volumes ({e})"))?;
    Ok(volumes.iter().any(|v| v.name == name))
}

/// Whether the pod template mounts or reads Secret `name`.
fn uses_secret(t: &Target<'_>, pod: Option<&k8s::PodSpec<'_>>, name: &str) -> Result<bool, String> {
    let Some(pod) = pod else {
        return Ok(false);
    };
    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter())
        .flatten();
    let raw = containers
        .flat_map(|c| {
            c.env_from
                .into_iter()
                .chain(c.env.iter().flatten().copied())
        })
        .chain(pod.volumes);
    for raw in raw {
        let refs: k8s::SecretRefs = serde_json::from_str(raw.get())
            .map_err(|e| format!("{t}: cannot read the pod's Secret references ({e})"))?;
        if refs.0.iter().any(|r| r == name) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn scale(t: &Target<'_>, rule: &ObjectRule<'_>, object: &str) -> Verdict {
    let scale: k8s::Scale = match serde_json::from_str(object) {
        Ok(s) => s,
        Err(e) => return Verdict::Deny(format!("Scale of {t}: cannot read the object ({e})")),
    };
    let Some(replicas) = scale.spec.and_then(|s| s.replicas) else {
        return Verdict::Deny(format!("Scale of {t}: the object has no spec.replicas"));
    };
    for check in &rule.checks {
        let Check::ScaleLimit { max, exact, field } = check else {
            continue;
        };
        let max = i64::from(*max);
        if *exact && replicas != max {
            return Verdict::Deny(format!(
                "{t}: scaling to {replicas} is refused: cluster \"{}\" runs exactly {max} quorum \
                 members ({field}) and every cluster's server list names them; change {field} in \
                 the stretch spec, recompile and roll the policy out",
                t.cluster
            ));
        }
        if replicas > max {
            return Verdict::Deny(format!(
                "{t}: scaling to {replicas} is refused: cluster \"{}\" has an ID block of {max} \
                 ({field}), and more pods would take IDs of the next cluster; raise {field} in \
                 the stretch spec and recompile",
                t.cluster
            ));
        }
    }
    Verdict::Allow
}

fn service(
    t: &Target<'_>,
    rule: &ObjectRule<'_>,
    object: &str,
    index: Option<u32>,
) -> Result<PatchWriter, String> {
    let svc: k8s::Service =
        serde_json::from_str(object).map_err(|e| format!("{t}: cannot read the object ({e})"))?;
    let mut patch = PatchWriter::new();
    annotations(&mut patch, &svc.metadata.annotations, &rule.ops);
    labels(&mut patch, &svc.metadata.labels, &rule.ops);
    let default_spec = k8s::ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default_spec);
    // Every later path lives under /spec: create it once, first.
    let mut spec_created = svc.spec.is_some();
    let mut ensure_spec = |patch: &mut PatchWriter| {
        if !spec_created {
            patch.add("/spec", "{}");
            spec_created = true;
        }
    };
    for op in &rule.ops {
        match op {
            Op::PublishNotReadyAddresses(want) => {
                // Unset means false to the API server.
                if spec.publish_not_ready_addresses.unwrap_or(false) != *want {
                    ensure_spec(&mut patch);
                    patch.add("/spec/publishNotReadyAddresses", bool_json(*want));
                }
            }
            Op::PodIndex {
                selector,
                label,
                pod_prefix,
                start,
            } => {
                let i = index.ok_or_else(|| mismatched_op(t))?;
                let pod = format!("{pod_prefix}{}", u64::from(*start) + u64::from(i));
                let wanted = std::iter::once((selector.as_ref(), pod.as_str()));
                ensure_spec(&mut patch);
                string_map(&mut patch, "/spec/selector", &spec.selector, wanted);
                let wanted = std::iter::once((label.as_ref(), pod.as_str()));
                string_map(&mut patch, "/metadata/labels", &svc.metadata.labels, wanted);
            }
            Op::IndexedPort { name, base } => {
                let i = index.ok_or_else(|| mismatched_op(t))?;
                let port = u64::from(*base) + u64::from(i);
                indexed_port(t, &mut patch, spec, name, port)?;
            }
            Op::ServicePort { .. } | Op::Annotation { .. } | Op::Label { .. } => {}
            _ => return Err(mismatched_op(t)),
        }
    }
    let missing = missing_ports(spec, &rule.ops);
    if !missing.is_empty() {
        ensure_spec(&mut patch);
        if spec.ports.is_some() {
            for entry in &missing {
                patch.add("/spec/ports/-", entry);
            }
        } else {
            patch.add("/spec/ports", &format!("[{}]", missing.join(",")));
        }
    }
    Ok(patch)
}

/// Makes the Service port named `name` target and expose `port` on every node.
fn indexed_port(
    t: &Target<'_>,
    patch: &mut PatchWriter,
    spec: &k8s::ServiceSpec,
    name: &str,
    port: u64,
) -> Result<(), String> {
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    let Some(index) = ports.iter().position(|p| p.name.as_deref() == Some(name)) else {
        return Err(format!(
            "{t}: port \"{name}\" not found in spec.ports; the object does not have the chart \
             shape the policy expects (check the chart kind and version in the stretch spec)"
        ));
    };
    let current = &ports[index];
    let want = port.to_string();
    if current.target_port.map(|raw| raw.get()) != Some(want.as_str()) {
        patch.add(&format!("/spec/ports/{index}/targetPort"), &want);
    }
    if current.node_port != i64::try_from(port).ok() {
        patch.add(&format!("/spec/ports/{index}/nodePort"), &want);
    }
    Ok(())
}

/// The `Op::ServicePort` entries (as JSON) whose port the Service does not
/// declare. A declared port is left as the chart wrote it (its name may differ).
fn missing_ports(spec: &k8s::ServiceSpec, ops: &[Op<'_>]) -> Vec<String> {
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    ops.iter()
        .filter_map(|op| match op {
            Op::ServicePort { name, port } => Some((name, *port)),
            _ => None,
        })
        .filter(|(_, port)| !ports.iter().any(|p| p.port == Some(i64::from(*port))))
        .map(|(name, port)| {
            let mut entry = String::from("{\"name\":");
            push_json_string(&mut entry, name);
            entry.push_str(&format!(
                ",\"port\":{port},\"protocol\":\"TCP\",\"targetPort\":{port}}}"
            ));
            entry
        })
        .collect()
}

fn configmap(t: &Target<'_>, rule: &ObjectRule<'_>, object: &str) -> Result<PatchWriter, String> {
    let cm: k8s::ConfigMap =
        serde_json::from_str(object).map_err(|e| format!("{t}: cannot read the object ({e})"))?;
    let mut patch = PatchWriter::new();
    annotations(&mut patch, &cm.metadata.annotations, &rule.ops);
    labels(&mut patch, &cm.metadata.labels, &rule.ops);
    for op in &rule.ops {
        match op {
            Op::Properties { data_key, edits } => {
                let text = cm.data.as_ref().and_then(|d| d.get(data_key));
                let Some(text) = text else {
                    return Err(format!(
                        "{t}: data key \"{data_key}\" not found; the object does not have the \
                         chart shape {} expects (check the chart kind and version in the \
                         stretch spec)",
                        rule.field
                    ));
                };
                if let Some(new) = props::apply(text, edits) {
                    let path = format!("/data/{}", escape_token(data_key));
                    patch.replace(&path, &json_string(&new));
                }
            }
            Op::Annotation { .. } | Op::Label { .. } => {}
            _ => return Err(mismatched_op(t)),
        }
    }
    Ok(patch)
}

fn mismatched_op(t: &Target<'_>) -> String {
    format!(
        "{t}: the policy holds an operation for another kind of object; recompile the policy with this straddle version"
    )
}

fn bool_json(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Patches `metadata.annotations` to hold every `Op::Annotation` of the rule.
fn annotations(patch: &mut PatchWriter, current: &Annotations<'_>, ops: &[Op<'_>]) {
    let wanted = ops.iter().filter_map(|op| match op {
        Op::Annotation { key, value } => Some((key.as_ref(), value.as_ref())),
        _ => None,
    });
    string_map(patch, "/metadata/annotations", current, wanted);
}

/// Patches `metadata.labels` to hold every `Op::Label` of the rule.
fn labels(patch: &mut PatchWriter, current: &Annotations<'_>, ops: &[Op<'_>]) {
    let wanted = ops.iter().filter_map(|op| match op {
        Op::Label { key, value } => Some((key.as_ref(), value.as_ref())),
        _ => None,
    });
    string_map(patch, "/metadata/labels", current, wanted);
}

/// Makes the string map at `path` hold every wanted (key, value).
fn string_map<'w>(
    patch: &mut PatchWriter,
    path: &str,
    current: &Annotations<'_>,
    wanted: impl Iterator<Item = (&'w str, &'w str)>,
) {
    match current {
        Some(map) => {
            for (key, value) in wanted {
                if map.get(key) != Some(value) {
                    let path = format!("{path}/{}", escape_token(key));
                    patch.add(&path, &json_string(value));
                }
            }
        }
        None => {
            let mut obj = String::from("{");
            for (i, (key, value)) in wanted.enumerate() {
                if i > 0 {
                    obj.push(',');
                }
                push_json_string(&mut obj, key);
                obj.push(':');
                push_json_string(&mut obj, value);
            }
            if obj.len() > 1 {
                obj.push('}');
                patch.add(path, &obj);
            }
        }
    }
}

/// Turns `Prefixed` values into literals, given the container's env.
fn resolve_prefixed<'r>(
    t: &Target<'_>,
    current: &[&RawValue],
    set: &[EnvVar<'r>],
) -> Result<Vec<EnvVar<'r>>, String> {
    let mut out = Vec::with_capacity(set.len() + 1);
    for var in set {
        let EnvValue::Prefixed {
            saved,
            prefix,
            entries,
            short,
        } = &var.value
        else {
            out.push(var.clone());
            continue;
        };
        let (mut chart_value, mut saved_value) = (None, None);
        for raw in current {
            let entry: k8s::EnvEntry = serde_json::from_str(raw.get())
                .map_err(|e| format!("{t}: cannot read an env entry ({e})"))?;
            if entry.name == var.name {
                chart_value = Some(entry.value.unwrap_or_default().into_owned());
            } else if entry.name == *saved {
                saved_value = Some(entry.value.unwrap_or_default().into_owned());
            }
        }
        let Some(chart_value) = chart_value else {
            continue;
        };
        let reference = format!("{prefix}$({saved})");
        // The chart's list: as sent, or where an earlier review saved it.
        let list = if chart_value == reference {
            saved_value.as_deref().unwrap_or_default()
        } else {
            &chart_value
        };
        let count = list.split([',', ' ']).filter(|e| !e.is_empty()).count();
        if count < *entries as usize {
            return Err(format!(
                "{t}: {} holds {count} entries where this cluster's {entries} pods each need \
                 one: {short}",
                var.name
            ));
        }
        // No ordinals before this cluster's: the list is right as it is.
        if prefix.is_empty() {
            continue;
        }
        if chart_value != reference {
            out.push(EnvVar {
                name: saved.clone(),
                value: EnvValue::Literal(Cow::Owned(chart_value)),
                before: Some(var.name.clone()),
            });
        }
        out.push(EnvVar {
            name: var.name.clone(),
            value: EnvValue::Literal(Cow::Owned(reference)),
            before: None,
        });
    }
    Ok(out)
}

enum EnvItem<'a, 'r> {
    Keep(&'a RawValue),
    Set(&'r EnvVar<'r>),
}

/// A `remove` entry names one variable, or with a trailing `*` every
/// variable with that prefix (a family such as `ZOO_CFG_group_*`); a
/// variable the op also sets is kept.
fn removes(entry: &str, name: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => entry == name,
    }
}

/// The container's env with `set` and `remove` applied, as a JSON array, or
/// `None` when it already matches.
fn desired_env<'r>(
    t: &Target<'_>,
    current: &[&RawValue],
    set: &'r [EnvVar<'r>],
    remove: &[Cow<'_, str>],
) -> Result<Option<String>, String> {
    let mut items: Vec<(Cow<'_, str>, EnvItem<'_, 'r>, bool)> =
        Vec::with_capacity(current.len() + set.len());
    for raw in current {
        let entry: k8s::EnvEntry = serde_json::from_str(raw.get())
            .map_err(|e| format!("{t}: cannot read an env entry ({e})"))?;
        let matches = |v: &EnvVar<'_>| env_matches(&entry, v);
        let name = entry.name.clone();
        let ok = set.iter().find(|v| v.name == name).is_none_or(matches);
        items.push((name, EnvItem::Keep(raw), ok));
    }
    let before_len = items.len();
    // Drop removed names, and later duplicates of names we set: the kubelet
    // lets the last duplicate win, which would undo our value.
    let mut seen: Vec<Cow<'_, str>> = Vec::new();
    items.retain(|(name, _, _)| {
        if remove.iter().any(|r| removes(r, name)) && !set.iter().any(|v| v.name == *name) {
            return false;
        }
        if set.iter().any(|v| v.name == *name) {
            if seen.contains(name) {
                return false;
            }
            seen.push(name.clone());
        }
        true
    });
    let mut changed = items.len() != before_len;
    for var in set {
        let pos = items.iter().position(|(n, _, _)| *n == var.name);
        let before = var
            .before
            .as_ref()
            .and_then(|b| items.iter().position(|(n, _, _)| n == b));
        match (pos, before) {
            (Some(p), Some(b)) if p > b => {
                items.remove(p);
                items.insert(b, (var.name.clone(), EnvItem::Set(var), true));
                changed = true;
            }
            (Some(p), _) => {
                if !items[p].2 {
                    items[p] = (var.name.clone(), EnvItem::Set(var), true);
                    changed = true;
                }
            }
            (None, Some(b)) => {
                items.insert(b, (var.name.clone(), EnvItem::Set(var), true));
                changed = true;
            }
            (None, None) => {
                items.push((var.name.clone(), EnvItem::Set(var), true));
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    let mut out = String::from("[");
    for (i, (_, item, _)) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            EnvItem::Keep(raw) => out.push_str(raw.get()),
            EnvItem::Set(var) => render_env(&mut out, var),
        }
    }
    out.push(']');
    Ok(Some(out))
}

fn env_matches(entry: &k8s::EnvEntry<'_>, want: &EnvVar<'_>) -> bool {
    match &want.value {
        EnvValue::Prefixed { .. } => false,
        EnvValue::Literal(v) => {
            entry.value.as_deref() == Some(v.as_ref()) && entry.value_from.is_none()
        }
        EnvValue::FieldRef(path) => {
            entry.value.as_deref().unwrap_or("").is_empty()
                && entry.value_from.as_ref().is_some_and(|vf| {
                    vf.secret_key_ref.is_none()
                        && vf.config_map_key_ref.is_none()
                        && vf.resource_field_ref.is_none()
                        && vf
                            .field_ref
                            .as_ref()
                            .is_some_and(|f| f.field_path == path.as_ref())
                })
        }
    }
}

fn render_env(out: &mut String, var: &EnvVar<'_>) {
    out.push_str("{\"name\":");
    push_json_string(out, &var.name);
    match &var.value {
        EnvValue::Literal(v) => {
            out.push_str(",\"value\":");
            push_json_string(out, v);
        }
        EnvValue::FieldRef(path) => {
            // apiVersion as the API server defaults it, so stored objects compare equal.
            out.push_str(",\"valueFrom\":{\"fieldRef\":{\"apiVersion\":\"v1\",\"fieldPath\":");
            push_json_string(out, path);
            out.push_str("}}");
        }
        // Resolved to literals before rendering.
        EnvValue::Prefixed { .. } => {}
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{BundleInfo, PlanBuilder, PropEdit};

    fn plan() -> Vec<u8> {
        let mut b = PlanBuilder::new();
        let sts = ObjectRule {
            field: "spec.kafka.brokers".into(),
            checks: vec![Check::ScaleLimit {
                max: 10,
                exact: false,
                field: "spec.kafka.brokers.idBlockSize".into(),
            }],
            ops: vec![
                Op::Annotation {
                    key: "straddle.dev/policy-digest".into(),
                    value: "sha256:1".into(),
                },
                Op::Replicas(3),
                Op::OrdinalsStart(10),
                Op::Env {
                    container: "main".into(),
                    init: false,
                    set: vec![
                        EnvVar {
                            name: "REAL".into(),
                            value: EnvValue::FieldRef("metadata.name".into()),
                            before: Some("POD_NAME".into()),
                        },
                        EnvVar {
                            name: "POD_NAME".into(),
                            value: EnvValue::Literal("$(REAL).west".into()),
                            before: None,
                        },
                    ],
                    remove: vec!["GONE".into()],
                },
            ],
        };
        b.insert("west", ObjectKind::StatefulSet, "ns", "kafka", &sts);
        let cm = ObjectRule {
            field: "spec.kafka".into(),
            checks: vec![],
            ops: vec![Op::Properties {
                data_key: "server.properties".into(),
                edits: vec![PropEdit::Set {
                    key: "broker.rack".into(),
                    value: "west".into(),
                }],
            }],
        };
        b.insert("west", ObjectKind::ConfigMap, "ns", "cfg", &cm);
        let svc = ObjectRule {
            field: "spec.zookeeper".into(),
            checks: vec![],
            ops: vec![
                Op::Label {
                    key: "mirror.linkerd.io/exported".into(),
                    value: "remote-discovery".into(),
                },
                Op::Annotation {
                    key: "service.cilium.io/global".into(),
                    value: "true".into(),
                },
                Op::ServicePort {
                    name: "client".into(),
                    port: 2181,
                },
                Op::ServicePort {
                    name: "server".into(),
                    port: 2888,
                },
                Op::PublishNotReadyAddresses(true),
            ],
        };
        b.insert("west", ObjectKind::Service, "ns", "zk-headless", &svc);
        let per_pod = ObjectRule {
            field: "spec.kafka.brokers".into(),
            checks: vec![Check::Indices {
                count: 10,
                beyond: "set the chart value brokers".into(),
            }],
            ops: vec![
                Op::PodIndex {
                    selector: "statefulset.kubernetes.io/pod-name".into(),
                    label: "pod".into(),
                    pod_prefix: "kafka-".into(),
                    start: 10,
                },
                Op::IndexedPort {
                    name: "external".into(),
                    base: 31100,
                },
            ],
        };
        b.insert(
            "west",
            ObjectKind::Service,
            "ns",
            "kafka-#-external",
            &per_pod,
        );
        let refused_below = ObjectRule {
            field: "spec.kafka".into(),
            checks: vec![
                Check::Indices {
                    count: 10,
                    beyond: "".into(),
                },
                Check::Refuse {
                    message: "set the chart value nodeport=false".into(),
                },
            ],
            ops: vec![],
        };
        b.insert(
            "west",
            ObjectKind::Service,
            "ns",
            "kafka-#-nodeport",
            &refused_below,
        );
        let refused = ObjectRule {
            field: "spec.kafka".into(),
            checks: vec![Check::Refuse {
                message: "set the chart value x=false".into(),
            }],
            ops: vec![],
        };
        b.insert(
            "west",
            ObjectKind::Service,
            "ns",
            "kafka-9-external",
            &refused,
        );
        let shaped = ObjectRule {
            field: "spec.kafka.controllers".into(),
            checks: vec![
                Check::Env {
                    container: "main".into(),
                    init: false,
                    name: "ROLES".into(),
                    value: "controller".into(),
                    message: "set controllerOnly=true".into(),
                },
                Check::ContainerPort {
                    container: "main".into(),
                    name: "controller".into(),
                    port: 9093,
                    message: "set the port back".into(),
                },
            ],
            ops: vec![Op::Replicas(3)],
        };
        b.insert("west", ObjectKind::StatefulSet, "ns", "ctl", &shaped);
        let external = ObjectRule {
            field: "spec.kafka.brokers".into(),
            checks: vec![
                Check::NoContainer {
                    name: "auto-discovery".into(),
                    init: true,
                    message: "turn autoDiscovery off".into(),
                },
                Check::PortCount {
                    container: "main".into(),
                    prefix: "nodeport-".into(),
                    min: 3,
                    max: 10,
                    message: "set brokers".into(),
                },
            ],
            ops: vec![Op::Env {
                container: "prepare".into(),
                init: true,
                set: vec![EnvVar {
                    name: "HOSTS".into(),
                    value: EnvValue::Prefixed {
                        saved: "CHART_HOSTS".into(),
                        prefix: "-,-,".into(),
                        entries: 2,
                        short: "list every pod".into(),
                    },
                    before: None,
                }],
                remove: vec![],
            }],
        };
        b.insert("west", ObjectKind::StatefulSet, "ns", "ext", &external);
        let script = ObjectRule {
            field: "spec.kafka.controllers".into(),
            checks: vec![],
            ops: vec![Op::ScriptLine {
                container: "main".into(),
                prefix: "ADVERTISED_HOST=".into(),
                line: "ADVERTISED_HOST=\"k-${ORDINAL}.west\"".into(),
            }],
        };
        b.insert("west", ObjectKind::StatefulSet, "ns", "script", &script);
        let secretive = ObjectRule {
            field: "spec.kafka.controllers".into(),
            checks: vec![Check::NoSecret {
                name: "generated".into(),
                message: "set existingSecret".into(),
            }],
            ops: vec![],
        };
        b.insert(
            "west",
            ObjectKind::StatefulSet,
            "ns",
            "secretive",
            &secretive,
        );
        let families = ObjectRule {
            field: "spec.zookeeper".into(),
            checks: vec![Check::NoVolume {
                name: "config".into(),
                message: "remove configuration".into(),
            }],
            ops: vec![Op::Env {
                container: "main".into(),
                init: false,
                set: vec![EnvVar {
                    name: "ZOO_CFG_group_1".into(),
                    value: EnvValue::Literal("1:2".into()),
                    before: None,
                }],
                remove: vec!["ZOO_CFG_group_*".into()],
            }],
        };
        b.insert("west", ObjectKind::StatefulSet, "ns", "families", &families);
        b.finish(&BundleInfo {
            name: "t".into(),
            spec_digest: "sha256:1".into(),
            clusters: vec!["east".into(), "west".into()],
            namespaces: vec!["ns".into()],
            compiler_version: "0".into(),
            watches: vec![crate::plan::Watch {
                label: "app".into(),
                value: "cp-kafka".into(),
                release_label: "release".into(),
                release: "prod".into(),
                namespace: "ns".into(),
                chart: "cp-kafka".into(),
                field: "spec.kafka".into(),
            }],
        })
    }

    fn req<'a>(cluster: &'a str, kind: &'a str, name: &'a str, object: &'a str) -> Request<'a> {
        Request {
            cluster,
            operation: Operation::Create,
            kind,
            namespace: "ns",
            name,
            object,
            old_object: None,
        }
    }

    fn apply(object: &str, verdict: &Verdict) -> String {
        let Verdict::Patch(p) = verdict else {
            panic!("expected a patch, got {verdict:?}")
        };
        let mut doc: serde_json::Value = serde_json::from_str(object).unwrap();
        let patch: json_patch::Patch = serde_json::from_str(p).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        doc.to_string()
    }

    const STS: &str = r#"{"metadata":{"name":"kafka"},"spec":{"replicas":5,"template":{"spec":{"containers":[{"name":"main","env":[{"name":"A","value":"1"},{"name":"POD_NAME","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}},{"name":"GONE","value":"x"},{"name":"POD_NAME","value":"dup"}]}]}}}}"#;

    #[test]
    fn service_labels_annotations_and_ports_are_end_values() {
        let p = plan();
        for object in [
            r#"{"metadata":{"name":"zk-headless"},"spec":{"clusterIP":"None","ports":[{"name":"peer","port":2888}]}}"#,
            r#"{"metadata":{"name":"zk-headless","labels":{"app":"zk"},"annotations":{}},"spec":{}}"#,
            r#"{"metadata":{"name":"zk-headless"}}"#,
        ] {
            let v = review(&p, &req("west", "Service", "zk-headless", object));
            let after = apply(object, &v);
            let doc: serde_json::Value = serde_json::from_str(&after).unwrap();
            assert_eq!(
                doc["metadata"]["labels"]["mirror.linkerd.io/exported"],
                "remote-discovery"
            );
            assert_eq!(
                doc["metadata"]["annotations"]["service.cilium.io/global"],
                "true"
            );
            let ports: Vec<i64> = doc["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_i64().unwrap())
                .collect();
            assert!(ports.contains(&2181) && ports.contains(&2888), "{after}");
            assert_eq!(
                ports.len(),
                2,
                "a declared port is not added twice: {after}"
            );
            if let Some(name) = doc["metadata"]["labels"]["app"].as_str() {
                assert_eq!(name, "zk", "other labels are kept");
            }
            let again = review(&p, &req("west", "Service", "zk-headless", &after));
            assert_eq!(again, Verdict::Allow, "not idempotent: {after}");
        }
    }

    #[test]
    fn statefulset_gets_end_values_and_is_idempotent() {
        let p = plan();
        let v = review(&p, &req("west", "StatefulSet", "kafka", STS));
        let out = apply(STS, &v);
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["spec"]["replicas"], 3);
        assert_eq!(doc["spec"]["ordinals"]["start"], 10);
        assert_eq!(
            doc["metadata"]["annotations"]["straddle.dev/policy-digest"],
            "sha256:1"
        );
        let env: Vec<&str> = doc["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        // REAL before POD_NAME; GONE and the later duplicate dropped.
        assert_eq!(env, ["A", "REAL", "POD_NAME"]);
        assert_eq!(
            review(&p, &req("west", "StatefulSet", "kafka", &out)),
            Verdict::Allow
        );
    }

    #[test]
    fn api_server_defaulting_of_field_refs_is_not_a_difference() {
        let p = plan();
        let out = apply(STS, &review(&p, &req("west", "StatefulSet", "kafka", STS)));
        // The API server adds apiVersion to fieldRef; it must still compare equal.
        let defaulted = out.replace(
            r#"{"fieldPath":"metadata.name"}"#,
            r#"{"apiVersion":"v1","fieldPath":"metadata.name"}"#,
        );
        assert_eq!(
            review(&p, &req("west", "StatefulSet", "kafka", &defaulted)),
            Verdict::Allow
        );
    }

    #[test]
    fn script_lines_are_end_values() {
        let p = plan();
        let sts = |args: &str| {
            format!(
                r#"{{"spec":{{"template":{{"spec":{{"containers":[{{"name":"main","command":["/bin/sh","-ec"],"args":[{}]}}]}}}}}}}}"#,
                serde_json::to_string(args).unwrap()
            )
        };
        let object = sts("ORDINAL=1\n  ADVERTISED_HOST=\"k-${ORDINAL}.local\"\nexec run");
        let after = apply(
            &object,
            &review(&p, &req("west", "StatefulSet", "script", &object)),
        );
        let doc: serde_json::Value = serde_json::from_str(&after).unwrap();
        assert_eq!(
            doc["spec"]["template"]["spec"]["containers"][0]["args"][0],
            "ORDINAL=1\n  ADVERTISED_HOST=\"k-${ORDINAL}.west\"\nexec run"
        );
        assert_eq!(
            review(&p, &req("west", "StatefulSet", "script", &after)),
            Verdict::Allow
        );
        let Verdict::Deny(m) = review(&p, &req("west", "StatefulSet", "script", &sts("exec run")))
        else {
            panic!()
        };
        assert!(
            m.contains("no line starting with \"ADVERTISED_HOST=\""),
            "{m}"
        );
    }

    #[test]
    fn a_generated_secret_is_found_wherever_the_pod_uses_it() {
        let p = plan();
        let review_pod = |pod: &str| {
            let object = format!(r#"{{"spec":{{"template":{{"spec":{pod}}}}}}}"#);
            review(&p, &req("west", "StatefulSet", "secretive", &object))
        };
        for pod in [
            r#"{"volumes":[{"name":"v","secret":{"secretName":"generated"}}]}"#,
            r#"{"volumes":[{"name":"v","projected":{"sources":[{"configMap":{"name":"x"}},{"secret":{"name":"generated"}}]}}]}"#,
            r#"{"initContainers":[{"name":"i","env":[{"name":"P","valueFrom":{"secretKeyRef":{"name":"generated","key":"k"}}}]}]}"#,
            r#"{"containers":[{"name":"c","envFrom":[{"secretRef":{"name":"generated"}}]}]}"#,
        ] {
            let verdict = review_pod(pod);
            assert!(
                matches!(&verdict, Verdict::Deny(m) if m.ends_with("uses Secret \"generated\": set existingSecret")),
                "{pod}: {verdict:?}"
            );
        }
        let shared = r#"{"volumes":[{"name":"v","secret":{"secretName":"shared"}}],"containers":[{"name":"c","env":[{"name":"P","valueFrom":{"secretKeyRef":{"name":"shared","key":"k"}}}]}]}"#;
        assert_eq!(review_pod(shared), Verdict::Allow);
    }

    #[test]
    fn a_family_of_env_vars_converges_and_a_mounted_config_is_refused() {
        let p = plan();
        let object = r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","env":[{"name":"A","value":"1"},{"name":"ZOO_CFG_group_2","value":"3"},{"name":"ZOO_CFG_group_1","value":"old"},{"name":"ZOO_CFG_weight_1","value":"1"}]}]}}}}"#;
        let out = apply(
            object,
            &review(&p, &req("west", "StatefulSet", "families", object)),
        );
        let env = &serde_json::from_str::<serde_json::Value>(&out).unwrap()["spec"]["template"]["spec"]
            ["containers"][0]["env"];
        assert_eq!(
            env.to_string(),
            r#"[{"name":"A","value":"1"},{"name":"ZOO_CFG_group_1","value":"1:2"},{"name":"ZOO_CFG_weight_1","value":"1"}]"#
        );
        assert_eq!(
            review(&p, &req("west", "StatefulSet", "families", &out)),
            Verdict::Allow
        );
        let mounted = r#"{"spec":{"template":{"spec":{"volumes":[{"name":"config","configMap":{"name":"zk"}}],"containers":[{"name":"main"}]}}}}"#;
        let verdict = review(&p, &req("west", "StatefulSet", "families", mounted));
        assert!(
            matches!(&verdict, Verdict::Deny(m) if m.ends_with("has volume \"config\": remove configuration")),
            "{verdict:?}"
        );
    }

    #[test]
    fn pattern_names_hold_the_index() {
        use crate::plan::pattern_of;
        assert_eq!(
            pattern_of("kafka-broker-12-external"),
            Some(("kafka-broker-#-external".into(), 12))
        );
        assert_eq!(pattern_of("zk-3"), Some(("zk-#".into(), 3)));
        assert_eq!(pattern_of("a-1-b-2-c"), Some(("a-1-b-#-c".into(), 2)));
        assert_eq!(pattern_of("kafka-headless"), None);
        assert_eq!(pattern_of("kafka-1a-x"), None);
        assert_eq!(pattern_of("x-99999999999-y"), None);
    }

    #[test]
    fn per_pod_services_are_re_pointed_and_idempotent() {
        let p = plan();
        let object = r#"{"metadata":{"name":"kafka-2-external","labels":{"pod":"kafka-2"}},"spec":{"type":"NodePort","selector":{"app":"kafka","statefulset.kubernetes.io/pod-name":"kafka-2"},"ports":[{"name":"external","port":19092,"targetPort":31092,"nodePort":31092}]}}"#;
        let v = review(&p, &req("west", "Service", "kafka-2-external", object));
        let after = apply(object, &v);
        let doc: serde_json::Value = serde_json::from_str(&after).unwrap();
        assert_eq!(
            doc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"],
            "kafka-12"
        );
        assert_eq!(doc["metadata"]["labels"]["pod"], "kafka-12");
        assert_eq!(doc["spec"]["selector"]["app"], "kafka");
        let port = &doc["spec"]["ports"][0];
        assert_eq!(
            (&port["port"], &port["targetPort"], &port["nodePort"]),
            (&19092.into(), &31102.into(), &31102.into())
        );
        assert_eq!(
            review(&p, &req("west", "Service", "kafka-2-external", &after)),
            Verdict::Allow
        );
        let no_port = r#"{"metadata":{"name":"kafka-0-external"},"spec":{"ports":[{"name":"other","port":1}]}}"#;
        let Verdict::Deny(m) = review(&p, &req("west", "Service", "kafka-0-external", no_port))
        else {
            panic!()
        };
        assert!(m.contains("port \"external\" not found"), "{m}");
        let Verdict::Deny(m) = review(&p, &req("west", "Service", "kafka-10-external", object))
        else {
            panic!()
        };
        assert!(
            m.contains("index 10 is beyond 10: set the chart value brokers"),
            "{m}"
        );
        // A refusal that covers the chart's indices only: higher ones are
        // another object of the same shape (e.g. one `straddle render` emits).
        assert!(matches!(
            review(&p, &req("west", "Service", "kafka-3-nodeport", "{}")),
            Verdict::Deny(m) if m.ends_with("nodeport=false")
        ));
        assert_eq!(
            review(&p, &req("west", "Service", "kafka-13-nodeport", "{}")),
            Verdict::Allow
        );
    }

    #[test]
    fn refused_objects_and_contradicting_shapes_are_denied_with_the_fix() {
        let p = plan();
        let Verdict::Deny(m) = review(&p, &req("west", "Service", "kafka-9-external", "{}")) else {
            panic!()
        };
        assert!(m.ends_with("set the chart value x=false"), "{m}");
        let sts = |roles: &str, port: u16| {
            format!(
                r#"{{"spec":{{"replicas":3,"template":{{"spec":{{"containers":[{{"name":"main","ports":[{{"name":"controller","containerPort":{port}}}],"env":[{{"name":"ROLES","value":"{roles}"}}]}}]}}}}}}}}"#
            )
        };
        assert_eq!(
            review(
                &p,
                &req("west", "StatefulSet", "ctl", &sts("controller", 9093))
            ),
            Verdict::Allow
        );
        let Verdict::Deny(m) = review(
            &p,
            &req(
                "west",
                "StatefulSet",
                "ctl",
                &sts("controller,broker", 9093),
            ),
        ) else {
            panic!()
        };
        assert!(
            m.contains("ROLES=controller,broker contradicts") && m.ends_with("controllerOnly=true"),
            "{m}"
        );
        let Verdict::Deny(m) = review(
            &p,
            &req("west", "StatefulSet", "ctl", &sts("controller", 19093)),
        ) else {
            panic!()
        };
        assert!(
            m.contains("is 19093 where the stretch spec needs 9093"),
            "{m}"
        );
    }

    #[test]
    fn unnamed_objects_of_a_stretched_chart_get_a_warning() {
        let p = plan();
        let labelled = |release: &str| {
            format!(r#"{{"metadata":{{"labels":{{"app":"cp-kafka","release":"{release}"}}}}}}"#)
        };
        let Verdict::Warn(m) = review(&p, &req("west", "Service", "other", &labelled("kafka")))
        else {
            panic!()
        };
        assert!(
            m.contains("release \"kafka\"") && m.contains("spec.kafka.release"),
            "{m}"
        );
        // The spec's own release: other Services of the chart are fine, an
        // unknown StatefulSet is not.
        assert_eq!(
            review(&p, &req("west", "Service", "other", &labelled("prod"))),
            Verdict::Allow
        );
        assert!(matches!(
            review(&p, &req("west", "StatefulSet", "other", &labelled("prod"))),
            Verdict::Warn(_)
        ));
        assert_eq!(
            review(&p, &req("west", "Service", "other", r#"{"metadata":{}}"#)),
            Verdict::Allow
        );
    }

    #[test]
    fn per_ordinal_lists_are_prefixed_once_and_follow_chart_upgrades() {
        let p = plan();
        let sts = |hosts: &str| {
            format!(
                r#"{{"spec":{{"template":{{"spec":{{"initContainers":[{{"name":"prepare","env":[{{"name":"A","value":"1"}},{{"name":"HOSTS","value":"{hosts}"}}]}}],"containers":[{{"name":"main"}}]}}}}}}}}"#
            )
        };
        let env = |doc: &str| -> Vec<(String, String)> {
            let doc: serde_json::Value = serde_json::from_str(doc).unwrap();
            doc["spec"]["template"]["spec"]["initContainers"][0]["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().into(),
                        e["value"].as_str().unwrap().into(),
                    )
                })
                .collect()
        };
        let first = sts("a,b");
        let once = apply(
            &first,
            &review(&p, &req("west", "StatefulSet", "ext", &first)),
        );
        let want = |chart: &str| {
            vec![
                ("A".to_string(), "1".to_string()),
                ("CHART_HOSTS".to_string(), chart.to_string()),
                ("HOSTS".to_string(), "-,-,$(CHART_HOSTS)".to_string()),
            ]
        };
        assert_eq!(env(&once), want("a,b"));
        assert_eq!(
            review(&p, &req("west", "StatefulSet", "ext", &once)),
            Verdict::Allow
        );
        // A chart upgrade sends its own list again, next to the saved one.
        let upgraded = once.replace(r#""value":"-,-,$(CHART_HOSTS)""#, r#""value":"c,d""#);
        let again = apply(
            &upgraded,
            &review(&p, &req("west", "StatefulSet", "ext", &upgraded)),
        );
        assert_eq!(env(&again), want("c,d"));
        // A list shorter than this cluster's pods is refused, as sent or saved.
        for short in [sts("a"), once.replace(r#""value":"a,b""#, r#""value":"a""#)] {
            let Verdict::Deny(m) = review(&p, &req("west", "StatefulSet", "ext", &short)) else {
                panic!("{short}")
            };
            assert!(m.ends_with("HOSTS holds 1 entries where this cluster's 2 pods each need one: list every pod"), "{m}");
        }
        // A chart without the variable is left alone.
        let none = r#"{"spec":{"template":{"spec":{"initContainers":[{"name":"prepare"}],"containers":[{"name":"main"}]}}}}"#;
        assert_eq!(
            review(&p, &req("west", "StatefulSet", "ext", none)),
            Verdict::Allow
        );
        let discovery = r#"{"spec":{"template":{"spec":{"initContainers":[{"name":"prepare"},{"name":"auto-discovery"}]}}}}"#;
        let Verdict::Deny(m) = review(&p, &req("west", "StatefulSet", "ext", discovery)) else {
            panic!()
        };
        assert!(m.ends_with("turn autoDiscovery off"), "{m}");
        let ports = |n: usize| {
            let ports: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"name":"nodeport-{i}","containerPort":{}}}"#, 31090 + i))
                .collect();
            format!(
                r#"{{"spec":{{"template":{{"spec":{{"initContainers":[{{"name":"prepare"}}],"containers":[{{"name":"main","ports":[{}]}}]}}}}}}}}"#,
                ports.join(",")
            )
        };
        assert_eq!(
            review(&p, &req("west", "StatefulSet", "ext", &ports(3))),
            Verdict::Allow
        );
        let Verdict::Deny(m) = review(&p, &req("west", "StatefulSet", "ext", &ports(2))) else {
            panic!()
        };
        assert!(m.contains("declares 2 \"nodeport-*\" ports"), "{m}");
    }

    #[test]
    fn unknown_cluster_is_denied_and_names_the_field() {
        let p = plan();
        let Verdict::Deny(m) = review(&p, &req("north", "Service", "anything", "{}")) else {
            panic!()
        };
        assert!(
            m.contains("spec.clusters") && m.contains("east, west"),
            "{m}"
        );
    }

    #[test]
    fn unnamed_objects_and_other_kinds_pass_untouched() {
        let p = plan();
        assert_eq!(
            review(&p, &req("east", "StatefulSet", "kafka", STS)),
            Verdict::Allow
        );
        assert_eq!(
            review(&p, &req("west", "Secret", "kafka", "{}")),
            Verdict::Allow
        );
        assert_eq!(
            review(&p, &req("west", "StatefulSet", "other", STS)),
            Verdict::Allow
        );
    }

    #[test]
    fn scale_is_limited_to_the_id_block() {
        let p = plan();
        let scale = |n: u32| format!(r#"{{"spec":{{"replicas":{n}}}}}"#);
        assert_eq!(
            review(&p, &req("west", "Scale", "kafka", &scale(10))),
            Verdict::Allow
        );
        let Verdict::Deny(m) = review(&p, &req("west", "Scale", "kafka", &scale(11))) else {
            panic!()
        };
        assert!(m.contains("spec.kafka.brokers.idBlockSize"), "{m}");
    }

    #[test]
    fn configmap_properties_are_edited() {
        let p = plan();
        let cm = r#"{"metadata":{"name":"cfg"},"data":{"server.properties":"a=1"}}"#;
        let out = apply(cm, &review(&p, &req("west", "ConfigMap", "cfg", cm)));
        assert!(out.contains(r#"a=1\nbroker.rack=west"#), "{out}");
        assert_eq!(
            review(&p, &req("west", "ConfigMap", "cfg", &out)),
            Verdict::Allow
        );
    }

    #[test]
    fn malformed_objects_are_denied_not_panics() {
        let p = plan();
        for bad in [
            "",
            "{",
            "[]",
            "null",
            r#"{"spec":{"replicas":"x"}}"#,
            r#"{"spec":{}}"#,
            "\u{0}",
        ] {
            for kind in ["StatefulSet", "ConfigMap", "Scale"] {
                let name = if kind == "ConfigMap" { "cfg" } else { "kafka" };
                assert!(
                    matches!(review(&p, &req("west", kind, name, bad)), Verdict::Deny(_)),
                    "{kind} {bad:?}"
                );
            }
        }
        assert!(matches!(
            review(b"garbage", &req("west", "Service", "x", "{}")),
            Verdict::Deny(_)
        ));
    }
}
