#!/usr/bin/env python3
"""Regenerate the plain manifests from the Helm chart, so both stay one.

    python3 deploy/manifests/generate.py          # rewrite base/ and the overlay's cert-manager.yaml
    python3 deploy/manifests/generate.py --check  # exit 1 if they differ from the chart

common/ holds what both variants share, as the chart renders it with
cert-manager (no API access for the pods); base/ adds the chart's
self-managed certificate objects and patches common/ into that variant;
overlays/cert-manager/ adds the chart's cert-manager objects. Nothing is
deleted by a patch, so kustomize v2 (kubectl 1.20) builds them too.
deploy/tests checks that `kubectl kustomize` of base/ and of the overlay
equal the chart's output. Helm's own labels (helm.sh/chart,
app.kubernetes.io/managed-by) are left out.
"""
import json
import pathlib
import re
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
CHART = HERE.parent / "helm" / "straddle-webhook"
RENDER = HERE.parent / "tests" / "render.py"
RELEASE = "straddle-webhook"
NAMESPACE = "straddle-system"
# Replaced by the user's overlay (see deploy/README.md); the webhook refuses
# to start with a cluster its policy does not list, so it cannot go unnoticed.
CLUSTER = "replace-me"
HEADER = "# Generated from deploy/helm/straddle-webhook by deploy/manifests/generate.py: do not edit.\n"
HELM_ONLY = re.compile(r"^\s*(helm\.sh/chart|app\.kubernetes\.io/managed-by):.*\n", re.M)

BASE_VALUES = {"cluster": CLUSTER}
CERT_MANAGER_VALUES = {"cluster": CLUSTER, "certificates": {"mode": "cert-manager"}}


def render(values):
    out = subprocess.run(
        [sys.executable, str(RENDER), str(CHART), RELEASE, NAMESPACE],
        input=json.dumps(values), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"rendering the chart failed: {out.stdout}{out.stderr}")
    return json.loads(out.stdout)["manifests"]


def clean(text):
    text = HELM_ONLY.sub("", text)
    text = re.sub(r"\A(\s*\n)+", "", text)
    return HEADER + text.rstrip() + "\n"


def files():
    wanted = {}
    for path, text in render(CERT_MANAGER_VALUES).items():
        name = pathlib.PurePath(path).name
        if not name.endswith(".yaml") or not text.strip():
            continue
        where = "overlays/cert-manager" if name == "cert-manager.yaml" else "common"
        wanted[HERE / where / name] = clean(text)
    own = render(BASE_VALUES)["straddle-webhook/templates/self-managed-certs.yaml"]
    wanted[HERE / "base" / "self-managed-certs.yaml"] = clean(own)
    return wanted


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for path, text in files().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(str(path.relative_to(HERE)))
        if not check:
            path.write_text(text)
    if check and stale:
        print("out of date (run deploy/manifests/generate.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
