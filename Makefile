# The two commands of the README: `make demo` and `make test`. Each sets up what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The demo's Dagster instance lives in the repository (dagster.yaml here, storage/ ignored by git),
# so that `make ui` shows the runs `make demo` made.
export DAGSTER_HOME ?= $(CURDIR)

.PHONY: setup demo ui test test-servers benchmark reliability lock

# The environment is the lock's, not a fresh resolution of pyproject.toml: requirements-test.lock is
# requirements.lock (exactly what the image installs) plus the test tools at the same versions, so
# what the tests pass with is what production runs. The project itself comes last, without
# dependencies, and `pip check` proves the lock complete and consistent.
$(BIN)/retention: pyproject.toml requirements.lock requirements-test.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-test.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	touch $@

setup: $(BIN)/retention

demo: setup
	$(BIN)/retention demo

# `make ui PORT=3001` when 3000 is taken.
PORT ?= 3000
ui: setup
	RETENTION_ENV=demo $(BIN)/dagster dev --port $(PORT)

test-servers:
	bash scripts/install-test-servers

# Lint first (ruff, configured in pyproject.toml): a finding fails `make test`, and so `.ci/run`,
# before any test starts. Then `dg check defs` loads the code location as Dagster does, with the demo's
# settings (loading opens no store): a definition that does not build fails the build too. VIRTUAL_ENV
# tells dg that the venv it runs from is the project's, which it otherwise warns about. The tests run
# on two pytest-xdist workers, one per core of the machines that run them (developers' and CI's have
# 2): each worker starts its own servers on free ports, so the suite takes about half the wall time.
# The reliability table still comes out once, from the controller (support/figures.py). A file's tests
# stay in one worker (--dist loadfile): some files end with a test that counts what the file's other
# tests recorded (reliability/test_bad_input.py's every case handled). Coverage of the package is
# measured on both workers (pytest-cov) and the run fails below [tool.coverage.report] fail_under;
# the figures per file go to test-artifacts/coverage.json.
test: setup test-servers
	$(BIN)/ruff check .
	RETENTION_ENV=demo VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg check defs
	$(BIN)/pytest -n 2 --dist loadfile --cov --cov-report=term:skip-covered --cov-report=json:test-artifacts/coverage.json

# The benchmark targets, every case in one run: a table, benchmarks/results/benchmarks.json, exit 1 on a miss.
benchmark: setup test-servers
	$(BIN)/python benchmarks/run_all.py

# The reliability and security suite at full size (50 kills) and the property suite with its large example
# budget, alone: their table at the end and in test-artifacts/reliability.json. `make test` runs the same
# tests with 12 kills and the property suite's CI budget. Without -n, on no workers: its timings need
# the machine to itself.
reliability: setup test-servers
	RELIABILITY_KILLS=50 RELIABILITY_FULL=1 RETENTION_HYPOTHESIS_PROFILE=reliability \
	  $(BIN)/pytest -p no:cacheprovider retention_pipelines_tests/reliability retention_pipelines_tests/properties

# The lock files, from pyproject.toml with pip-tools (docs/deploy.md, "The image"): requirements.lock
# is the dependencies and the k8s extra, what the image installs; requirements-test.lock adds the
# test extra, constrained to requirements.lock's versions. Pins already in the files are kept while
# pyproject allows them; `make lock UPGRADE=--upgrade` (or `UPGRADE="--upgrade-package NAME"`)
# moves them. Every pin carries its hashes, so an install gets exactly the files that were locked.
# pip-tools lives in its own venv, pinned, so the files do not change with the tool's version.
LOCK_VENV := .venv-lock
UPGRADE ?=
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
  --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(UPGRADE)

$(LOCK_VENV)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet pip==26.3 pip-tools==7.7.0

lock: $(LOCK_VENV)/bin/pip-compile
	$(PIP_COMPILE) --extra k8s -o requirements.lock pyproject.toml
	$(PIP_COMPILE) --extra k8s --extra test -c requirements.lock -o requirements-test.lock pyproject.toml
