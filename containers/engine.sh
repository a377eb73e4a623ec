# Sourced by the container scripts: the engine to use, in $engine (CONTAINER_ENGINE, else podman,
# else docker; the script exits 2 when there is none), and $podman (true or false). With podman,
# the suite's settings (containers/podman.conf: host resource limits, runc) apply unless the
# caller set CONTAINERS_CONF.
engine=${CONTAINER_ENGINE:-$(command -v podman || command -v docker)} \
    || { echo "$(basename "$0"): neither podman nor docker is on PATH (or set CONTAINER_ENGINE)" >&2; exit 2; }
podman=false
if [[ $(basename "$engine") == podman ]]; then
    podman=true
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/podman.conf}
fi
