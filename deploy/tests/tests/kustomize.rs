//! The plain manifests (`deploy/manifests`, kustomize) are the chart: base
//! equals the chart with self-managed certificates, the cert-manager overlay
//! equals the chart with cert-manager (both as built by `kubectl
//! kustomize`, Helm's own labels aside, plus the Namespace), every object
//! fits its API type, and the generated files are up to date.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};
use straddle_deploy_tests::{
    Rendered, by_key, check_typed, kustomize, render_chart, root, tool_missing, without_helm_labels,
};

const NS: &str = "straddle-system";

fn chart(values: Value) -> Option<BTreeMap<String, Value>> {
    match render_chart("straddle-webhook", NS, &values).unwrap()? {
        Rendered::Objects(objects) => {
            let objects: Vec<Value> = objects.into_iter().map(without_helm_labels).collect();
            Some(by_key(&objects).unwrap())
        }
        Rendered::Refused(why) => panic!("{why}"),
    }
}

fn assert_same(dir: &str, values: Value) {
    let Some(expected) = chart(values) else {
        return;
    };
    let Some(built) = kustomize(&root().join(dir)).unwrap() else {
        return;
    };
    for object in &built {
        check_typed(object).unwrap();
    }
    let mut built = by_key(&built).unwrap();
    let namespace = built
        .remove(&format!("Namespace//{NS}"))
        .expect("the base makes the namespace");
    assert_eq!(namespace["metadata"]["name"], NS);
    assert_eq!(
        built.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{dir}: objects differ from the chart's"
    );
    for (key, object) in &expected {
        assert_eq!(&built[key], object, "{dir}: {key} differs from the chart's");
    }
}

#[test]
fn kustomize_base_is_the_chart_with_self_managed_certificates() {
    assert_same("deploy/manifests/base", json!({"cluster": "replace-me"}));
}

#[test]
fn kustomize_cert_manager_overlay_is_the_chart_with_cert_manager() {
    assert_same(
        "deploy/manifests/overlays/cert-manager",
        json!({"cluster": "replace-me", "certificates": {"mode": "cert-manager"}}),
    );
}

#[test]
fn generated_manifests_are_up_to_date() {
    let script = root().join("deploy/manifests/generate.py");
    let out = match Command::new("python3").arg(script).arg("--check").output() {
        Ok(out) => out,
        Err(e) => return tool_missing(&format!("python3 cannot run: {e}")),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("helm-python-sdk is not installed") {
        return tool_missing(stderr.trim());
    }
    assert!(out.status.success(), "{stderr}");
}
