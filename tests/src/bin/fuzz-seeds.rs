//! Writes the seed inputs of the fuzz corpus (`fuzz/corpus/<target>/seed-*`)
//! from the repository's real inputs: the example and test specs, and the
//! chart fixture objects (`tests/fixtures/charts`) as objects and as
//! AdmissionReviews built by the tests' own builder
//! (`straddle_test_support::review::review_for`).
//!
//! ```sh
//! cargo run -p straddle-tests --bin fuzz-seeds   # then minimize, see docs/reliability.md
//! ```
//!
//! `policy_review` inputs are one selector byte (plan, cluster; see
//! `straddle_tests::fuzzing`) followed by the object's JSON.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use straddle_test_support::review::review_for;
use straddle_tests::fuzzing::{plans, selector};
use straddle_tests::root;

fn write(target: &str, name: &str, data: &[u8]) -> Result<()> {
    let dir = root().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("seed-{name}"));
    std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))
}

/// The `.yaml` files of `dir`.
fn yaml_files(dir: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root().join(dir))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    Ok(files)
}

/// (variant, object) for every StatefulSet, Service and ConfigMap of every
/// chart fixture.
fn fixture_objects() -> Result<Vec<(String, Value)>> {
    let mut rendered: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/charts"))?
        .map(|e| Ok(e?.path().join("rendered.yaml")))
        .collect::<Result<_>>()?;
    rendered.retain(|p| p.is_file());
    // By path text, as the seeds were always numbered ("cp-zk-kafka-only/"
    // before "cp-zk/").
    rendered.sort_by_key(|p| p.to_string_lossy().into_owned());
    let mut out = Vec::new();
    for path in rendered {
        let variant = variant_of(&path);
        let docs = straddle_compiler::manifest::parse(&std::fs::read_to_string(&path)?)?;
        for doc in docs {
            if matches!(
                doc["kind"].as_str(),
                Some("StatefulSet" | "Service" | "ConfigMap")
            ) {
                out.push((variant.clone(), doc));
            }
        }
    }
    Ok(out)
}

fn variant_of(rendered: &Path) -> String {
    let dir = rendered.parent().and_then(Path::file_name);
    dir.map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let mut specs = [
        yaml_files("examples")?,
        yaml_files("tests/specs")?,
        yaml_files("tests/specs/invalid")?,
    ]
    .concat();
    specs.sort();
    for path in specs {
        let name = path.file_name().context("a file name")?.to_string_lossy();
        write("spec_check", &name, &std::fs::read(&path)?)?;
    }

    let scale = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "confluent-cp-kafka", "namespace": "confluent"},
        "spec": {"replicas": 5},
    });
    let mut objects = fixture_objects()?;
    objects.push(("cp-scale".into(), scale.clone()));
    let plans = plans();
    for (i, (variant, object)) in objects.iter().enumerate() {
        let family = if variant.starts_with("cp") {
            "cp"
        } else if variant.ends_with("combined") {
            "bitnami-combined"
        } else {
            "bitnami"
        };
        let text = serde_json::to_string(object)?;
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let name = format!("{variant}-{kind}-{name}");
        for (plan, &(plan_family, clusters)) in plans.iter().enumerate() {
            if plan_family != family {
                continue;
            }
            for cluster in 0..clusters {
                let sel = selector(plan, cluster).context("no selector")?;
                let mut input = vec![sel];
                input.extend_from_slice(text.as_bytes());
                write(
                    "policy_review",
                    &format!("{name}-plan{plan}-c{cluster}"),
                    &input,
                )?;
            }
        }
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("confluent");
        let operation = ["CREATE", "UPDATE", "DELETE"][i % 3];
        let review = review_for(object, namespace, operation, &format!("seed-{i}"));
        write(
            "admission_decode",
            &format!("{name}-{operation}"),
            &serde_json::to_vec(&review)?,
        )?;
    }

    // Bodies the webhook must refuse or deny (as in webhook/tests/bad_input.rs).
    let review = |operation: &str, uid: &str| {
        serde_json::to_string(&review_for(&scale, "confluent", operation, uid)).unwrap()
    };
    let bad = [
        ("not-json", "this is not JSON".to_string()),
        (
            "wrong-version",
            r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#.into(),
        ),
        (
            "no-request",
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.into(),
        ),
        ("empty-uid", review("CREATE", "")),
        (
            "bad-operation",
            review("CREATE", "u1").replace(r#""CREATE""#, r#""PATCH""#),
        ),
        (
            "object-not-object",
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u2","kind":{"group":"","version":"v1","kind":"ConfigMap"},"resource":{"group":"","version":"v1","resource":"configmaps"},"operation":"CREATE","userInfo":{},"object":[1,2],"oldObject":null}}"#.into(),
        ),
        ("scale", review("UPDATE", "u3")),
    ];
    for (name, body) in bad {
        write("admission_decode", name, body.as_bytes())?;
    }
    Ok(())
}
