//! A small writer for RFC 6902 JSON Patch documents.

/// Escapes one JSON Pointer reference token (RFC 6901).
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Collects patch operations and renders them as one JSON array.
#[derive(Default)]
pub struct PatchWriter {
    out: String,
    count: usize,
}

impl PatchWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `add` (also replaces an existing member of an object).
    pub fn add(&mut self, path: &str, value_json: &str) {
        self.op("add", path, Some(value_json));
    }

    pub fn replace(&mut self, path: &str, value_json: &str) {
        self.op("replace", path, Some(value_json));
    }

    fn op(&mut self, op: &str, path: &str, value_json: Option<&str>) {
        if self.count == 0 {
            // A patch of a chart's StatefulSet is a few KiB: one allocation
            // instead of a doubling from eight bytes.
            self.out.reserve(4096);
        }
        self.out.push_str(if self.count == 0 { "[" } else { "," });
        self.count += 1;
        self.out.push_str("{\"op\":\"");
        self.out.push_str(op);
        self.out.push_str("\",\"path\":");
        push_json_string(&mut self.out, path);
        if let Some(v) = value_json {
            self.out.push_str(",\"value\":");
            self.out.push_str(v);
        }
        self.out.push('}');
    }

    pub fn finish(mut self) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        self.out.push(']');
        Some(self.out)
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Copy runs of plain bytes at once; only `"`, `\\` and control bytes need escaping.
    let bytes = s.as_bytes();
    let mut from = 0;
    loop {
        let at = from + crate::json::plain_len(&bytes[from..]);
        let Some(&byte) = bytes.get(at) else { break };
        out.push_str(&s[from..at]);
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[usize::from(byte >> 4)] as char);
                out.push(HEX[usize::from(byte & 15)] as char);
            }
        }
        from = at + 1;
    }
    out.push_str(&s[from..]);
    out.push('"');
}

pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_string(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_through_serde() {
        for s in [
            "plain",
            "a\"b\\c",
            "line\nbreak\ttab",
            "\u{1}\u{1f}",
            "ünï 🦀",
        ] {
            let parsed: String = serde_json::from_str(&json_string(s)).unwrap();
            assert_eq!(parsed, s);
        }
    }

    #[test]
    fn pointer_tokens_are_escaped() {
        assert_eq!(escape_token("straddle.dev/policy"), "straddle.dev~1policy");
        assert_eq!(escape_token("a~b"), "a~0b");
    }

    #[test]
    fn empty_patch_is_none() {
        assert!(PatchWriter::new().finish().is_none());
        let mut p = PatchWriter::new();
        p.add("/a", "1");
        p.replace("/b", "\"x\"");
        let v: serde_json::Value = serde_json::from_str(&p.finish().unwrap()).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
    }
}
