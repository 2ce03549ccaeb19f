#!/usr/bin/env bash
# Produce an aws-cli (v1, from PyPI) for the copy benchmark (benchmarks/copy_bench.py), in a
# virtualenv of its own: it pins botocore exactly, unlike the project's aiobotocore.
#
# Cached in ${OBJMIG_CACHE:-$HOME/.cache/objmig}/awscli/<AWSCLI_VERSION>/bin. The bin directory
# is printed as the LAST line of stdout; progress goes to stderr:
#   BIN=$(scripts/awscli.sh | tail -n1)
# Override the pinned version with AWSCLI_VERSION=X.Y.Z.
set -euo pipefail

AWSCLI_VERSION=${AWSCLI_VERSION:-1.46.2}

log() { printf '[aws-cli] %s\n' "$*" >&2; }

CACHE=${OBJMIG_CACHE:-$HOME/.cache/objmig}
VENV="$CACHE/awscli/$AWSCLI_VERSION"

# A venv's scripts name their interpreter by absolute path, so it is made in place; the
# marker written last says it is complete (an interrupted install is made again).
if [[ -x "$VENV/bin/aws" && -f "$VENV/.complete" ]]; then
    log "cached: $VENV/bin/aws"
    echo "$VENV/bin"
    exit 0
fi

rm -rf "$VENV"
mkdir -p "$CACHE/awscli"
log "installing awscli==$AWSCLI_VERSION into a virtualenv"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "awscli==$AWSCLI_VERSION" >&2
touch "$VENV/.complete"
log "installed: $VENV/bin/aws"
echo "$VENV/bin"
