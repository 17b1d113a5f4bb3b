#!/usr/bin/env python3
"""Render the straddle-webhook chart with Helm's own engine (the Helm v4 Go
SDK through helm-python-sdk; no helm binary), for deploy/tests.

    render.py CHART RELEASE NAMESPACE < values.json

Prints one JSON object: {"manifests": {template path: text}, "lint": [...]},
or, when rendering fails, {"error": message} with exit status 1.
Exit status 3: helm-python-sdk is not installed (pip install helm-python-sdk).
"""
import json
import sys

try:
    import helm_python as helm
except ImportError as e:  # the Rust test turns this into a skip or a failure
    print(f"helm-python-sdk is not installed: {e}", file=sys.stderr)
    sys.exit(3)


def main() -> int:
    chart_dir, release, namespace = sys.argv[1:4]
    values = json.load(sys.stdin)
    findings = helm.lint(chart_dir, namespace=namespace, values=values, strict=True)
    with helm.Chart.load(chart_dir) as chart:
        try:
            chart.validate_schema(values)
            manifests = chart.render(values, name=release, namespace=namespace, is_install=True)
        except helm.HelmError as e:
            print(json.dumps({"error": str(e)}))
            return 1
    json.dump({"manifests": manifests, "lint": findings,
               "helm": helm.helm_sdk_version()}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
