# One entry point for developers and CI. Every target installs what it needs itself.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck check-infra bench run clean

$(STAMP): requirements.txt requirements-dev.txt package.json package-lock.json
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install
	$(PY) -m mypy

## The README's test command: lint, types, every test suite and the infrastructure checks.
test: lint typecheck check-infra
	$(PY) -m pytest

check-infra: install
	bash scripts/check-infra.sh

## Benchmarks (not part of `make test`, which smoke-runs them with tiny sizes): tables + JSON.
bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .venv-checkov node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis

## The whole app locally with no Azure tenant: Azurite, the Graph emulator and the function host.
run: install
	$(PY) -m devtools.run
