#!/usr/bin/env bash
# Produce toxiproxy-server for the WAN benchmarks (copy_bench.py --latency-ms, scan_bench.py):
# a TCP proxy that adds latency, used as this kernel has no netem qdisc for a veth pair.
#
# Built from its Go module (no release downloads) and cached in
#   ${OBJMIG_CACHE:-$HOME/.cache/objmig}/toxiproxy/<TOXIPROXY_VERSION>/bin
# The bin directory is printed as the LAST line of stdout; progress goes to stderr.
# Override the pinned version with TOXIPROXY_VERSION=vX.Y.Z.
set -euo pipefail

TOXIPROXY_VERSION=${TOXIPROXY_VERSION:-v2.5.0}

log() { printf '[toxiproxy] %s\n' "$*" >&2; }

CACHE=${OBJMIG_CACHE:-$HOME/.cache/objmig}
BIN_DIR="$CACHE/toxiproxy/$TOXIPROXY_VERSION/bin"

if [[ -x "$BIN_DIR/toxiproxy-server" ]]; then
    log "cached: $BIN_DIR/toxiproxy-server"
    echo "$BIN_DIR"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    if [[ -x /usr/local/go/bin/go ]]; then
        export PATH="/usr/local/go/bin:$PATH"
    else
        log "go is not installed; cannot build toxiproxy"
        exit 1
    fi
fi

mkdir -p "$CACHE/toxiproxy"
TMP_BIN=$(mktemp -d "$CACHE/toxiproxy/.build.XXXXXX")
trap 'rm -rf "$TMP_BIN"' EXIT
log "building github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION with $(go version)"
GOFLAGS=${TOXIPROXY_BUILD_FLAGS:--p=1} GOBIN="$TMP_BIN" CGO_ENABLED=0 \
    nice -n 10 go install -trimpath "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" >&2
mkdir -p "$BIN_DIR"
mv "$TMP_BIN/server" "$BIN_DIR/toxiproxy-server"
log "built: $BIN_DIR/toxiproxy-server"
echo "$BIN_DIR"
