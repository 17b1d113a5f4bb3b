//! Runs a policy over manifests the way the webhook will: one admission
//! review per document, the returned JSON Patch applied with a JSON Patch
//! library. Shared by `straddle mutate` and the end-to-end tests.

use anyhow::{Context, Result};
use serde_json::Value;
use straddle_policy::{Operation, Request, Verdict};

/// What happened to one document.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub namespace: String,
    pub before: Value,
    pub after: Value,
    /// The raw verdict (patch text or denial).
    pub verdict: Verdict,
}

impl Outcome {
    pub fn denial(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Deny(m) => Some(m),
            _ => None,
        }
    }

    pub fn warning(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Warn(m) => Some(m),
            _ => None,
        }
    }
}

/// Applies a verdict's patch to a document.
pub fn apply(doc: &Value, verdict: &Verdict) -> Result<Value> {
    match verdict {
        Verdict::Patch(patch) => {
            let patch: json_patch::Patch =
                serde_json::from_str(patch).context("the policy returned an invalid JSON Patch")?;
            let mut out = doc.clone();
            json_patch::patch(&mut out, &patch)
                .context("the policy's JSON Patch does not apply")?;
            Ok(out)
        }
        Verdict::Allow | Verdict::Deny(_) | Verdict::Warn(_) => Ok(doc.clone()),
    }
}

/// Reviews every document with `review` (native engine or wasm module).
pub fn run<E>(
    docs: &[Value],
    cluster: &str,
    default_namespace: Option<&str>,
    operation: Operation,
    mut review: impl FnMut(&Request<'_>) -> Result<Verdict, E>,
) -> Result<Vec<Outcome>>
where
    E: Into<anyhow::Error>,
{
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        let namespace = match doc["metadata"]["namespace"].as_str() {
            Some(ns) => ns.to_string(),
            None => default_namespace
                .context("a document has no metadata.namespace and the policy spans several namespaces; pass --namespace")?
                .to_string(),
        };
        let object = serde_json::to_string(doc)?;
        let req = Request {
            cluster,
            operation,
            kind: doc["kind"].as_str().unwrap_or(""),
            namespace: &namespace,
            name: doc["metadata"]["name"].as_str().unwrap_or(""),
            object: &object,
            old_object: (operation == Operation::Update).then_some(object.as_str()),
        };
        let verdict = review(&req).map_err(Into::into)?;
        let after = apply(doc, &verdict)?;
        out.push(Outcome {
            namespace,
            before: doc.clone(),
            after,
            verdict,
        });
    }
    Ok(out)
}
