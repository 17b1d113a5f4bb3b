//! The module's warnings for objects the plan does not name, as
//! `ValidatingAdmissionPolicy` objects bound with `validationActions:
//! [Warn]`: an object with the labels of a chart the spec stretches, under a
//! release or namespace the spec does not name (or any such StatefulSet),
//! is admitted with the same warning the webhook gives.

use serde_json::{Value, json};
use straddle_policy::plan::Watch;

use super::{dns_name, lit, object};
use crate::charts;
use crate::topology::Topology;

/// A warning policy and binding per watched chart label; `planned` are the
/// objects of this cluster the plan names, as (resource, match condition):
/// they get no warning.
pub(super) fn warnings(topo: &Topology, planned: &[(&str, String)]) -> Vec<Value> {
    let named = planned
        .iter()
        .map(|(resource, condition)| {
            format!(
                "(request.resource.resource == {} && {condition})",
                lit(resource)
            )
        })
        .collect::<Vec<_>>()
        .join(" || ");
    let named = if named.is_empty() {
        "false".into()
    } else {
        named
    };
    let mut out = Vec::new();
    for watch in charts::watches(topo) {
        let name = dns_name(&format!(
            "straddle-{}-warn-{}-{}",
            topo.name, watch.label, watch.value
        ));
        out.push(object(
            "ValidatingAdmissionPolicy",
            &name,
            json!({
                "failurePolicy": "Ignore",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["statefulsets"],
                        },
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["services", "configmaps"],
                        },
                        {
                            "apiGroups": ["networking.k8s.io"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["networkpolicies"],
                        },
                    ],
                    "objectSelector": {"matchLabels": {watch.label.as_ref(): watch.value.as_ref()}},
                },
                "matchConditions": [{"name": "not-named-by-the-plan", "expression": format!("!({named})")}],
                "variables": [{"name": "release", "expression": format!(
                    "{} in object.metadata.labels ? object.metadata.labels[{}] : ''",
                    lit(&watch.release_label),
                    lit(&watch.release_label)
                )}, {"name": "known", "expression": format!(
                    "variables.release == {} && request.namespace == {}",
                    lit(&watch.release),
                    lit(&watch.namespace)
                )}],
                "validations": [{
                    "expression": "variables.known && request.kind.kind != 'StatefulSet'",
                    "messageExpression": message(topo, &watch),
                }],
            }),
        ));
        out.push(object(
            "ValidatingAdmissionPolicyBinding",
            &name,
            json!({"policyName": name, "validationActions": ["Warn"]}),
        ));
    }
    out
}

/// The webhook's warning text (policy/engine `watched`), in CEL.
fn message(topo: &Topology, watch: &Watch<'_>) -> String {
    let field = &watch.field;
    let known = "the spec names no StatefulSet of that name (check the chart's name or \
                 fullname override against the spec)";
    let unknown = format!(
        "the spec names release \"{}\" in namespace \"{}\"",
        watch.release, watch.namespace
    );
    format!(
        "request.kind.kind + ' ' + request.namespace + '/' + request.name + ' (release \"' + \
         variables.release + {} + (variables.known ? {} : {}) + {}",
        lit(&format!(
            "\") has the labels of chart {} ({}={}), but stretch \"{}\" does not name it: ",
            watch.chart, watch.label, watch.value, topo.name
        )),
        lit(known),
        lit(&unknown),
        lit(&format!(
            ". It passes unmutated, so this cluster would run its own ensemble with colliding \
             IDs: install the chart as {field}.release and {field}.namespace say, or correct \
             them (and {field}.fullnameOverride) and recompile."
        )),
    )
}
