#!/usr/bin/env bash
# Produce a MinIO server binary for the test suite: the second, real S3 implementation the
# storage layer is tested against (moto is the first), and, with a certificate of a private
# CA the tests make, the HTTPS one.
#
# MinIO is built from its Go module (no Docker, no release downloads) and cached in
#   ${OBJMIG_CACHE:-$HOME/.cache/objmig}/minio/<MINIO_RELEASE>/bin
# A warm cache means no work at all. The bin directory is printed as the LAST line of stdout;
# all progress goes to stderr, so callers can do: BIN=$(scripts/minio.sh | tail -n1).
#
# If MINIO_BINARY names an executable it is used as-is and nothing is built.
#
# Why a pseudo-version: MinIO tags releases as RELEASE.<timestamp>, which is not semver, so
# `go list -m -versions` shows nothing and `go install ...@RELEASE...` is resolved by the
# proxy to a pseudo-version. We pin that pseudo-version (exact commit) and keep the release
# name next to it for humans. RELEASE.2025-09-07T16-13-09Z is the newest release tag the Go
# module proxy serves (the October 2025 one is refused with 403), and it builds with Go 1.26.
set -euo pipefail

TOOL=minio
TOOL_VERSION="RELEASE.2025-09-07T16-13-09Z"
MINIO_VERSION="v0.0.0-20250907161309-07c3a429bfed"
TOOL_BINARIES=(minio)
# shellcheck source=scripts/lib/tool-cache.sh
source "$(dirname "$0")/lib/tool-cache.sh"

if [[ -n "${MINIO_BINARY:-}" ]]; then
    if [[ -x "$MINIO_BINARY" ]]; then
        log "using MINIO_BINARY=$MINIO_BINARY"
        dirname "$MINIO_BINARY"
        exit 0
    fi
    log "MINIO_BINARY=$MINIO_BINARY is not executable; building instead"
fi
tool_cache_start ""
tool_need_go
# -p 1 by default (tool_go_build): the build shares the machine with tests and the
# Kubernetes build. GO_BUILD_P=2 if you are alone.
tool_go_build github.com/minio/minio "$MINIO_VERSION" github.com/minio/minio minio
tool_cache_publish
