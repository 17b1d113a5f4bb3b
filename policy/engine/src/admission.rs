//! A whole AdmissionReview body, read once.
//!
//! Reading a body with serde and kube's types skips the object to find where
//! it ends, and the policy then reads the object again. [`review_admission`]
//! (the module's `review-admission`) reads the body in one pass: the envelope
//! fields the answer depends on, and the object reviewed where it stands in
//! the body ([`ObjectText::in_place`]).
//!
//! It answers only where the webhook's own path (kube's `AdmissionRequest`,
//! then [`review_plan`]) gives the same answer. Everything else is
//! [`Admission::Fallback`] and the host takes that path: a body that is not
//! a v1 AdmissionReview, an envelope field missing, given twice or of the
//! wrong type, a request that leaves out the name or namespace, a CREATE or
//! UPDATE without an object, an object the reader refuses (the host's path
//! tells bad JSON from a bad value).

use std::borrow::Cow;

use crate::engine::{ObjectText, Operation, Request, Verdict, review_object, review_plan};
use crate::json::{self, Reader};
use crate::plan::Plan;

/// What [`review_admission`] made of a body.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Reviewed(Reviewed),
    /// Read it the webhook's own way.
    Fallback,
}

/// A request and its answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Reviewed {
    pub uid: String,
    /// `request.kind.kind`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: Operation,
    pub dry_run: bool,
    /// `None`: admitted unchanged without a review (out of the policy's
    /// scope, or a DELETE or CONNECT without an object).
    pub verdict: Option<Verdict>,
}

/// Whether the policy reviews objects of this kind (`request.kind`) sent for
/// this resource (`request.resource`): core and apps objects,
/// NetworkPolicies, and the scale subresource of StatefulSets. Same-named
/// kinds of other API groups pass untouched.
pub fn in_scope(group: &str, kind: &str, resource_group: &str, resource: &str) -> bool {
    match group {
        "" | "apps" => true,
        "networking.k8s.io" => kind == "NetworkPolicy",
        "autoscaling" => kind == "Scale" && resource_group == "apps" && resource == "statefulsets",
        _ => false,
    }
}

/// Reviews the request of an AdmissionReview body, or says to read it the
/// webhook's own way.
pub fn review_admission(plan: &Plan<'_>, cluster: &str, body: &str) -> Admission {
    Reader::document(body, |r| read_review(r, plan, cluster))
        .ok()
        .flatten()
        .map_or(Admission::Fallback, Admission::Reviewed)
}

/// The top level: `apiVersion`, `kind`, `request`.
#[inline(never)]
fn read_review<'a>(
    r: &mut Reader<'a>,
    plan: &Plan<'_>,
    cluster: &str,
) -> json::Result<Option<Reviewed>> {
    let (mut api_version, mut kind, mut request) = (None, None, None);
    let mut seen = Seen::default();
    r.object(|r, key| {
        let index = match key.as_ref() {
            "apiVersion" => 0,
            "kind" => 1,
            "request" => 2,
            _ => return r.skip(),
        };
        match seen.first(r, index)? {
            0 => api_version = Some(r.string()?),
            1 => kind = Some(r.string()?),
            _ => request = r.optional(|r| Fields::read(r, plan, cluster))?,
        }
        Ok(())
    })?;
    let v1 = api_version.as_deref() == Some("admission.k8s.io/v1")
        && kind.as_deref() == Some("AdmissionReview");
    Ok(request
        .filter(|_| v1)
        .and_then(|fields| fields.answer(plan, cluster)))
}

/// Which of an object's known keys were given: serde's derived decoders
/// refuse a field given twice.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    /// Key `i`, which must not have been given before.
    fn first(&mut self, r: &Reader<'_>, i: usize) -> json::Result<usize> {
        if self.has(i) {
            return Err(r.missing("a field given only once"));
        }
        self.0 |= 1 << i;
        Ok(i)
    }

    fn has(&self, i: usize) -> bool {
        self.0 & 1 << i != 0
    }
}

/// `group` and the `kind` or `resource` of a GroupVersionKind or
/// GroupVersionResource (all three strings required).
#[inline(never)]
fn group_and_name<'a>(
    r: &mut Reader<'a>,
    name: &str,
) -> json::Result<(Cow<'a, str>, Cow<'a, str>)> {
    let (mut group, mut named) = (None, None);
    let mut seen = Seen::default();
    r.object(|r, key| {
        let index = match key.as_ref() {
            "group" => 0,
            "version" => 1,
            key if key == name => 2,
            _ => return r.skip(),
        };
        match seen.first(r, index)? {
            0 => group = Some(r.string()?),
            1 => drop(r.string()?),
            _ => named = Some(r.string()?),
        }
        Ok(())
    })?;
    match (group, seen.has(1), named) {
        (Some(group), true, Some(named)) => Ok((group, named)),
        _ => Err(r.missing(name)),
    }
}

/// `userInfo`, checked as kube's type reads it.
#[inline(never)]
fn user_info(r: &mut Reader<'_>) -> json::Result<()> {
    fn strings(r: &mut Reader<'_>) -> json::Result<()> {
        r.array(|r| r.string().map(drop))
    }
    r.object(|r, key| {
        match key.as_ref() {
            "username" | "uid" => drop(r.optional(Reader::string)?),
            "groups" => drop(r.optional(strings)?),
            "extra" => drop(r.optional(|r| r.object(|r, _| strings(r)))?),
            _ => r.skip()?,
        }
        Ok(())
    })
}

/// `operation`, as kube's enum names them.
fn operation(r: &mut Reader<'_>) -> json::Result<Operation> {
    match r.string()?.as_ref() {
        "CREATE" => Ok(Operation::Create),
        "UPDATE" => Ok(Operation::Update),
        "DELETE" => Ok(Operation::Delete),
        "CONNECT" => Ok(Operation::Connect),
        _ => Err(r.missing("operation")),
    }
}

/// An object is next (the webhook keeps `object` and `oldObject` raw, and
/// refuses anything but a JSON object).
fn json_object(r: &mut Reader<'_>) -> json::Result<()> {
    match r.next_byte() {
        Some(b'{') => Ok(()),
        _ => Err(r.missing("an object")),
    }
}

/// The object, as far as the request's fields before it allow.
enum Object<'a> {
    /// `null`.
    Absent,
    /// Reviewed in place, as a CREATE of a kind in scope (the review does not
    /// depend on which of CREATE and UPDATE; the rest is settled by
    /// [`Fields::answer`]).
    Reviewed(Verdict),
    /// Kept as text: a field the review needs came after it.
    Text(&'a str),
}

/// The index of a key of `request` that is read or checked, as kube's type
/// names them (a `match`: a length switch, not a string compare per key).
fn request_key(key: &str) -> Option<usize> {
    Some(match key {
        "uid" => UID,
        "kind" => 1,
        "resource" => 2,
        "subResource" => 3,
        "requestKind" => 4,
        "requestResource" => 5,
        "requestSubResource" => 6,
        "name" => 7,
        "namespace" => 8,
        "operation" => 9,
        "userInfo" => USER_INFO,
        "object" => 11,
        "oldObject" => 12,
        "dryRun" => 13,
        "options" => 14,
        _ => return None,
    })
}
/// Indices of fields kube's type requires (see [`request_key`]).
const UID: usize = 0;
const USER_INFO: usize = 10;

/// The fields of `request` the answer depends on.
#[derive(Default)]
struct Fields<'a> {
    seen: Seen,
    uid: Option<Cow<'a, str>>,
    kind: Option<(Cow<'a, str>, Cow<'a, str>)>,
    resource: Option<(Cow<'a, str>, Cow<'a, str>)>,
    name: Option<Cow<'a, str>>,
    namespace: Option<Cow<'a, str>>,
    operation: Option<Operation>,
    object: Option<Object<'a>>,
    dry_run: bool,
}

impl<'a> Fields<'a> {
    #[inline(never)]
    fn read(r: &mut Reader<'a>, plan: &Plan<'_>, cluster: &str) -> json::Result<Fields<'a>> {
        let mut f = Fields::default();
        r.object(|r, key| {
            let Some(index) = request_key(key) else {
                return r.skip();
            };
            match f.seen.first(r, index)? {
                UID => f.uid = Some(r.string()?),
                1 => f.kind = Some(group_and_name(r, "kind")?),
                2 => f.resource = Some(group_and_name(r, "resource")?),
                3 | 6 => drop(r.optional(Reader::string)?),
                4 => drop(r.optional(|r| group_and_name(r, "kind"))?),
                5 => drop(r.optional(|r| group_and_name(r, "resource"))?),
                7 => f.name = Some(r.string()?),
                8 => f.namespace = r.optional(Reader::string)?,
                9 => f.operation = Some(operation(r)?),
                USER_INFO => user_info(r)?,
                11 => f.object = Some(f.object(r, plan, cluster)?),
                // kube keeps it raw: a JSON object or null.
                12 => {
                    if !r.null()? {
                        json_object(r)?;
                        r.skip()?;
                    }
                }
                13 => f.dry_run = r.boolean()?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(f)
    }

    /// The object: reviewed in place if the kind, name and namespace came
    /// before it (as the API server writes them), else kept as text.
    #[inline(never)]
    fn object(
        &self,
        r: &mut Reader<'a>,
        plan: &Plan<'_>,
        cluster: &str,
    ) -> json::Result<Object<'a>> {
        if r.null()? {
            return Ok(Object::Absent);
        }
        json_object(r)?;
        let (Some((_, kind)), Some(name), Some(namespace)) =
            (&self.kind, &self.name, &self.namespace)
        else {
            return r.raw().map(Object::Text);
        };
        let text = ObjectText::in_place(r.rest(), r.depth_left());
        let request = Request {
            cluster,
            operation: Operation::Create,
            kind,
            namespace,
            name,
            // Not read: `review_object` reads the object from `text`.
            object: "",
            old_object: None,
        };
        let verdict = review_object(plan, &request, &text);
        match text.end() {
            Some(len) => r.advance(len),
            // Not read (the review did not need it, or could not read it):
            // checked here, so a bad object is the host's to answer.
            None => r.skip()?,
        }
        Ok(Object::Reviewed(verdict))
    }

    /// The answer the webhook's own path gives, if this path may give it.
    #[inline(never)]
    fn answer(self, plan: &Plan<'_>, cluster: &str) -> Option<Reviewed> {
        let uid = self.uid.filter(|uid| !uid.is_empty())?;
        let (group, kind) = self.kind?;
        let (resource_group, resource) = self.resource?;
        let operation = self.operation?;
        if !self.seen.has(USER_INFO) {
            return None;
        }
        // Without them the host reads the object's own metadata.
        let name = self.name.filter(|name| !name.is_empty())?;
        let namespace = self.namespace?;
        let verdict = match self.object.unwrap_or(Object::Absent) {
            _ if !in_scope(&group, &kind, &resource_group, &resource) => None,
            Object::Absent => match operation {
                Operation::Create | Operation::Update => return None,
                Operation::Delete | Operation::Connect => None,
            },
            _ if matches!(operation, Operation::Delete | Operation::Connect) => {
                Some(Verdict::Allow)
            }
            Object::Reviewed(verdict) => Some(verdict),
            Object::Text(object) => Some(review_plan(
                plan,
                &Request {
                    cluster,
                    operation,
                    kind: &kind,
                    namespace: &namespace,
                    name: &name,
                    object,
                    old_object: None,
                },
            )),
        };
        Some(Reviewed {
            uid: uid.into_owned(),
            kind: kind.into_owned(),
            namespace: namespace.into_owned(),
            name: name.into_owned(),
            operation,
            dry_run: self.dry_run,
            verdict,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STS: &str = r#"{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"kafka"},"spec":{"replicas":1,"template":{"spec":{"containers":[{"name":"main","env":[{"name":"GONE","value":"x"}]}]}}}}"#;

    /// An AdmissionReview with the request's fields in the API server's
    /// order; `fields` replaces or adds fields (`(key, Some(json))`) or drops
    /// them (`(key, None)`).
    fn body(fields: &[(&str, Option<&str>)]) -> String {
        let mut request = vec![
            ("uid", r#""u-1""#.to_string()),
            (
                "kind",
                r#"{"group":"apps","version":"v1","kind":"StatefulSet"}"#.into(),
            ),
            (
                "resource",
                r#"{"group":"apps","version":"v1","resource":"statefulsets"}"#.into(),
            ),
            ("name", r#""kafka""#.into()),
            ("namespace", r#""ns""#.into()),
            ("operation", r#""CREATE""#.into()),
            (
                "userInfo",
                r#"{"username":"u","groups":["g"],"extra":{"k":["v"]}}"#.into(),
            ),
            ("object", STS.into()),
            ("oldObject", "null".into()),
            ("dryRun", "false".into()),
            ("options", r#"{"kind":"CreateOptions"}"#.into()),
        ];
        for (key, value) in fields {
            request.retain(|(k, _)| k != key);
            if let Some(value) = value {
                request.push((key, value.to_string()));
            }
        }
        let request: Vec<String> = request
            .iter()
            .map(|(k, v)| format!(r#""{k}":{v}"#))
            .collect();
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{{}}}}}"#,
            request.join(",")
        )
    }

    fn admit(body: &str) -> Admission {
        let plan = crate::engine::tests::plan();
        review_admission(&Plan::parse(&plan).unwrap(), "west", body)
    }

    fn verdict(body: &str) -> Option<Verdict> {
        match admit(body) {
            Admission::Reviewed(reviewed) => reviewed.verdict,
            Admission::Fallback => panic!("fell back: {body}"),
        }
    }

    fn by_text() -> Verdict {
        let plan = crate::engine::tests::plan();
        crate::review(
            &plan,
            &Request {
                cluster: "west",
                operation: Operation::Create,
                kind: "StatefulSet",
                namespace: "ns",
                name: "kafka",
                object: STS,
                old_object: None,
            },
        )
    }

    #[test]
    fn the_object_is_reviewed_in_place_or_after_the_fields_it_needs() {
        let expected = by_text();
        assert!(matches!(expected, Verdict::Patch(_)), "{expected:?}");
        let Admission::Reviewed(reviewed) = admit(&body(&[])) else {
            panic!("fell back");
        };
        assert_eq!(reviewed.verdict, Some(expected.clone()));
        assert_eq!(
            (
                reviewed.uid.as_str(),
                reviewed.kind.as_str(),
                reviewed.namespace.as_str()
            ),
            ("u-1", "StatefulSet", "ns")
        );
        // The name and namespace after the object: read from its text.
        let late = body(&[
            ("name", None),
            ("namespace", None),
            ("name", Some(r#""kafka""#)),
            ("namespace", Some(r#""ns""#)),
        ]);
        assert_eq!(verdict(&late), Some(expected.clone()));
        // Whitespace, and fields after the object, are read on.
        let spaced = body(&[
            ("object", Some(&format!(" \n{STS} "))),
            ("dryRun", Some("true")),
        ]);
        assert_eq!(verdict(&spaced), Some(expected));
        let Admission::Reviewed(reviewed) = admit(&spaced) else {
            panic!("fell back");
        };
        assert!(reviewed.dry_run);
    }

    #[test]
    fn what_is_not_reviewed() {
        for operation in ["DELETE", "CONNECT"] {
            let op = format!(r#""{operation}""#);
            assert_eq!(
                verdict(&body(&[("operation", Some(&op))])),
                Some(Verdict::Allow)
            );
            let no_object = body(&[("operation", Some(&op)), ("object", Some("null"))]);
            assert_eq!(verdict(&no_object), None);
        }
        let batch = r#"{"group":"batch","version":"v1","kind":"StatefulSet"}"#;
        assert_eq!(verdict(&body(&[("kind", Some(batch))])), None);
        let scale = r#"{"group":"autoscaling","version":"v1","kind":"Scale"}"#;
        assert_eq!(
            verdict(&body(&[("kind", Some(scale))])),
            Some(Verdict::Allow)
        );
        let deployments = r#"{"group":"apps","version":"v1","resource":"deployments"}"#;
        let not_sts = body(&[("kind", Some(scale)), ("resource", Some(deployments))]);
        assert_eq!(verdict(&not_sts), None);
    }

    #[test]
    fn the_host_reads_what_this_path_cannot_answer_for() {
        let lone = STS.replace(r#""x""#, r#""\ud800""#);
        let cases: &[&[(&str, Option<&str>)]] = &[
            &[("uid", Some(r#""""#))],
            &[("uid", None)],
            &[("namespace", Some("null"))],
            &[("name", Some(r#""""#))],
            &[("object", Some("null"))],
            &[("object", Some("[]"))],
            &[("object", Some(&lone))],
            &[("oldObject", Some("[1e400]"))],
            &[("oldObject", Some(r#"{"a":1e400}"#))],
            &[("userInfo", Some(r#"{"groups":[1]}"#))],
            &[("userInfo", None)],
            &[("operation", Some(r#""PATCH""#))],
            &[("dryRun", Some("null"))],
            &[("requestKind", Some(r#"{"group":"apps"}"#))],
        ];
        for fields in cases {
            let body = body(fields);
            assert_eq!(admit(&body), Admission::Fallback, "{body}");
        }
        let good = body(&[]);
        for bad in [
            good.replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1"),
            good.replacen(r#""uid":"u-1","#, r#""uid":"u-1","uid":"u-1","#, 1),
            format!("{good} x"),
            good[..good.len() - 1].to_string(),
        ] {
            assert_eq!(admit(&bad), Admission::Fallback, "{bad}");
        }
    }
}
