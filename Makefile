# Echo: `make demo` shows trades being copied; `make test` runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint typecheck imports unit demo demo-big clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check echo tests
	$(BIN)/ruff format --check echo tests

typecheck: setup
	$(BIN)/mypy

imports: setup
	$(BIN)/lint-imports

test: lint typecheck imports
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/echo-copier demo --masters 1 --slaves 4 --trades 30 --seed 7

demo-big: setup
	$(BIN)/echo-copier demo --masters 3 --slaves 15 --trades 100 --seed 11

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
