//! AdmissionReview v1 requests as the API server sends them, and the JSON
//! Patch in an answer. The one builder: the webhook's tests and benches use
//! it, and `fuzz-seeds` (straddle-tests) writes the fuzz corpus seeds with it.

use serde_json::{Value, json};

/// An AdmissionReview v1 for `object`, shaped like the API server's: the
/// resource is the kind's plural, UPDATE carries the object as `oldObject`
/// too, and DELETE carries only `oldObject` (with `DeleteOptions`).
pub fn review_for(object: &Value, namespace: &str, operation: &str, uid: &str) -> Value {
    let kind = object["kind"].as_str().unwrap_or("");
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let resource = format!("{}s", kind.to_ascii_lowercase());
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    let (new, old, options) = match operation {
        "UPDATE" => (object.clone(), object.clone(), "UpdateOptions"),
        "DELETE" => (Value::Null, object.clone(), "DeleteOptions"),
        _ => (object.clone(), Value::Null, "CreateOptions"),
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": object["metadata"]["name"].as_str().unwrap_or(""),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:helm", "groups": ["system:authenticated"]},
            "object": new,
            "oldObject": old,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": options},
        }
    })
}

/// The order of a request's keys in [`review_text`].
#[derive(Clone, Copy, Debug)]
pub enum KeyOrder {
    /// As the API server writes them (Go's struct order): `uid`, `kind`,
    /// ... `name`, `namespace`, `operation`, `userInfo`, `object`, ...
    ApiServer,
    /// Sorted: `operation`, `resource` and `uid` come after `object`.
    Sorted,
}

/// [`review_for`] as body text, with the request's keys in `order`.
pub fn review_text(
    object: &Value,
    namespace: &str,
    operation: &str,
    uid: &str,
    order: KeyOrder,
) -> String {
    let review = review_for(object, namespace, operation, uid);
    let request = review["request"].as_object().expect("a request");
    let keys: &[&str] = match order {
        KeyOrder::ApiServer => &[
            "uid",
            "kind",
            "resource",
            "requestKind",
            "requestResource",
            "name",
            "namespace",
            "operation",
            "userInfo",
            "object",
            "oldObject",
            "dryRun",
            "options",
        ],
        KeyOrder::Sorted => &[
            "dryRun",
            "kind",
            "name",
            "namespace",
            "object",
            "oldObject",
            "operation",
            "options",
            "requestKind",
            "requestResource",
            "resource",
            "uid",
            "userInfo",
        ],
    };
    let fields: Vec<String> = keys
        .iter()
        .map(|key| format!("{}:{}", Value::from(*key), request[*key]))
        .collect();
    format!(
        "{{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{{{}}}}}",
        fields.join(",")
    )
}

/// Decodes a response's base64 JSON Patch, if any.
pub fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    use base64::Engine as _;
    let patch = response["patch"].as_str()?;
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("the patch is base64");
    Some(serde_json::from_slice(&bytes).expect("the patch is a JSON Patch"))
}

/// `object` with the response's patch applied.
pub fn apply(object: &Value, response: &Value) -> Value {
    let mut out = object.clone();
    if let Some(patch) = patch_of(response) {
        json_patch::patch(&mut out, &patch).expect("the patch applies");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_carry_the_objects_the_api_server_sends() {
        let sts =
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "zk"}});
        let create = review_for(&sts, "ns", "CREATE", "u");
        assert_eq!(create["request"]["object"], sts);
        assert_eq!(create["request"]["oldObject"], Value::Null);
        assert_eq!(create["request"]["resource"]["resource"], "statefulsets");
        assert_eq!(create["request"]["kind"]["group"], "apps");
        let update = review_for(&sts, "ns", "UPDATE", "u");
        assert_eq!(update["request"]["oldObject"], sts);
        assert_eq!(update["request"]["options"]["kind"], "UpdateOptions");
        let delete = review_for(&sts, "ns", "DELETE", "u");
        assert_eq!(delete["request"]["object"], Value::Null);
        assert_eq!(delete["request"]["oldObject"], sts);
        assert_eq!(delete["request"]["options"]["kind"], "DeleteOptions");
    }

    #[test]
    fn a_patch_is_decoded_and_applied() {
        use base64::Engine as _;
        let object = json!({"a": 1});
        let patch = r#"[{"op":"replace","path":"/a","value":2}]"#;
        let response = json!({
            "patchType": "JSONPatch",
            "patch": base64::engine::general_purpose::STANDARD.encode(patch),
        });
        assert_eq!(apply(&object, &response), json!({"a": 2}));
        assert!(patch_of(&json!({"allowed": true})).is_none());
    }
}
