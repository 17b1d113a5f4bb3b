//! Helpers for the deploy tests: render the chart with Helm's own engine
//! (`render.py`, the Helm v4 Go SDK through `helm-python-sdk`), build the
//! kustomize manifests with `kubectl kustomize`, and check every object
//! against its Kubernetes API type.
//!
//! The tools come from `.ci/run` (`pip install helm-python-sdk`; kubectl, or
//! Debian's `kubernetes-client`). Without them a test prints why and
//! passes, unless `STRADDLE_REQUIRE_DEPLOY_TOOLS=1` (set by CI) makes it
//! fail.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use straddle_test_support::root;

pub fn chart_dir() -> PathBuf {
    root().join("deploy/helm/straddle-webhook")
}

/// Reports a missing tool: a loud skip, or a panic when the environment
/// requires the tools (`STRADDLE_REQUIRE_DEPLOY_TOOLS=1`, as in CI).
pub fn tool_missing(what: &str) {
    if std::env::var("STRADDLE_REQUIRE_DEPLOY_TOOLS").is_ok_and(|v| v == "1") {
        panic!("{what} (STRADDLE_REQUIRE_DEPLOY_TOOLS=1)");
    }
    eprintln!("\n*** SKIPPED: {what} ***\n*** .ci/run installs it; see deploy/README.md ***\n");
}

/// The result of rendering the chart.
pub enum Rendered {
    /// Every object of every template, in template order.
    Objects(Vec<Value>),
    /// Helm refused the values; its message.
    Refused(String),
}

/// Renders the chart as `helm template RELEASE -n NAMESPACE` would, with
/// Helm's own engine and lint (strict). `Ok(None)`: the renderer is missing
/// (already reported).
pub fn render_chart(release: &str, namespace: &str, values: &Value) -> Result<Option<Rendered>> {
    let script = root().join("deploy/tests/render.py");
    let child = Command::new("python3")
        .arg(&script)
        .arg(chart_dir())
        .args([release, namespace])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            tool_missing(&format!("python3 cannot run: {e}"));
            return Ok(None);
        }
    };
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(values.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => {}
        Some(1) => {
            let answer: Value = serde_json::from_str(&stdout).with_context(|| {
                format!(
                    "render.py: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
            return Ok(Some(Rendered::Refused(
                answer["error"].as_str().unwrap_or_default().to_owned(),
            )));
        }
        Some(3) => {
            tool_missing(&format!(
                "the Helm SDK is missing: {} (pip install helm-python-sdk)",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return Ok(None);
        }
        _ => bail!(
            "render.py failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    let answer: Value = serde_json::from_str(&stdout).context("render.py output")?;
    let lint = &answer["lint"];
    let lint_errors: Vec<&Value> = lint["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["severity"].as_i64() >= Some(2))
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        lint_errors.is_empty() && lint["errors"].as_array().is_none_or(|e| e.is_empty()),
        "helm lint --strict: {lint}"
    );
    let manifests = answer["manifests"].as_object().context("no manifests")?;
    let mut objects = Vec::new();
    for (template, text) in manifests {
        if !template.ends_with(".yaml") {
            continue;
        }
        let text = text.as_str().context("manifest text")?;
        objects.extend(parse_yaml(text).with_context(|| template.clone())?);
    }
    Ok(Some(Rendered::Objects(objects)))
}

/// `kubectl kustomize DIR`, parsed. `Ok(None)`: kubectl is missing.
pub fn kustomize(dir: &Path) -> Result<Option<Vec<Value>>> {
    let out = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(out) => out,
        Err(e) => {
            tool_missing(&format!("kubectl cannot run: {e}"));
            return Ok(None);
        }
    };
    ensure!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_yaml(&String::from_utf8(out.stdout)?).map(Some)
}

/// Every non-empty document of a YAML stream.
pub fn parse_yaml(text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| anyhow!("not YAML: {e}"))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// `kind/namespace/name` of an object.
pub fn key(object: &Value) -> String {
    let meta = &object["metadata"];
    format!(
        "{}/{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        meta["namespace"].as_str().unwrap_or(""),
        meta["name"].as_str().unwrap_or("?")
    )
}

/// Objects by [`key`]; duplicate keys are an error.
pub fn by_key(objects: &[Value]) -> Result<BTreeMap<String, Value>> {
    let mut map = BTreeMap::new();
    for object in objects {
        if map.insert(key(object), object.clone()).is_some() {
            bail!("{} appears twice", key(object));
        }
    }
    Ok(map)
}

/// Deserializes the object into the k8s-openapi type of its
/// `apiVersion`/`kind` (cert-manager's kinds into the local types below)
/// and serializes it back: the result must equal the input, so a field the
/// API type does not have, or a value of the wrong type, fails (the
/// generated types ignore unknown fields when reading).
pub fn check_typed(object: &Value) -> Result<()> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let round_trip = match (api_version, kind) {
        ("v1", "Namespace") => round_trip::<Namespace>(object),
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(object),
        ("v1", "Secret") => round_trip::<Secret>(object),
        ("v1", "Service") => round_trip::<Service>(object),
        ("apps/v1", "Deployment") => round_trip::<Deployment>(object),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(object),
        ("scheduling.k8s.io/v1", "PriorityClass") => round_trip::<PriorityClass>(object),
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<ClusterRoleBinding>(object)
        }
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            round_trip::<MutatingWebhookConfiguration>(object)
        }
        ("cert-manager.io/v1", "Issuer") => round_trip::<cert_manager::Issuer>(object),
        ("cert-manager.io/v1", "Certificate") => round_trip::<cert_manager::Certificate>(object),
        _ => bail!(
            "{}: no API type known for {api_version} {kind}",
            key(object)
        ),
    }?;
    let (expected, actual) = (normalize(object), normalize(&round_trip));
    ensure!(
        expected == actual,
        "{} does not survive its API type:\n  rendered:   {expected}\n  round trip: {actual}",
        key(object)
    );
    Ok(())
}

/// The object read as `T`.
pub fn typed<T: DeserializeOwned>(object: &Value) -> Result<T> {
    serde_json::from_value(object.clone()).with_context(|| key(object))
}

fn round_trip<T: DeserializeOwned + serde::Serialize>(object: &Value) -> Result<Value> {
    let typed: T = typed(object)?;
    Ok(serde_json::to_value(typed)?)
}

/// Drops empty maps/lists/nulls (the types leave out what is unset) and
/// writes numbers in one form.
fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalize(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Number(n) => n.as_i64().map(Value::from).unwrap_or_else(|| value.clone()),
        other => other.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The fields of cert-manager's `cert-manager.io/v1` Issuer and Certificate
/// that the chart uses, from cert-manager's CRDs (there is no k8s-openapi
/// type for them); unknown fields are refused.
pub mod cert_manager {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Issuer {
        pub api_version: String,
        pub kind: String,
        pub metadata: ObjectMeta,
        pub spec: IssuerSpec,
    }

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct IssuerSpec {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub self_signed: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ca: Option<CaIssuer>,
    }

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct CaIssuer {
        pub secret_name: String,
    }

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Certificate {
        pub api_version: String,
        pub kind: String,
        pub metadata: ObjectMeta,
        pub spec: CertificateSpec,
    }

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct CertificateSpec {
        pub secret_name: String,
        pub issuer_ref: IssuerRef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[serde(rename = "isCA")]
        pub is_ca: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub common_name: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub dns_names: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub duration: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub renew_before: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub usages: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub private_key: Option<PrivateKey>,
    }

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct IssuerRef {
        pub name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub kind: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub group: Option<String>,
    }

    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct PrivateKey {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub algorithm: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub size: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub rotation_policy: Option<String>,
    }
}

/// Removes what only Helm adds (its labels), for comparing the chart with
/// the kustomize manifests.
pub fn without_helm_labels(mut object: Value) -> Value {
    if let Some(labels) = object
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("helm.sh/chart");
        labels.remove("app.kubernetes.io/managed-by");
    }
    object
}

/// Whether a label selector (`matchLabels`, `matchExpressions`) selects an
/// object with these labels, as the API server decides it.
pub fn selector_matches(selector: &Value, labels: &BTreeMap<&str, &str>) -> Result<bool> {
    if let Some(match_labels) = selector["matchLabels"].as_object() {
        for (k, v) in match_labels {
            if labels.get(k.as_str()).copied() != v.as_str() {
                return Ok(false);
            }
        }
    }
    for expr in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = expr["key"].as_str().context("matchExpressions key")?;
        let values: Vec<&str> = expr["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let value = labels.get(key).copied();
        let selected = match expr["operator"].as_str() {
            Some("In") => value.is_some_and(|v| values.contains(&v)),
            Some("NotIn") => value.is_none_or(|v| !values.contains(&v)),
            Some("Exists") => value.is_some(),
            Some("DoesNotExist") => value.is_none(),
            other => bail!("unknown selector operator {other:?}"),
        };
        if !selected {
            return Ok(false);
        }
    }
    Ok(true)
}
