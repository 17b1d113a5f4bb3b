//! `straddle plan` as a person reads it (the golden files in
//! tests/golden/plan pin it byte for byte).

use std::fmt::Write as _;

use super::{ActionKind, RolloutPlan};

/// The human-readable plan.
pub fn to_text(p: &RolloutPlan) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "plan: grow {} from {} into the stretch ({} quorum)\n",
        p.stretch,
        p.from_cluster,
        p.quorum.as_str()
    );
    for s in &p.summary {
        let _ = writeln!(o, "{}", wrap(s, 0));
    }
    let _ = writeln!(
        o,
        "\nCommands use one kubectl context per cluster, named after the cluster.\n"
    );
    for step in &p.steps {
        let _ = writeln!(
            o,
            "step {}: {}{}",
            step.number,
            step.title,
            if step.keeps_quorum {
                ""
            } else {
                "   [ZOOKEEPER OUTAGE]"
            }
        );
        let _ = writeln!(o, "{}", wrap(&format!("changes: {}", step.changes), 2));
        if !step.commands.is_empty() {
            let _ = writeln!(o, "  run:");
            for c in &step.commands {
                let _ = writeln!(o, "    {}", c.run);
            }
        }
        if !step.zookeeper.is_empty() {
            let _ = writeln!(o, "  zookeeper:");
            for a in &step.zookeeper {
                let verb = match a.action {
                    ActionKind::Restart => "restart",
                    ActionKind::Start => "start  ",
                    ActionKind::RestartAll => "restart ALL",
                };
                let _ = writeln!(
                    o,
                    "    {verb} {:<28} -> {:<18} quorum while down/starting: {:<3}  after: {}",
                    a.pods.join(" "),
                    a.config,
                    yes_no(a.quorum_during),
                    yes_no(a.quorum_after),
                );
            }
            if let Some(overlap) = step.configs_overlap {
                let _ = writeln!(
                    o,
                    "    old and new configuration quorums overlap: {}",
                    if overlap {
                        "yes"
                    } else {
                        "NO (split brain possible if both run)"
                    }
                );
            }
        }
        if !step.wait_for.is_empty() {
            let _ = writeln!(o, "  wait for:");
            for w in &step.wait_for {
                let _ = writeln!(o, "{}", wrap(&format!("- {w}"), 4));
            }
        }
        let _ = writeln!(o);
    }
    o
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}

/// Wraps text at 100 columns with an indent.
fn wrap(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut lines = vec![pad.clone()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("at least one line");
        if line.len() > indent && line.len() + word.len() + 1 > 100 {
            lines.push(format!("{pad}  {word}"));
        } else {
            if line.len() > indent {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines.join("\n")
}
