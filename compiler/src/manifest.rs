//! Multi-document YAML manifests as JSON values (key order kept).

use anyhow::{Context, Result};
use serde_json::Value;

/// Parses every non-empty document of a multi-document YAML stream.
pub fn parse(text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).context("the manifest is not valid YAML")?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Renders documents as one multi-document YAML stream.
pub fn to_yaml(docs: &[Value]) -> Result<String> {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(doc).context("cannot render YAML")?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// `kind namespace/name` of a document, for messages.
pub fn describe(doc: &Value, namespace: &str) -> String {
    format!(
        "{} {}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        namespace,
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}
