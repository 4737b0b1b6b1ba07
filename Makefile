# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo chain lint test test-unit test-integration test-dags airflow serve down clean

install: $(STAMP)

# pip (not uv): this machine's pip config finds the local CPU wheel of torch 2.13.0.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]' 2>&1 \
		| { grep -v "is ignored: it is neither a file nor a directory" || true; }
	touch $(STAMP)

# The main job through Airflow itself (dag.test of the three DAGs), then the lookup for user 1.
demo: install
	$(BIN)/python scripts/demo.py --user 1 $(DEMO_ARGS)

# The same chain without Airflow, straight through recsys.pipelines.
chain: install
	$(BIN)/recsys run
	$(BIN)/recsys lookup --user 1

# Airflow UI on http://127.0.0.1:8081 (RECSYS_AIRFLOW_PORT); Ctrl-C stops it.
airflow: install
	bash scripts/airflow.sh

# The pre-commit checks (.pre-commit-config.yaml) without changing anything: lint, format, types.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install lint
	$(BIN)/python -m pytest -q

test-unit: install
	$(BIN)/python -m pytest -q -m unit

test-integration: install
	$(BIN)/python -m pytest -q -m integration

test-dags: install
	$(BIN)/python -m pytest -q -m dags

serve: install
	$(BIN)/recsys serve

down:
	$(BIN)/recsys down

clean: down
	rm -rf .recsys feature_repo/data
