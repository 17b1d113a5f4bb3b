//! The reader's fast paths ([`skip`], [`next_key`], [`plain_string`]):
//! scanners over bytes with the position held in locals.
//!
//! In the guest, the reader's cursor lives in linear memory, so every step
//! of the checked path reloads and stores it; most of an object is plain
//! (strings without `\u` escapes, short integers and decimals, the
//! literals), which these check with the cursor in registers. They never
//! accept more than the checked path: anything else (a `\u` escape, a
//! control character, an exponent, hundreds of digits, the nesting limit,
//! any error) returns `None`, and the caller reads the value again the
//! checked way, which gives the error, with its place, as before.

use super::plain_len;

/// The end of the value at `pos` (after leading whitespace), or `None` for
/// the checked path. `depth` is the reader's nesting allowance.
#[inline(never)]
pub(super) fn skip(bytes: &[u8], mut pos: usize, depth: u32) -> Option<usize> {
    // Bit i set: the container i levels up from the innermost is an object.
    // One word (deeper nesting takes the checked path): a wider set costs
    // the guest a register pair and multi-word shifts.
    let mut objects: u64 = 0;
    let mut open: u32 = 0;
    loop {
        pos = value_start(bytes, pos)?;
        match bytes[pos] {
            open_byte @ (b'{' | b'[') => {
                // Entering costs a level even when the container is empty.
                if open + 1 >= depth.min(u64::BITS) {
                    return None;
                }
                let is_object = open_byte == b'{';
                let close = if is_object { b'}' } else { b']' };
                pos = whitespace(bytes, pos + 1);
                if bytes.get(pos) == Some(&close) {
                    pos += 1;
                } else {
                    open += 1;
                    objects = objects << 1 | u64::from(is_object);
                    if is_object {
                        pos = key(bytes, pos)?;
                    }
                    continue;
                }
            }
            b'"' => pos = string(bytes, pos + 1)?,
            b't' => pos = literal(bytes, pos, b"true")?,
            b'f' => pos = literal(bytes, pos, b"false")?,
            b'n' => pos = literal(bytes, pos, b"null")?,
            b'-' | b'0'..=b'9' => pos = number(bytes, pos)?,
            _ => return None,
        }
        // After a value: the next member, or close containers.
        loop {
            if open == 0 {
                return Some(pos);
            }
            pos = whitespace(bytes, pos);
            let in_object = objects & 1 == 1;
            match bytes.get(pos) {
                Some(b',') => {
                    pos += 1;
                    if in_object {
                        pos = key(bytes, whitespace(bytes, pos))?;
                    }
                    break;
                }
                Some(b'}') if in_object => {}
                Some(b']') if !in_object => {}
                _ => return None,
            }
            pos += 1;
            objects >>= 1;
            open -= 1;
        }
    }
}

/// The first byte of a value at or after `pos`.
#[inline(always)]
fn value_start(bytes: &[u8], pos: usize) -> Option<usize> {
    let pos = whitespace(bytes, pos);
    (pos < bytes.len()).then_some(pos)
}

/// Past any whitespace at `pos`. The loop is entered only for a space
/// (objects from the API server have none): in the guest, entering a loop
/// costs its interruption check.
#[inline(always)]
fn whitespace(bytes: &[u8], mut pos: usize) -> usize {
    if bytes.get(pos).is_some_and(|&b| b > b' ') {
        return pos;
    }
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

/// A key at `pos` (its quote) and its `:`: the position after the colon.
#[inline(always)]
fn key(bytes: &[u8], pos: usize) -> Option<usize> {
    if bytes.get(pos) != Some(&b'"') {
        return None;
    }
    let pos = whitespace(bytes, string(bytes, pos + 1)?);
    (bytes.get(pos) == Some(&b':')).then_some(pos + 1)
}

/// The rest of a string from after its opening quote: the position after
/// its closing quote. Escapes other than `\u` are checked here.
#[inline(always)]
fn string(bytes: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        pos += plain_len(bytes.get(pos..)?);
        match bytes.get(pos)? {
            b'"' => return Some(pos + 1),
            b'\\' => match bytes.get(pos + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => pos += 2,
                _ => return None,
            },
            _ => return None,
        }
    }
}

#[inline(always)]
fn literal(bytes: &[u8], pos: usize, word: &[u8]) -> Option<usize> {
    let end = pos + word.len();
    (bytes.get(pos..end)? == word).then_some(end)
}

/// A number without an exponent and with at most 300 integer digits (the
/// only kind the checked path may find beyond `f64`).
#[inline(always)]
fn number(bytes: &[u8], mut pos: usize) -> Option<usize> {
    let digits = |pos: usize| {
        let mut end = pos;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        end
    };
    if bytes[pos] == b'-' {
        pos += 1;
    }
    let integer = pos;
    match bytes.get(pos)? {
        b'0' => pos += 1,
        b'1'..=b'9' => pos = digits(pos),
        _ => return None,
    }
    if pos - integer > 300 {
        return None;
    }
    if bytes.get(pos) == Some(&b'.') {
        let end = digits(pos + 1);
        if end == pos + 1 {
            return None;
        }
        pos = end;
    }
    match bytes.get(pos) {
        Some(b'e' | b'E') => None,
        _ => Some(pos),
    }
}

/// A string without escapes at `pos` (after whitespace): the range of its
/// text, between its quotes.
#[inline(always)]
pub(super) fn plain_string(bytes: &[u8], pos: usize) -> Option<(usize, usize)> {
    let pos = whitespace(bytes, pos);
    if bytes.get(pos) != Some(&b'"') {
        return None;
    }
    let start = pos + 1;
    let end = start + plain_len(bytes.get(start..)?);
    (bytes.get(end) == Some(&b'"')).then_some((start, end))
}

/// What [`next_key`] found.
pub(super) enum Member {
    /// A plain key (`bytes[start..end]`, no escapes) and its `:`; the value
    /// starts at or after `next`.
    Key {
        start: usize,
        end: usize,
        next: usize,
    },
    /// The object's `}`, at `next - 1`.
    Closed { next: usize },
}

/// The fast path of [`Reader::next_key`](super::Reader::next_key): from
/// `pos`, the `{` (`first`) or the `,` and the key that follow, or the
/// closing `}`. `None` for the checked path (an escaped key, or any error).
#[inline(always)]
pub(super) fn next_key(bytes: &[u8], pos: usize, first: bool) -> Option<Member> {
    let mut pos = whitespace(bytes, pos);
    let opener = if first { b'{' } else { b',' };
    match *bytes.get(pos)? {
        b if b == opener => pos = whitespace(bytes, pos + 1),
        b'}' if !first => return Some(Member::Closed { next: pos + 1 }),
        _ => return None,
    }
    match *bytes.get(pos)? {
        b'"' => {}
        b'}' if first => return Some(Member::Closed { next: pos + 1 }),
        _ => return None,
    }
    let start = pos + 1;
    let end = start + plain_len(bytes.get(start..)?);
    if bytes.get(end) != Some(&b'"') {
        return None;
    }
    let colon = whitespace(bytes, end + 1);
    (bytes.get(colon) == Some(&b':')).then_some(Member::Key {
        start,
        end,
        next: colon + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Reader;
    use std::borrow::Cow;

    /// Pieces of JSON, well-formed or not: every sequence of up to four, and
    /// longer ones drawn at random, are read both ways.
    const PIECES: &[&str] = &[
        "{", "}", "[", "]", "\"", ",", ":", "0", "1", "-", ".", "e", "true", "nul", " ", "\\",
        "\\u0041", "\\n", "\u{1}", "é", "a",
    ];

    /// Where the checked path ends a value, or that it refuses it.
    fn checked<'s, T>(
        src: &'s str,
        read: impl FnOnce(&mut Reader<'s>) -> super::super::Result<T>,
    ) -> Option<(T, usize)> {
        let mut r = Reader::new(src);
        read(&mut r).ok().map(|value| (value, r.pos))
    }

    fn agree(src: &str) {
        let bytes = src.as_bytes();
        for depth in [128, 3, 2, 1] {
            if let Some(end) = super::skip(bytes, 0, depth) {
                let mut r = Reader::nested(src, depth);
                let got = r.skip_checked().map(|()| r.pos);
                assert_eq!(got, Ok(end), "skip (depth {depth}) {src:?}");
            }
        }
        if let Some((start, end)) = super::plain_string(bytes, 0) {
            let want = Some((Cow::Borrowed(&src[start..end]), end + 1));
            assert_eq!(checked(src, |r| r.string_inline()), want, "string {src:?}");
        }
        for first in [true, false] {
            let want = match super::next_key(bytes, 0, first) {
                None => continue,
                Some(super::Member::Key { start, end, next }) => {
                    (Some(Cow::Borrowed(&src[start..end])), next)
                }
                Some(super::Member::Closed { next }) => (None, next),
            };
            let got = checked(src, |r| r.next_key_checked(first));
            assert_eq!(got, Some(want), "next_key (first: {first}) {src:?}");
        }
    }

    #[test]
    fn accepts_nothing_the_checked_path_refuses() {
        let mut sequences: Vec<String> = vec![String::new()];
        for _ in 0..4 {
            sequences = sequences
                .iter()
                .flat_map(|s| PIECES.iter().map(move |p| format!("{s}{p}")))
                .collect();
            sequences.iter().for_each(|s| agree(s));
        }
        // Longer ones, nested and separated, from a fixed xorshift.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..100_000 {
            let mut src = String::new();
            for _ in 0..(state % 24) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                src.push_str(PIECES[(state >> 32) as usize % PIECES.len()]);
            }
            agree(&src);
        }
    }

    #[test]
    fn reads_the_common_shapes() {
        for src in [
            r#"{"a":[1,-0.5,true,false,null,"x\"y"],"b":{}}"#,
            " { \"k\" : [ ] , \"l\" : { \"m\" : \"\\/\" } } ",
            "[[[]],[{}]]",
        ] {
            assert_eq!(
                super::skip(src.as_bytes(), 0, 128),
                Some(src.trim_end().len()),
                "{src}"
            );
            agree(src);
        }
        // Left to the checked path: `\u` escapes, exponents, the nesting limit.
        assert_eq!(super::skip(br#""\u0041""#, 0, 128), None);
        assert_eq!(super::skip(b"1e5", 0, 128), None);
        assert_eq!(super::skip(b"[[]]", 0, 2), None);
        assert_eq!(super::skip(b"[]", 0, 1), None);
        // Past 63 open containers, the checked path (which still reads it).
        for levels in [63, 64, 100] {
            let deep = "[".repeat(levels) + &"]".repeat(levels);
            let fast = super::skip(deep.as_bytes(), 0, 128);
            assert_eq!(fast, (levels < 64).then_some(deep.len()), "{levels} levels");
            let mut r = Reader::new(&deep);
            assert_eq!(r.skip().map(|()| r.pos), Ok(deep.len()), "{levels} levels");
        }
    }
}
