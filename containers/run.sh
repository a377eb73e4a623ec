#!/usr/bin/env bash
# Runs a command inside the worldmodels image, the same way for a local stage, `make demo` and a
# Slurm job (submitit's python command is `containers/run.sh --bind RUN_DIR IMAGE python`).
#
#   containers/run.sh [--bind DIR | --bind-ro DIR]... IMAGE COMMAND [ARG...]
#
# IMAGE is an Apptainer image (a .sif file) or a Docker/Podman image name. Inside, the working
# directory is the caller's (bind-mounted read-only, at the same path, so relative paths mean the
# same thing), each --bind DIR is mounted read-write and each --bind-ro DIR read-only (the runs a
# branch reuses) at the same path, files are written as the calling user, and the image itself is
# read-only. GPUs are passed through when the host has them.
#
# Preemption: Slurm signals every process of the job step, so the stage inside sees SIGUSR2,
# saves its checkpoint and exits with 75 ("requeue me"). Slurm's tools need not exist in the
# image: this script, outside the container, runs `scontrol requeue` for it.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REQUEUE_EXIT_CODE=75

binds=()     # DIR:DIR or DIR:DIR:ro, as both engines write them
while [[ $# -gt 0 && ( $1 == --bind || $1 == --bind-ro ) ]]; do
    [[ $# -ge 2 ]] || { echo "run.sh: $1 needs a directory" >&2; exit 2; }
    if [[ $1 == --bind ]]; then
        mkdir -p "$2" && dir=$(cd "$2" && pwd) && binds+=("$dir:$dir")
    else
        [[ -d $2 ]] || { echo "run.sh: --bind-ro $2: no such directory" >&2; exit 2; }
        dir=$(cd "$2" && pwd) && binds+=("$dir:$dir:ro")
    fi
    shift 2
done
[[ $# -ge 2 ]] || { echo "usage: containers/run.sh [--bind DIR | --bind-ro DIR]... IMAGE COMMAND [ARG...]" >&2; exit 2; }
image=$1; shift
cwd=$(pwd)
has_gpu() { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }

if [[ $image == *.sif ]]; then
    [[ -f $image ]] || { echo "run.sh: no Apptainer image at $image (make container-apptainer builds it)" >&2; exit 2; }
    runtime=$(command -v apptainer || command -v singularity) \
        || { echo "run.sh: $image needs apptainer (or singularity) on PATH" >&2; exit 2; }
    cmd=("$runtime" exec --bind "$cwd:$cwd:ro" --pwd "$cwd")
    for bind in "${binds[@]}"; do cmd+=(--bind "$bind"); done
    has_gpu && cmd+=(--nv)
    # Apptainer passes the caller's environment through and runs as the caller already.
    export WORLDMODELS_CONTAINER=$image
    cmd+=("$image" "$@")
else
    source "$here/engine.sh"
    cmd=("$engine" run --rm --init --read-only --ipc=host "--network=${CONTAINER_NETWORK:-host}"
         -v "$cwd:$cwd:ro" -w "$cwd" --entrypoint "$1" -e "WORLDMODELS_CONTAINER=$image")
    for bind in "${binds[@]}"; do cmd+=(-v "$bind"); done
    if $podman && [[ $(id -u) != 0 ]]; then
        cmd+=(--userns=keep-id)                   # rootless podman: the caller's uid inside
    else
        cmd+=(--user "$(id -u):$(id -g)" --tmpfs /tmp)
    fi
    if has_gpu; then
        $podman && cmd+=(--device nvidia.com/gpu=all) || cmd+=(--gpus all)
    fi
    # Only names cross over (-e NAME), never values on the command line: tokens stay out of `ps`.
    while read -r name; do cmd+=(-e "$name"); done < <(compgen -e | grep -E \
        '^(SLURM_|SLURMD_|SUBMITIT_|WANDB_|HF_|HUGGING_FACE_|OMPI_|PMIX_|CUDA_VISIBLE_DEVICES$|OMP_NUM_THREADS$|TERM$)')
    [[ -t 0 && -t 1 ]] && cmd+=(-it)
    cmd+=("$image" "${@:2}")
fi

# The command runs in the foreground; a trapped signal only waits for it (see above).
trap ':' USR2 TERM
"${cmd[@]}"
rc=$?
if [[ $rc == "$REQUEUE_EXIT_CODE" && -n ${SLURM_JOB_ID:-} ]]; then
    echo "run.sh: the stage saved its progress; requeueing Slurm job $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID"
fi
exit $rc
