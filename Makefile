# ResNet Zoo — `make run` serves the app, `make test` runs the suite; both set up .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test bench lint registry clean

run: $(VENV)/.run-installed ## serve the app on ZOO_HOST:ZOO_PORT (default 127.0.0.1:7860)
	$(PY) app.py

test: $(VENV)/.dev-installed ## lint and the import rules, then the whole test suite (slow tests included)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.run-installed ## every benchmark under bench/; ends with one BENCH line per target
	$(PY) -m bench

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

registry: $(VENV)/.run-installed ## regenerate zoo/data/registry.json from timm and ../shared/data
	$(PY) -m zoo.registry_build

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "ResNet Zoo needs Python 3.11+; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-installed: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $@ $(VENV)/.run-installed

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
