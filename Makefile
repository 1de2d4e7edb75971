# The two commands: `make run` serves a registry on 127.0.0.1:5000 with data in ./data;
# `make test` installs what the tests need and runs every check CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck unit bench fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/cargobay serve --listen 127.0.0.1:5000 --data-dir ./data

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/ruff format --check src tests bench fuzz

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy

test: $(VENV)/.test-installed
	bash scripts/install-test-tools.sh
	$(MAKE) --no-print-directory lint typecheck
	$(BIN)/pytest -ra

# BENCH_ARGS: e.g. --quick, --cases 'push-*', --write (updates docs/performance.md)
bench: $(VENV)/.test-installed
	bash scripts/install-test-tools.sh bench
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# A longer, coverage-guided search than make test's fixed runs; FUZZ_SECONDS per target.
# Findings (crash-* files) and the grown corpora stay in .fuzz/ (not committed).
FUZZ_SECONDS ?= 300
fuzz: $(VENV)/.test-installed
	mkdir -p .fuzz/parsers .fuzz/http
	$(BIN)/python fuzz/fuzz_parsers.py -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -artifact_prefix=.fuzz/ .fuzz/parsers
	$(BIN)/python fuzz/fuzz_http.py -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -artifact_prefix=.fuzz/ .fuzz/http

clean:
	rm -rf $(VENV) build *.egg-info
