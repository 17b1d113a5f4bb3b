//! The plan: what the compiler decided, in a form the engine reads in place.
//!
//! Layout (all integers little-endian `u32`, offsets from the start of the plan):
//!
//! ```text
//! MAGIC (8 bytes)
//! header_len, header            postcard(BundleInfo)
//! pool_len, pool                strings shared by records (see below)
//! entry_count
//! entry_count x (key_off, key_len, rule_off, rule_len)   sorted by key bytes
//! blob                          keys and pooled postcard(ObjectRule) records
//! ```
//!
//! A key is `cluster \0 kind \0 namespace \0 name`. A request costs one binary
//! search over the entry table plus the decode of one small record: the cost
//! does not grow with the number of clusters or nodes in the stretch.
//!
//! A pooled record is the record's postcard bytes with every string's bytes
//! (after its length) replaced by a varint tag: 0 and the bytes, or `1 + off`
//! for the string at `pool[off..off + len]`. The same server lists, connect
//! strings and the plan digest recur in every cluster's records; stored once,
//! they no longer dominate the module's size. The spec digest covers the
//! plain postcard records ([`PlanBuilder::rules_bytes`]), not this encoding.
//!
//! This module is the only place that knows the format: the compiler builds
//! plans with [`PlanBuilder`], the engine reads them with [`Plan`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

mod record;

pub const MAGIC: &[u8; 8] = b"STRDPLN2";

/// Describes a compiled bundle (the `describe()` answer of the module).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleInfo<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// `sha256:<hex>` of the plan's rules; written to every mutated object.
    #[serde(borrow)]
    pub spec_digest: Cow<'a, str>,
    #[serde(borrow)]
    pub clusters: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    pub namespaces: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    pub compiler_version: Cow<'a, str>,
    /// Chart labels to look for on objects the plan does not name.
    #[serde(borrow)]
    pub watches: Vec<Watch<'a>>,
}

/// An object the plan does not name but that carries `label=value` (a chart
/// of a component the spec stretches) gets an admission warning when its
/// release or namespace is not one the spec names, and always when it is a
/// StatefulSet: the chart's StatefulSets are all in the plan, so an unknown
/// one is a release, name override or namespace the spec does not describe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch<'a> {
    #[serde(borrow)]
    pub label: Cow<'a, str>,
    #[serde(borrow)]
    pub value: Cow<'a, str>,
    /// The label holding the Helm release (`release`, `app.kubernetes.io/instance`).
    #[serde(borrow)]
    pub release_label: Cow<'a, str>,
    /// The release the spec names.
    #[serde(borrow)]
    pub release: Cow<'a, str>,
    /// The namespace the spec names.
    #[serde(borrow)]
    pub namespace: Cow<'a, str>,
    /// The chart, for the user (`bitnami/kafka`).
    #[serde(borrow)]
    pub chart: Cow<'a, str>,
    /// The spec field of the component (`spec.kafka`).
    #[serde(borrow)]
    pub field: Cow<'a, str>,
}

/// Kinds of objects the policy acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectKind {
    StatefulSet,
    Service,
    ConfigMap,
    /// Reviewed for refusals only (a chart's policy that blocks peers in
    /// other clusters).
    NetworkPolicy,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::StatefulSet => "StatefulSet",
            ObjectKind::Service => "Service",
            ObjectKind::ConfigMap => "ConfigMap",
            ObjectKind::NetworkPolicy => "NetworkPolicy",
        }
    }

    pub fn parse(kind: &str) -> Option<ObjectKind> {
        match kind {
            "StatefulSet" => Some(ObjectKind::StatefulSet),
            "Service" => Some(ObjectKind::Service),
            "ConfigMap" => Some(ObjectKind::ConfigMap),
            "NetworkPolicy" => Some(ObjectKind::NetworkPolicy),
            _ => None,
        }
    }
}

/// What the policy does to one object in one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectRule<'a> {
    /// The spec field this object belongs to (e.g. `spec.kafka.brokers`), for messages.
    pub field: Cow<'a, str>,
    pub checks: Vec<Check<'a>>,
    pub ops: Vec<Op<'a>>,
}

/// A condition a request must meet, or it is denied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Check<'a> {
    /// A `Scale` of the StatefulSet (`kubectl scale`, the `statefulsets/scale`
    /// subresource) may not ask for more than `max` replicas: more would take
    /// IDs from the next cluster's block. With `exact`, it must ask for exactly
    /// `max`: quorum members are listed in every cluster's configuration, so
    /// their count only changes through the spec.
    ScaleLimit {
        max: u32,
        exact: bool,
        field: Cow<'a, str>,
    },
    /// A container's env var, when set, must hold `value` (empty: must be
    /// empty); else the object contradicts the spec and is denied with
    /// `message` (which names the chart value to change).
    Env {
        container: Cow<'a, str>,
        init: bool,
        name: Cow<'a, str>,
        value: Cow<'a, str>,
        message: Cow<'a, str>,
    },
    /// The container port named `name`, when declared, must be `port`.
    ContainerPort {
        container: Cow<'a, str>,
        name: Cow<'a, str>,
        port: u16,
        message: Cow<'a, str>,
    },
    /// The pod template must not have this container (a chart feature that
    /// cannot work across clusters); else denied with `message`.
    NoContainer {
        name: Cow<'a, str>,
        init: bool,
        message: Cow<'a, str>,
    },
    /// When the container declares ports named `<prefix><n>` (one per node,
    /// from a chart value), it must declare between `min` and `max` of them.
    PortCount {
        container: Cow<'a, str>,
        prefix: Cow<'a, str>,
        min: u32,
        max: u32,
        message: Cow<'a, str>,
    },
    /// A rule stored under a pattern name covers indices below `count`;
    /// a higher index is denied with `beyond`, or is not the rule's object
    /// (passes as unnamed) when `beyond` is empty.
    Indices { count: u32, beyond: Cow<'a, str> },
    /// The pod template must not use the Secret `name` (volumes, env,
    /// envFrom): e.g. credentials a chart generates at random per install,
    /// which differ between clusters.
    NoSecret {
        name: Cow<'a, str>,
        message: Cow<'a, str>,
    },
    /// The object is refused (a chart variant the policy cannot make right).
    Refuse { message: Cow<'a, str> },
    // New variants go last: the plan is postcard, indices are the format.
    /// The pod template must not declare a volume named `name` (e.g. a
    /// mounted configuration file that overrides what the policy sets).
    NoVolume {
        name: Cow<'a, str>,
        message: Cow<'a, str>,
    },
}

/// A desired value. Each op is a statement of the end state, never a delta.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Op<'a> {
    /// `metadata.annotations[key] = value`.
    Annotation {
        key: Cow<'a, str>,
        value: Cow<'a, str>,
    },
    /// StatefulSet `spec.replicas`.
    Replicas(u32),
    /// StatefulSet `spec.ordinals.start`.
    OrdinalsStart(u32),
    /// Environment of one container of a StatefulSet's pod template.
    Env {
        container: Cow<'a, str>,
        /// `initContainers` rather than `containers`.
        init: bool,
        set: Vec<EnvVar<'a>>,
        /// Names to drop; `PREFIX*` drops a family (except names in `set`).
        remove: Vec<Cow<'a, str>>,
    },
    /// Service `spec.publishNotReadyAddresses`.
    PublishNotReadyAddresses(bool),
    /// In a container's `command`/`args` script, the line whose first word
    /// starts with `prefix` (e.g. `ADVERTISED_HOST=`) is `line` (indentation
    /// kept): for values a chart computes in its script, with no input.
    ScriptLine {
        container: Cow<'a, str>,
        prefix: Cow<'a, str>,
        line: Cow<'a, str>,
    },
    /// Edits of a Java properties file held in a ConfigMap data key.
    Properties {
        data_key: Cow<'a, str>,
        edits: Vec<PropEdit<'a>>,
    },
    /// `metadata.labels[key] = value` (e.g. a mesh's export label).
    Label {
        key: Cow<'a, str>,
        value: Cow<'a, str>,
    },
    /// Service `spec.ports` holds an entry for `port` (TCP, same target
    /// port); added with `name` when missing, left alone when present.
    ServicePort { name: Cow<'a, str>, port: u16 },
    /// A per-index Service (see [`PATTERN_INDEX`]) with index `i` serves pod
    /// `<pod_prefix><start + i>`: `spec.selector[selector]` and
    /// `metadata.labels[label]` name it.
    PodIndex {
        selector: Cow<'a, str>,
        label: Cow<'a, str>,
        pod_prefix: Cow<'a, str>,
        start: u32,
    },
    /// A per-index Service's port named `name` has targetPort = nodePort =
    /// `base + i` (a port per node id).
    IndexedPort { name: Cow<'a, str>, base: u32 },
}

/// Per-index objects (`<prefix>-<i>-<suffix>`, one per ordinal the chart
/// counts from 0) are stored once, with this character in place of the
/// index; it cannot occur in a Kubernetes name.
pub const PATTERN_INDEX: char = '#';

/// The pattern name and index of a per-index name: its last all-digit
/// `-`-separated segment becomes [`PATTERN_INDEX`].
pub fn pattern_of(name: &str) -> Option<(String, u32)> {
    let (at, segment) = name
        .split('-')
        .scan(0usize, |offset, seg| {
            let at = *offset;
            *offset += seg.len() + 1;
            Some((at, seg))
        })
        .filter(|(_, seg)| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()))
        .last()?;
    let index = segment.parse().ok()?;
    let mut pattern = String::with_capacity(name.len());
    pattern.push_str(&name[..at]);
    pattern.push(PATTERN_INDEX);
    pattern.push_str(&name[at + segment.len()..]);
    Some((pattern, index))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnvVar<'a> {
    pub name: Cow<'a, str>,
    pub value: EnvValue<'a>,
    /// When the variable is missing, insert it before this one (for `$(VAR)`
    /// references, which only see variables defined earlier); else append.
    pub before: Option<Cow<'a, str>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum EnvValue<'a> {
    Literal(Cow<'a, str>),
    /// Downward API `valueFrom.fieldRef.fieldPath`.
    FieldRef(Cow<'a, str>),
    /// The chart's own value, moved to the variable `saved` (inserted just
    /// before), and referenced as `prefix$(saved)`: a per-ordinal list that a
    /// script indexes by ordinal gets one placeholder per ordinal of the
    /// clusters before this one (none: the list is only checked). Left
    /// alone when the chart does not set it.
    Prefixed {
        saved: Cow<'a, str>,
        prefix: Cow<'a, str>,
        /// The chart's list must hold at least this many entries (one per
        /// pod of this cluster), else the object is denied with `short`.
        entries: u32,
        short: Cow<'a, str>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PropEdit<'a> {
    /// `key=value`, added when missing.
    Set {
        key: Cow<'a, str>,
        value: Cow<'a, str>,
    },
    /// `key=value`, only where the chart already has the key (chart options
    /// choose between alternative keys, e.g. quorum voters or bootstrap servers).
    Replace {
        key: Cow<'a, str>,
        value: Cow<'a, str>,
    },
    /// The lines whose key starts with `prefix` (e.g. ZooKeeper's
    /// `server.`) are exactly `lines`, in order, where the first of them
    /// was (or at the end): for keys that carry an id.
    Family {
        prefix: Cow<'a, str>,
        lines: Vec<Cow<'a, str>>,
    },
    /// In the comma-separated listener list `key`, the entry for listener
    /// `listener` must be `entry` (added when missing).
    Listener {
        key: Cow<'a, str>,
        listener: Cow<'a, str>,
        entry: Cow<'a, str>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    BadMagic,
    Truncated,
    Decode(&'static str),
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::BadMagic => f.write_str("not a Straddle plan (bad magic)"),
            PlanError::Truncated => f.write_str("plan is truncated"),
            PlanError::Decode(what) => write!(f, "plan record is corrupt ({what})"),
        }
    }
}

impl std::error::Error for PlanError {}

/// Builds the key under which an object's rule is stored.
pub fn object_key(cluster: &str, kind: ObjectKind, namespace: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(cluster.len() + namespace.len() + name.len() + 16);
    key.extend_from_slice(cluster.as_bytes());
    key.push(0);
    key.extend_from_slice(kind.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(namespace.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

/// Writes a plan. Used by the compiler.
#[derive(Default)]
pub struct PlanBuilder {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl PlanBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the rule for one object; a later rule for the same key replaces it.
    pub fn insert(
        &mut self,
        cluster: &str,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        rule: &ObjectRule<'_>,
    ) {
        let key = object_key(cluster, kind, namespace, name);
        let record = postcard::to_allocvec(rule).expect("postcard encodes to memory");
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push((key, record));
    }

    /// The canonical bytes of the rules, without the header: what the digest covers.
    pub fn rules_bytes(&self) -> Vec<u8> {
        let mut entries: Vec<&(Vec<u8>, Vec<u8>)> = self.entries.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (k, r) in entries {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&(r.len() as u32).to_le_bytes());
            out.extend_from_slice(r);
        }
        out
    }

    pub fn finish(mut self, bundle: &BundleInfo<'_>) -> Vec<u8> {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let header = postcard::to_allocvec(bundle).expect("postcard encodes to memory");
        let (pool, records) = pool_records(&self.entries);
        let n = self.entries.len();
        let table_off = MAGIC.len() + 4 + header.len() + 4 + pool.len() + 4;
        let mut blob_off = table_off + n * 16;
        let mut out = Vec::with_capacity(blob_off + 1024);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&(pool.len() as u32).to_le_bytes());
        out.extend_from_slice(&pool);
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for ((key, _), record) in self.entries.iter().zip(&records) {
            let key_off = blob_off;
            let rule_off = key_off + key.len();
            blob_off = rule_off + record.len();
            for v in [key_off, key.len(), rule_off, record.len()] {
                out.extend_from_slice(&(v as u32).to_le_bytes());
            }
        }
        for ((key, _), record) in self.entries.iter().zip(&records) {
            out.extend_from_slice(key);
            out.extend_from_slice(record);
        }
        out
    }
}

/// Strings shorter than this stay inline: a pool reference costs 2-3 bytes.
const POOL_MIN_LEN: usize = 4;

/// The string pool and the pooled records (same order as `entries`).
fn pool_records(entries: &[(Vec<u8>, Vec<u8>)]) -> (Vec<u8>, Vec<Vec<u8>>) {
    // Where each record's strings are (their bytes, after the length).
    let spans: Vec<Vec<(usize, usize)>> = entries
        .iter()
        .map(|(_, record)| {
            let recording = record::Recording { spans: Vec::new() };
            let (_, recording) =
                record::decode(record, recording).expect("a record this builder encoded");
            recording.spans
        })
        .collect();
    let mut counts: std::collections::BTreeMap<&[u8], usize> = Default::default();
    for ((_, record), spans) in entries.iter().zip(&spans) {
        for &(at, len) in spans {
            if len >= POOL_MIN_LEN {
                *counts.entry(&record[at..at + len]).or_default() += 1;
            }
        }
    }
    // Longest first, so shorter strings are often found inside longer ones.
    let mut shared: Vec<&[u8]> = counts
        .into_iter()
        .filter(|&(_, n)| n > 1)
        .map(|(s, _)| s)
        .collect();
    shared.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    let mut pool = Vec::new();
    let mut offsets: std::collections::BTreeMap<&[u8], usize> = Default::default();
    for s in shared {
        let at = match pool.windows(s.len()).position(|w| w == s) {
            Some(at) => at,
            None => {
                pool.extend_from_slice(s);
                pool.len() - s.len()
            }
        };
        offsets.insert(s, at);
    }
    let records = entries
        .iter()
        .zip(&spans)
        .map(|((_, record), spans)| {
            let mut out = Vec::with_capacity(record.len());
            let mut from = 0;
            for &(at, len) in spans {
                out.extend_from_slice(&record[from..at]);
                match offsets.get(&record[at..at + len]) {
                    Some(&off) => push_varint(&mut out, off as u64 + 1),
                    None => {
                        out.push(0);
                        out.extend_from_slice(&record[at..at + len]);
                    }
                }
                from = at + len;
            }
            out.extend_from_slice(&record[from..]);
            out
        })
        .collect();
    (pool, records)
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn decode_rule<'a>(record: &'a [u8], pool: &'a [u8]) -> Result<ObjectRule<'a>, PlanError> {
    record::decode(record, record::Pooled { pool }).map(|(rule, _)| rule)
}

/// A plan read in place.
#[derive(Clone, Copy)]
pub struct Plan<'a> {
    bytes: &'a [u8],
    header: &'a [u8],
    pool: &'a [u8],
    table: &'a [u8],
}

fn read_u32(bytes: &[u8], at: usize) -> Result<usize, PlanError> {
    let b = bytes.get(at..at + 4).ok_or(PlanError::Truncated)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

impl<'a> Plan<'a> {
    /// Checks the framing; records are decoded lazily, one per lookup.
    pub fn parse(bytes: &'a [u8]) -> Result<Plan<'a>, PlanError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(PlanError::BadMagic);
        }
        let header_len = read_u32(bytes, MAGIC.len())?;
        let header_start = MAGIC.len() + 4;
        let header = bytes
            .get(header_start..header_start + header_len)
            .ok_or(PlanError::Truncated)?;
        let pool_at = header_start + header_len;
        let pool_len = read_u32(bytes, pool_at)?;
        let pool = bytes
            .get(pool_at + 4..pool_at + 4 + pool_len)
            .ok_or(PlanError::Truncated)?;
        let count_at = pool_at + 4 + pool_len;
        let n = read_u32(bytes, count_at)?;
        let table_start = count_at + 4;
        let table = bytes
            .get(table_start..table_start + n.checked_mul(16).ok_or(PlanError::Truncated)?)
            .ok_or(PlanError::Truncated)?;
        Ok(Plan {
            bytes,
            header,
            pool,
            table,
        })
    }

    pub fn bundle(&self) -> Result<BundleInfo<'a>, PlanError> {
        postcard::from_bytes(self.header).map_err(|_| PlanError::Decode("header"))
    }

    pub fn len(&self) -> usize {
        self.table.len() / 16
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn entry(&self, i: usize) -> Result<(&'a [u8], &'a [u8]), PlanError> {
        let at = i * 16;
        let (ko, kl) = (read_u32(self.table, at)?, read_u32(self.table, at + 4)?);
        let (ro, rl) = (
            read_u32(self.table, at + 8)?,
            read_u32(self.table, at + 12)?,
        );
        let key = self.bytes.get(ko..ko + kl).ok_or(PlanError::Truncated)?;
        let rule = self.bytes.get(ro..ro + rl).ok_or(PlanError::Truncated)?;
        Ok((key, rule))
    }

    /// The rule for one object, if the spec names it.
    pub fn lookup(
        &self,
        cluster: &str,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ObjectRule<'a>>, PlanError> {
        let wanted = [
            cluster.as_bytes(),
            kind.as_str().as_bytes(),
            namespace.as_bytes(),
            name.as_bytes(),
        ];
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (key, rule) = self.entry(mid)?;
            match compare_key(key, &wanted) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return decode_rule(rule, self.pool).map(Some),
            }
        }
        Ok(None)
    }

    /// Every (key, rule) pair, in key order. For tools and tests, not the request path.
    pub fn entries(
        &self,
    ) -> impl Iterator<Item = Result<(PlanKey<'a>, ObjectRule<'a>), PlanError>> {
        let plan = *self;
        (0..self.len()).map(move |i| {
            let (key, rule) = plan.entry(i)?;
            let key = PlanKey::parse(key)?;
            let rule = decode_rule(rule, plan.pool)?;
            Ok((key, rule))
        })
    }
}

/// A decoded entry key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanKey<'a> {
    pub cluster: &'a str,
    pub kind: ObjectKind,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl<'a> PlanKey<'a> {
    fn parse(key: &'a [u8]) -> Result<PlanKey<'a>, PlanError> {
        let text = std::str::from_utf8(key).map_err(|_| PlanError::Decode("key"))?;
        let mut parts = text.split('\0');
        let mut next = || parts.next().ok_or(PlanError::Decode("key"));
        let cluster = next()?;
        let kind = ObjectKind::parse(next()?).ok_or(PlanError::Decode("key kind"))?;
        let namespace = next()?;
        let name = next()?;
        Ok(PlanKey {
            cluster,
            kind,
            namespace,
            name,
        })
    }
}

/// Compares a stored key with the parts of a wanted key, without building it.
fn compare_key(key: &[u8], wanted: &[&[u8]; 4]) -> std::cmp::Ordering {
    let mut k = key.iter();
    for (i, part) in wanted.iter().enumerate() {
        if i > 0 {
            match k.next() {
                None => return std::cmp::Ordering::Less,
                Some(&b) if b != 0 => return b.cmp(&0),
                Some(_) => {}
            }
        }
        for &w in part.iter() {
            match k.next() {
                None => return std::cmp::Ordering::Less,
                Some(&b) if b != w => return b.cmp(&w),
                Some(_) => {}
            }
        }
    }
    if k.next().is_some() {
        std::cmp::Ordering::Greater
    } else {
        std::cmp::Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(field: &str) -> ObjectRule<'static> {
        ObjectRule {
            field: Cow::Owned(field.to_string()),
            checks: vec![],
            ops: vec![Op::Replicas(3)],
        }
    }

    fn empty_bundle() -> BundleInfo<'static> {
        BundleInfo {
            name: "x".into(),
            spec_digest: "d".into(),
            clusters: vec![],
            namespaces: vec![],
            compiler_version: "0".into(),
            watches: vec![],
        }
    }

    #[test]
    fn lookup_finds_every_entry_and_nothing_else() {
        let mut b = PlanBuilder::new();
        let names = ["a", "ab", "b", "kafka", "kafka-controller", "zk"];
        for c in ["east", "west"] {
            for n in names {
                b.insert(c, ObjectKind::StatefulSet, "ns", n, &rule(n));
            }
        }
        let bundle = BundleInfo {
            name: "x".into(),
            spec_digest: "sha256:00".into(),
            clusters: vec!["east".into(), "west".into()],
            namespaces: vec!["ns".into()],
            compiler_version: "0".into(),
            watches: vec![],
        };
        let bytes = b.finish(&bundle);
        let plan = Plan::parse(&bytes).unwrap();
        assert_eq!(plan.bundle().unwrap(), bundle);
        for c in ["east", "west"] {
            for n in names {
                let r = plan
                    .lookup(c, ObjectKind::StatefulSet, "ns", n)
                    .unwrap()
                    .unwrap();
                assert_eq!(r.field, n);
            }
            for n in ["", "aa", "c", "kafka-", "zk0"] {
                assert!(
                    plan.lookup(c, ObjectKind::StatefulSet, "ns", n)
                        .unwrap()
                        .is_none()
                );
            }
            assert!(
                plan.lookup(c, ObjectKind::Service, "ns", "a")
                    .unwrap()
                    .is_none()
            );
            assert!(
                plan.lookup(c, ObjectKind::StatefulSet, "n", "a")
                    .unwrap()
                    .is_none()
            );
        }
        assert!(
            plan.lookup("north", ObjectKind::StatefulSet, "ns", "a")
                .unwrap()
                .is_none()
        );
        assert_eq!(plan.entries().count(), 12);
    }

    #[test]
    fn shared_strings_are_stored_once_and_read_back() {
        let servers = "server.1=zk-0.east:2888:3888;2181,server.2=zk-0.west:2888:3888;2181";
        let shared = |cluster: &str| ObjectRule {
            field: Cow::Borrowed("spec.zookeeper"),
            checks: vec![Check::Refuse {
                message: Cow::Owned(format!("{cluster}: no")),
            }],
            ops: vec![
                Op::Annotation {
                    key: "straddle.dev/plan".into(),
                    value: "sha256:0123456789abcdef0123456789abcdef".into(),
                },
                Op::Properties {
                    data_key: "zoo.cfg".into(),
                    edits: vec![PropEdit::Family {
                        prefix: "server.".into(),
                        lines: vec![servers.into(), "".into(), "zk-0.east".into()],
                    }],
                },
            ],
        };
        let mut b = PlanBuilder::new();
        let clusters = ["east", "west", "north"];
        for c in clusters {
            b.insert(c, ObjectKind::ConfigMap, "ns", "zk", &shared(c));
        }
        let bundle = empty_bundle();
        let rules = b.rules_bytes().len();
        let bytes = b.finish(&bundle);
        assert!(bytes.len() < rules, "{} >= {rules}", bytes.len());
        let plan = Plan::parse(&bytes).unwrap();
        for c in clusters {
            let got = plan.lookup(c, ObjectKind::ConfigMap, "ns", "zk").unwrap();
            assert_eq!(got, Some(shared(c)));
        }
        // A damaged byte anywhere is an error or another rule, never a panic.
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0xa5;
            if let Ok(plan) = Plan::parse(&bad) {
                let _ = plan.entries().count();
            }
        }
    }

    #[test]
    fn corrupt_plans_are_errors_not_panics() {
        assert_eq!(Plan::parse(b"nope").err(), Some(PlanError::BadMagic));
        let mut b = PlanBuilder::new();
        b.insert("c", ObjectKind::Service, "n", "s", &rule("f"));
        let bundle = empty_bundle();
        let bytes = b.finish(&bundle);
        for cut in 0..bytes.len() {
            if let Ok(plan) = Plan::parse(&bytes[..cut]) {
                let _ = plan.lookup("c", ObjectKind::Service, "n", "s");
                let _ = plan.bundle();
            }
        }
    }
}
