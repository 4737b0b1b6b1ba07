# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo chain lint browser test test-unit test-integration test-dags test-stack airflow stack \
	stack-down serve down clean

install: $(STAMP)

# pip (not uv): this machine's pip config finds the local CPU wheel of torch 2.13.0. pip compiles
# what it installs one file at a time (about 85 s of a fresh install on 2 cores); compileall on
# every core does the same in half that. Like pip, it skips the files that do not compile (torch
# ships a Python 3.12-only test helper), hence -qq and the ignored status.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt -e '.[dev,stack]' 2>&1 \
		| { grep -v "is ignored: it is neither a file nor a directory" || true; }
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $(STAMP)

# The main job through Airflow itself (dag.test of the three DAGs), then the lookup for user 1.
demo: install
	$(BIN)/python scripts/demo.py --user 1 $(DEMO_ARGS)

# The same chain without Airflow, straight through recsys.pipelines.tasks.
chain: install
	$(BIN)/recsys run
	$(BIN)/recsys lookup --user 1

# Airflow UI on http://127.0.0.1:8081 (RECSYS_AIRFLOW_PORT); Ctrl-C stops it.
airflow: install
	bash scripts/airflow.sh

# The production configuration without Docker (scripts/stack.py): Postgres, password-protected
# Redis, MLflow server with basic auth, Airflow with the CeleryExecutor and two Celery workers, all on
# 127.0.0.1. Secrets: .env (created from .env.example on the first start, mode 0600), which
# docker-compose.yaml reads too. Ctrl-C here, or `make stack-down` elsewhere, stops all of it.
stack: install
	$(BIN)/python scripts/stack.py up

stack-down:
	$(BIN)/python scripts/stack.py down

# Debian's chromium for the Airflow UI test (tests/dags/test_airflow_ui.py); installed as root with
# apt-get when missing. RECSYS_CHROMIUM names another binary.
CHROMIUM ?= $(or $(RECSYS_CHROMIUM),/usr/bin/chromium)
browser:
	@test -x $(CHROMIUM) || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null \
			|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				--no-install-recommends chromium >/dev/null; }; \
		else echo "need chromium at $(CHROMIUM): apt-get install chromium, or set RECSYS_CHROMIUM"; exit 1; fi; }

# The pre-commit checks (.pre-commit-config.yaml) without changing anything: lint, format, types.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two pytest-xdist workers, a file at a time, the stack test first (tests/conftest.py says why).
test: install lint browser
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-unit: install
	$(BIN)/python -m pytest -q -m unit

test-integration: install
	$(BIN)/python -m pytest -q -m integration

test-dags: install browser
	$(BIN)/python -m pytest -q -m dags

test-stack: install
	$(BIN)/python -m pytest -q -m stack

serve: install
	$(BIN)/recsys serve

down:
	$(BIN)/recsys down

clean: down
	rm -rf .recsys feature_repo/data
