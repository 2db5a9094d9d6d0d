# Tributary: the two commands are `make run` and `make test`; everything else is a helper.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed
NODE_STAMP    := tests/js/node_modules/.installed
LOADGEN_STAMP := bench/loadgen/node_modules/.installed

#: pytest-xdist workers; each has its own Redis and MySQL database (tests/conftest.py).
TEST_WORKERS ?= 2

.PHONY: run test bench lint services clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt $(RUNTIME_STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(NODE_STAMP): tests/js/package.json tests/js/package-lock.json
	bash tests/ensure-node.sh
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(LOADGEN_STAMP): bench/loadgen/package.json bench/loadgen/package-lock.json
	bash tests/ensure-node.sh
	cd bench/loadgen && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## run: the whole service (web, engine; embedded Redis and SQLite unless configured)
run: $(RUNTIME_STAMP)
	$(PY) -m webapp.launcher

## test: the whole suite against real Redis and MySQL/MariaDB (started or installed as needed)
test: $(DEV_STAMP) $(NODE_STAMP)
	PYTHON=$(PY) bash tests/ensure-services.sh
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

## bench: the load and drain benchmarks; writes bench/results/ and prints the ratios
bench: $(DEV_STAMP) $(LOADGEN_STAMP)
	PYTHON=$(PY) bash tests/ensure-services.sh
	$(PY) -m bench $(BENCH_ARGS)

## lint: ruff and mypy
lint: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

services: $(DEV_STAMP)
	PYTHON=$(PY) bash tests/ensure-services.sh

clean:
	rm -rf $(VENV) tests/js/node_modules bench/loadgen/node_modules .pytest_cache .mypy_cache
