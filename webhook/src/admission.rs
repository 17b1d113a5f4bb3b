//! One `POST /mutate` body in, one answer out: the body handed to the
//! module whole ([`read_once`]), or, when the module leaves it, AdmissionReview
//! v1 parsing (kube's types) and the policy call; then the response.
//!
//! Pure CPU work with no I/O; the server runs it on its async thread with a
//! short review deadline, and again on a blocking thread when that is not
//! enough ([`Reply::Slow`]).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, META_API_VERSION_V1, META_KIND, Operation as KubeOperation,
};
use kube::core::{DynamicResourceScope, ObjectMeta, Resource, TypeMeta};
use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde::ser::{Serialize, Serializer};
use serde_json::value::RawValue;
use straddle_policy_host::{HostError, Operation, Policy, Request, Verdict};

use crate::config::OnPolicyError;
use crate::metrics::{CauseLabels, Metrics, RequestLabels};

/// What the handler needs besides the body.
pub struct Context<'a> {
    pub cluster: &'a str,
    pub policy: &'a Policy,
    pub on_policy_error: OnPolicyError,
    pub metrics: &'a Metrics,
    /// `Some`: this attempt runs on an async thread, and a review that does
    /// not finish within this deadline gives [`Reply::Slow`] instead of a
    /// verdict. `None`: the policy's own deadline, and every outcome is an
    /// answer.
    pub inline_deadline: Option<Duration>,
}

/// The answer to one request.
#[derive(Debug)]
pub enum Reply {
    /// HTTP 200 with an AdmissionReview (a verdict).
    Review { body: Vec<u8>, summary: Summary },
    /// No AdmissionReview could be read: an HTTP error status with a text body.
    Refused {
        status: u16,
        reason: &'static str,
        message: String,
    },
    /// The review did not finish within [`Context::inline_deadline`]: decide
    /// again without it (the module is pure, so nothing was changed or
    /// counted).
    Slow,
}

/// What was decided, for logs and metrics.
#[derive(Debug, Default)]
pub struct Summary {
    pub uid: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: &'static str,
    pub dry_run: bool,
    /// `allow`, `patch`, `deny` or `error`.
    pub verdict: &'static str,
    /// The denial message or the policy error.
    pub message: Option<String>,
}

/// The object under review, exactly as the API server sent it.
///
/// kube's [`AdmissionRequest<T>`] takes any [`Resource`]. With
/// `DynamicObject` every object would be rebuilt as a `serde_json::Value`
/// and serialized again for the policy, which was most of a review's CPU
/// time; the policy wants the JSON text anyway. This keeps the raw text,
/// checked to be a JSON object, and nothing else: `meta()` is empty. The
/// request names the object already; [`RawObject::names`] reads the
/// object's own `metadata` only when it does not (e.g. `generateName`).
#[derive(Clone, Debug)]
pub struct RawObject {
    json: Box<RawValue>,
    meta: ObjectMeta,
}

/// `metadata.name` and `metadata.namespace` of an object.
#[derive(Deserialize, Default)]
pub struct Names {
    pub name: Option<String>,
    pub namespace: Option<String>,
}

impl RawObject {
    /// The object's JSON text.
    pub fn json(&self) -> &str {
        self.json.get()
    }

    /// The object's own name and namespace (a second read of its text).
    pub fn names(&self) -> Names {
        #[derive(Deserialize)]
        struct Shape {
            #[serde(default)]
            metadata: Names,
        }
        serde_json::from_str::<Shape>(self.json.get())
            .map(|shape| shape.metadata)
            .unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Only its extent and its grammar: the policy's reader checks every
        // value of an object it reviews (strings' escapes, numbers' range),
        // and an object it does not review passes untouched.
        let json = Box::<RawValue>::deserialize(deserializer)?;
        if !json.get().starts_with('{') {
            return Err(D::Error::custom("the object is not a JSON object"));
        }
        Ok(RawObject {
            json,
            meta: ObjectMeta::default(),
        })
    }
}

impl Serialize for RawObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(serializer)
    }
}

impl Resource for RawObject {
    type DynamicType = ();
    type Scope = DynamicResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// An AdmissionReview as sent to a webhook. kube's `AdmissionReview<T>`
/// flattens its `TypeMeta`, which makes serde buffer the whole body (and
/// rules out raw values); the request itself is kube's.
#[derive(Deserialize)]
struct IncomingReview {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<AdmissionRequest<RawObject>>,
}

/// A request body, read: the request [`handle`] decides on, or why there is
/// none. Pure (no policy, no metrics), so it can be fuzzed on its own.
#[derive(Debug)]
pub enum Decoded {
    /// A v1 AdmissionReview whose request has a `uid`.
    Review(Box<AdmissionRequest<RawObject>>),
    /// Not readable, but its `request.uid` was found: the API server gets a
    /// denial carrying `message` (shown to the user).
    Unreadable { uid: String, message: String },
    /// No AdmissionReview could be read: an HTTP error status.
    Refused {
        status: u16,
        reason: &'static str,
        message: String,
    },
}

/// Reads one `POST /mutate` body.
pub fn decode(body: &[u8]) -> Decoded {
    // One vectorised UTF-8 check of the whole body rather than serde_json's
    // check of each string and of the raw object; a body that fails it is
    // read again byte by byte for serde_json's message and position.
    let read = match simdutf8::basic::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    };
    let review: IncomingReview = match read {
        Ok(review) => review,
        Err(e) => return unreadable(body, &e),
    };
    if review.api_version != META_API_VERSION_V1 || review.kind != META_KIND {
        return Decoded::Refused {
            status: 400,
            reason: "wrong_type",
            message: format!(
                "expected apiVersion {META_API_VERSION_V1:?} kind {META_KIND:?}, got apiVersion {:?} \
                 kind {:?}; register the webhook with admissionReviewVersions: [\"v1\"]",
                review.api_version, review.kind
            ),
        };
    }
    let Some(mut request) = review.request else {
        return Decoded::Refused {
            status: 400,
            reason: "no_request",
            message: "the AdmissionReview has no request".into(),
        };
    };
    request.types = TypeMeta {
        api_version: review.api_version,
        kind: review.kind,
    };
    if request.uid.is_empty() {
        return Decoded::Refused {
            status: 400,
            reason: "no_uid",
            message: "the AdmissionReview's request has no uid".into(),
        };
    }
    Decoded::Review(Box::new(request))
}

/// Decides one request body.
pub fn handle(ctx: &Context<'_>, body: &[u8]) -> Reply {
    let failed = match read_once(ctx, body) {
        Ok(reply) => return reply,
        Err(failed) => failed,
    };
    match decode(body) {
        Decoded::Review(request) => decide(ctx, &request, failed),
        Decoded::Unreadable { uid, message } => {
            ctx.metrics.rejected("unreadable_review");
            Reply::Review {
                body: encode(&unreadable_response(&uid, &message)),
                summary: Summary {
                    uid,
                    operation: "UNKNOWN",
                    verdict: "deny",
                    message: Some(message),
                    ..Summary::default()
                },
            }
        }
        Decoded::Refused {
            status,
            reason,
            message,
        } => Reply::Refused {
            status,
            reason,
            message,
        },
    }
}

/// The denial for a review that cannot be read but whose `uid` is known.
pub fn unreadable_response(uid: &str, message: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid(message);
    response.uid = uid.to_owned();
    response
}

/// The request reviewed by a module that reads the whole body once
/// (`straddle_policy::admission`): no AdmissionReview parsing here, and the
/// object is read once instead of twice. `Err` is for [`decode`] and
/// [`decide`]: the module left the body to the host (`None`), or failed
/// (`Some`: the error to answer with, so that a failing module does not run
/// twice).
fn read_once(ctx: &Context<'_>, body: &[u8]) -> Result<Reply, Option<HostError>> {
    let body = simdutf8::basic::from_utf8(body).map_err(|_| None)?;
    let started = Instant::now();
    let read = match ctx.inline_deadline {
        Some(deadline) => ctx
            .policy
            .review_admission_within(ctx.cluster, body, deadline),
        None => ctx.policy.review_admission(ctx.cluster, body),
    };
    let reviewed = match read {
        Ok(Some(reviewed)) => reviewed,
        Ok(None) => return Err(None),
        Err(HostError::Timeout { .. }) if ctx.inline_deadline.is_some() => return Ok(Reply::Slow),
        Err(error) => return Err(Some(error)),
    };
    let summary = Summary {
        uid: reviewed.uid,
        kind: reviewed.kind,
        namespace: reviewed.namespace,
        name: reviewed.name,
        operation: operation_label(reviewed.operation),
        dry_run: reviewed.dry_run,
        verdict: "allow",
        message: None,
    };
    // What kube's `AdmissionResponse::from(&request)` makes.
    let mut response = AdmissionResponse::invalid("");
    response.uid.clone_from(&summary.uid);
    response.allowed = true;
    response.result = Default::default();
    Ok(match reviewed.verdict {
        None => finish(ctx, response, summary, "allow"),
        Some(verdict) => {
            ctx.metrics
                .review_duration
                .observe(started.elapsed().as_secs_f64());
            conclude(ctx, response, summary, Ok(verdict))
        }
    })
}

/// kube's operation as the policy names it.
pub fn operation_of(operation: &KubeOperation) -> Operation {
    match operation {
        KubeOperation::Create => Operation::Create,
        KubeOperation::Update => Operation::Update,
        KubeOperation::Delete => Operation::Delete,
        KubeOperation::Connect => Operation::Connect,
    }
}

fn operation_label(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Decides a request read here. `failed`: the module already failed on this
/// body ([`read_once`]); answer with that error instead of running it again.
fn decide(
    ctx: &Context<'_>,
    req: &AdmissionRequest<RawObject>,
    failed: Option<HostError>,
) -> Reply {
    let operation = operation_of(&req.operation);
    let op_label = operation_label(operation);
    // Only a request that leaves out the name or namespace costs a second
    // read of the object.
    let object_names = match (&req.object, req.name.is_empty() || req.namespace.is_none()) {
        (Some(object), true) => object.names(),
        _ => Names::default(),
    };
    let mut summary = Summary {
        uid: req.uid.clone(),
        kind: req.kind.kind.clone(),
        namespace: req
            .namespace
            .clone()
            .or(object_names.namespace)
            .unwrap_or_default(),
        name: if req.name.is_empty() {
            object_names.name.unwrap_or_default()
        } else {
            req.name.clone()
        },
        operation: op_label,
        dry_run: req.dry_run,
        verdict: "allow",
        message: None,
    };
    let response = AdmissionResponse::from(req);

    let in_scope = straddle_policy::admission::in_scope(
        &req.kind.group,
        &req.kind.kind,
        &req.resource.group,
        &req.resource.resource,
    );
    let object = match (&req.object, operation) {
        _ if !in_scope => None,
        (Some(object), _) => Some(object.json()),
        (None, Operation::Create | Operation::Update) => {
            let message = format!(
                "request.object is missing: a {op_label} review must carry the object being admitted"
            );
            summary.message = Some(message.clone());
            return finish(ctx, response.deny(message), summary, "deny");
        }
        // DELETE and CONNECT without an object: nothing to mutate.
        (None, _) => None,
    };
    let Some(object) = object else {
        return finish(ctx, response, summary, "allow");
    };
    let started = Instant::now();
    let request = Request {
        cluster: ctx.cluster,
        operation,
        kind: &req.kind.kind,
        namespace: &summary.namespace,
        name: &summary.name,
        object,
        // The policy never reads it (CREATE and UPDATE give the same
        // values), so an UPDATE does not copy a second object into the
        // instance.
        old_object: None,
    };
    let verdict = match (failed, ctx.inline_deadline) {
        (Some(error), _) => return conclude(ctx, response, summary, Err(error)),
        (None, Some(deadline)) => match ctx.policy.review_within(&request, deadline) {
            Err(HostError::Timeout { .. }) => return Reply::Slow,
            verdict => verdict,
        },
        (None, None) => ctx.policy.review(&request),
    };
    ctx.metrics
        .review_duration
        .observe(started.elapsed().as_secs_f64());
    conclude(ctx, response, summary, verdict)
}

/// The answer for a policy's verdict, or for its failure.
fn conclude(
    ctx: &Context<'_>,
    mut response: AdmissionResponse,
    mut summary: Summary,
    verdict: Result<Verdict, HostError>,
) -> Reply {
    let label = match verdict {
        Ok(Verdict::Allow) => "allow",
        Ok(Verdict::Patch(patch)) => {
            response.patch = Some(patch.into_bytes());
            "patch"
        }
        Ok(Verdict::Deny(message)) => {
            response = response.deny(&message);
            summary.message = Some(message);
            "deny"
        }
        Ok(Verdict::Warn(message)) => {
            response.warnings = Some(vec![message.clone()]);
            summary.message = Some(message);
            "warn"
        }
        Err(error) => {
            let cause = cause(&error);
            ctx.metrics
                .policy_errors
                .get_or_create(&CauseLabels { cause })
                .inc();
            let what = format!(
                "straddle-webhook: policy {} gave no verdict for {} {}/{}: {error}",
                short_digest(ctx.policy.digest()),
                summary.kind,
                summary.namespace,
                summary.name
            );
            summary.message = Some(what.clone());
            match ctx.on_policy_error {
                OnPolicyError::Deny => response = response.deny(what),
                OnPolicyError::Allow => {
                    response.warnings = Some(vec![format!(
                        "straddle-webhook admitted this object unchanged: the policy failed ({cause})"
                    )]);
                }
            }
            "error"
        }
    };
    finish(ctx, response, summary, label)
}

fn finish(
    ctx: &Context<'_>,
    response: AdmissionResponse,
    mut summary: Summary,
    verdict: &'static str,
) -> Reply {
    summary.verdict = verdict;
    ctx.metrics
        .requests
        .get_or_create(&RequestLabels {
            kind: kind_label(&summary.kind),
            operation: summary.operation,
            verdict,
        })
        .inc();
    Reply::Review {
        body: encode(&response),
        summary,
    }
}

/// A body that is not a readable AdmissionReview. If its `request.uid` can
/// still be found, the API server gets a denial with the parse error (shown
/// to the user); otherwise HTTP 400.
fn unreadable(body: &[u8], error: &serde_json::Error) -> Decoded {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "apiVersion", default)]
        api_version: String,
        #[serde(default)]
        kind: String,
        request: Option<ProbeRequest>,
    }
    #[derive(Deserialize)]
    struct ProbeRequest {
        uid: String,
    }
    let message = format!("cannot read the AdmissionReview: {error}");
    match serde_json::from_slice::<Probe>(body) {
        Ok(Probe {
            api_version,
            kind,
            request: Some(ProbeRequest { uid }),
        }) if api_version == META_API_VERSION_V1 && kind == META_KIND && !uid.is_empty() => {
            Decoded::Unreadable { uid, message }
        }
        _ => Decoded::Refused {
            status: 400,
            reason: "malformed",
            message: format!("not an {META_API_VERSION_V1} AdmissionReview: {message}"),
        },
    }
}

/// The metric label for a kind: a fixed set, never request content.
pub fn kind_label(kind: &str) -> &'static str {
    match kind {
        "StatefulSet" => "StatefulSet",
        "Service" => "Service",
        "ConfigMap" => "ConfigMap",
        "NetworkPolicy" => "NetworkPolicy",
        "Scale" => "Scale",
        _ => "other",
    }
}

pub fn cause(error: &HostError) -> &'static str {
    match error {
        HostError::Trap(_) => "trap",
        HostError::Timeout { .. } => "timeout",
        HostError::MemoryLimit { .. } => "memory",
        HostError::Busy(_) => "busy",
        HostError::Other(_) => "other",
    }
}

fn short_digest(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// Serializes the response as an `admission.k8s.io/v1` AdmissionReview.
///
/// kube-core 5 serializes `AdmissionResponse::patch` (a `Vec<u8>`) as an
/// array of numbers (kube-rs/kube#1781). The API server happens to accept
/// that, but the API specifies base64, and the array is four times larger.
/// This writes the same fields with the patch in base64.
pub fn encode(response: &AdmissionResponse) -> Vec<u8> {
    // Written field by field, as serde_json writes a compact map: the patch
    // goes in as base64 straight into the body, where a serializer would
    // copy it into a string first and then scan it for characters to escape
    // (base64 has none).
    let r = response;
    let patch_len = r.patch.as_ref().map_or(0, |p| p.len().div_ceil(3) * 4);
    let mut out = Vec::with_capacity(160 + r.uid.len() + patch_len);
    out.extend_from_slice(b"{\"apiVersion\":");
    json(&mut out, META_API_VERSION_V1);
    out.extend_from_slice(b",\"kind\":");
    json(&mut out, META_KIND);
    out.extend_from_slice(b",\"response\":{\"uid\":");
    json(&mut out, &r.uid);
    out.extend_from_slice(if r.allowed {
        b",\"allowed\":true"
    } else {
        b",\"allowed\":false"
    });
    if !r.allowed {
        out.extend_from_slice(b",\"status\":");
        json(&mut out, &r.result);
    }
    if let Some(patch) = &r.patch {
        out.extend_from_slice(b",\"patchType\":\"JSONPatch\",\"patch\":\"");
        // SIMD where the CPU has it: the base64 crate's scalar encoder
        // was 5 % of a request's instructions (~6 per byte of patch).
        base64_simd::STANDARD.encode_append(patch, &mut out);
        out.push(b'"');
    }
    if !r.audit_annotations.is_empty() {
        out.extend_from_slice(b",\"auditAnnotations\":");
        json(&mut out, &r.audit_annotations);
    }
    if let Some(warnings) = &r.warnings {
        out.extend_from_slice(b",\"warnings\":");
        json(&mut out, warnings);
    }
    out.extend_from_slice(b"}}");
    out
}

/// Appends `value` as compact JSON. Strings, bools, string maps and kube's
/// Status cannot fail to serialize into a Vec.
fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    // The base64 crate as the oracle of the SIMD encoder.
    use base64::Engine as _;

    #[test]
    fn answers_are_what_serde_writes() {
        let mut patched = AdmissionResponse::invalid("x");
        patched.uid = "u-\"1\"".into();
        patched.allowed = true;
        patched.patch = Some(br#"[{"op":"add","path":"/a","value":1}]"#.to_vec());
        patched.warnings = Some(vec!["w \"quoted\"".into()]);
        let denied = unreadable_response("u-2", "no <good>");
        for response in [patched, denied] {
            let written: serde_json::Value = serde_json::from_slice(&encode(&response)).unwrap();
            let mut expected = serde_json::json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": { "uid": response.uid, "allowed": response.allowed },
            });
            let inner = &mut expected["response"];
            if !response.allowed {
                inner["status"] = serde_json::to_value(&response.result).unwrap();
            }
            if let Some(patch) = &response.patch {
                inner["patchType"] = "JSONPatch".into();
                inner["patch"] = base64::engine::general_purpose::STANDARD
                    .encode(patch)
                    .into();
            }
            if let Some(warnings) = &response.warnings {
                inner["warnings"] = serde_json::to_value(warnings).unwrap();
            }
            assert_eq!(written, expected);
        }
    }

    #[test]
    fn patches_of_every_length_are_standard_base64() {
        // Across the SIMD encoder's block sizes and every tail.
        let patch: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        for len in 0..patch.len() {
            let mut response = AdmissionResponse::invalid("x");
            response.allowed = true;
            response.patch = Some(patch[..len].to_vec());
            let written: serde_json::Value = serde_json::from_slice(&encode(&response)).unwrap();
            let want = base64::engine::general_purpose::STANDARD.encode(&patch[..len]);
            assert_eq!(written["response"]["patch"], want.as_str(), "length {len}");
        }
    }
}
