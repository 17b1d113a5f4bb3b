//! review(): the decision for one admission request.
//!
//! Every op in a rule states an end value. The engine compares the object
//! with those values and patches only the differences, which makes review
//! idempotent (a mutated object yields no patch) and independent of the
//! operation (CREATE and UPDATE give the same values; the old object is never
//! consulted).

use std::borrow::Cow;

use crate::k8s;
use crate::patch::{PatchWriter, escape_token, json_string, push_json_string};
use crate::plan::{BundleInfo, Check, EnvValue, EnvVar, ObjectKind, ObjectRule, Op, Plan};
use crate::props;

mod object_text;
pub(crate) use object_text::ObjectText;

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
    review_object(plan, req, &ObjectText::whole(req.object))
}

/// [`review_plan`] with the object given as [`ObjectText`] (`req.object` is
/// not read).
pub(crate) fn review_object(
    plan: &Plan<'_>,
    req: &Request<'_>,
    object: &ObjectText<'_>,
) -> Verdict {
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
        Ok(None) => return unnamed_object(plan, req, object, kind),
        Err(e) => return Verdict::Deny(format!("policy module has no valid plan: {e}")),
    };
    for check in &rule.checks {
        if let (Check::Indices { count, beyond }, Some(i)) = (check, index)
            && i >= *count
        {
            if beyond.is_empty() {
                return unnamed_object(plan, req, object, kind);
            }
            return Verdict::Deny(format!("{target}: index {i} is beyond {count}: {beyond}"));
        }
    }
    if is_scale {
        return scale(&target, &rule, object);
    }
    for check in &rule.checks {
        if let Check::Refuse { message } = check {
            return Verdict::Deny(format!("{target}: {message}"));
        }
    }
    let result = match kind {
        ObjectKind::StatefulSet => statefulset(&target, &rule, object),
        ObjectKind::Service => service(&target, &rule, object, index),
        ObjectKind::ConfigMap => configmap(&target, &rule, object),
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
fn unnamed_object(
    plan: &Plan<'_>,
    req: &Request<'_>,
    object: &ObjectText<'_>,
    kind: ObjectKind,
) -> Verdict {
    let cluster = req.cluster;
    match plan.bundle() {
        Ok(b) if b.clusters.iter().any(|c| c == cluster) => {
            watched(&b, req, object, kind).map_or(Verdict::Allow, Verdict::Warn)
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
fn watched(
    bundle: &BundleInfo<'_>,
    req: &Request<'_>,
    object: &ObjectText<'_>,
    kind: ObjectKind,
) -> Option<String> {
    if bundle.watches.is_empty() || req.kind == "Scale" {
        return None;
    }
    let object = object.read(k8s::Object::read).ok()?;
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

fn statefulset(
    t: &Target<'_>,
    rule: &ObjectRule<'_>,
    object: &ObjectText<'_>,
) -> Result<PatchWriter, String> {
    let sts = object
        .read(k8s::StatefulSet::read)
        .map_err(|e| format!("{t}: cannot read the object ({e})"))?;
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
                if let Some(env) = desired_env(current, set, remove) {
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
            Some(raw) => k8s::words(raw)
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
            for env in c.env.as_deref().unwrap_or(&[]) {
                if env.entry.name == *name {
                    found = Some(env.entry.value.as_deref().unwrap_or_default());
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
    let volumes =
        k8s::Named::list(raw).map_err(|e| format!("{t}: cannot read the pod's volumes ({e})"))?;
    Ok(volumes.iter().any(|v| v.name == name))
}

/// Whether the pod template mounts or reads Secret `name`.
fn uses_secret(t: &Target<'_>, pod: Option<&k8s::PodSpec<'_>>, name: &str) -> Result<bool, String> {
    let Some(pod) = pod else {
        return Ok(false);
    };
    let unreadable =
        |e: crate::json::Error| format!("{t}: cannot read the pod's Secret references ({e})");
    let containers = || {
        pod.containers
            .iter()
            .chain(pod.init_containers.iter())
            .flatten()
    };
    // Env entries are decoded already: a Secret can only be their
    // `valueFrom.secretKeyRef`.
    let key_refs = containers()
        .flat_map(|c| c.env.iter().flatten())
        .filter_map(|env| env.entry.value_from.as_ref()?.secret_key_ref);
    for raw in key_refs {
        let key_ref = k8s::SecretRef::from_json(raw).map_err(unreadable)?;
        if key_ref.name.is_some_and(|n| n == name) {
            return Ok(true);
        }
    }
    for raw in containers().filter_map(|c| c.env_from).chain(pod.volumes) {
        let refs = k8s::SecretRefs::from_json(raw).map_err(unreadable)?;
        if refs.0.iter().any(|r| r == name) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn scale(t: &Target<'_>, rule: &ObjectRule<'_>, object: &ObjectText<'_>) -> Verdict {
    let scale = match object.read(k8s::Scale::read) {
        Ok(s) => s,
        Err(e) => return Verdict::Deny(format!("Scale of {t}: cannot read the object ({e})")),
    };
    let Some(replicas) = scale.replicas else {
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
    object: &ObjectText<'_>,
    index: Option<u32>,
) -> Result<PatchWriter, String> {
    let svc = object
        .read(k8s::Service::read)
        .map_err(|e| format!("{t}: cannot read the object ({e})"))?;
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
    if current.target_port != Some(want.as_str()) {
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

fn configmap(
    t: &Target<'_>,
    rule: &ObjectRule<'_>,
    object: &ObjectText<'_>,
) -> Result<PatchWriter, String> {
    let cm = object
        .read(k8s::ConfigMap::read)
        .map_err(|e| format!("{t}: cannot read the object ({e})"))?;
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
    current: &[k8s::Env<'_>],
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
        for env in current {
            let value = env.entry.value.as_deref().unwrap_or_default();
            if env.entry.name == var.name {
                chart_value = Some(value.to_owned());
            } else if env.entry.name == *saved {
                saved_value = Some(value.to_owned());
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
    Keep(&'a str),
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
    current: &[k8s::Env<'_>],
    set: &'r [EnvVar<'r>],
    remove: &[Cow<'_, str>],
) -> Option<String> {
    let mut items: Vec<(Cow<'_, str>, EnvItem<'_, 'r>, bool)> =
        Vec::with_capacity(current.len() + set.len());
    for env in current {
        let matches = |v: &EnvVar<'_>| env_matches(&env.entry, v);
        let name = env.entry.name.clone();
        let ok = set.iter().find(|v| v.name == name).is_none_or(matches);
        items.push((name, EnvItem::Keep(env.raw), ok));
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
        return None;
    }
    let mut out = String::from("[");
    for (i, (_, item, _)) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            EnvItem::Keep(raw) => out.push_str(raw),
            EnvItem::Set(var) => render_env(&mut out, var),
        }
    }
    out.push(']');
    Some(out)
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
pub(crate) mod tests;
