#!/usr/bin/env bash
# Makes a plain Debian base image with python3 when no registry is reachable: debootstrap a
# minimal root file system from a Debian mirror and import it (Podman or Docker).
#
#   containers/base-image.sh [IMAGE] [MIRROR]     (root; needs debootstrap)
set -euo pipefail
image=${1:-localhost/debian-py:bookworm}
mirror=${2:-http://deb.debian.org/debian}
source "$(dirname "${BASH_SOURCE[0]}")/engine.sh"
if "$engine" image exists "$image" 2>/dev/null || "$engine" image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image already present"; exit 0
fi
command -v debootstrap >/dev/null || { echo "base-image.sh: debootstrap is not installed" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "base-image.sh: debootstrap needs root" >&2; exit 2; }
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
start=$(date +%s)
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,passwd bookworm "$rootfs" "$mirror" >/dev/null
tar -C "$rootfs" -c . | "$engine" import - "$image" >/dev/null
echo "base image $image built from $mirror in $(( $(date +%s) - start )) s"
