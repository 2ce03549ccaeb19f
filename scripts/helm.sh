#!/usr/bin/env bash
# Produce the helm binary for the packaging tests and docs, built from its Go module.
#
# No release tarball and no container image: `go build` of helm.sh/helm/v3/cmd/helm at a pinned
# tag, cached in
#   ${OBJMIG_CACHE:-$HOME/.cache/objmig}/helm/<HELM_VERSION>/bin
# A warm cache means no work at all. The bin directory is printed as the LAST line of stdout;
# all progress goes to stderr, so callers can do: HELM_BIN=$(scripts/helm.sh | tail -n1).
#
# If HELM_BIN_DIR names a directory that already holds an executable `helm`, it is used as-is.
set -euo pipefail

# The one place the version is pinned (`go list -m -versions helm.sh/helm/v3` lists the tags).
HELM_VERSION="v3.22.0"

log() { printf '[helm] %s\n' "$*" >&2; }

if [[ -n "${HELM_BIN_DIR:-}" && -x "${HELM_BIN_DIR}/helm" ]]; then
    log "using HELM_BIN_DIR=$HELM_BIN_DIR"
    echo "$HELM_BIN_DIR"
    exit 0
fi

CACHE_ROOT="${OBJMIG_CACHE:-$HOME/.cache/objmig}/helm/${HELM_VERSION}"
BIN_DIR="$CACHE_ROOT/bin"

if [[ -x "$BIN_DIR/helm" ]]; then
    log "cached: $BIN_DIR"
    echo "$BIN_DIR"
    exit 0
fi

command -v go >/dev/null || { log "go is not installed; cannot build helm $HELM_VERSION"; exit 1; }
mkdir -p "$CACHE_ROOT"

# Serialise concurrent builds: the second caller waits and then finds the cache filled.
exec 9>"$CACHE_ROOT/.lock"
if ! flock -n 9; then
    log "another build holds $CACHE_ROOT/.lock; waiting"
    flock 9
fi
if [[ -x "$BIN_DIR/helm" ]]; then
    log "cached (built by a concurrent run): $BIN_DIR"
    echo "$BIN_DIR"
    exit 0
fi

rm -rf "$CACHE_ROOT"/.build.*
# Scratch dir on the cache's filesystem so the final rename is atomic.
WORK=$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
OUT="$WORK/bin"
mkdir -p "$OUT"

export CGO_ENABLED=0
export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
GO_P="${HELM_GO_P:-$(nproc 2>/dev/null || echo 2)}"
START=$(date +%s)

# A wrapper module requiring helm at the pinned tag: `go build` inside it resolves exactly the
# module graph helm's own go.mod selects (helm is the only requirement).
MOD="$WORK/mod"
mkdir -p "$MOD"
printf 'module objmig.dev/helm-tools\n\ngo %s\n\nrequire helm.sh/helm/v3 %s\n' \
    "$(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/')" "$HELM_VERSION" >"$MOD/go.mod"

(
    cd "$MOD"
    log "downloading helm.sh/helm/v3@$HELM_VERSION and its module graph"
    go mod download helm.sh/helm/v3 >&2
    # The same ldflags as helm's Makefile: without them `helm version` says v3.x-unreleased and
    # the default Capabilities.KubeVersion (used by `helm template` and `helm lint`) is stale.
    CLIENT_GO=$(go list -m -f '{{.Version}}' k8s.io/client-go)
    K8S_MINOR=$(echo "$CLIENT_GO" | cut -d. -f2)
    LDFLAGS="-s -w"
    LDFLAGS+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    LDFLAGS+=" -X helm.sh/helm/v3/internal/version.metadata="
    LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        LDFLAGS+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$K8S_MINOR"
    done
    log "building helm $HELM_VERSION (client-go $CLIENT_GO, go build -p $GO_P)"
    go build -p "$GO_P" -trimpath -ldflags "$LDFLAGS" -o "$OUT/helm" helm.sh/helm/v3/cmd/helm >&2
)

"$OUT/helm" version --short >&2

rm -rf "$BIN_DIR"
mv "$OUT" "$BIN_DIR"
log "built in $(($(date +%s) - START))s: $BIN_DIR"
echo "$BIN_DIR"
