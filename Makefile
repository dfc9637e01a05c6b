# Fabconnect DSR: `make demo` runs the product on embedded defaults, `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: demo down test test-fast bench clean chromium

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

## demo: start S3 server, partner simulators, the demo world and Airflow; Ctrl-C stops all
demo: $(VENV)/.installed
	$(PY) -m include.demo.launcher up

## down: stop a demo started in another terminal
down: $(VENV)/.installed
	$(PY) -m include.demo.launcher down

## chromium: Debian chromium for the dashboard's headless-browser test (no-op when present)
chromium:
	-scripts/install-chromium.sh || echo "chromium not installed: the dashboard browser test will be skipped"

## test: the whole suite (unit, connectors, DAG integrity, end-to-end)
test: $(VENV)/.installed chromium
	$(PY) -m pytest -q

## test-fast: everything but the slow end-to-end runs
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

## bench: benchmarks that print ratios (see bench/README.md)
bench: $(VENV)/.installed
	$(PY) bench/bench_gather.py

clean:
	rm -rf .airflow .demo
