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
TOOL=helm
TOOL_VERSION="$HELM_VERSION"
TOOL_BINARIES=(helm)
# shellcheck source=scripts/lib/tool-cache.sh
source "$(dirname "$0")/lib/tool-cache.sh"

tool_cache_start "${HELM_BIN_DIR:-}"
tool_need_go
# The same ldflags as helm's Makefile: without them `helm version` says v3.x-unreleased and
# the default Capabilities.KubeVersion (used by `helm template` and `helm lint`) is stale.
# The client-go minor comes from helm's own module graph, resolved by the wrapper module.
helm_ldflags() {
    local client_go minor flags pkg
    client_go=$(go list -m -f '{{.Version}}' k8s.io/client-go)
    minor=$(echo "$client_go" | cut -d. -f2)
    flags="-X helm.sh/helm/v3/internal/version.version=$TOOL_VERSION"
    flags+=" -X helm.sh/helm/v3/internal/version.metadata="
    flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
    done
    echo "$flags"
}
TOOL_GO_LDFLAGS_FROM=helm_ldflags GO_BUILD_P=${HELM_GO_P:-${GO_BUILD_P:-2}} \
    tool_go_build helm.sh/helm/v3 "$TOOL_VERSION" helm.sh/helm/v3/cmd/helm helm
"$TOOL_OUT/helm" version --short >&2
tool_cache_publish
