# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV_VERSION := 0.13.9

# No telemetry, no connection leaves loopback.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_TASKS_DEFAULT_NO_CACHE := true

.PHONY: install demo test test-all lint typecheck pytest bench lock clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

demo: install
	PREFECT_HOME=$(CURDIR)/data/.prefect $(BIN)/talktime demo --out data/output

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

# `make test` and the tests marked `slow` (left out of the default run by pyproject's addopts): every
# kill point of the crash tests, the other variants of a few costly parametrizations. docs/development.md.
test-all: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -m "slow or not slow"

# The product through its command line against a real Prefect server, next to references; prints a
# Markdown table, asserts nothing. Smoke run: make bench BENCH_ARGS="--sizes 500 --skip-dlt"
bench: install
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) data/output data/.prefect .pytest_cache .mypy_cache .ruff_cache
