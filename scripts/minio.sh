#!/usr/bin/env bash
# Produce a MinIO server binary for the test suite: the second, real S3 implementation the
# storage layer is tested against (moto is the first).
#
# MinIO is built from its Go module (no Docker, no release downloads) and cached in
#   ${OBJMIG_CACHE:-$HOME/.cache/objmig}/minio/<MINIO_VERSION>/bin
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

MINIO_RELEASE="RELEASE.2025-09-07T16-13-09Z"
MINIO_VERSION="v0.0.0-20250907161309-07c3a429bfed"

log() { printf '[minio] %s\n' "$*" >&2; }

if [[ -n "${MINIO_BINARY:-}" ]]; then
    if [[ -x "$MINIO_BINARY" ]]; then
        log "using MINIO_BINARY=$MINIO_BINARY"
        dirname "$MINIO_BINARY"
        exit 0
    fi
    log "MINIO_BINARY=$MINIO_BINARY is not executable; building instead"
fi

CACHE=${OBJMIG_CACHE:-$HOME/.cache/objmig}
BIN_DIR="$CACHE/minio/$MINIO_RELEASE/bin"

if [[ -x "$BIN_DIR/minio" ]]; then
    log "cached: $BIN_DIR/minio"
    echo "$BIN_DIR"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    if [[ -x /usr/local/go/bin/go ]]; then
        export PATH="/usr/local/go/bin:$PATH"
    else
        log "go is not installed; cannot build MinIO (tests that need it will skip or fail)"
        exit 1
    fi
fi

mkdir -p "$BIN_DIR"
# Build into a temporary GOBIN and move into place at the end, so an interrupted build never
# leaves a half-written binary that the check above would trust.
TMP_BIN=$(mktemp -d "$CACHE/minio/.build.XXXXXX")
trap 'rm -rf "$TMP_BIN"' EXIT

log "building github.com/minio/minio@$MINIO_VERSION ($MINIO_RELEASE) with $(go version)"
log "this takes a while the first time (several minutes on 2 cores)"
start=$(date +%s)
# nice + GOFLAGS=-p=1 by default: the build shares the machine with other work (tests, the
# Kubernetes build) and must not starve it. Override with MINIO_BUILD_FLAGS if you are alone.
GOFLAGS=${MINIO_BUILD_FLAGS:--p=1} GOBIN="$TMP_BIN" CGO_ENABLED=0 \
    nice -n 10 go install -trimpath "github.com/minio/minio@$MINIO_VERSION" >&2
mv "$TMP_BIN/minio" "$BIN_DIR/minio"
log "built in $(( $(date +%s) - start ))s: $BIN_DIR/minio"
echo "$BIN_DIR"
