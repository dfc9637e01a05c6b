# Fabconnect DSR: `make demo` runs the product on embedded defaults, `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)
# Airflow's published constraints for the pinned release; empty it where GitHub is out of reach
# (the lock is then resolved against PyPI, keeping the pins already in requirements.txt).
AIRFLOW_CONSTRAINTS ?= https://raw.githubusercontent.com/apache/airflow/constraints-3.3.2/constraints-3.11.txt

.PHONY: demo down stack stack-down test test-fast lint lock audit bench clean chromium

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

## demo: start S3 server, partner simulators, the demo world and Airflow; Ctrl-C stops all
demo: $(VENV)/.installed
	$(PY) -m include.demo.launcher up

## down: stop a demo started in another terminal
down: $(VENV)/.installed
	$(PY) -m include.demo.launcher down

## stack: the same demo on the CeleryExecutor (PostgreSQL metadata DB, Redis broker, 2 workers); Ctrl-C stops all
stack: $(VENV)/.installed
	$(PY) -m include.demo.launcher up --celery

## stack-down: stop a stack (or demo) started in another terminal
stack-down: down

## chromium: Debian chromium for the dashboard's headless-browser test (no-op when present)
chromium:
	-scripts/install-chromium.sh || echo "chromium not installed: the dashboard browser test will be skipped"

## lint: ruff (lint + format), the layering contracts (import-linter) and mypy
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

## test: lint, then the whole suite (unit, connectors, DAG integrity, end-to-end)
test: lint chromium
	$(PY) -m pytest -q

## test-fast: lint and everything but the slow end-to-end runs
test-fast: lint
	$(PY) -m pytest -q -m "not slow"

## lock: regenerate requirements.txt (the lock) from pyproject.toml
lock: $(VENV)/.installed
	$(PY) -m piptools compile --quiet --extra demo --extra test --strip-extras --no-emit-index-url \
		--no-emit-find-links $(if $(AIRFLOW_CONSTRAINTS),--constraint $(AIRFLOW_CONSTRAINTS)) \
		-o requirements.txt pyproject.toml

## audit: pip-audit over the lock (every pin must be auditable; exceptions in tools/pip-audit-ignore.txt)
audit:
	test -x .venv-audit/bin/pip-audit || ($(PYTHON) -m venv .venv-audit && \
		.venv-audit/bin/pip install --quiet -r tools/requirements-audit.txt)
	.venv-audit/bin/pip-audit --strict --no-deps --disable-pip --progress-spinner off \
		-r requirements.txt $$(grep -v '^#' tools/pip-audit-ignore.txt | awk 'NF {print "--ignore-vuln", $$1}')

## bench: benchmarks that print ratios (see bench/README.md)
bench: $(VENV)/.installed
	$(PY) bench/bench_gather.py

clean:
	rm -rf .airflow .demo
