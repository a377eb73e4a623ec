#!/usr/bin/env bash
# Installs the project and its pinned dependencies into an image. Both image definitions
# (Dockerfile and worldmodels.def) run exactly this script, so they cannot drift apart.
#
#   containers/install.sh SRC_DIR
#
# The base image provides python3 (>= 3.11). When it already has torch (a CUDA PyTorch base),
# that build is kept and everything else is installed next to it; otherwise torch==2.13.0 is
# installed (the CPU build when PIP_FIND_LINKS or PIP_EXTRA_INDEX_URL offers it). pip reads its
# usual variables (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_CERT) for builds behind
# a proxy or offline. Nothing secret is written into the image.
set -euo pipefail
src=${1:?usage: install.sh SRC_DIR}
venv=/opt/venv
# An empty build argument reaches us as an empty variable, which pip would take as a value.
for var in PIP_CERT PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS; do
    [[ -n "${!var:-}" ]] || unset "$var"
done
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# System libraries: OpenMPI for mpi4py (the controller's ranks), and a certificate store.
if command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        openmpi-bin libopenmpi3 ca-certificates procps >/dev/null
    rm -rf /var/lib/apt/lists/*
fi

python=$(command -v python3 || command -v python)
if "$python" -c 'import torch' 2>/dev/null; then
    echo "keeping the base image's torch $("$python" -c 'import torch; print(torch.__version__)')"
    "$python" -m venv --system-site-packages "$venv"
    constraints=$(mktemp)
    grep -v '^torch==' "$src/containers/requirements.lock" > "$constraints"
else
    "$python" -m venv "$venv"
    constraints="$src/containers/requirements.lock"
    "$venv/bin/pip" install -q "torch==2.13.0"
fi
"$venv/bin/pip" install -q -r "$constraints"
"$venv/bin/pip" install -q --no-deps "$src"
"$venv/bin/pip" check

# The image runs as this user unless the caller asks for its own uid (run.sh does).
id worldmodels >/dev/null 2>&1 || useradd --create-home --shell /bin/bash worldmodels

# Fail the build, not the first job, if the game or a library is missing.
"$venv/bin/python" - <<'PY'
import ale_py, cma, gymnasium, mpi4py, submitit, torch, zarr
gymnasium.register_envs(ale_py)
env = gymnasium.make("SpaceInvadersNoFrameskip-v4")
env.reset(seed=0)
print(f"image ready: torch {torch.__version__} (CUDA {torch.version.cuda}), ale-py {ale_py.__version__}, "
      f"zarr {zarr.__version__}, Space Invaders ROM present")
PY
echo "installed size: $(du -sh "$venv" | cut -f1) in $venv"
