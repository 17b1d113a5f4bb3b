#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz corpus (fuzz/corpus/<target>/seed-*)
from the repository's real inputs: the example and test specs, and the chart
fixture objects (tests/fixtures/charts) as objects and as AdmissionReviews.

    python3 fuzz/seed.py          # then minimize, see docs/reliability.md

policy_review inputs are one selector byte (plan, cluster; see
tests/src/fuzzing.rs) followed by the object's JSON.
"""
import glob
import json
import os
import sys

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")

# The plans of straddle_tests::fuzzing::targets(), in order: the chart
# family each serves and its number of clusters.
PLANS = [("cp", 2), ("bitnami", 3), ("cp", 2), ("bitnami-combined", 2)]


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(CORPUS, target, "seed-" + name), "wb") as f:
        f.write(data)


def selector(plan, cluster):
    """The first printable byte that picks `plan` and `cluster`."""
    n = len(PLANS)
    for sel in range(0x30, 0x7F):
        if sel % n == plan and (sel // n) % (PLANS[plan][1] + 1) == cluster:
            return bytes([sel])
    sys.exit(f"no selector for plan {plan} cluster {cluster}")


def fixture_objects():
    """(variant, object) for every document of every chart fixture."""
    for rendered in sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/charts/*/rendered.yaml"))):
        variant = os.path.basename(os.path.dirname(rendered))
        with open(rendered) as f:
            for doc in yaml.safe_load_all(f):
                if doc and doc.get("kind") in ("StatefulSet", "Service", "ConfigMap"):
                    yield variant, doc


def review(obj, namespace, operation, uid):
    kind = obj.get("kind", "")
    group, _, version = obj.get("apiVersion", "v1").rpartition("/")
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": kind.lower() + "s"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": obj.get("metadata", {}).get("name", ""),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:helm"},
            "object": obj if operation != "DELETE" else None,
            "oldObject": obj if operation in ("UPDATE", "DELETE") else None,
            "dryRun": False,
        },
    }


def main():
    for path in sorted(
        glob.glob(os.path.join(ROOT, "examples/*.yaml"))
        + glob.glob(os.path.join(ROOT, "tests/specs/*.yaml"))
        + glob.glob(os.path.join(ROOT, "tests/specs/invalid/*.yaml"))
    ):
        with open(path, "rb") as f:
            write("spec_check", os.path.basename(path), f.read())

    scale = {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "confluent-cp-kafka", "namespace": "confluent"},
        "spec": {"replicas": 5},
    }
    objects = list(fixture_objects()) + [("cp-scale", scale)]
    for i, (variant, obj) in enumerate(objects):
        family = "cp" if variant.startswith("cp") else (
            "bitnami-combined" if variant.endswith("combined") else "bitnami")
        text = json.dumps(obj, separators=(",", ":"))
        name = f"{variant}-{obj['kind']}-{obj['metadata']['name']}"
        for plan, (plan_family, clusters) in enumerate(PLANS):
            if plan_family != family:
                continue
            for cluster in range(clusters):
                write("policy_review", f"{name}-plan{plan}-c{cluster}", selector(plan, cluster) + text.encode())
        namespace = obj["metadata"].get("namespace", "confluent")
        operation = ["CREATE", "UPDATE", "DELETE"][i % 3]
        write("admission_decode", f"{name}-{operation}",
              json.dumps(review(obj, namespace, operation, f"seed-{i}")))

    # Bodies the webhook must refuse or deny (as in webhook/tests/bad_input.rs).
    bad = {
        "not-json": "this is not JSON",
        "wrong-version": '{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}',
        "no-request": '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}',
        "empty-uid": json.dumps(review(scale, "confluent", "CREATE", "")),
        "bad-operation": json.dumps(review(scale, "confluent", "CREATE", "u1")).replace('"CREATE"', '"PATCH"'),
        "object-not-object": '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u2","kind":{"group":"","version":"v1","kind":"ConfigMap"},"resource":{"group":"","version":"v1","resource":"configmaps"},"operation":"CREATE","userInfo":{},"object":[1,2],"oldObject":null}}',
        "scale": json.dumps(review(scale, "confluent", "UPDATE", "u3")),
    }
    for name, body in bad.items():
        write("admission_decode", name, body)


main()
