# The two commands of the README: `make demo` and `make test`. Each sets up what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The demo's Dagster instance lives in the repository (dagster.yaml here, storage/ ignored by git),
# so that `make ui` shows the runs `make demo` made.
export DAGSTER_HOME ?= $(CURDIR)

.PHONY: setup demo ui test test-servers benchmark

$(BIN)/retention: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/retention

demo: setup
	$(BIN)/retention demo

ui: setup
	$(BIN)/dagster dev

test-servers:
	bash scripts/install-test-servers

test: setup test-servers
	$(BIN)/pytest

benchmark: setup test-servers
	$(BIN)/python benchmarks/bench_quiz_responses.py
	$(BIN)/python benchmarks/bench_meal_plans_pdfs.py
	$(BIN)/python benchmarks/bench_audit_chain.py
