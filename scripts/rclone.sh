#!/usr/bin/env bash
# Produce an rclone binary for the copy benchmark (benchmarks/copy_bench.py): the reference
# tool objmig's throughput is compared against.
#
# rclone is built from its Go module (no release downloads) and cached in
#   ${OBJMIG_CACHE:-$HOME/.cache/objmig}/rclone/<RCLONE_VERSION>/bin
# A warm cache means no work at all. The bin directory is printed as the LAST line of stdout;
# all progress goes to stderr, so callers can do: BIN=$(scripts/rclone.sh | tail -n1).
#
# If RCLONE_BINARY names an executable it is used as-is and nothing is built.
# The version is pinned (newest on the Go module proxy when this was written; check with
# `go list -m -versions github.com/rclone/rclone`). Override with RCLONE_VERSION=vX.Y.Z.
set -euo pipefail

RCLONE_VERSION=${RCLONE_VERSION:-v1.76.0}

log() { printf '[rclone] %s\n' "$*" >&2; }

if [[ -n "${RCLONE_BINARY:-}" ]]; then
    if [[ -x "$RCLONE_BINARY" ]]; then
        log "using RCLONE_BINARY=$RCLONE_BINARY"
        dirname "$RCLONE_BINARY"
        exit 0
    fi
    log "RCLONE_BINARY=$RCLONE_BINARY is not executable; building instead"
fi

CACHE=${OBJMIG_CACHE:-$HOME/.cache/objmig}
BIN_DIR="$CACHE/rclone/$RCLONE_VERSION/bin"

if [[ -x "$BIN_DIR/rclone" ]]; then
    log "cached: $BIN_DIR/rclone"
    echo "$BIN_DIR"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    if [[ -x /usr/local/go/bin/go ]]; then
        export PATH="/usr/local/go/bin:$PATH"
    else
        log "go is not installed; cannot build rclone"
        exit 1
    fi
fi

mkdir -p "$BIN_DIR" "$CACHE/rclone"
# Build into a temporary GOBIN and move into place at the end, so an interrupted build never
# leaves a half-written binary that the check above would trust.
TMP_BIN=$(mktemp -d "$CACHE/rclone/.build.XXXXXX")
trap 'rm -rf "$TMP_BIN"' EXIT

log "building github.com/rclone/rclone@$RCLONE_VERSION with $(go version)"
log "this takes several minutes the first time on 2 cores"
start=$(date +%s)
# nice + GOFLAGS=-p=1 by default: the build shares the machine with other work (tests, the
# Kubernetes build). Override with RCLONE_BUILD_FLAGS if you are alone.
GOFLAGS=${RCLONE_BUILD_FLAGS:--p=1} GOBIN="$TMP_BIN" CGO_ENABLED=0 \
    nice -n 10 go install -trimpath "github.com/rclone/rclone@$RCLONE_VERSION" >&2
mv "$TMP_BIN/rclone" "$BIN_DIR/rclone"
log "built in $(( $(date +%s) - start ))s: $BIN_DIR/rclone"
echo "$BIN_DIR"
