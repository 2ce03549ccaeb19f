#!/usr/bin/env bash
# Produce etcd, kube-apiserver, kube-controller-manager and kubectl for the test suite, plus
# kube-scheduler and kubelet for the real node (tests/support/node.py).
#
# The binaries are built from Go modules (no Docker, no release tarballs needed) and cached in
#   ${OBJMIG_CACHE:-$HOME/.cache/objmig}/k8s/<K8S_VERSION>/bin
# A warm cache means no work at all. The bin directory is printed as the LAST line of stdout;
# all progress goes to stderr, so callers can do: BIN=$(scripts/k8s-tools.sh | tail -n1).
#
# If KUBEBUILDER_ASSETS names a directory that already holds all six binaries it is used
# as-is and nothing is built (same convention as controller-runtime's envtest, whose asset
# directories hold no kubelet: then the cache is filled as usual). Only missing binaries are
# built, so adding one to the list costs that one build, not all of them.
set -euo pipefail

# The one place the versions are pinned. Bump both together with docs/testing-kubernetes.md.
K8S_VERSION="v1.35.4"
ETCD_VERSION="v3.6.16"

K8S_COMMANDS=(kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet)
TOOL=k8s
TOOL_VERSION="$K8S_VERSION"
TOOL_BINARIES=(etcd "${K8S_COMMANDS[@]}")
# shellcheck source=scripts/lib/tool-cache.sh
source "$(dirname "$0")/lib/tool-cache.sh"

tool_cache_start "${KUBEBUILDER_ASSETS:-}"
command -v go >/dev/null || { log "go is not installed; cannot build $K8S_VERSION"; exit 1; }
WORK=$TOOL_WORK
OUT=$TOOL_OUT

export CGO_ENABLED=0
export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
# Two cores here: keep package-level parallelism bounded so linking kube-apiserver does not
# compete with compiling. Override with K8S_TOOLS_GO_P.
GO_P="${K8S_TOOLS_GO_P:-$(nproc 2>/dev/null || echo 2)}"

# --- Kubernetes --------------------------------------------------------------------------
# k8s.io/kubernetes requires its staging modules (k8s.io/api, client-go, ...) at v0.0.0 and
# replaces them with ./staging/...; those replaces are ignored outside its own module, so a
# plain `go install` cannot resolve them. A wrapper module re-points each staging module at
# its published tag v0.<minor>.<patch>.
log "resolving k8s.io/kubernetes@$K8S_VERSION"
GOMOD_FILE=$(cd "$WORK" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[[ -f "$GOMOD_FILE" ]] || { log "could not find go.mod of k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
mapfile -t STAGING < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$GOMOD_FILE" | sort -u)
[[ ${#STAGING[@]} -gt 0 ]] || { log "no staging replaces found in $GOMOD_FILE"; exit 1; }
log "${#STAGING[@]} staging modules -> $STAGING_VERSION"

K8S_MOD="$WORK/k8s"
mkdir -p "$K8S_MOD"
{
    echo "module objmig.dev/k8s-tools"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/')"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    for m in "${STAGING[@]}"; do
        echo "replace $m => $m $STAGING_VERSION"
    done
} >"$K8S_MOD/go.mod"

MINOR="${K8S_VERSION#v1.}"
MINOR="${MINOR%%.*}"
# Without these /version reports v0.0.0, which breaks clients that gate on the server version.
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$MINOR"
    LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

(
    cd "$K8S_MOD"
    log "downloading module graph"
    go mod download k8s.io/kubernetes >&2
    for cmd in "${K8S_COMMANDS[@]}"; do
        tool_missing "$cmd" || continue
        log "building $cmd (go build -p $GO_P)"
        go build -p "$GO_P" -trimpath -ldflags "$LDFLAGS" -o "$OUT/$cmd" "k8s.io/kubernetes/cmd/$cmd" >&2
        if [[ $cmd == kubectl ]]; then "$OUT/$cmd" version --client >&2; else "$OUT/$cmd" --version >&2; fi
    done
)

# --- etcd --------------------------------------------------------------------------------
# go.etcd.io/etcd/server/v3's root package is the etcd main; it needs no replace directives.
ETCD_MOD="$WORK/etcd"
mkdir -p "$ETCD_MOD"
printf 'module objmig.dev/etcd-tools\n\ngo 1.25\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$ETCD_VERSION" >"$ETCD_MOD/go.mod"
if tool_missing etcd; then
    (
        cd "$ETCD_MOD"
        log "building etcd $ETCD_VERSION"
        go build -p "$GO_P" -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3 >&2
    )
    "$OUT/etcd" --version >&2
fi

tool_cache_publish
