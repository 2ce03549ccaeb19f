#!/usr/bin/env bash
# Produce an s3sync binary (https://crates.io/crates/s3sync, Rust) for the copy benchmark
# (benchmarks/copy_bench.py): the fastest peer on small objects when issue 22 was filed.
#
# s3sync is built from its crate with `cargo install` (no release downloads) and cached in
#   ${OBJMIG_CACHE:-$HOME/.cache/objmig}/s3sync/<S3SYNC_VERSION>/bin
# A warm cache means no work at all. The bin directory is printed as the LAST line of stdout;
# all progress goes to stderr, so callers can do: BIN=$(scripts/s3sync.sh | tail -n1).
#
# If S3SYNC_BINARY names an executable it is used as-is and nothing is built. The version is
# pinned (the one issue 22 measured); override with S3SYNC_VERSION=X.Y.Z.
set -euo pipefail

S3SYNC_VERSION=${S3SYNC_VERSION:-1.62.4}

log() { printf '[s3sync] %s\n' "$*" >&2; }

if [[ -n "${S3SYNC_BINARY:-}" ]]; then
    if [[ -x "$S3SYNC_BINARY" ]]; then
        log "using S3SYNC_BINARY=$S3SYNC_BINARY"
        dirname "$S3SYNC_BINARY"
        exit 0
    fi
    log "S3SYNC_BINARY=$S3SYNC_BINARY is not executable; building instead"
fi

CACHE=${OBJMIG_CACHE:-$HOME/.cache/objmig}
BIN_DIR="$CACHE/s3sync/$S3SYNC_VERSION/bin"

if [[ -x "$BIN_DIR/s3sync" ]]; then
    log "cached: $BIN_DIR/s3sync"
    echo "$BIN_DIR"
    exit 0
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        log "cargo is not installed (rustup or apt-get install cargo); cannot build s3sync"
        exit 1
    fi
fi

mkdir -p "$CACHE/s3sync"
# Install into a temporary root and move the binary into place at the end, so an interrupted
# build never leaves a half-written binary that the check above would trust.
TMP_ROOT=$(mktemp -d "$CACHE/s3sync/.build.XXXXXX")
trap 'rm -rf "$TMP_ROOT"' EXIT

log "building s3sync $S3SYNC_VERSION with $(cargo --version)"
log "this takes 10-20 minutes the first time on 2 cores"
start=$(date +%s)
# nice and one job by default: the build shares the machine with other work. Override with
# S3SYNC_BUILD_JOBS if you are alone. --locked: the dependency versions the release tested.
CARGO_TARGET_DIR="$TMP_ROOT/target" nice -n 10 cargo install --locked \
    --jobs "${S3SYNC_BUILD_JOBS:-1}" --root "$TMP_ROOT" --version "$S3SYNC_VERSION" s3sync >&2
mkdir -p "$BIN_DIR"
mv "$TMP_ROOT/bin/s3sync" "$BIN_DIR/s3sync"
log "built in $(( $(date +%s) - start ))s: $BIN_DIR/s3sync"
echo "$BIN_DIR"
