//! `Op::Env` in CEL: the module's env edit as index-based JSON Patch
//! operations. Only names, indices and string values are read from the
//! object; entries are written whole as plain CEL maps (values of the
//! API's Go types do not convert back to JSON in a patch value).
//!
//! Two things the module does that this does not, both only reachable by
//! editing a stored object by hand: it drops later duplicates of a
//! variable it sets, and it moves a set variable found after the one it
//! must precede (here such a variable is replaced where it is).

use std::borrow::Cow;

use serde_json::{Value, json};
use straddle_policy::plan::{EnvValue, EnvVar};

use super::{lit, patch};

/// One variable the edit may set: its entry (a CEL map), when it is set at
/// all (CEL, `true` for a fixed value) and the variable it goes before.
struct Entry {
    name: String,
    value: String,
    when: String,
    before: Option<String>,
}

/// The variables and JSON Patch expression of the `k`-th op, in the
/// module's order: removed names go (ascending indices, each shifted by
/// the removals before it), then each set variable is replaced in place,
/// inserted before the variable it must precede (shifted by the inserts
/// before it), or appended.
pub(super) fn env(
    k: usize,
    container: &str,
    init: bool,
    set: &[EnvVar<'_>],
    remove: &[Cow<'_, str>],
) -> (Vec<Value>, String) {
    let spec = format!("object.spec.template.spec.{}", list(init));
    let (c, names, gone, kept) = (
        format!("c{k}"),
        format!("names{k}"),
        format!("gone{k}"),
        format!("kept{k}"),
    );
    let mut variables = vec![
        json!({"name": c, "expression": format!(
            "has({spec}) ? {spec}.map(c, c.name).indexOf({}) : -1", lit(container)
        )}),
        json!({"name": names, "expression": format!(
            "variables.{c} >= 0 && has({spec}[variables.{c}].env) ? {spec}[variables.{c}].env.map(e, e.name) : []"
        )}),
    ];
    let entries = entries(k, &spec, &c, &names, set, &mut variables);
    let set_names = entries
        .iter()
        .map(|e| lit(&e.name))
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
    variables.extend([
        // Indices of the entries to remove, ascending.
        json!({"name": gone, "expression": format!(
            "variables.{names}.filter(n, {goes}).map(n, variables.{names}.indexOf(n))"
        )}),
        json!({"name": kept, "expression": format!("variables.{names}.filter(n, !({goes}))")}),
    ]);
    let base = format!(
        "'/spec/template/spec/{}/' + string(variables.{c}) + '/env'",
        list(init)
    );
    let removals = format!(
        "variables.{gone}.map(i, {})",
        patch(
            "remove",
            &format!("{base} + '/' + string(i - size(variables.{gone}.filter(j, j < i)))"),
            None
        )
    );
    let at = |name: &str| format!("variables.{kept}.indexOf({})", lit(name));
    let mut replaces = Vec::new();
    let mut inserts = Vec::new();
    let mut appends = Vec::new();
    // (condition, index in `kept`) of the inserts so far.
    let mut earlier: Vec<(String, String)> = Vec::new();
    for e in &entries {
        let (when, at) = (&e.when, at(&e.name));
        let replace = patch(
            "replace",
            &format!("{base} + '/' + string({at})"),
            Some(&e.value),
        );
        let append = patch("add", &format!("{base} + '/-'"), Some(&e.value));
        replaces.push(format!("({when} && {at} >= 0 ? [{replace}] : [])"));
        match &e.before {
            Some(before) => {
                let b = self::at(&kept, before);
                let shift = earlier
                    .iter()
                    .map(|(c, i)| format!(" + ({c} && {i} <= {b} ? 1 : 0)"))
                    .collect::<String>();
                let insert = patch(
                    "add",
                    &format!("{base} + '/' + string({b}{shift})"),
                    Some(&e.value),
                );
                inserts.push(format!(
                    "(!({when}) || {at} >= 0 ? [] : {b} >= 0 ? [{insert}] : [{append}])"
                ));
                earlier.push((format!("({when} && {at} < 0 && {b} >= 0)"), b));
            }
            None => appends.push(format!("({when} && {at} < 0 ? [{append}] : [])")),
        }
    }
    // No env at all: the list is added with the fixed variables, in order.
    let whole = entries
        .iter()
        .filter(|e| e.when == "true")
        .map(|e| e.value.as_str())
        .collect::<Vec<_>>()
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
    (variables, expression)
}

fn list(init: bool) -> &'static str {
    if init { "initContainers" } else { "containers" }
}

fn at(kept: &str, name: &str) -> String {
    format!("variables.{kept}.indexOf({})", lit(name))
}

/// The set variables as entries. A `Prefixed` list (only when the chart
/// sets it) moves the chart's value to `saved`, unless it is already the
/// placeholder reference, and becomes `prefix$(saved)`.
fn entries(
    k: usize,
    spec: &str,
    c: &str,
    names: &str,
    set: &[EnvVar<'_>],
    variables: &mut Vec<Value>,
) -> Vec<Entry> {
    let mut out = Vec::new();
    for (j, var) in set.iter().enumerate() {
        let fixed = |value| Entry {
            name: var.name.to_string(),
            value,
            when: "true".into(),
            before: var.before.as_ref().map(|b| b.to_string()),
        };
        let (saved, prefix) = match &var.value {
            EnvValue::Literal(v) => {
                out.push(fixed(literal(&var.name, v)));
                continue;
            }
            EnvValue::FieldRef(path) => {
                out.push(fixed(field_ref(&var.name, path)));
                continue;
            }
            EnvValue::Prefixed { saved, prefix, .. } => (saved, prefix),
        };
        if prefix.is_empty() {
            continue; // the list is only checked (see validate.rs)
        }
        let values = format!("chart{k}_{j}");
        variables.push(json!({"name": values, "expression": format!(
            "variables.{c} >= 0 && has({spec}[variables.{c}].env) ? {spec}[variables.{c}].env.filter(e, e.name == {}).map(e, has(e.value) ? e.value : '') : []",
            lit(&var.name)
        )}));
        let present = format!("({} in variables.{names})", lit(&var.name));
        let chart = format!("variables.{values}[size(variables.{values}) - 1]");
        let reference = format!("{prefix}$({saved})");
        out.push(Entry {
            name: saved.to_string(),
            value: format!("{{'name': dyn({}), 'value': dyn({chart})}}", lit(saved)),
            when: format!("({present} && {chart} != {})", lit(&reference)),
            before: Some(var.name.to_string()),
        });
        out.push(Entry {
            name: var.name.to_string(),
            value: literal(&var.name, &reference),
            when: present,
            before: None,
        });
    }
    out
}

fn literal(name: &str, value: &str) -> String {
    format!(
        "{{'name': dyn({}), 'value': dyn({})}}",
        lit(name),
        lit(value)
    )
}

fn field_ref(name: &str, path: &str) -> String {
    format!(
        "{{'name': dyn({}), 'valueFrom': dyn({{'fieldRef': {{'apiVersion': 'v1', 'fieldPath': {}}}}})}}",
        lit(name),
        lit(path)
    )
}
