#!/usr/bin/env bash
# Build objmig's container image from the Dockerfile without a Docker daemon, and the pause
# image that the test node's pod sandboxes need. Both end up as OCI archives that containerd
# imports (`ctr -n k8s.io images import`) and that skopeo or `buildah push` can send to any
# registry (docs/install.md).
#
#   1. base: Debian bookworm with python3.11, made here by mmdebstrap (docker.io is not
#      reachable, so python:3.11-slim-bookworm cannot be pulled), committed by buildah as
#      localhost/objmig-python:<key>; it takes the place of python:3.11-slim-bookworm through
#      the Dockerfile's PYTHON_IMAGE build argument.
#   2. objmig: `buildah bud` of the real Dockerfile (chroot isolation, host network: its RUN
#      steps pip-install from PyPI), pushed to objmig.oci.tar as objmig.local/objmig:<key>.
#   3. pause: scripts/pause/main.go, built static, alone in a scratch image, pushed to
#      pause.oci.tar as objmig.local/pause:<key>.
#
# Cached in ${OBJMIG_CACHE:-$HOME/.cache/objmig}/image/<key>, where <key> hashes every input:
# the base recipe below, Dockerfile, .dockerignore, pyproject.toml, README.md, operator/ (as
# .dockerignore filters it) and the pause source. A warm cache means no work at all. The
# directory is printed as the LAST line of stdout (it holds objmig.oci.tar, pause.oci.tar and
# images.env naming both references); progress goes to stderr.
#
# Installs buildah and mmdebstrap with apt-get when missing (root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt.sh

log() { printf '[image] %s\n' "$*" >&2; }

# Bump when the way images are built changes in a way the inputs below do not show.
RECIPE=3
SUITE=bookworm
MIRRORS=(
    "deb http://deb.debian.org/debian $SUITE main"
    "deb http://deb.debian.org/debian $SUITE-updates main"
    "deb http://deb.debian.org/debian-security $SUITE-security main"
)
# What python:3.11-slim-bookworm offers the Dockerfile: python and pip on PATH, venv, CA
# certificates, /etc/services. Debian's python3 in bookworm is 3.11.
BASE_PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates,netbase
MMDEBSTRAP_OPTS=(
    --variant=minbase --mode=root --format=tar
    # Merged /usr without the usrmerge package, which would pull in perl (45 MB).
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --include="$BASE_PACKAGES"
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*'
)

CACHE_ROOT="${OBJMIG_CACHE:-$HOME/.cache/objmig}/image"
mkdir -p "$CACHE_ROOT"

sha() { sha256sum | cut -c1-64; }

base_key=$(printf '%s\n' "$RECIPE" "$SUITE" "${MIRRORS[@]}" "${MMDEBSTRAP_OPTS[@]}" | sha)

# The files `COPY` can see: the Dockerfile's build context as .dockerignore filters it.
context_files() {
    printf '%s\n' Dockerfile .dockerignore pyproject.toml README.md
    find operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path 'operator/*.egg-info/*'
}
inputs_key=$(
    {
        echo "$base_key"
        context_files | LC_ALL=C sort | xargs sha256sum
        find scripts/pause -type f | LC_ALL=C sort | xargs sha256sum
        go version 2>/dev/null || true
    } | sha
)
KEY=${inputs_key:0:16}
OUT="$CACHE_ROOT/$KEY"
OBJMIG_REF="objmig.local/objmig:$KEY"
PAUSE_REF="objmig.local/pause:$KEY"

if [[ -f "$OUT/images.env" ]]; then
    touch "$OUT" # in use: the clean-up below keeps the newest
    log "cached: $OUT"
    echo "$OUT"
    exit 0
fi

apt_install buildah mmdebstrap

# Serialise concurrent builds: the second waits and then finds the cache filled.
exec 9>"$CACHE_ROOT/.lock"
if ! flock -n 9; then
    log "another build holds $CACHE_ROOT/.lock; waiting"
    flock 9
fi
if [[ -f "$OUT/images.env" ]]; then
    log "cached (built by a concurrent run): $OUT"
    echo "$OUT"
    exit 0
fi

START=$(date +%s)
# objmig's own containers/storage, apart from anything else on the machine; its runroot on /run
# (a reboot clears the mount bookkeeping there), one per storage root.
RUNROOT="/run/objmig-buildah-$(id -u)-$(printf %s "$CACHE_ROOT" | sha | cut -c1-8)"
buildah() {
    command buildah --root "$CACHE_ROOT/storage" --runroot "$RUNROOT" --storage-driver overlay "$@"
}
rm -rf "$CACHE_ROOT"/.build.*
WORK=$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")
cleanup() {
    buildah rm --all >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- 1. base -------------------------------------------------------------------------------
BASE_REF="localhost/objmig-python:${base_key:0:16}"
if ! buildah inspect --type image "$BASE_REF" >/dev/null 2>&1; then
    log "base: mmdebstrap $SUITE with $BASE_PACKAGES"
    t0=$(date +%s)
    # No stdin: mmdebstrap reads extra sources from a stdin that is not a terminal.
    mmdebstrap "${MMDEBSTRAP_OPTS[@]}" "$SUITE" "$WORK/base.tar" "${MIRRORS[@]}" </dev/null >&2
    ctr=$(buildah from scratch)
    buildah add "$ctr" "$WORK/base.tar" / >/dev/null
    rm -f "$WORK/base.tar"
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 \
        --label org.opencontainers.image.description="Debian $SUITE with python3 (mmdebstrap)" \
        "$ctr"
    buildah commit --rm "$ctr" "$BASE_REF" >/dev/null
    log "base: $BASE_REF in $(($(date +%s) - t0))s"
fi

# --- 2. objmig -----------------------------------------------------------------------------
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' operator/objmig/__init__.py)
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
BUILD_VOLUMES=()
# Where egress passes a TLS-inspecting proxy, pip inside the build trusts only the CAs the
# host trusts. Mounted for the RUN steps only; the image keeps Debian's own bundle.
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    BUILD_VOLUMES+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
log "objmig: buildah bud -f Dockerfile --build-arg PYTHON_IMAGE=$BASE_REF"
t0=$(date +%s)
buildah bud --isolation chroot --network host --pull-never --quiet \
    -f Dockerfile \
    --build-arg PYTHON_IMAGE="$BASE_REF" \
    --build-arg VERSION="$VERSION" \
    --build-arg REVISION="$REVISION" \
    --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "${BUILD_VOLUMES[@]}" \
    -t "$OBJMIG_REF" . >&2
buildah push --quiet "$OBJMIG_REF" "oci-archive:$WORK/objmig.oci.tar:$OBJMIG_REF" >&2
log "objmig: $OBJMIG_REF in $(($(date +%s) - t0))s"

# --- 3. pause ------------------------------------------------------------------------------
(
    cd scripts/pause
    CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod \
        go build -trimpath -ldflags "-s -w" -o "$WORK/pause" . >&2
)
ctr=$(buildah from scratch)
buildah copy --chmod 0755 "$ctr" "$WORK/pause" /pause >/dev/null
buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
buildah commit --rm --quiet "$ctr" "$PAUSE_REF" >/dev/null
buildah push --quiet "$PAUSE_REF" "oci-archive:$WORK/pause.oci.tar:$PAUSE_REF" >&2
rm -f "$WORK/pause"

# Only the archives are kept: the objmig and pause images leave the storage (the base stays,
# it is the slow part), and so do the build stage's intermediate images.
buildah rmi "$OBJMIG_REF" "$PAUSE_REF" >/dev/null
buildah rmi --prune >/dev/null 2>&1 || true

printf 'OBJMIG_IMAGE=%s\nPAUSE_IMAGE=%s\n' "$OBJMIG_REF" "$PAUSE_REF" >"$WORK/images.env"
rm -rf "$OUT"
mv "$WORK" "$OUT"
trap - EXIT
buildah rm --all >/dev/null 2>&1 || true

# Keep the three image sets used last, and any used within a day (another checkout's test run
# may be about to import it); the rest are stale builds.
ls -1dt "$CACHE_ROOT"/*/ 2>/dev/null | grep -v '/storage/$' | tail -n +4 |
    while read -r old; do
        if [[ -z $(find "$old" -maxdepth 0 -mmin -1440) ]]; then rm -rf "$old"; fi
    done

log "built in $(($(date +%s) - START))s: $OUT ($(du -sh "$OUT/objmig.oci.tar" | cut -f1) objmig.oci.tar)"
echo "$OUT"
