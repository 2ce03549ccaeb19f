#!/usr/bin/env bash
# Produce a versitygw binary for the test suite (Versity's S3 gateway over a POSIX
# directory, one of the S3 implementations objmig is tested against; see
# tests/integration/test_s3_compat.py).
#
# Built from its Go module and cached in
#   ${OBJMIG_CACHE:-$HOME/.cache/objmig}/versitygw/<version>/bin
# If VERSITYGW_BIN_DIR names a directory holding an executable `versitygw`, it is used as-is.
set -euo pipefail

TOOL=versitygw
TOOL_VERSION="v1.8.0"   # `go list -m -versions github.com/versity/versitygw`
TOOL_BINARIES=(versitygw)
# shellcheck source=scripts/lib/tool-cache.sh
source "$(dirname "$0")/lib/tool-cache.sh"

tool_cache_start "${VERSITYGW_BIN_DIR:-}"
tool_need_go
tool_go_build github.com/versity/versitygw "$TOOL_VERSION" \
    github.com/versity/versitygw/cmd/versitygw versitygw
"$TOOL_OUT/versitygw" --version >&2 || true
tool_cache_publish
