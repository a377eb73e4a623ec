# The front door: every target a user or CI needs, with its set-up built in.
# `make help` lists them. Variables: RUN_DIR, CONFIG, PROFILE, CONTAINER, OVERRIDES.
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
SYSTEM_PACKAGES := slurm-wlm munge openmpi-bin libopenmpi-dev

export WANDB_SILENT ?= true

.PHONY: help setup system-packages test demo collect train-vae encode train-mdnrnn status bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_ -]+:.*## / {printf "  %-40s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- set-up ---------------------------------------------------------------------------------
# System packages are installed only when running as root on a Debian/Ubuntu machine and one
# of them is missing; elsewhere the suite uses whatever the machine already provides.
system-packages: ## install Slurm, munge and OpenMPI with apt-get (root on Debian/Ubuntu only)
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing system packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	elif command -v dpkg-query >/dev/null; then \
		echo "warning: missing system packages (install them as root): $$missing" >&2; \
	fi

# The virtual environment is rebuilt when pyproject.toml changes. torch is installed first and
# alone, pinned, so that pip takes the CPU build instead of pulling the CUDA packages.
$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

setup: system-packages $(STAMPS)/venv ## create .venv and install everything the suite needs

# --- use ----------------------------------------------------------------------------------
test: setup ## run the whole test suite (what CI runs)
	$(PY) -m pytest -q

PIPELINE := collect train-vae encode train-mdnrnn

demo: setup ## run the demo pipeline (configs/demo.yaml) into a fresh run directory
	@mkdir -p runs && ln -sfn "$(abspath $(DEMO_DIR))" runs/latest
	@start=$$(date +%s); for stage in $(PIPELINE); do \
		$(PY) -m worldmodels $$stage --config $(CONFIG) --run-dir $(DEMO_DIR) $(OVERRIDES) || exit $$?; \
	done; \
	$(PY) -m worldmodels status $(DEMO_DIR); \
	echo "demo finished in $$(( $$(date +%s) - start )) s: run directory $(DEMO_DIR) (also runs/latest)"; \
	echo "  pictures: $(DEMO_DIR)/report/*.png"

collect train-vae encode train-mdnrnn: setup ## run one stage locally (CONFIG, RUN_DIR, OVERRIDES)
	$(PY) -m worldmodels $@ --config $(CONFIG) --run-dir $(RUN_DIR) $(OVERRIDES)

status: setup ## show where each stage of RUN_DIR stands
	$(PY) -m worldmodels status $(RUN_DIR)

bench: setup ## run the benchmarks: each hot path against its physical limit
	$(PY) benchmarks/collect.py
	$(PY) benchmarks/train.py

clean: ## remove the virtual environment and the set-up stamps (runs/ is kept)
	rm -rf $(VENV) $(STAMPS)
