# Shared by the scripts that build a test tool once and cache it (sourced, not run):
#   ${OBJMIG_CACHE:-$HOME/.cache/objmig}/<tool>/<version>/bin
# A warm cache means no work at all; concurrent builds of one tool are serialised by a lock
# (the second finds the cache filled); a build happens in a scratch directory on the cache's
# filesystem and is renamed into place at the end, so an interrupted build never leaves a
# half-written binary that the cache check would trust. The bin directory is printed as the
# LAST line of stdout and all progress goes to stderr, so callers can do:
#   BIN=$(scripts/<tool>.sh | tail -n1)
#
# Usage in a script (set -euo pipefail first):
#   TOOL=seaweedfs; TOOL_VERSION=...; TOOL_BINARIES=(weed)
#   source "$(dirname "$0")/lib/tool-cache.sh"
#   tool_cache_start "${SEAWEEDFS_BIN_DIR:-}"   # exits 0 when cached (or given)
#   ... build into "$TOOL_OUT" ...
#   tool_cache_publish

log() { printf '[%s] %s\n' "$TOOL" "$*" >&2; }

_tool_have_all() {
    local dir=$1 b
    for b in "${TOOL_BINARIES[@]}"; do
        [[ -x "$dir/$b" ]] || return 1
    done
}

# Exit 0 (printing the bin directory) when `given` or the cache already holds the binaries;
# otherwise take the lock, make a scratch directory and set TOOL_OUT (where the build puts
# the binaries), TOOL_WORK (scratch space) and TOOL_START (for the timing line).
tool_cache_start() {
    local given=${1:-}
    if [[ -n "$given" ]]; then
        if _tool_have_all "$given"; then
            log "using $given"
            echo "$given"
            exit 0
        fi
        log "$given lacks one of ${TOOL_BINARIES[*]}; building instead"
    fi
    TOOL_ROOT="${OBJMIG_CACHE:-$HOME/.cache/objmig}/$TOOL/$TOOL_VERSION"
    TOOL_BIN_DIR="$TOOL_ROOT/bin"
    if _tool_have_all "$TOOL_BIN_DIR"; then
        log "cached: $TOOL_BIN_DIR"
        echo "$TOOL_BIN_DIR"
        exit 0
    fi
    mkdir -p "$TOOL_ROOT"
    exec 9>"$TOOL_ROOT/.lock"
    if ! flock -n 9; then
        log "another build holds $TOOL_ROOT/.lock; waiting"
        flock 9
    fi
    if _tool_have_all "$TOOL_BIN_DIR"; then
        log "cached (built by a concurrent run): $TOOL_BIN_DIR"
        echo "$TOOL_BIN_DIR"
        exit 0
    fi
    # Scratch directories of builds that were killed: safe to remove, we hold the lock.
    rm -rf "$TOOL_ROOT"/.build.*
    TOOL_WORK=$(mktemp -d "$TOOL_ROOT/.build.XXXXXX")
    # shellcheck disable=SC2064 # expand now: the trap must remove this very directory
    trap "rm -rf '$TOOL_WORK'" EXIT
    TOOL_OUT="$TOOL_WORK/bin"
    mkdir -p "$TOOL_OUT"
    TOOL_START=$(date +%s)
}

# Go on PATH (the toolchain may live in /usr/local/go without being on PATH).
tool_need_go() {
    if command -v go >/dev/null 2>&1; then
        return 0
    fi
    if [[ -x /usr/local/go/bin/go ]]; then
        export PATH="/usr/local/go/bin:$PATH"
        return 0
    fi
    log "go is not installed; cannot build $TOOL (tests that need it will skip, or fail under CI=true)"
    exit 1
}

# `go build` of one main package of a module at a pinned version, into TOOL_OUT/<name>.
# TOOL_GO_LDFLAGS_FROM may name a function printing further -ldflags; it runs inside the
# wrapper module, so `go list -m` there sees the module graph being built.
# A wrapper module requiring only that module resolves exactly the graph its go.mod selects.
# The module's own replace directives are honoured by nothing but its own builds (and make
# `go install module@version` refuse it): repeat the ones it needs as further arguments,
# e.g. "replace a/b => c/d v1.0.0".
tool_go_build() {
    local module=$1 version=$2 package=$3 name=$4
    shift 4
    local mod="$TOOL_WORK/mod" line
    mkdir -p "$mod"
    {
        printf 'module objmig.dev/%s-tools\n\ngo %s\n\nrequire %s %s\n' "$TOOL" \
            "$(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/')" "$module" "$version"
        for line in "$@"; do
            printf '%s\n' "$line"
        done
    } >"$mod/go.mod"
    (
        cd "$mod"
        export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
        log "downloading $module@$version and its module graph"
        go mod download "$module" >&2
        # nice, and -p 1 by default: the build shares two cores with tests and other
        # builds. A CI machine (CI=true) is the build's alone: every core. GO_BUILD_P overrides.
        local p=1
        [[ "${CI:-}" == true ]] && p=$(nproc 2>/dev/null || echo 2)
        p=${GO_BUILD_P:-$p}
        log "building $package with $(go version) (go build -p $p)"
        local ldflags="-s -w"
        if [[ -n "${TOOL_GO_LDFLAGS_FROM:-}" ]]; then
            ldflags+=" $("$TOOL_GO_LDFLAGS_FROM")"
        fi
        nice -n 10 go build -p "$p" -trimpath -ldflags "$ldflags" \
            -o "$TOOL_OUT/$name" "$package" >&2
    )
}

# Whether the cache lacks binary `name` (a script listing several builds only those).
tool_missing() { [[ ! -x "$TOOL_BIN_DIR/$1" ]]; }

# Publish binary by binary (each rename is atomic): a cache that already held some keeps them.
tool_cache_publish() {
    local b
    mkdir -p "$TOOL_BIN_DIR"
    for b in "$TOOL_OUT"/*; do
        mv "$b" "$TOOL_BIN_DIR/"
    done
    log "built in $(($(date +%s) - TOOL_START))s: $TOOL_BIN_DIR"
    echo "$TOOL_BIN_DIR"
}
