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

if [[ -n "${RCLONE_BINARY:-}" ]]; then
    if [[ -x "$RCLONE_BINARY" ]]; then
        printf '[rclone] using RCLONE_BINARY=%s\n' "$RCLONE_BINARY" >&2
        dirname "$RCLONE_BINARY"
        exit 0
    fi
    printf '[rclone] RCLONE_BINARY=%s is not executable; building instead\n' "$RCLONE_BINARY" >&2
fi

TOOL=rclone
TOOL_VERSION="$RCLONE_VERSION"
TOOL_BINARIES=(rclone)
# shellcheck source=scripts/lib/tool-cache.sh
source "$(dirname "$0")/lib/tool-cache.sh"

tool_cache_start
tool_need_go
log "building github.com/rclone/rclone@$RCLONE_VERSION with $(go version)"
log "this takes several minutes the first time on 2 cores"
# nice + GOFLAGS=-p=1 by default: the build shares the machine with other work (tests, the
# Kubernetes build). Override with RCLONE_BUILD_FLAGS if you are alone.
GOFLAGS=${RCLONE_BUILD_FLAGS:--p=1} GOBIN="$TOOL_OUT" CGO_ENABLED=0 \
    nice -n 10 go install -trimpath "github.com/rclone/rclone@$RCLONE_VERSION" >&2
tool_cache_publish
