# Echo: `make demo` shows trades being copied; `make test` runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint typecheck imports unit demo demo-big sweep soak bench-codec bench-engine bench-copy bench-split bench-load bench-ea proto clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check echo tests mql4/harness
	$(BIN)/ruff format --check echo tests mql4/harness

typecheck: setup
	$(BIN)/mypy

imports: setup
	$(BIN)/lint-imports

# The tests on every core (pytest-xdist; the Windows tests together on one of them, see tests/conftest.py).
TEST_WORKERS ?= auto
test: lint typecheck imports
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

demo: setup
	$(BIN)/echo-copier demo --masters 1 --slaves 4 --trades 30 --seed 7

demo-big: setup
	$(BIN)/echo-copier demo --masters 3 --slaves 15 --trades 100 --seed 11

# Not part of `make test`: 200 seeded whole-system simulations with faults (minutes). One line per seed, then a
# JSON object with the counts; the exit status is 1 if any seed lost, duplicated or left open a copy.
# SWEEP_STORE=postgresql://...?schema=NAME (or sqlite:///PATH) runs each seed on a store of its own beside it.
SWEEP_SEEDS ?= 1..200
SWEEP_FAULTS ?= drop=0.05,dup=0.05,reorder=0.05,disconnect=0.01,crash=5
SWEEP_STORE ?=
sweep: setup
	$(BIN)/echo-copier simulate --seeds $(SWEEP_SEEDS) --masters 2 --slaves 5 --trades 40 --faults $(SWEEP_FAULTS) \
	    $(if $(SWEEP_STORE),--store '$(SWEEP_STORE)')

# Not part of `make test`: the all-in-one copier copying 1 master to 15 slaves for SOAK_SECONDS; prints JSON
# with its RSS after the warm-up and at the end, and the store's bytes per 1,000 copies.
SOAK_SECONDS ?= 1800
soak: setup
	$(BIN)/python bench/bench_soak.py --seconds $(SOAK_SECONDS)

# Not part of `make test`: benchmarks that print JSON, each measuring this machine's floor first in the same run
# (bench/floor.py: a Unix socket round trip between processes, a durable SQLite commit, a gRPC round trip).
bench-codec: setup  ## one ExecuteOrder through the split-mode codec (seconds)
	$(BIN)/python bench/bench_codec.py
bench-engine: setup  ## Core's pure engine alone: its CPU per copy, per step and per slave (seconds)
	$(BIN)/python bench/bench_engine.py --store FULL
bench-copy: setup  ## idle all-in-one copy latency for 1, 5, 15, 30 and 60 slaves (minutes)
	$(BIN)/python bench/bench_copy.py --slaves 1,5,15,30,60
bench-split: setup  ## idle split-mode latency and CPU per process, all-in-one beside it (a minute)
	$(BIN)/python bench/bench_split.py
bench-load: setup  ## 6 masters x 15 slaves at rising rates, all-in-one and split, then 30 s without load (minutes)
	$(BIN)/python bench/bench_load.py
bench-ea: setup  ## the compiled EAs (mql4/harness) with TimerMs 1, 5, 10, 20, 50: latency with their timers, and CPU (minutes)
	$(BIN)/python bench/bench_ea.py

PB := echo/adapters/transport/pb
proto: setup  ## regenerate the Core <-> Agent contracts' Python code from protos/ (protobuf upb classes, grpclib stubs)
	rm -rf $(PB) && mkdir -p $(PB)
	$(BIN)/python protos/generate.py $(PB)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
