#!/usr/bin/env bash
# Produce a Garage server binary for the test suite (an S3 implementation in Rust, with its
# own ideas about tags, checksums and part sizes; see tests/integration/test_s3_compat.py).
#
# Built with `cargo install` from crates.io (its own Cargo.lock, --locked) and cached in
#   ${OBJMIG_CACHE:-$HOME/.cache/objmig}/garage/<GARAGE_VERSION>/bin
# If GARAGE_BIN_DIR names a directory holding an executable `garage`, it is used as-is.
#
# Build time: a full release build of Garage takes about 50 minutes on 2 cores. The tests
# need a correct server, not a fast one, so this build trims what it can: only the SQLite
# metadata engine (no LMDB, no K2V, no metrics endpoint) and optimisation level 1 without
# debug info. See docs/testing-s3-servers.md for the measured cold and warm times.
#
# Without cargo, rustup installs a toolchain into ~/.cargo (the only way to get a Rust new
# enough for Garage on Debian stable). `make test` runs this only with GARAGE=1: the cold build
# does not fit CI's budget next to the rest; without it the Garage tests skip.
set -euo pipefail

TOOL=garage
TOOL_VERSION="v2.5.0"   # `cargo info garage` shows the newest
TOOL_BINARIES=(garage)
# shellcheck source=scripts/lib/tool-cache.sh
source "$(dirname "$0")/lib/tool-cache.sh"

tool_cache_start "${GARAGE_BIN_DIR:-}"

if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        command -v curl >/dev/null || { log "neither cargo nor curl: cannot install Rust"; exit 1; }
        log "installing a Rust toolchain with rustup (minimal profile) into ~/.cargo"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y --profile minimal --no-modify-path >&2
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi
command -v cc >/dev/null || { log "a C compiler (cc) is needed for libsodium and SQLite"; exit 1; }

log "building garage ${TOOL_VERSION#v} with $(cargo --version); ~50 min cold on 2 cores"
# Level 1 compiles in about half the time of level 3 and still runs the tests' few MiB fast;
# no debug info keeps linking short. Nice: the build shares the machine.
CARGO_PROFILE_RELEASE_OPT_LEVEL=${GARAGE_OPT_LEVEL:-1} \
CARGO_PROFILE_RELEASE_DEBUG=0 \
CARGO_PROFILE_RELEASE_INCREMENTAL=false \
CARGO_TARGET_DIR="$TOOL_WORK/target" \
    nice -n 10 cargo install --locked --root "$TOOL_WORK/root" \
        --no-default-features --features sqlite,bundled-libs \
        "garage@${TOOL_VERSION#v}" >&2
mv "$TOOL_WORK/root/bin/garage" "$TOOL_OUT/garage"
"$TOOL_OUT/garage" --version >&2 || true
tool_cache_publish
