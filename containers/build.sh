#!/usr/bin/env bash
# Builds the image with Podman or Docker (whichever works here) and prints its size.
#
#   containers/build.sh IMAGE [BASE]
#
# pip settings in the caller's environment reach the build: PIP_INDEX_URL and PIP_EXTRA_INDEX_URL
# as build arguments; with Podman, PIP_CERT (a CA bundle, for a proxy that re-signs TLS) and
# PIP_FIND_LINKS (a folder of wheels) are mounted into the build only, never into the image.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
image=${1:?usage: containers/build.sh IMAGE [BASE]}
base=${2:-}
source containers/engine.sh
args=(build -f containers/Dockerfile -t "$image")
[[ -n $base ]] && args+=(--build-arg "BASE=$base")
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
    [[ -n ${!var:-} ]] && args+=(--build-arg "$var=${!var}")
done
if $podman; then
    # chroot isolation and the host's network: what works without a full container runtime setup
    args+=(--isolation chroot --network=host)
    if [[ -f ${PIP_CERT:-} ]]; then
        args+=(-v "$PIP_CERT:/etc/ssl/certs/build-ca.crt:ro" --build-arg PIP_CERT=/etc/ssl/certs/build-ca.crt)
    fi
    if [[ -d ${PIP_FIND_LINKS:-} ]]; then
        args+=(-v "$PIP_FIND_LINKS:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels)
    fi
fi
start=$(date +%s)
"$engine" "${args[@]}" .
size=$("$engine" image inspect --format '{{.Size}}' "$image")
echo "built $image in $(( $(date +%s) - start )) s: $(numfmt --to=iec --suffix=B "$size")"
