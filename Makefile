# The two commands of the README: `make demo` and `make test`. Each sets up what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The demo's Dagster instance lives in the repository (dagster.yaml here, storage/ ignored by git),
# so that `make ui` shows the runs `make demo` made.
export DAGSTER_HOME ?= $(CURDIR)

.PHONY: setup demo ui test test-servers benchmark reliability

$(BIN)/retention: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/retention

demo: setup
	$(BIN)/retention demo

ui: setup
	RETENTION_ENV=demo $(BIN)/dagster dev

test-servers:
	bash scripts/install-test-servers

test: setup test-servers
	$(BIN)/pytest

# Issue 8's targets, every case in one run: a table, benchmarks/results/benchmarks.json, exit 1 on a miss.
benchmark: setup test-servers
	$(BIN)/python benchmarks/run_all.py

# The reliability and security suite at full size (50 kills) and the property suite with its large example
# budget, alone: their table at the end and in test-artifacts/reliability.json. `make test` runs the same
# tests with 12 kills and the property suite's CI budget.
reliability: setup test-servers
	RELIABILITY_KILLS=50 RELIABILITY_FULL=1 RETENTION_HYPOTHESIS_PROFILE=reliability \
	  $(BIN)/pytest -p no:cacheprovider retention_pipelines_tests/reliability retention_pipelines_tests/properties
