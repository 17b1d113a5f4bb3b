//! Edits of Java `.properties` text as charts render it into ConfigMaps
//! (`key=value` lines). Untouched lines, comments and order are kept.

use crate::plan::PropEdit;

fn split_line(line: &str) -> Option<(&str, &str)> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
        return None;
    }
    let (k, v) = trimmed.split_once('=')?;
    Some((k.trim(), v))
}

/// Applies `edits` to `text`; returns the new text only when it changed.
pub fn apply(text: &str, edits: &[PropEdit<'_>]) -> Option<String> {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    // A trailing newline leaves an empty last element: keep new keys above it.
    let trailing_newline = text.ends_with('\n');
    let mut changed = false;
    for edit in edits {
        match edit {
            PropEdit::Set { key, value } | PropEdit::Replace { key, value } => {
                let only_if_present = matches!(edit, PropEdit::Replace { .. });
                let want = format!("{key}={value}");
                match find(&lines, key) {
                    Some(i) if lines[i] == want => {}
                    Some(i) => {
                        lines[i] = want;
                        changed = true;
                    }
                    None if only_if_present => {}
                    None => {
                        insert_line(&mut lines, trailing_newline, want);
                        changed = true;
                    }
                }
            }
            PropEdit::Family {
                prefix,
                lines: want,
            } => {
                let member =
                    |l: &String| split_line(l).is_some_and(|(k, _)| k.starts_with(prefix.as_ref()));
                let now: Vec<&String> = lines.iter().filter(|l| member(l)).collect();
                if now.len() == want.len() && now.iter().zip(want).all(|(a, b)| *a == b) {
                    continue;
                }
                let at = lines.iter().position(member);
                lines.retain(|l| !member(l));
                let want = want.iter().map(|l| l.to_string());
                match at {
                    Some(at) => {
                        lines.splice(at..at, want);
                    }
                    None => {
                        for line in want {
                            insert_line(&mut lines, trailing_newline, line);
                        }
                    }
                }
                changed = true;
            }
            PropEdit::Listener {
                key,
                listener,
                entry,
            } => {
                let prefix = format!("{listener}://");
                match find(&lines, key) {
                    Some(i) => {
                        let value = split_line(&lines[i]).map(|(_, v)| v).unwrap_or("");
                        let mut entries: Vec<&str> =
                            value.split(',').filter(|e| !e.trim().is_empty()).collect();
                        match entries.iter().position(|e| e.trim().starts_with(&prefix)) {
                            Some(j) if entries[j] == entry.as_ref() => continue,
                            Some(j) => entries[j] = entry,
                            None => entries.push(entry),
                        }
                        lines[i] = format!("{key}={}", entries.join(","));
                    }
                    None => insert_line(&mut lines, trailing_newline, format!("{key}={entry}")),
                }
                changed = true;
            }
        }
    }
    changed.then(|| lines.join("\n"))
}

fn find(lines: &[String], key: &str) -> Option<usize> {
    lines
        .iter()
        .position(|l| split_line(l).is_some_and(|(k, _)| k == key))
}

fn insert_line(lines: &mut Vec<String>, trailing_newline: bool, line: String) {
    if trailing_newline {
        let at = lines.len() - 1;
        lines.insert(at, line);
    } else {
        lines.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn set(k: &'static str, v: &'static str) -> PropEdit<'static> {
        PropEdit::Set {
            key: Cow::Borrowed(k),
            value: Cow::Borrowed(v),
        }
    }

    #[test]
    fn set_replaces_or_appends_and_is_idempotent() {
        let text = "# c\na=1\nb=2";
        let edits = [set("b", "3"), set("c", "4")];
        let once = apply(text, &edits).unwrap();
        assert_eq!(once, "# c\na=1\nb=3\nc=4");
        assert_eq!(apply(&once, &edits), None);
    }

    #[test]
    fn a_family_of_id_keys_is_replaced_where_it_was() {
        let edits = [PropEdit::Family {
            prefix: "server.".into(),
            lines: vec![
                "server.0=a:2888:3888".into(),
                "server.10=b:2888:3888".into(),
            ],
        }];
        let text = "tickTime=2000\nserver.0=x\nserver.1=y\nserver.2=z\nother=1\n";
        let once = apply(text, &edits).unwrap();
        assert_eq!(
            once,
            "tickTime=2000\nserver.0=a:2888:3888\nserver.10=b:2888:3888\nother=1\n"
        );
        assert_eq!(apply(&once, &edits), None);
        // Absent: appended; an empty family removes every member.
        assert_eq!(
            apply("a=1\n", &edits).unwrap(),
            "a=1\nserver.0=a:2888:3888\nserver.10=b:2888:3888\n"
        );
        let none = [PropEdit::Family {
            prefix: "group.".into(),
            lines: vec![],
        }];
        assert_eq!(apply("group.1=1:2\na=1", &none).unwrap(), "a=1");
        assert_eq!(apply("a=1", &none), None);
    }

    #[test]
    fn replace_only_touches_present_keys() {
        let edits = [PropEdit::Replace {
            key: "x".into(),
            value: "1".into(),
        }];
        assert_eq!(apply("a=1\n", &edits), None);
        assert_eq!(apply("x=0\n", &edits).unwrap(), "x=1\n");
    }

    #[test]
    fn trailing_newline_is_kept() {
        assert_eq!(apply("a=1\n", &[set("b", "2")]).unwrap(), "a=1\nb=2\n");
    }

    #[test]
    fn listener_entry_is_added_once() {
        let edit = [PropEdit::Listener {
            key: "advertised.listeners".into(),
            listener: "CONTROLLER".into(),
            entry: "CONTROLLER://h:9093".into(),
        }];
        let text = "advertised.listeners=CLIENT://h:9092,INTERNAL://h:9094\nx=1";
        let once = apply(text, &edit).unwrap();
        assert_eq!(
            once,
            "advertised.listeners=CLIENT://h:9092,INTERNAL://h:9094,CONTROLLER://h:9093\nx=1"
        );
        assert_eq!(apply(&once, &edit), None);
        assert_eq!(
            apply("x=1", &edit).unwrap(),
            "x=1\nadvertised.listeners=CONTROLLER://h:9093"
        );
        assert_eq!(
            apply("advertised.listeners=CONTROLLER://old:1", &edit).unwrap(),
            "advertised.listeners=CONTROLLER://h:9093"
        );
    }
}
