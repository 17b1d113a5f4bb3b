//! The module's checks as `ValidatingAdmissionPolicy` validations, with
//! its messages: denials for refused chart variants, scale limits on the
//! `/scale` subresource, and the chart shapes the mutations expect.

use serde_json::{Value, json};
use straddle_policy::plan::{Check, EnvValue, Op};

use super::text::has_line;
use super::{Target, condition, lit, object};
use crate::charts::PlannedObject;

/// The validating policy and binding of one object's checks.
pub(super) fn validations(t: &Target, o: &PlannedObject) -> Vec<Value> {
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
    // The module denies an object without the container, data key or
    // script line an op edits, and a placeholder list that is too short.
    for op in &o.rule.ops {
        match op {
            Op::Properties { data_key, .. } => object_rules.push(deny(
                format!("has(object.data) && {} in object.data", lit(data_key)),
                format!(
                    "{}: data key \"{data_key}\" not found; the object does not have the chart \
                     shape {} expects (check the chart kind and version in the stretch spec)",
                    t.label, o.rule.field
                ),
            )),
            Op::ScriptLine {
                container, prefix, ..
            } => {
                let words = |field: &str| {
                    format!(
                        "(has(c.{field}) && c.{field}.exists(w, {}))",
                        has_line("w", prefix)
                    )
                };
                object_rules.push(deny(
                    format!(
                        "{}.exists(c, c.name == {})",
                        containers(false),
                        lit(container)
                    ),
                    format!(
                        "{}: container \"{container}\" not found; the object does not have the \
                         chart shape the policy expects (check the chart kind and version in the \
                         stretch spec)",
                        t.label
                    ),
                ));
                object_rules.push(deny(
                    format!(
                        "!{}.exists(c, c.name == {}) || {}.exists(c, c.name == {} && ({} || {}))",
                        containers(false),
                        lit(container),
                        containers(false),
                        lit(container),
                        words("command"),
                        words("args")
                    ),
                    format!(
                        "{}: no line starting with \"{prefix}\" in the script of container \
                         \"{container}\"; the object does not have the chart shape the policy \
                         expects (check the chart kind and version in the stretch spec)",
                        t.label
                    ),
                ));
            }
            Op::Env {
                container,
                init,
                set,
                ..
            } => {
                for var in set {
                    if let EnvValue::Prefixed {
                        saved,
                        prefix,
                        entries,
                        short,
                    } = &var.value
                    {
                        object_rules.push(prefixed_list(
                            t,
                            &containers(*init),
                            container,
                            &var.name,
                            &format!("{prefix}$({saved})"),
                            saved,
                            *entries,
                            short,
                        ));
                    }
                }
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
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut policy = |suffix: &str, resource: String, rules: Vec<Value>| {
        if rules.is_empty() {
            return;
        }
        let name = format!("{}{suffix}", t.policy);
        out.push(object(
            "ValidatingAdmissionPolicy",
            &name,
            json!({
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": t.rules(&resource)},
                "matchConditions": [{"name": "this-object", "expression": condition(t, o)}],
                "validations": rules,
            }),
        ));
        out.push(object(
            "ValidatingAdmissionPolicyBinding",
            &name,
            json!({"policyName": name, "validationActions": ["Deny"]}),
        ));
    };
    policy("", t.resource.to_string(), object_rules);
    policy("-scale", format!("{}/scale", t.resource), scale_rules);
    out
}

/// A chart list the plan moves behind placeholders must hold an entry per
/// pod of this cluster (read where an earlier review saved it).
#[allow(clippy::too_many_arguments)]
fn prefixed_list(
    t: &Target,
    containers: &str,
    container: &str,
    name: &str,
    reference: &str,
    saved: &str,
    entries: u32,
    short: &str,
) -> Value {
    let last = |n: &str| {
        format!(
            "c.env.filter(e, e.name == {}).map(e, has(e.value) ? e.value : '')",
            lit(n)
        )
    };
    let (chart, saved) = (last(name), last(saved));
    let list = format!(
        "({chart}[size({chart}) - 1] == {} ? ([''] + {saved})[size({saved})] : {chart}[size({chart}) - 1])",
        lit(reference)
    );
    let count = format!("size({list}.replace(' ', ',').split(',').filter(x, x != ''))");
    let this = format!(
        "c.name == {} && has(c.env) && c.env.exists(e, e.name == {})",
        lit(container),
        lit(name)
    );
    json!({
        "expression": format!("!{containers}.exists(c, {this} && {count} < {entries})"),
        "messageExpression": format!(
            "{} + ': ' + {} + ' holds ' + string({containers}.filter(c, {this}).map(c, {count})[0]) + {}",
            lit(&t.label),
            lit(name),
            lit(&format!(" entries where this cluster's {entries} pods each need one: {short}"))
        ),
    })
}
