#!/usr/bin/env bash
# Produce a SeaweedFS `weed` binary for the test suite (its S3 gateway is one of the S3
# implementations objmig is tested against; see tests/integration/test_s3_compat.py).
#
# Built from its Go module and cached in
#   ${OBJMIG_CACHE:-$HOME/.cache/objmig}/seaweedfs/<version>/bin
# If SEAWEEDFS_BIN_DIR names a directory holding an executable `weed`, it is used as-is.
#
# SeaweedFS tags releases as "4.01", not semver, so the Go module proxy knows it only by
# pseudo-versions: this pins one (an exact commit; `go list -m -json
# github.com/seaweedfs/seaweedfs@latest` shows the newest).
set -euo pipefail

TOOL=seaweedfs
TOOL_VERSION="v0.0.0-20261109003541-7506e5f91cd6"
TOOL_BINARIES=(weed)
# shellcheck source=scripts/lib/tool-cache.sh
source "$(dirname "$0")/lib/tool-cache.sh"

tool_cache_start "${SEAWEEDFS_BIN_DIR:-}"
tool_need_go
# go-bip39's original repository is gone; SeaweedFS's go.mod points it at a fork.
tool_go_build github.com/seaweedfs/seaweedfs "$TOOL_VERSION" \
    github.com/seaweedfs/seaweedfs/weed weed \
    "replace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0"
"$TOOL_OUT/weed" version >&2
tool_cache_publish
