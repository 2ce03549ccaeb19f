#!/usr/bin/env bash
# Install what the test suite's real node runs on besides the Kubernetes binaries
# (scripts/k8s-tools.sh) and the images (scripts/image.sh): containerd, runc, the CNI plugins
# and iproute2, from Debian. Installed packages are left alone, so a warm run does nothing.
#
# Debian's containerd starts no daemon on install (it ships only a systemd unit, and the tests
# start their own containerd, with its own config, inside the node's namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt.sh

apt_install containerd runc containernetworking-plugins iproute2
printf '[node-runtime] %s; %s\n' "$(containerd --version)" "$(runc --version | head -n1)" >&2
