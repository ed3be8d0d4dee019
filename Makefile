# Lookalike: `make demo` runs the pipeline on a generated catalog; `make test` runs lint + tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: venv demo test lint fuzz bench serve clean

$(VENV)/.installed: requirements.txt core/pyproject.toml client/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# Browser tests need Debian's chromium + chromium-driver: installed here when missing (root).
test: venv lint
	scripts/ensure-chromium.sh
	$(VENV)/bin/pytest

# Schema-driven API fuzzing (schemathesis) against a live gunicorn on a throwaway catalog
# and database; fails on any finding. FUZZ_ARGS="--max-examples 200" digs deeper.
fuzz: venv
	$(PY) scripts/fuzz_api.py $(FUZZ_ARGS)

bench: venv
	$(PY) bench/run_all.py $(BENCHMARKS)

# `make serve HOST=0.0.0.0 PORT=8080` to listen elsewhere (loopback:8000 by default).
HOST ?= 127.0.0.1
PORT ?= 8000

serve: venv
	$(PY) manage.py migrate --noinput
	$(VENV)/bin/gunicorn -c config/gunicorn.py config.wsgi --bind $(HOST):$(PORT)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache
