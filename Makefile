# The front door: every target a user or CI needs, with its set-up built in.
# `make help` lists them. Variables: RUN_DIR, CONFIG, PROFILE, CONTAINER, FROM, ROUND, OVERRIDES.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.SUFFIXES:

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
CONFIG    ?= configs/demo.yaml
RUN_DIR   ?= runs/latest
# `make demo` starts a fresh run directory unless RUN_DIR is given; runs/latest points at it.
DEMO_DIR  := $(if $(filter command line environment,$(origin RUN_DIR)),$(RUN_DIR),runs/demo-$(shell date +%Y%m%d-%H%M%S))
OVERRIDES ?=
STAMPS    := .make
SYSTEM_PACKAGES := slurm-wlm slurmdbd mariadb-server munge openmpi-bin libopenmpi-dev chromium chromium-driver
CONTAINER_PACKAGES := podman runc catatonit debootstrap

export WANDB_SILENT ?= true

.PHONY: slurm-up slurm-down submit submit-collect submit-vae submit-encode submit-mdnrnn submit-controller submit-eval submit-report submit-pipeline
.PHONY: help setup system-packages test demo stage collect train-vae encode train-mdnrnn train-controller evaluate report status bench bench-gpu clean
.PHONY: sweep submit-sweep compare play push verify
.PHONY: container-docker container-apptainer container-test container-lock

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_ -]+:.*## / {printf "  %-40s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- set-up ---------------------------------------------------------------------------------
# System packages are installed only when running as root on a Debian/Ubuntu machine and one
# of them is missing; elsewhere the suite uses whatever the machine already provides.
system-packages: ## install Slurm, munge, OpenMPI and Chromium (the report test) with apt-get (root on Debian/Ubuntu only)
	@$(call apt_install,$(SYSTEM_PACKAGES))

# apt_install PACKAGES: install the missing ones as root with apt-get; elsewhere warn
define apt_install
missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
if [ -z "$$missing" ]; then exit 0; fi; \
if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	echo "installing system packages: $$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
elif command -v dpkg-query >/dev/null; then \
	echo "warning: missing system packages (install them as root): $$missing" >&2; \
fi
endef

# The virtual environment is rebuilt when pyproject.toml changes. torch is installed first and
# alone, pinned, so that TORCH_INDEX applies to it alone: empty, pip's configured index (PyPI gives
# the CUDA build on Linux, which also runs on CPU); https://download.pytorch.org/whl/cpu, the
# CPU-only build.
TORCH_INDEX ?=
$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

setup: system-packages $(STAMPS)/venv ## create .venv and install everything the suite needs

# --- use ----------------------------------------------------------------------------------
# The suite spends much of its time waiting on the local cluster (run alone on 2 cores, it keeps 0.8
# of a core busy): two workers, each taking whole test files (so their module fixtures are built once).
TEST_WORKERS ?= 2
test: setup ## run the whole test suite except the container tests (make container-test)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=20

# Local runs use every core: array-style stages as parallel tasks, the controller as MPI ranks,
# each with one torch thread (JOBS processes of two threads each on JOBS cores run ten times slower).
# With CONTAINER=<image or .sif> every stage runs inside that image (containers/run.sh), with
# the run directory bind-mounted; the host then needs no virtual environment.
# With FROM=BASE a new RUN_DIR branches from the run BASE: it reuses BASE's finished stages whose
# identity matches (read-only; in a container BASE and the runs it reuses from are bound read-only).
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
CONTAINER ?=
FROM      ?=
FROM_ARG   = $(if $(FROM),--from $(FROM))
# ROUND=R: a stage (or submission) of round R of iterative training (rounds.count > 1), in RUN_DIR/rounds/R
ROUND     ?=
ROUND_ARG  = $(if $(ROUND),--round $(ROUND))
# the run directories a branch reads from: FROM and every run FROM reuses stages from
READ_ONLY  = $(if $(FROM),$(abspath $(FROM)) $(shell sed -n 's/.*"reused_from": "\(.*\)".*/\1/p' $(FROM)/stages/*.json 2>/dev/null | sort -u))
# in_image DIR: the prefix that runs a command inside CONTAINER with DIR writable (or nothing)
in_image   = $(if $(CONTAINER),containers/run.sh --bind $(abspath $(1)) $(foreach d,$(READ_ONLY),--bind-ro $(d)) $(CONTAINER))
PYTHON_IN  = $(if $(CONTAINER),$(call in_image,$(1)) python,$(PY))
MPIRUN_IN  = $(call in_image,$(1)) $(if $(or $(CONTAINER),$(shell command -v mpirun)),mpirun --oversubscribe -x OMP_NUM_THREADS=1 -n $(JOBS))
HOST_SETUP = $(if $(CONTAINER),,setup)
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1

# Every stage of the registry in order (`python -m worldmodels stages --plain`), each the way it runs:
# task stages as JOBS parallel tasks (then once more to confirm the whole), MPI stages as JOBS ranks;
# with rounds.count > 1, all of them once per round (`python -m worldmodels rounds`). Tasks are
# waited for by pid: bash's `wait -n` fails (127) when they all ended before it, as reused ones do.
demo: $(HOST_SETUP) ## run the whole pipeline on configs/demo.yaml into a fresh run directory (17 to 19 min on this project's 2 cores, more on slower CPUs: see README)
	@mkdir -p $(DEMO_DIR) $(if $(filter runs/demo-%,$(DEMO_DIR)),&& ln -sfn "$(abspath $(DEMO_DIR))" runs/latest)
	@set -e; start=$$(date +%s); wm="$(call PYTHON_IN,$(DEMO_DIR)) -m worldmodels"; \
	tasks() { pids=; for t in $$(seq 0 $$(($(JOBS) - 1))); do \
		OMP_NUM_THREADS=1 $$wm $$1 $$args --task $$t --num-tasks $(JOBS) & pids="$$pids $$!"; done; \
		for p in $$pids; do wait $$p; done; }; \
	for round in $$($$wm rounds --config $(CONFIG) $(OVERRIDES)); do \
	args="--config $(CONFIG) --run-dir $(DEMO_DIR) --round $$round $(FROM_ARG) $(OVERRIDES)"; \
	for entry in $$($$wm stages --plain | tr ' ' ':'); do stage=$${entry%%:*}; \
		case $${entry#*:} in \
		tasks) tasks $$stage; $$wm $$stage $$args;; \
		mpi) $(call MPIRUN_IN,$(DEMO_DIR)) $(if $(CONTAINER),python,$(PY)) -m worldmodels $$stage $$args;; \
		*) $$wm $$stage $$args;; \
		esac; \
	done; done; \
	$$wm status $(DEMO_DIR); \
	last=$(DEMO_DIR)$$([ "$$round" = 0 ] || echo /rounds/$$round); \
	echo "demo finished in $$(( $$(date +%s) - start )) s: run directory $(DEMO_DIR)"; \
	echo "  report: $$last/report/index.html   results: $$last/eval/results.json"

STAGE ?=
stage: $(HOST_SETUP) ## run the stage STAGE locally (CONFIG, RUN_DIR, FROM, OVERRIDES, CONTAINER)
	@test -n "$(STAGE)" || { echo "make stage needs STAGE=NAME (python -m worldmodels stages lists them)" >&2; exit 2; }
	$(call PYTHON_IN,$(RUN_DIR)) -m worldmodels $(STAGE) --config $(CONFIG) --run-dir $(RUN_DIR) $(FROM_ARG) $(ROUND_ARG) $(OVERRIDES)

collect train-vae encode train-mdnrnn evaluate report: $(HOST_SETUP) ## run one stage locally (CONFIG, RUN_DIR, FROM, OVERRIDES, CONTAINER)
	$(call PYTHON_IN,$(RUN_DIR)) -m worldmodels $@ --config $(CONFIG) --run-dir $(RUN_DIR) $(FROM_ARG) $(ROUND_ARG) $(OVERRIDES)

train-controller: $(HOST_SETUP) ## run CMA-ES locally as JOBS MPI ranks (CONFIG, RUN_DIR, FROM, OVERRIDES, CONTAINER)
	$(call MPIRUN_IN,$(RUN_DIR)) $(if $(CONTAINER),python,$(PY)) -m worldmodels train-controller --config $(CONFIG) --run-dir $(RUN_DIR) $(FROM_ARG) $(ROUND_ARG) $(OVERRIDES)

# An agent: a pushed folder, a run directory or a Hub repository id (USER/NAME, online).
MODEL    ?= $(RUN_DIR)
EPISODES ?= 3
play: $(HOST_SETUP) ## play the agent MODEL (folder, run directory or Hub repo) on the evaluation's first EPISODES episodes (VIDEO=out.mp4, STICKY=1)
	$(if $(CONTAINER),containers/run.sh $(if $(wildcard $(MODEL)),--bind-ro $(abspath $(MODEL))) $(if $(VIDEO),--bind $(dir $(abspath $(VIDEO)))) $(CONTAINER) python,$(PY)) -m worldmodels play --model $(MODEL) --episodes $(EPISODES) $(if $(VIDEO),--video $(VIDEO)) $(if $(STICKY),--sticky)

REPO_ID ?=
DRY_RUN ?=
push: $(HOST_SETUP) ## upload RUN_DIR's agent, results, replay and report to the Hub as REPO_ID (token: HF_TOKEN), or write it to DRY_RUN=DIR
	$(call PYTHON_IN,$(RUN_DIR)) -m worldmodels push --run-dir $(RUN_DIR) $(if $(REPO_ID),--repo-id $(REPO_ID)) $(if $(DRY_RUN),--dry-run $(DRY_RUN))

# --- Slurm ------------------------------------------------------------------------------------
PROFILE ?= slurm/profiles/local.yaml
# After `make slurm-up`, Slurm's tools (and submitit) talk to the local cluster.
ifneq ($(wildcard .slurm/slurm.conf),)
export SLURM_CONF ?= $(abspath .slurm/slurm.conf)
endif
SUBMIT = $(PY) -m worldmodels submit $(1) --config $(CONFIG) --run-dir $(RUN_DIR) --profile $(PROFILE) $(FROM_ARG) $(ROUND_ARG) $(if $(CONTAINER),--container $(CONTAINER)) $(OVERRIDES)
# Sweeps: SWEEP_DIR gets one run directory per point of GRID (e.g. GRID="controller.seed=1,2,3"),
# each branched from FROM when given.
SWEEP_DIR ?= runs/sweep
GRID      ?=
SWEEP = $(PY) -m worldmodels sweep --config $(CONFIG) --sweep-dir $(SWEEP_DIR) $(FROM_ARG) $(OVERRIDES) --grid $(GRID)

NODES ?= 3
slurm-up: system-packages ## start a Slurm cluster of NODES nodes (default 3) with accounting on this machine (root; state in .slurm/)
	@slurm/local-cluster.sh up $(NODES)

slurm-down: ## stop the local Slurm cluster and remove its nodes' namespaces
	@slurm/local-cluster.sh down

submit: setup ## submit the stage STAGE (CONFIG, RUN_DIR, PROFILE, FROM)
	@test -n "$(STAGE)" || { echo "make submit needs STAGE=NAME or STAGE=pipeline" >&2; exit 2; }
	$(call SUBMIT,$(STAGE))
submit-collect: setup ## submit collect as an array job (CONFIG, RUN_DIR, PROFILE, FROM)
	$(call SUBMIT,collect)
submit-vae: setup ## submit train-vae
	$(call SUBMIT,train-vae)
submit-encode: setup ## submit encode as an array job
	$(call SUBMIT,encode)
submit-mdnrnn: setup ## submit train-mdnrnn
	$(call SUBMIT,train-mdnrnn)
submit-controller: setup ## submit train-controller as one MPI job (nodes x tasks, srun --mpi=pmix)
	$(call SUBMIT,train-controller)
submit-eval: setup ## submit evaluate as an array job
	$(call SUBMIT,evaluate)
submit-report: setup ## submit report
	$(call SUBMIT,report)
submit-pipeline: setup ## submit every stage of every round (from ROUND on) at once, chained with afterok dependencies (a branch: those it does not reuse)
	$(call SUBMIT,pipeline)

sweep: setup ## run a sweep locally, point after point (CONFIG, SWEEP_DIR, GRID, FROM, OVERRIDES)
	@test -n "$(GRID)" || { echo 'make sweep needs GRID="key=a,b key2=1,2"' >&2; exit 2; }
	$(SWEEP)
submit-sweep: setup ## submit a sweep to Slurm: one array job per stage across the points (PROFILE too)
	@test -n "$(GRID)" || { echo 'make submit-sweep needs GRID="key=a,b key2=1,2"' >&2; exit 2; }
	$(SWEEP) --executor slurm --profile $(PROFILE) $(if $(CONTAINER),--container $(CONTAINER))
compare: setup ## mean, 95% CI and IQM over seeds per point of SWEEP_DIR (or of RUNS="dir1 dir2 ...")
	$(PY) -m worldmodels compare $(or $(RUNS),$(SWEEP_DIR))

status: setup ## show where each stage of RUN_DIR (or each point of a sweep folder) stands
	$(PY) -m worldmodels status $(RUN_DIR)

verify: setup ## read back every dataset chunk and checkpoint of RUN_DIR (REPAIR=1: drop what is damaged)
	$(PY) -m worldmodels verify $(RUN_DIR) $(if $(REPAIR),--repair)

bench: setup ## run the benchmarks: each hot path against its physical limit
	$(PY) benchmarks/collect.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/controller.py
	$(PY) benchmarks/controller.py --precision int8

bench-gpu: setup ## on a GPU node: the GPU tests, both benchmarks on CUDA, the demo's preset on the GPU with C in the dream (logs in runs/gpu-check)
	PY=$(PY) benchmarks/gpu.sh runs/gpu-check

# --- containers ----------------------------------------------------------------------------
IMAGE     ?= localhost/worldmodels:latest
SIF       ?= worldmodels.sif
# BASE: empty for the Dockerfile's CUDA PyTorch base; a Debian/Python image for a CPU image
BASE      ?=
TEST_BASE ?= localhost/debian-py:bookworm
TEST_IMAGE ?= localhost/worldmodels:test

container-docker: ## build IMAGE with podman or docker (BASE, PIP_* settings reach the build)
	containers/build.sh $(IMAGE) $(BASE)

container-apptainer: ## build SIF with apptainer from containers/worldmodels.def (BASE)
	@command -v apptainer >/dev/null || { echo "apptainer is not installed here; on a machine that has it run: make container-apptainer (or convert this image: podman save -o wm.tar $(IMAGE) && apptainer build $(SIF) docker-archive:wm.tar)" >&2; exit 2; }
	apptainer build $(if $(BASE),--build-arg BASE=$(BASE)) $(SIF) containers/worldmodels.def

container-test: setup ## build a CPU image (from debootstrap when no registry answers) and test it: tests, smoke pipeline, Slurm job
	@$(call apt_install,$(CONTAINER_PACKAGES))
	containers/base-image.sh $(TEST_BASE)
	containers/build.sh $(TEST_IMAGE) $(TEST_BASE)
	WORLDMODELS_TEST_IMAGE=$(TEST_IMAGE) $(PY) -m pytest -q -m container

container-lock: setup ## rewrite containers/requirements.lock from the development environment
	@{ sed -n '1,2p' containers/requirements.lock; $(PY) -m pip freeze --exclude-editable | \
		grep -v -E '^(ruff|tensorstore|ml_dtypes|selenium|trio|trio-websocket|outcome|sortedcontainers|wsproto|PySocks)==' | sed -E 's/^(torch==[^+]*)\+.*/\1/'; } > containers/requirements.lock.new
	mv containers/requirements.lock.new containers/requirements.lock

clean: ## remove the virtual environment and the set-up stamps (runs/ is kept)
	rm -rf $(VENV) $(STAMPS)
