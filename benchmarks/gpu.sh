#!/usr/bin/env bash
# A GPU node's checks in one run, each step's log in LOG_DIR: the GPU tests, both benchmarks on
# CUDA, then the demo's preset through every stage with V and M trained on the GPU and C found in
# M's dream there (the dream is what the GPU batches). Each step has a time limit, so that one
# that hangs leaves the others their time; a step's failure is reported and the next one runs.
#   benchmarks/gpu.sh [LOG_DIR]    (default runs/gpu-check; PY=python to choose the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:-runs/gpu-check}; PY=${PY:-python}; RUN=$LOG/run
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled PY
T0=$(date +%s)
step() {  # step NAME LIMIT_S COMMAND...: run it into LOG/NAME.log, then say how it ended and its last lines
  local name=$1 limit=$2 s; shift 2; s=$(date +%s)
  timeout "$limit" bash -c '"$@"' bash "$@" >"$LOG/$name.log" 2>&1
  echo "=== $name: exit $? after $(( $(date +%s) - s )) s (at +$(( $(date +%s) - T0 )) s)"
  tail -n 8 "$LOG/$name.log"
}
wm() { $PY -m worldmodels "$@"; }
tasks() {  # tasks N STAGE ARGS...: N parallel tasks of an array stage, then the stage once to gather them
  local n=$1 t; shift
  for t in $(seq 0 $((n - 1))); do OMP_NUM_THREADS=1 wm "$@" --task "$t" --num-tasks "$n" & done
  wait; wm "$@"
}
export -f wm tasks
command -v nvidia-smi >/dev/null || { echo "error: no NVIDIA GPU here (nvidia-smi not found)" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
N=$(nproc)
step gpu-tests 120 $PY -m pytest -p no:cacheprovider -o addopts= -m gpu -v tests/test_gpu.py
step bench-controller 150 $PY benchmarks/controller.py --device cuda --seconds 2
step bench-train 90 $PY benchmarks/train.py --device cuda
A=(--config configs/demo.yaml --run-dir "$RUN" train.device=cuda vae.compile=true vae.precision=float32 logging.wandb=false
   evaluate.videos=0 controller.mode=dream controller.select=0)
step collect 60 tasks "$N" collect "${A[@]}"
step train-vae 120 wm train-vae "${A[@]}"
step encode 60 tasks 4 encode "${A[@]}"
step train-mdnrnn 60 wm train-mdnrnn "${A[@]}"
step train-controller 150 wm train-controller "${A[@]}"
step evaluate 90 tasks "$N" evaluate "${A[@]}"
wm status "$RUN"
echo "gpu check: $(( $(date +%s) - T0 )) s in all; logs in $LOG"
