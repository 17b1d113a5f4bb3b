//! Diagnostics that name the file, line, field and the fix.

use std::fmt;

use serde_saphyr::granit_parser::{Event, Parser};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a spec, tied to a field path such as
/// `spec.kafka.brokers.replicas.east` or `spec.clusters[1].name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: String,
    pub message: String,
    pub fix: Option<String>,
    /// 1-based line and column in the spec file, when the field is found.
    pub location: Option<(usize, usize)>,
}

impl Diagnostic {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
            fix: None,
            location: None,
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(path, message)
        }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Diagnostics for one spec file, printable as `file:line:col: error: …`.
#[derive(Debug, Clone)]
pub struct Report {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// Fills in line numbers from the spec source.
    pub fn locate(&mut self, source: &str) {
        for d in &mut self.diagnostics {
            if d.location.is_none() {
                d.location = locate(source, &d.path);
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            let level = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            match d.location {
                Some((line, col)) => write!(f, "{}:{line}:{col}: ", self.file)?,
                None => write!(f, "{}: ", self.file)?,
            }
            if d.path.is_empty() {
                writeln!(f, "{level}: {}", d.message)?;
            } else {
                writeln!(f, "{level}: {}: {}", d.path, d.message)?;
            }
            if let Some(fix) = &d.fix {
                writeln!(f, "  fix: {fix}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Splits `a.b[2].c` into segments.
fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                segs.push(Seg::Key(rest[..open].to_string()));
            }
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(close) = stripped.find(']') else {
                    break;
                };
                if let Ok(i) = stripped[..close].parse() {
                    segs.push(Seg::Index(i));
                }
                rest = &stripped[close + 1..];
            }
        } else {
            segs.push(Seg::Key(rest.to_string()));
        }
    }
    segs
}

enum Frame {
    Map {
        key: Option<String>,
        expecting_key: bool,
        has_seg: bool,
    },
    Seq {
        next: usize,
        has_seg: bool,
    },
}

/// Calls `visit(path, line, col)` (1-based) for every mapping key and
/// sequence item of the first YAML document, in source order; stops when
/// `visit` returns true.
fn walk(source: &str, mut visit: impl FnMut(&[Seg], usize, usize) -> bool) {
    let mut stack: Vec<Frame> = Vec::new();
    let mut current: Vec<Seg> = Vec::new();
    let mut documents = 0;
    for item in Parser::new_from_str(source) {
        let Ok((event, span)) = item else { break };
        let (line, col) = (span.start.line(), span.start.col() + 1);
        match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    break;
                }
            }
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map {
                    key, expecting_key, ..
                }) = stack.last_mut()
                    && *expecting_key
                {
                    *key = Some(value.to_string());
                    *expecting_key = false;
                    current.push(Seg::Key(value.to_string()));
                    if visit(&current, line, col) {
                        return;
                    }
                    current.pop();
                    continue;
                }
                if let Some(seg) = value_segment(&mut stack) {
                    let is_item = matches!(seg, Seg::Index(_));
                    current.push(seg);
                    if is_item && visit(&current, line, col) {
                        return;
                    }
                    current.pop();
                }
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                let seg = value_segment(&mut stack);
                let has_seg = seg.is_some();
                if let Some(seg) = seg {
                    let is_item = matches!(seg, Seg::Index(_));
                    current.push(seg);
                    if is_item && visit(&current, line, col) {
                        return;
                    }
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq { next: 0, has_seg }
                } else {
                    Frame::Map {
                        key: None,
                        expecting_key: true,
                        has_seg,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let has_seg = match stack.pop() {
                    Some(Frame::Map { has_seg, .. } | Frame::Seq { has_seg, .. }) => has_seg,
                    None => false,
                };
                if has_seg {
                    current.pop();
                }
            }
            _ => {}
        }
    }
}

/// Finds the line and column of a field path in the first YAML document of
/// `source`; falls back to the deepest existing parent of the path.
pub fn locate(source: &str, path: &str) -> Option<(usize, usize)> {
    let target = parse_path(path);
    let mut best: Option<(usize, (usize, usize))> = None;
    walk(source, |current, line, col| {
        if target.starts_with(current) && best.is_none_or(|(len, _)| current.len() > len) {
            best = Some((current.len(), (line, col)));
        }
        current == target.as_slice()
    });
    best.map(|b| b.1)
}

/// The field path of the last key or item that starts at or before a
/// position (1-based): names the field of a parse error.
pub fn path_at(source: &str, line: usize, col: usize) -> Option<String> {
    let mut found = None;
    walk(source, |current, l, c| {
        if (l, c) > (line, col) {
            return true;
        }
        found = Some(format_path(current));
        false
    });
    found
}

fn format_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The path segment of a value about to start, advancing the parent frame.
fn value_segment(stack: &mut [Frame]) -> Option<Seg> {
    match stack.last_mut()? {
        Frame::Map {
            key, expecting_key, ..
        } => {
            *expecting_key = true;
            key.take().map(Seg::Key)
        }
        Frame::Seq { next, .. } => {
            let i = *next;
            *next += 1;
            Some(Seg::Index(i))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "\
apiVersion: v1
spec:
  clusters:
    - name: a
    - name: b
      rack: r
  kafka:
    brokers:
      replicas:
        a: 3
";

    #[test]
    fn finds_keys_and_list_items() {
        assert_eq!(locate(SRC, "spec.clusters[1].name"), Some((5, 7)));
        assert_eq!(locate(SRC, "spec.clusters[1].rack"), Some((6, 7)));
        assert_eq!(locate(SRC, "spec.kafka.brokers.replicas.a"), Some((10, 9)));
        assert_eq!(locate(SRC, "apiVersion"), Some((1, 1)));
    }

    #[test]
    fn positions_map_back_to_paths() {
        assert_eq!(path_at(SRC, 6, 7).as_deref(), Some("spec.clusters[1].rack"));
        assert_eq!(
            path_at(SRC, 10, 12).as_deref(),
            Some("spec.kafka.brokers.replicas.a")
        );
    }

    #[test]
    fn missing_fields_point_at_the_deepest_parent() {
        assert_eq!(locate(SRC, "spec.kafka.brokers.replicas.zz"), Some((9, 7)));
        assert_eq!(locate(SRC, "spec.zookeeper"), Some((2, 1)));
    }
}
