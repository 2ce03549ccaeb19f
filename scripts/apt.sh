# Sourced by the set-up scripts: install Debian packages that are not installed yet.
#
#   . "$(dirname "$0")/apt.sh"; apt_install containerd runc
#
# Runs non-interactively (CI has no stdin) and updates the package lists once per process.
# Needs root, or sudo.

_apt_updated=0

apt_missing() {
    local p
    for p in "$@"; do
        dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
    done
}

apt_install() {
    local sudo= missing
    missing=$(apt_missing "$@")
    [ -n "$missing" ] || return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "apt: need root (or sudo) to apt-get install $missing" >&2
        sudo=sudo
    fi
    if [ "$_apt_updated" -eq 0 ]; then
        $sudo apt-get update -qq </dev/null
        _apt_updated=1
    fi
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing \
        </dev/null >/dev/null
}
