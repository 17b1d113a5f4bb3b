//! The decoder of pooled records: postcard, read by hand.
//!
//! serde's derived decoders, driven through postcard's deserializer, were
//! 4.3 KB of the guest's code (a visitor per struct and variant, and every
//! rule type's decoding inlined into `Plan::lookup`); this reads the same
//! bytes in as many instructions. The format is small and fixed: a struct
//! is its fields in order, an enum variant its index (varint) and then its
//! fields, a `Vec` its length (varint) and items, an `Option` a byte 0 or 1
//! and the value, a `bool` a byte, a `u16` or `u32` a varint, and a string
//! its length (varint) and, in a pooled record, a pool tag (see [`super`]).
//! The encoder stays serde's (`PlanBuilder`); `every_variant_round_trips`
//! holds the two together.

use std::borrow::Cow;

use super::{Check, EnvValue, EnvVar, ObjectRule, Op, PlanError, PropEdit};

/// Where a record's strings are: its own bytes after their tag, or the pool.
pub(super) trait Strings<'a> {
    /// The `len` bytes of a string whose tag is at `at`; the position after
    /// the string.
    fn take(&mut self, record: &'a [u8], at: usize, len: usize) -> Option<(&'a [u8], usize)>;
}

/// Strings of a pooled record (the request path).
pub(super) struct Pooled<'a> {
    pub(super) pool: &'a [u8],
}

impl<'a> Strings<'a> for Pooled<'a> {
    #[inline(always)]
    fn take(&mut self, record: &'a [u8], at: usize, len: usize) -> Option<(&'a [u8], usize)> {
        let (tag, at) = varint(record, at, 5)?;
        match tag.checked_sub(1) {
            None => Some((record.get(at..at.checked_add(len)?)?, at + len)),
            Some(off) => {
                let off = usize::try_from(off).ok()?;
                Some((self.pool.get(off..off.checked_add(len)?)?, at))
            }
        }
    }
}

/// Strings of a plain (not yet pooled) record, noting where each is.
pub(super) struct Recording {
    pub(super) spans: Vec<(usize, usize)>,
}

impl<'a> Strings<'a> for Recording {
    fn take(&mut self, record: &'a [u8], at: usize, len: usize) -> Option<(&'a [u8], usize)> {
        let bytes = record.get(at..at.checked_add(len)?)?;
        self.spans.push((at, len));
        Some((bytes, at + len))
    }
}

/// The varint at `at` (at most `max_bytes` long) and the position after it.
#[inline(always)]
fn varint(bytes: &[u8], mut at: usize, max_bytes: u32) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for shift in 0..max_bytes {
        let b = *bytes.get(at)?;
        at += 1;
        value |= u64::from(b & 0x7f) << (7 * shift);
        if b < 0x80 {
            return Some((value, at));
        }
    }
    None
}

/// A cursor over one record.
struct Record<'a, S> {
    bytes: &'a [u8],
    at: usize,
    strings: S,
}

/// Decodes one record.
pub(super) fn decode<'a, S: Strings<'a>>(
    bytes: &'a [u8],
    strings: S,
) -> Result<(ObjectRule<'a>, S), PlanError> {
    let mut r = Record {
        bytes,
        at: 0,
        strings,
    };
    let rule = r.rule().ok_or(PlanError::Decode("object rule"))?;
    if r.at != bytes.len() {
        return Err(PlanError::Decode("object rule"));
    }
    Ok((rule, r.strings))
}

impl<'a, S: Strings<'a>> Record<'a, S> {
    fn u32(&mut self) -> Option<u32> {
        let (value, at) = varint(self.bytes, self.at, 5)?;
        self.at = at;
        u32::try_from(value).ok()
    }

    fn u16(&mut self) -> Option<u16> {
        let (value, at) = varint(self.bytes, self.at, 3)?;
        self.at = at;
        u16::try_from(value).ok()
    }

    fn bool(&mut self) -> Option<bool> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        match b {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<Cow<'a, str>> {
        let len = usize::try_from(self.u32()?).ok()?;
        let (bytes, at) = self.strings.take(self.bytes, self.at, len)?;
        self.at = at;
        std::str::from_utf8(bytes).ok().map(Cow::Borrowed)
    }

    fn vec<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let len = usize::try_from(self.u32()?).ok()?;
        // Never more room than the record could hold (a corrupt length).
        let mut out = Vec::with_capacity(len.min(self.bytes.len().saturating_sub(self.at)));
        for _ in 0..len {
            out.push(item(self)?);
        }
        Some(out)
    }

    fn rule(&mut self) -> Option<ObjectRule<'a>> {
        Some(ObjectRule {
            field: self.str()?,
            checks: self.vec(Self::check)?,
            ops: self.vec(Self::op)?,
        })
    }

    fn check(&mut self) -> Option<Check<'a>> {
        Some(match self.u32()? {
            0 => Check::ScaleLimit {
                max: self.u32()?,
                exact: self.bool()?,
                field: self.str()?,
            },
            1 => Check::Env {
                container: self.str()?,
                init: self.bool()?,
                name: self.str()?,
                value: self.str()?,
                message: self.str()?,
            },
            2 => Check::ContainerPort {
                container: self.str()?,
                name: self.str()?,
                port: self.u16()?,
                message: self.str()?,
            },
            3 => Check::NoContainer {
                name: self.str()?,
                init: self.bool()?,
                message: self.str()?,
            },
            4 => Check::PortCount {
                container: self.str()?,
                prefix: self.str()?,
                min: self.u32()?,
                max: self.u32()?,
                message: self.str()?,
            },
            5 => Check::Indices {
                count: self.u32()?,
                beyond: self.str()?,
            },
            6 => Check::NoSecret {
                name: self.str()?,
                message: self.str()?,
            },
            7 => Check::Refuse {
                message: self.str()?,
            },
            8 => Check::NoVolume {
                name: self.str()?,
                message: self.str()?,
            },
            _ => return None,
        })
    }

    fn op(&mut self) -> Option<Op<'a>> {
        Some(match self.u32()? {
            0 => Op::Annotation {
                key: self.str()?,
                value: self.str()?,
            },
            1 => Op::Replicas(self.u32()?),
            2 => Op::OrdinalsStart(self.u32()?),
            3 => Op::Env {
                container: self.str()?,
                init: self.bool()?,
                set: self.vec(Self::env_var)?,
                remove: self.vec(Self::str)?,
            },
            4 => Op::PublishNotReadyAddresses(self.bool()?),
            5 => Op::ScriptLine {
                container: self.str()?,
                prefix: self.str()?,
                line: self.str()?,
            },
            6 => Op::Properties {
                data_key: self.str()?,
                edits: self.vec(Self::prop_edit)?,
            },
            7 => Op::Label {
                key: self.str()?,
                value: self.str()?,
            },
            8 => Op::ServicePort {
                name: self.str()?,
                port: self.u16()?,
            },
            9 => Op::PodIndex {
                selector: self.str()?,
                label: self.str()?,
                pod_prefix: self.str()?,
                start: self.u32()?,
            },
            10 => Op::IndexedPort {
                name: self.str()?,
                base: self.u32()?,
            },
            _ => return None,
        })
    }

    fn env_var(&mut self) -> Option<EnvVar<'a>> {
        Some(EnvVar {
            name: self.str()?,
            value: match self.u32()? {
                0 => EnvValue::Literal(self.str()?),
                1 => EnvValue::FieldRef(self.str()?),
                2 => EnvValue::Prefixed {
                    saved: self.str()?,
                    prefix: self.str()?,
                    entries: self.u32()?,
                    short: self.str()?,
                },
                _ => return None,
            },
            before: match self.bool()? {
                false => None,
                true => Some(self.str()?),
            },
        })
    }

    fn prop_edit(&mut self) -> Option<PropEdit<'a>> {
        Some(match self.u32()? {
            0 => PropEdit::Set {
                key: self.str()?,
                value: self.str()?,
            },
            1 => PropEdit::Replace {
                key: self.str()?,
                value: self.str()?,
            },
            2 => PropEdit::Family {
                prefix: self.str()?,
                lines: self.vec(Self::str)?,
            },
            3 => PropEdit::Listener {
                key: self.str()?,
                listener: self.str()?,
                entry: self.str()?,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::super::{
        Check, EnvValue, EnvVar, ObjectKind, ObjectRule, Op, Plan, PlanBuilder, PropEdit,
    };
    use crate::BundleInfo;

    fn s(text: &str) -> Cow<'static, str> {
        Cow::Owned(text.to_owned())
    }

    /// One rule holding every variant of every enum a record holds, with
    /// values that are not each type's default (and long strings, so that
    /// some are pooled: the rule is stored under two keys).
    fn every_variant() -> ObjectRule<'static> {
        let long = |n: u32| s(&format!("a string long enough to be pooled, number {n}"));
        let checks = vec![
            Check::ScaleLimit {
                max: 300,
                exact: true,
                field: long(1),
            },
            Check::Env {
                container: s("c"),
                init: true,
                name: s("N"),
                value: s("é"),
                message: long(2),
            },
            Check::ContainerPort {
                container: s("c"),
                name: s("p"),
                port: 65535,
                message: long(3),
            },
            Check::NoContainer {
                name: s("x"),
                init: false,
                message: long(4),
            },
            Check::PortCount {
                container: s("c"),
                prefix: s("b"),
                min: 2,
                max: 1 << 31,
                message: long(5),
            },
            Check::Indices {
                count: 128,
                beyond: s(""),
            },
            Check::NoSecret {
                name: s("sec"),
                message: long(6),
            },
            Check::Refuse { message: long(7) },
            Check::NoVolume {
                name: s("v"),
                message: long(8),
            },
        ];
        let ops = vec![
            Op::Annotation {
                key: s("k"),
                value: long(9),
            },
            Op::Replicas(u32::MAX),
            Op::OrdinalsStart(16_384),
            Op::Env {
                container: s("c"),
                init: true,
                set: vec![
                    EnvVar {
                        name: s("A"),
                        value: EnvValue::Literal(long(10)),
                        before: None,
                    },
                    EnvVar {
                        name: s("B"),
                        value: EnvValue::FieldRef(s("metadata.name")),
                        before: Some(s("A")),
                    },
                    EnvVar {
                        name: s("C"),
                        value: EnvValue::Prefixed {
                            saved: s("S"),
                            prefix: s("p,"),
                            entries: 129,
                            short: long(11),
                        },
                        before: Some(long(1)),
                    },
                ],
                remove: vec![s("X*"), s("Y")],
            },
            Op::PublishNotReadyAddresses(true),
            Op::ScriptLine {
                container: s("c"),
                prefix: s("H="),
                line: long(12),
            },
            Op::Properties {
                data_key: s("server.properties"),
                edits: vec![
                    PropEdit::Set {
                        key: s("a"),
                        value: s("1"),
                    },
                    PropEdit::Replace {
                        key: s("b"),
                        value: long(13),
                    },
                    PropEdit::Family {
                        prefix: s("server."),
                        lines: vec![long(14), s(""), long(14)],
                    },
                    PropEdit::Listener {
                        key: s("listeners"),
                        listener: s("EXTERNAL"),
                        entry: long(15),
                    },
                ],
            },
            Op::Label {
                key: s("l"),
                value: s("v"),
            },
            Op::ServicePort {
                name: s("tcp"),
                port: 9092,
            },
            Op::PodIndex {
                selector: s("sel"),
                label: s("lab"),
                pod_prefix: s("kafka-"),
                start: 300,
            },
            Op::IndexedPort {
                name: s("external"),
                base: 31_000,
            },
        ];
        // A new variant must be added above as well: these matches stop
        // compiling until it is listed.
        for check in &checks {
            match check {
                Check::ScaleLimit { .. }
                | Check::Env { .. }
                | Check::ContainerPort { .. }
                | Check::NoContainer { .. }
                | Check::PortCount { .. }
                | Check::Indices { .. }
                | Check::NoSecret { .. }
                | Check::Refuse { .. }
                | Check::NoVolume { .. } => {}
            }
        }
        for op in &ops {
            match op {
                Op::Annotation { .. }
                | Op::Replicas(_)
                | Op::OrdinalsStart(_)
                | Op::Env { .. }
                | Op::PublishNotReadyAddresses(_)
                | Op::ScriptLine { .. }
                | Op::Properties { .. }
                | Op::Label { .. }
                | Op::ServicePort { .. }
                | Op::PodIndex { .. }
                | Op::IndexedPort { .. } => {}
            }
        }
        ObjectRule {
            field: s("spec.kafka"),
            checks,
            ops,
        }
    }

    fn bundle() -> BundleInfo<'static> {
        BundleInfo {
            name: s("x"),
            spec_digest: s("sha256:00"),
            clusters: vec![s("east")],
            namespaces: vec![s("ns")],
            compiler_version: s("0"),
            watches: vec![],
        }
    }

    #[test]
    fn every_variant_round_trips() {
        let rule = every_variant();
        let mut builder = PlanBuilder::new();
        for name in ["one", "two"] {
            builder.insert("east", ObjectKind::StatefulSet, "ns", name, &rule);
        }
        let bytes = builder.finish(&bundle());
        let plan = Plan::parse(&bytes).unwrap();
        for name in ["one", "two"] {
            let got = plan
                .lookup("east", ObjectKind::StatefulSet, "ns", name)
                .unwrap();
            assert_eq!(got, Some(rule.clone()), "{name}");
        }
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        // A plain record (strings inline, untagged), as the builder reads it.
        let rule = postcard::to_allocvec(&every_variant()).unwrap();
        let plain = || super::Recording { spans: Vec::new() };
        assert_eq!(super::decode(&rule, plain()).unwrap().0, every_variant());
        // Every truncation, and every byte changed to a few other values.
        for end in 0..rule.len() {
            assert!(
                super::decode(&rule[..end], plain()).is_err(),
                "truncated at {end}"
            );
        }
        for at in 0..rule.len() {
            for b in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bad = rule.clone();
                bad[at] = b;
                let _ = super::decode(&bad, plain());
            }
        }
        // Trailing bytes.
        let mut long = rule.clone();
        long.push(0);
        assert!(super::decode(&long, plain()).is_err());
    }
}
