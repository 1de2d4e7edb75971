# The two commands: `make run` serves a registry on 127.0.0.1:5000 with data in ./data;
# `make test` installs what the tests need and runs every check CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck unit bench soak fuzz lock audit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# requirements.lock pins every runtime dependency (make lock); make run and make test install
# exactly those versions, so CI tests what operators deploy.
$(VENV)/.run-installed: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install -q -c requirements.lock -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[test]'
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

# 10 minutes of mixed load (pushes, pulls, tag moves, deletes) on one server: no errors, no memory
# growth, a stable p99 (docs/soak.md). SOAK_ARGS: e.g. --backend s3, --duration 3600, --write.
soak: $(VENV)/.test-installed
	bash scripts/install-test-tools.sh
	$(BIN)/python -m bench.soak --duration 600 $(SOAK_ARGS)

# A longer, coverage-guided search than make test's fixed runs; FUZZ_SECONDS per target.
# Findings (crash-* files) and the grown corpora stay in .fuzz/ (not committed).
FUZZ_SECONDS ?= 300
fuzz: $(VENV)/.test-installed
	mkdir -p .fuzz/parsers .fuzz/http
	$(BIN)/python fuzz/fuzz_parsers.py -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -artifact_prefix=.fuzz/ .fuzz/parsers
	$(BIN)/python fuzz/fuzz_http.py -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -artifact_prefix=.fuzz/ .fuzz/http

# Re-resolve requirements.lock from pyproject.toml (after changing a dependency).
# Both use a virtualenv of their own (.tools), away from the one the tests run in.
lock:
	test -x .tools/bin/python || $(PYTHON) -m venv .tools
	.tools/bin/python -m pip install -q pip-tools
	.tools/bin/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock pyproject.toml

# Known vulnerabilities in the locked dependencies (pip-audit; needs the OSV or PyPI JSON API).
audit:
	test -x .tools/bin/python || $(PYTHON) -m venv .tools
	.tools/bin/python -m pip install -q pip-audit
	.tools/bin/pip-audit --strict --no-deps --disable-pip -r requirements.lock

clean:
	rm -rf $(VENV) .tools build *.egg-info
