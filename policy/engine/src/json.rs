//! A small borrowed JSON reader: the one the engine decodes objects with.
//!
//! The engine reads a few dozen fields of objects that hold hundreds of
//! strings. A reader that callers drive field by field (`object`, `array`,
//! `string`, ...) decodes only those fields, skips the rest in one pass, and
//! is a fraction of the code serde's derived decoders cost in the wasm guest.
//!
//! It accepts exactly the JSON that `serde_json::Value` accepts (except for
//! numbers within an ulp of `f64::MAX`, which it rounds correctly): numbers
//! beyond `f64` are refused, strings may not hold control characters or
//! lone surrogate escapes, nesting stops at 127 levels, and only whitespace
//! may follow the value. It is the only check of the object's text: the
//! webhook only finds where the object ends. A key given twice is read
//! twice, so the last one wins, as in Kubernetes' own decoder.

use std::borrow::Cow;
use std::fmt;

mod number;
mod plain;
mod scan;

use number::beyond_f64;
pub use plain::plain_len;

/// Nesting levels `serde_json` allows (its recursion limit is 128).
const MAX_DEPTH: u32 = 128;

/// Why a document could not be read, with where.
///
/// Boxed: every reader call returns a `Result`, and a one-word error keeps
/// those small enough for the guest to pass in registers rather than
/// through its stack in memory (errors are rare; reads are not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(Box<ErrorAt>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorAt {
    /// The field the error is in, e.g. `spec.template.spec.containers[0].env`.
    path: String,
    message: String,
}

impl Error {
    /// Prefixes the path with an object key.
    fn within(mut self, key: &str) -> Error {
        let path = &mut self.0.path;
        if path.is_empty() || path.starts_with('[') {
            path.insert_str(0, key);
        } else {
            path.insert(0, '.');
            path.insert_str(0, key);
        }
        self
    }

    /// Prefixes the path with an array index.
    fn at_index(mut self, index: usize) -> Error {
        let path = &mut self.0.path;
        let sep = if path.is_empty() || path.starts_with('[') {
            ""
        } else {
            "."
        };
        path.insert_str(0, &format!("[{index}]{sep}"));
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ErrorAt { path, message } = &*self.0;
        if path.is_empty() {
            f.write_str(message)
        } else {
            write!(f, "{path}: {message}")
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A cursor over one JSON document.
pub struct Reader<'a> {
    src: &'a str,
    pos: usize,
    depth: u32,
}

impl<'a> Reader<'a> {
    pub fn new(src: &'a str) -> Self {
        Reader {
            src,
            pos: 0,
            depth: MAX_DEPTH,
        }
    }

    /// Reads a whole document with `read`; only whitespace may follow.
    pub fn document<T>(src: &'a str, read: impl FnOnce(&mut Reader<'a>) -> Result<T>) -> Result<T> {
        let mut r = Reader::new(src);
        let value = read(&mut r)?;
        if r.peek().is_some() {
            return Err(r.fail("trailing characters after the JSON value"));
        }
        Ok(value)
    }

    /// A reader of `src` that may nest only `depth` more levels: for a value
    /// inside a larger document, read on its own (its errors' places count
    /// from its first byte) but held to the document's nesting limit.
    pub(crate) fn nested(src: &'a str, depth: u32) -> Self {
        Reader { src, pos: 0, depth }
    }

    /// How far the reader has read.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Nesting levels left at the cursor (see [`nested`](Self::nested)).
    pub(crate) fn depth_left(&self) -> u32 {
        self.depth
    }

    /// The input from the next value on.
    pub(crate) fn rest(&mut self) -> &'a str {
        self.peek();
        &self.src[self.pos..]
    }

    /// Moves past `len` bytes of [`rest`](Self::rest) that another reader
    /// read as one whole value.
    pub(crate) fn advance(&mut self, len: usize) {
        self.peek();
        self.pos += len;
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    /// The next non-whitespace byte, without consuming it.
    ///
    /// Inlined, with a fast path: the objects the API server sends are
    /// compact, so the next byte is almost never whitespace.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        match self.bytes().get(self.pos) {
            Some(&b) if b > b' ' => Some(b),
            _ => self.skip_whitespace(),
        }
    }

    #[inline(never)]
    fn skip_whitespace(&mut self) -> Option<u8> {
        let bytes = self.bytes();
        while let Some(&b) = bytes.get(self.pos) {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    /// An error at the current position.
    fn fail(&self, message: &str) -> Error {
        let before = &self.bytes()[..self.pos.min(self.src.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.len()
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
        Error(Box::new(ErrorAt {
            path: String::new(),
            message: format!("{message} at line {line} column {}", column + 1),
        }))
    }

    /// "expected X, found Y" for the value at the cursor.
    fn expected(&mut self, what: &str) -> Error {
        let found = match self.peek() {
            None => "the end of the input",
            Some(b'{') => "an object",
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            Some(b'-' | b'0'..=b'9') => "a number",
            Some(_) => "an unexpected character",
        };
        self.fail(&format!("expected {what}, found {found}"))
    }

    #[inline(always)]
    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &str) -> Result<()> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.fail("invalid literal"))
        }
    }

    /// The first byte of the next value (`{`, `[`, `"`, ...), if any.
    pub fn next_byte(&mut self) -> Option<u8> {
        self.peek()
    }

    /// The error for a required field an object lacks.
    pub fn missing(&self, field: &str) -> Error {
        self.fail(&format!("missing field `{field}`"))
    }

    /// `read`, and the text of what it read.
    pub fn spanned<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<(T, &'a str)> {
        self.peek();
        let start = self.pos;
        let value = read(self)?;
        Ok((value, &self.src[start..self.pos]))
    }

    /// Consumes a `null` if one is next (inlined: most optional fields
    /// are not null, and the call cost more than the check).
    #[inline]
    pub fn null(&mut self) -> Result<bool> {
        if self.peek() == Some(b'n') {
            self.literal("null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// `read` for a value that may also be `null` (or is absent: callers keep
    /// `None` for fields they never see).
    pub fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        if self.null()? {
            Ok(None)
        } else {
            read(self).map(Some)
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth -= 1;
        if self.depth == 0 {
            return Err(self.fail("recursion limit exceeded: nesting deeper than 127 levels"));
        }
        Ok(())
    }

    /// Reads an object, calling `field` with each key; `field` must read or
    /// [`skip`](Self::skip) the value.
    ///
    /// Generic, so that `field` is a direct call (an indirect one costs a
    /// table entry set up in every fresh instance); the loop's work is in
    /// [`next_key`](Self::next_key), so each caller adds little code.
    pub fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &Cow<'a, str>) -> Result<()>,
    ) -> Result<()> {
        let mut first = true;
        while let Some(key) = self.next_key(&mut first)? {
            field(self, &key).map_err(|e| e.within(&key))?;
        }
        Ok(())
    }

    /// The next key of an object and its `:` (`{` first, `,` between), or
    /// `None` after its `}`.
    #[inline(never)]
    fn next_key(&mut self, first: &mut bool) -> Result<Option<Cow<'a, str>>> {
        let first = std::mem::take(first);
        // Entering the object costs a level (`open`); the checked path
        // reports the nesting limit.
        if !first || self.depth > 1 {
            match scan::next_key(self.bytes(), self.pos, first) {
                Some(scan::Member::Key { start, end, next }) => {
                    // `get`: the range is on character boundaries (it
                    // follows and ends at a quote), and no panic path
                    // costs the loop registers.
                    if let Some(key) = self.src.get(start..end) {
                        if first {
                            self.depth -= 1;
                        }
                        self.pos = next;
                        return Ok(Some(Cow::Borrowed(key)));
                    }
                }
                Some(scan::Member::Closed { next }) => {
                    if !first {
                        self.depth += 1;
                    }
                    self.pos = next;
                    return Ok(None);
                }
                None => {}
            }
        }
        self.next_key_checked(first)
    }

    /// [`next_key`](Self::next_key) the checked way: escaped keys, and
    /// every error named and placed.
    #[inline(never)]
    fn next_key_checked(&mut self, first: bool) -> Result<Option<Cow<'a, str>>> {
        let more = if first {
            self.open(b'{', b'}')?
        } else {
            self.after_member(b'}')?
        };
        if !more {
            return Ok(None);
        }
        if self.peek() != Some(b'"') {
            return Err(self.expected("a key"));
        }
        let key = self.string_inline()?;
        self.colon()?;
        Ok(Some(key))
    }

    /// Reads an array, calling `item` for each element, which it must read
    /// or skip (generic for the same reason as [`object`](Self::object)).
    pub fn array(&mut self, mut item: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        let mut index = 0;
        while self.next_item(index)? {
            item(self).map_err(|e| e.at_index(index))?;
            index += 1;
        }
        Ok(())
    }

    /// Whether an array has an item `index` (`[` before the first, `,`
    /// between); consumes the `]` after the last.
    #[inline(never)]
    fn next_item(&mut self, index: usize) -> Result<bool> {
        if index == 0 {
            self.open(b'[', b']')
        } else {
            self.after_member(b']')
        }
    }

    /// Consumes `open` (`{` or `[`) and enters the container; `false` when
    /// `close` follows at once (consumed, the container left).
    ///
    /// The punctuation helpers are inlined by hand: at the guest's
    /// opt-level `s` they were calls, and a call in the guest (with its
    /// epoch check) costs about what the helper does. Inlining them cut
    /// instructions per review by a fifth for 2.4 KB of code.
    #[inline(always)]
    fn open(&mut self, open: u8, close: u8) -> Result<bool> {
        if !self.eat(open) {
            return Err(self.expected(if open == b'{' {
                "an object"
            } else {
                "an array"
            }));
        }
        self.enter()?;
        Ok(!self.leave_on(close))
    }

    /// After a member: `true` on `,` (consumed), `false` on `close`
    /// (consumed, the container left).
    #[inline(always)]
    fn after_member(&mut self, close: u8) -> Result<bool> {
        if self.eat(b',') {
            return Ok(true);
        }
        if self.leave_on(close) {
            return Ok(false);
        }
        Err(self.fail(if close == b'}' {
            "expected `,` or `}`"
        } else {
            "expected `,` or `]`"
        }))
    }

    #[inline(always)]
    fn leave_on(&mut self, close: u8) -> bool {
        let closed = self.eat(close);
        if closed {
            self.depth += 1;
        }
        closed
    }

    #[inline(always)]
    fn colon(&mut self) -> Result<()> {
        if self.eat(b':') {
            Ok(())
        } else {
            Err(self.fail("expected `:`"))
        }
    }

    /// Reads an array into a Vec.
    pub fn vec<T>(&mut self, mut read: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        // Most lists in an object are short; starting at 8 saves the
        // first reallocations (the guest's arena is reset after each review).
        let mut out = Vec::with_capacity(8);
        self.array(|r| {
            out.push(read(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Reads a string, borrowed unless it holds escapes.
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        if let Some((start, end)) = scan::plain_string(self.bytes(), self.pos) {
            self.pos = end + 1;
            return Ok(Cow::Borrowed(&self.src[start..end]));
        }
        self.string_checked()
    }

    /// [`string`](Self::string) the checked way, out of line: inlined, its
    /// registers made the fast path above spill.
    #[inline(never)]
    fn string_checked(&mut self) -> Result<Cow<'a, str>> {
        self.string_inline()
    }

    /// [`string`](Self::string), inlined where most strings are read (keys):
    /// in the guest a call per token costs as much as reading the token.
    #[inline(always)]
    fn string_inline(&mut self) -> Result<Cow<'a, str>> {
        if !self.eat(b'"') {
            return Err(self.expected("a string"));
        }
        let start = self.pos;
        let end = self.plain_run();
        if self.bytes().get(end) == Some(&b'"') {
            self.pos = end + 1;
            return Ok(Cow::Borrowed(&self.src[start..end]));
        }
        self.escaped_string(start, end)
    }

    /// A string with escapes, from just after its opening quote.
    #[inline(never)]
    fn escaped_string(&mut self, start: usize, plain_end: usize) -> Result<Cow<'a, str>> {
        let mut out = String::with_capacity(plain_end - start + 16);
        self.pos = start;
        self.string_tail(Some(&mut out))?;
        Ok(Cow::Owned(out))
    }

    /// Skips the rest of a string after its opening quote.
    #[inline(always)]
    fn skip_string_tail(&mut self) -> Result<()> {
        let end = self.plain_run();
        if self.bytes().get(end) == Some(&b'"') {
            self.pos = end + 1;
            return Ok(());
        }
        self.string_tail(None)
    }

    /// The end of the run of bytes from the cursor that need no decoding.
    #[inline(always)]
    fn plain_run(&self) -> usize {
        self.pos + plain_len(&self.bytes()[self.pos..])
    }

    /// Reads the rest of a string after its opening quote, appending the
    /// decoded text to `out` if given.
    fn string_tail(&mut self, mut out: Option<&mut String>) -> Result<()> {
        loop {
            let end = self.plain_run();
            if let Some(out) = out.as_deref_mut() {
                out.push_str(&self.src[self.pos..end]);
            }
            self.pos = end;
            match self.bytes().get(end) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self.escape()?;
                    if let Some(out) = out.as_deref_mut() {
                        out.push(c);
                    }
                }
                Some(_) => return Err(self.fail("control character in a string")),
                None => return Err(self.fail("unterminated string")),
            }
        }
    }

    /// Decodes the escape after a backslash.
    fn escape(&mut self) -> Result<char> {
        let Some(&b) = self.bytes().get(self.pos) else {
            return Err(self.fail("unterminated string"));
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                let code = match first {
                    0xD800..=0xDBFF => {
                        if !self.src[self.pos..].starts_with("\\u") {
                            return Err(self.fail("lone leading surrogate in a \\u escape"));
                        }
                        self.pos += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(self.fail("lone leading surrogate in a \\u escape"));
                        }
                        0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self.fail("lone trailing surrogate in a \\u escape"));
                    }
                    _ => first,
                };
                char::from_u32(code).ok_or_else(|| self.fail("invalid \\u escape"))?
            }
            _ => {
                self.pos -= 1;
                return Err(self.fail("invalid escape"));
            }
        })
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self.bytes().get(self.pos..self.pos + 4);
        let mut code = 0;
        for &b in digits.ok_or_else(|| self.fail("unterminated \\u escape"))? {
            let digit = (b as char)
                .to_digit(16)
                .ok_or_else(|| self.fail("invalid \\u escape"))?;
            code = code * 16 + digit;
        }
        self.pos += 4;
        Ok(code)
    }

    /// Consumes a number (JSON grammar, and finite as an `f64`) and
    /// returns its text.
    fn number(&mut self) -> Result<&'a str> {
        let bytes = self.bytes();
        let start = self.pos;
        let digits = |i: &mut usize| {
            let from = *i;
            while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > from
        };
        let mut i = start;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        let integer_start = i;
        match bytes.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => {
                self.pos = i;
                return Err(self.fail("invalid number"));
            }
        }
        let integer_end = i;
        let mut fraction_end = i;
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                self.pos = i;
                return Err(self.fail("invalid number"));
            }
            fraction_end = i;
        }
        let mut exponent = None;
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            let sign = i;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !digits(&mut i) {
                self.pos = i;
                return Err(self.fail("invalid number"));
            }
            exponent = Some(&bytes[sign..i]);
        }
        // Only an exponent or hundreds of digits can leave f64's range.
        if (exponent.is_some() || integer_end - integer_start > 300)
            && beyond_f64(
                &bytes[integer_start..integer_end],
                bytes.get(integer_end + 1..fraction_end).unwrap_or_default(),
                exponent.unwrap_or_default(),
            )
        {
            self.pos = start;
            return Err(self.fail("number out of range"));
        }
        self.pos = i;
        Ok(&self.src[start..i])
    }

    /// Reads an integer that fits an i64. Fractions, exponents and `-0`
    /// are refused, as serde_json refuses them for an integer field.
    pub fn integer(&mut self) -> Result<i64> {
        if !matches!(self.peek(), Some(b'-' | b'0'..=b'9')) {
            return Err(self.expected("an integer"));
        }
        let start = self.pos;
        let text = self.number()?;
        match text.parse::<i64>() {
            Ok(n) if text != "-0" => Ok(n),
            _ => {
                self.pos = start;
                Err(self.fail(&format!("expected an integer (i64), found {text}")))
            }
        }
    }

    pub fn boolean(&mut self) -> Result<bool> {
        match self.peek() {
            Some(b't') => self.literal("true").map(|()| true),
            Some(b'f') => self.literal("false").map(|()| false),
            _ => Err(self.expected("a boolean")),
        }
    }

    /// Consumes any value and returns its text, exactly as written.
    pub fn raw(&mut self) -> Result<&'a str> {
        self.peek();
        let start = self.pos;
        self.skip()?;
        Ok(&self.src[start..self.pos])
    }

    /// Consumes any value, checking it: plain JSON in the fast scanner
    /// (`scan::skip`), anything else the checked way. Most of an object is
    /// skipped.
    pub fn skip(&mut self) -> Result<()> {
        if let Some(end) = scan::skip(self.bytes(), self.pos, self.depth) {
            self.pos = end;
            return Ok(());
        }
        self.skip_checked()
    }

    /// [`skip`](Self::skip) for a value the fast scanner leaves: the same
    /// grammar, with every error named and placed. Its own loop rather than
    /// [`object`](Self::object) and [`array`](Self::array) (the punctuation
    /// is shared): keys need no decoding to be skipped. The open containers
    /// are kept as bits; the nesting limit keeps them under 128.
    #[inline(never)]
    fn skip_checked(&mut self) -> Result<()> {
        // Bit i set: the container i levels up from the innermost is an object.
        let mut objects: u128 = 0;
        let mut open: u32 = 0;
        loop {
            // A value: a scalar is consumed here, a container entered.
            match self.peek() {
                Some(b'{') => {
                    if self.open(b'{', b'}')? {
                        objects = objects << 1 | 1;
                        open += 1;
                        self.skip_key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    if self.open(b'[', b']')? {
                        objects <<= 1;
                        open += 1;
                        continue;
                    }
                }
                Some(b'"') => {
                    self.pos += 1;
                    self.skip_string_tail()?;
                }
                Some(b't') => self.literal("true")?,
                Some(b'f') => self.literal("false")?,
                Some(b'n') => self.literal("null")?,
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                _ => return Err(self.expected("a value")),
            }
            // After a value: the next member, or close containers.
            loop {
                if open == 0 {
                    return Ok(());
                }
                if objects & 1 == 1 {
                    if self.after_member(b'}')? {
                        self.skip_key()?;
                        break;
                    }
                } else if self.after_member(b']')? {
                    break;
                }
                objects >>= 1;
                open -= 1;
            }
        }
    }

    /// Skips an object's key and its `:`.
    #[inline(always)]
    fn skip_key(&mut self) -> Result<()> {
        if !self.eat(b'"') {
            return Err(self.expected("a key"));
        }
        self.skip_string_tail()?;
        self.colon()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(src: &str) -> Result<()> {
        Reader::document(src, |r| r.skip())
    }

    #[test]
    fn accepts_what_serde_json_accepts() {
        for src in [
            "{}",
            " [ ] ",
            r#"{"a":[1,-0,0.5,1e9,-2E-3,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"]}"#,
            "\"\u{7f}é\"",
        ] {
            read_all(src).unwrap();
            serde_json::from_str::<serde_json::Value>(src).unwrap();
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for src in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "01",
            "1.",
            "1e",
            "-",
            "+1",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\x\"",
            "\"a\nb\"",
            "\"abc",
            "tru",
            "nul",
            "{} {}",
            "{'a':1}",
            &"[".repeat(128),
            "1e400",
            "[-1E400]",
            "0.0001e313",
            "1.7976931348623159e308",
            "2e308",
            &"9".repeat(400),
            "1e99999999999999999999999999",
        ] {
            assert!(read_all(src).is_err(), "{src:?} was accepted");
            assert!(
                serde_json::from_str::<serde_json::Value>(src).is_err(),
                "{src:?}"
            );
        }
        let deep = format!("{}{}", "[".repeat(127), "]".repeat(127));
        read_all(&deep).unwrap();
        serde_json::from_str::<serde_json::Value>(&deep).unwrap();
    }

    #[test]
    fn numbers_are_refused_only_beyond_f64() {
        let max = "179769313486231570814527423731704356798070567525844996598917476803157260780028538760589558632766878171540458953514382464234321326889464182768467546703537516986049910576551282076245490090389328944075868508455133942304583236903222948165808559332123348274797826204144723168738177180919299881250404026184124858368";
        // The limit less one: rounds to f64::MAX.
        let below_limit = format!(
            "{}1",
            std::str::from_utf8(&number::F64_OVERFLOW_DIGITS[..308]).unwrap()
        );
        for (src, finite) in [
            ("1.7976931348623157e308", true),
            ("-1.7976931348623158e308", true),
            (max, true),
            (&below_limit, true),
            ("1e308", true),
            ("0.000e999", true),
            ("0e99999999999999999999999999", true),
            ("1e-400", true),
            ("223456e303", false),
            ("0.17976931348623159e309", false),
        ] {
            assert_eq!(read_all(src).is_ok(), finite, "{src}");
            assert_eq!(src.parse::<f64>().unwrap().is_finite(), finite, "{src}");
        }
        let limit = std::str::from_utf8(number::F64_OVERFLOW_DIGITS).unwrap();
        assert!(read_all(limit).is_err());
        assert!(limit.parse::<f64>().unwrap().is_infinite());
        let error = Reader::document(r#"{"a":[1,2e400]}"#, |r| r.skip()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("number out of range at line 1 column 9"),
            "{error}"
        );
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        let plain = Reader::document(r#""abc""#, |r| r.string()).unwrap();
        assert!(matches!(plain, Cow::Borrowed("abc")));
        let escaped = Reader::document(r#""a\"b\u00e9""#, |r| r.string()).unwrap();
        assert_eq!(escaped, "a\"bé");
        assert!(matches!(escaped, Cow::Owned(_)));
    }

    #[test]
    fn strings_end_at_the_first_quote_escape_or_control_anywhere_in_a_chunk() {
        for len in 0..20 {
            for (stop, expect_ok) in [("\"", true), ("\\n\"", true), ("\n\"", false)] {
                let body = "é".repeat(len / 2) + &"a".repeat(len % 2);
                let src = format!("\"{body}{stop} ");
                let read = Reader::document(&src, |r| r.string());
                assert_eq!(read.is_ok(), expect_ok, "{src:?}");
                if let Ok(text) = read {
                    assert!(text.starts_with(&body), "{src:?}");
                }
            }
        }
    }

    #[test]
    fn integers_are_i64_only() {
        let int = |src| Reader::document(src, |r| r.integer());
        assert_eq!(int("-9223372036854775808").unwrap(), i64::MIN);
        assert_eq!(int(" 7 ").unwrap(), 7);
        for bad in ["9223372036854775808", "1.0", "1e2", "-0", "\"1\"", "null"] {
            assert!(int(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_field_and_the_place() {
        let err = Reader::document("{\"spec\":\n {\"ports\":[{}, {\"port\":\"x\"}]}}", |r| {
            r.object(|r, key| match key.as_ref() {
                "spec" => r.object(|r, key| match key.as_ref() {
                    "ports" => r.array(|r| r.object(|r, _| r.integer().map(drop))),
                    _ => r.skip(),
                }),
                _ => r.skip(),
            })
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.ports[1].port: expected an integer, found a string at line 2 column 24"
        );
    }

    #[test]
    fn raw_keeps_the_text() {
        let raw = Reader::document(" {\"a\": [1, \"b\"] } ", |r| r.raw()).unwrap();
        assert_eq!(raw, "{\"a\": [1, \"b\"] }");
    }
}
