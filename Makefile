# `make demo` and `make test` are the only two commands a new user needs (they build .venv first).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help env lock demo demo-sweep demo-weights repro tables smoke plan test test-unit test-slurm test-full lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

# The CPU torch wheel comes through pip's find-links where this machine has one, else set UV_FIND_LINKS or
# UV_EXTRA_INDEX_URL (e.g. PyTorch's CPU wheel index). Every file is checked against the lock's hashes.
export UV_FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell pip config get global.find-links 2>/dev/null))
UV_SYNC := --python $(BIN)/python --require-hashes --build-constraint lock/build.txt

$(BIN)/.installed: lock/cpu.txt lock/build.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)   # kept when it exists: the sync below makes it exact
	awk '/^uv==/{p=1} p{print; if (!/\\$$/) exit}' lock/cpu.txt > $(VENV)/uv.txt   # the lock's uv entry
	$(BIN)/pip install -q --no-deps --require-hashes -r $(VENV)/uv.txt
	DS_BUILD_OPS=0 $(BIN)/uv pip sync -q $(UV_SYNC) lock/cpu.txt                       # exactly the lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps --no-build-isolation -e .   # the project itself
	touch $@

env: $(BIN)/.installed  ## create .venv from lock/cpu.txt (torch 2.13 CPU, transformers 5, lmms-eval, deepspeed); resolves nothing

lock:  ## re-resolve lock/{cpu,gpu,vllm,build}.txt from pyproject.toml, lock/*.in and constraints.txt
	UV=$(if $(wildcard $(BIN)/uv),$(BIN)/uv,uv) scripts/lock.sh

demo: env  ## synthetic data -> train VIT and LIT (3 seeds) -> lmms-eval -> results/demo/{table.md,plot.png}
	$(BIN)/python -m lit.demo $(ARGS)

demo-sweep: env  ## the mask-scope ladder (vit, lit_all, lit_nosys, lit) and a MIns+ epsilon sweep on the demo -> results/demo_sweep/
	$(BIN)/python -m lit.demo --seeds 0 --scopes vit lit_all lit_nosys lit --epsilons 0 0.5 1 --out results/demo_sweep $(ARGS)

demo-weights: env  ## loss=lit with the instruction weighed 0, 0.01, 0.1, 0.5, 1 (loss.weights; 3 seeds) on the demo -> results/demo_weights/
	$(BIN)/python -m lit.demo --seeds 0 1 2 --scopes --instruction-weights 0 0.01 0.1 0.5 1 --out results/demo_weights $(ARGS)

repro: env  ## one paper table's jobs: make repro TABLE=l2t_t4 [DRY=1 | LOCAL=1 | CHECK=1] [ARGS="--site <name> --wait ..."] (else sbatch)
	$(BIN)/python -m lit.recipes $(TABLE) $(if $(DRY),--dry,$(if $(LOCAL),--local,$(if $(CHECK),--check,--submit))) $(ARGS)

smoke: env  ## a paper model at real widths, 1 layer per tower, 2 ZeRO-3 steps on CPU, saved and reloaded: make smoke MODEL=llava7b
	$(BIN)/python -m lit.train.smoke $(MODEL) $(ARGS)

plan: env  ## memory, fit and GPU-hours of a training job: make plan MODEL=llava7b [ARGS="gpus_per_node=4 gpu_mem_gb=40"]
	$(BIN)/python -m lit.train.plan model=$(MODEL) $(ARGS)

tables: env  ## every paper table from results/runs/ next to the paper's numbers -> results/tables/
	$(BIN)/python -m lit.report.tables $(ARGS)

.PHONY: docs
docs: env  ## rewrite the generated fragments of README.md, BENCHMARKS.md and docs/ from results/ (ARGS=--check: only check)
	$(BIN)/python -m lit.report.docs $(ARGS)

# Test processes (pytest-xdist): each test file runs whole in one of them, each with one torch thread, so two of
# them fill CI's 2 cores; TEST_WORKERS=auto uses every core, TEST_WORKERS=0 runs in this process.
# The 15 slowest tests are listed at the end (where CI time goes).
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

test: env  ## the fast test suite (what CI runs): everything but Slurm and `slow`, end-to-end (`integration`) tests included
	$(PYTEST) -m "not slow and not slurm"

test-unit: env  ## the unit tests only, under 2 minutes: `make test` without the end-to-end (`integration`) tests
	$(PYTEST) -m "not slow and not slurm and not integration"

test-slurm: env  ## the Slurm tests on a one-node local Slurm (root; installs and starts it, stops it after)
	scripts/local_slurm.sh up
	$(BIN)/python -m pytest -q -m slurm; status=$$?; scripts/local_slurm.sh down; exit $$status

lint: env  ## ruff's lint and format checks over the tree (pyproject.toml [tool.ruff]); CI runs it first
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: env  ## apply ruff's formatter and its safe lint fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test-full: env  ## everything, incl. 10,000-conversation property runs
	LIT_FULL_TESTS=1 $(BIN)/python -m pytest -q

clean:  ## remove run outputs (keeps data/ and .venv)
	rm -rf outputs multirun
