//! Edits inside text in CEL: a properties file in a ConfigMap data key
//! (`Op::Properties`, as `props::apply` does it) and one line of a
//! container's script (`Op::ScriptLine`). The text is split into lines;
//! each edit is a variable computed from the one before (lists are edited
//! with `slice` and `transformList`, CEL list libraries of Kubernetes
//! 1.32+/1.34+), and the data is replaced only when the result differs.

use serde_json::{Value, json};
use straddle_policy::plan::PropEdit;

use super::{lit, patch, token};

/// A line that holds a key (not blank, not a comment, has `=`).
fn key_line(l: &str) -> String {
    format!("(!{l}.trim().startsWith('#') && !{l}.trim().startsWith('!') && {l}.contains('='))")
}

/// The key of a [`key_line`].
fn key(l: &str) -> String {
    format!("{l}.substring(0, {l}.indexOf('=')).trim()")
}

/// `line` added at the end of `lines`, before the empty last line of a
/// text that ends in a newline.
fn insert(lines: &str, trailing: &str, line: &str) -> String {
    format!(
        "({trailing} ? {lines}.slice(0, size({lines}) - 1) + {line} + [{lines}[size({lines}) - 1]] : {lines} + {line})"
    )
}

/// The variables and mutation of the `k`-th op, editing `data[data_key]`.
pub(super) fn properties(k: usize, data_key: &str, edits: &[PropEdit<'_>]) -> (Vec<Value>, String) {
    let text = format!("object.data[{}]", lit(data_key));
    let present = format!("has(object.data) && {} in object.data", lit(data_key));
    let trailing = format!("variables.trailing{k}");
    let mut variables = vec![
        json!({"name": format!("trailing{k}"), "expression": format!("{text}.endsWith('\\n')")}),
        json!({"name": format!("lines{k}_0"), "expression": format!("{text}.split('\\n')")}),
    ];
    for (e, edit) in edits.iter().enumerate() {
        let l = format!("variables.lines{k}_{e}");
        let i = format!("variables.at{k}_{e}");
        let mut index_of = |what: &str| {
            variables.push(json!({"name": format!("at{k}_{e}"), "expression": format!(
                "{l}.map(l, {} && {what}).indexOf(true)", key_line("l")
            )}));
        };
        let next = match edit {
            PropEdit::Set { key: name, value } | PropEdit::Replace { key: name, value } => {
                index_of(&format!("{} == {}", key("l"), lit(name)));
                let want = lit(&format!("{name}={value}"));
                let missing = if matches!(edit, PropEdit::Replace { .. }) {
                    l.clone()
                } else {
                    insert(&l, &trailing, &format!("[{want}]"))
                };
                format!(
                    "{i} >= 0 ? ({l}[{i}] == {want} ? {l} : {l}.transformList(j, x, j == {i} ? {want} : x)) : {missing}"
                )
            }
            PropEdit::Family { prefix, lines } => {
                let member = format!(
                    "{} && {}.startsWith({})",
                    key_line("l"),
                    key("l"),
                    lit(prefix)
                );
                index_of(&format!("{}.startsWith({})", key("l"), lit(prefix)));
                let want = format!(
                    "[{}]",
                    lines.iter().map(|x| lit(x)).collect::<Vec<_>>().join(", ")
                );
                let rest = format!("{l}.filter(l, !({member}))");
                format!(
                    "{l}.filter(l, {member}) == {want} ? {l} : {i} >= 0 ? {rest}.slice(0, {i}) + {want} + {rest}.slice({i}, size({rest})) : {}",
                    insert(&rest, &trailing, &want)
                )
            }
            PropEdit::Listener {
                key: name,
                listener,
                entry,
            } => {
                index_of(&format!("{} == {}", key("l"), lit(name)));
                let entries = format!("variables.entries{k}_{e}");
                let j = format!("variables.listener{k}_{e}");
                variables.push(json!({"name": format!("entries{k}_{e}"), "expression": format!(
                    "{i} >= 0 ? {l}[{i}].substring({l}[{i}].indexOf('=') + 1).split(',').filter(x, x.trim() != '') : []"
                )}));
                variables.push(
                    json!({"name": format!("listener{k}_{e}"), "expression": format!(
                        "{entries}.map(x, x.trim().startsWith({})).indexOf(true)",
                        lit(&format!("{listener}://"))
                    )}),
                );
                let entry = lit(entry);
                let updated = format!(
                    "({j} >= 0 ? {entries}.transformList(n, x, n == {j} ? {entry} : x) : {entries} + [{entry}])"
                );
                format!(
                    "{i} < 0 ? {} : {j} >= 0 && {entries}[{j}] == {entry} ? {l} : {l}.transformList(n, x, n == {i} ? {} + {updated}.join(',') : x)",
                    insert(
                        &l,
                        &trailing,
                        &format!("[{} + {entry}]", lit(&format!("{name}=")))
                    ),
                    lit(&format!("{name}=")),
                )
            }
        };
        variables.push(json!({"name": format!("lines{k}_{}", e + 1), "expression": next}));
    }
    let result = format!("variables.lines{k}_{}.join('\\n')", edits.len());
    let expression = format!(
        "{present} && {result} != {text} ? [{}] : []",
        patch(
            "replace",
            &lit(&format!("/data/{}", token(data_key))),
            Some(&result)
        )
    );
    (variables, expression)
}

/// CEL: does the script `w` hold a line whose first word starts with `prefix`.
pub(super) fn has_line(w: &str, prefix: &str) -> String {
    format!(
        "{w}.split('\\n').exists(l, l.trim().startsWith({}))",
        lit(prefix)
    )
}

/// The variables and mutation of the `k`-th op: in the first `command`,
/// else `args`, word with a line starting with `prefix`, every such line
/// becomes `line` (indentation kept).
pub(super) fn script_line(
    k: usize,
    container: &str,
    prefix: &str,
    line: &str,
) -> (Vec<Value>, String) {
    let spec = "object.spec.template.spec.containers";
    let c = format!("variables.script{k}");
    let mut variables = vec![json!({"name": format!("script{k}"), "expression": format!(
        "{spec}.map(c, c.name).indexOf({})", lit(container)
    )})];
    let edited = |w: &str| {
        format!(
            "{w}.split('\\n').map(l, l.trim().startsWith({}) ? l.substring(0, l.indexOf(l.trim())) + {} : l).join('\\n')",
            lit(prefix),
            lit(line)
        )
    };
    let mut branches = Vec::new();
    for field in ["command", "args"] {
        let words = format!("variables.{field}{k}");
        let at = format!("variables.{field}At{k}");
        variables.push(json!({"name": format!("{field}{k}"), "expression": format!(
            "{c} >= 0 && has({spec}[{c}].{field}) ? {spec}[{c}].{field} : []"
        )}));
        variables.push(
            json!({"name": format!("{field}At{k}"), "expression": format!(
                "{words}.map(w, {}).indexOf(true)", has_line("w", prefix)
            )}),
        );
        let word = format!("{words}[{at}]");
        let new = format!("variables.{field}New{k}");
        variables.push(
            json!({"name": format!("{field}New{k}"), "expression": format!(
                "{at} >= 0 ? {} : ''", edited(&word)
            )}),
        );
        let path =
            format!("'/spec/template/spec/containers/' + string({c}) + '/{field}/' + string({at})");
        branches.push((
            format!("{at} >= 0"),
            format!(
                "({new} != {word} ? [{}] : [])",
                patch("replace", &path, Some(&new))
            ),
        ));
    }
    let expression = format!(
        "{} ? {} : ({} ? {} : [])",
        branches[0].0, branches[0].1, branches[1].0, branches[1].1
    );
    (variables, expression)
}
