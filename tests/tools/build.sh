#!/usr/bin/env bash
# Builds the real Kubernetes parts the end-to-end tests run, from their Go
# modules at the releases pinned in k8s/go.mod and helm/go.mod:
#   etcd, kube-apiserver, kube-controller-manager, kubectl   (k8s/)
#   helm                                                     (helm/)
# The binaries go to a cache outside the work tree, keyed by this script and
# the go.mod/go.sum files, so a warm run builds nothing. Prints the bin
# directory on its last line; `current` in the cache points at it too (the
# test harness looks there when STRADDLE_KUBE_BIN is unset).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${STRADDLE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/straddle/tools}

key=$(cat "$here/build.sh" "$here"/k8s/go.{mod,sum} "$here/k8s/etcd/main.go" \
    "$here"/helm/go.{mod,sum} | sha256sum | cut -c1-16)
out="$cache/$key"
tools=(etcd kube-apiserver kube-controller-manager kubectl helm)

complete() {
    for t in "${tools[@]}"; do [ -x "$out/bin/$t" ] || return 1; done
}

if ! complete; then
    start=$(date +%s)
    rm -rf "$out.partial"
    mkdir -p "$out.partial/bin"
    # The release the API server reports (kubectl version, Helm's
    # kubeVersion checks): a module build has no git tree to read it from.
    version=$(cd "$here/k8s" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
    minor=$(echo "$version" | cut -d. -f2)
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean"
    done
    (cd "$here/k8s" && go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$out.partial/bin/" \
        ./etcd \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kubectl)
    helm_version=$(cd "$here/helm" && go list -m -f '{{.Version}}' helm.sh/helm/v4)
    (cd "$here/helm" && go build -mod=readonly -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version" \
        -o "$out.partial/bin/" helm.sh/helm/v4/cmd/helm)
    rm -rf "$out"
    mv "$out.partial" "$out"
    echo "built ${tools[*]} in $(($(date +%s) - start)) s" >&2
fi
ln -sfn "$key" "$cache/current"
echo "$out/bin"
