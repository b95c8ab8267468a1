# Two commands set up everything on a fresh machine: `make train` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# An absolute SQLite URI: a relative one resolves against each process's working directory.
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
ARGS ?=

.PHONY: venv train test test-fast lint format ui data bench clean

$(BIN)/.installed: requirements.lock requirements-server.txt requirements-dev.txt
	command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed ## create .venv from the exact pins

train: venv ## run the whole pipeline on the shipped data (ARGS="-P split=random" to pass more)
# The store first: MLflow's own failure is a traceback, and concurrent first runs race.
	@case "$$MLFLOW_TRACKING_URI" in \
	  http://* | https://*) $(BIN)/python -m pystock_training.preflight ;; \
	  *) $(BIN)/python -m pystock_training.store_check ;; \
	esac
	PATH="$(CURDIR)/$(BIN):$$PATH" mlflow run . --env-manager local $(ARGS)

test: venv lint ## lint, then every test (the slow end-to-end ones included)
	$(BIN)/pytest $(ARGS)

test-fast: venv ## unit tests only (pytest -m "not slow"): under a minute, no lint
	$(BIN)/pytest -m "not slow" $(ARGS)

lint: venv ## ruff lint and format check, hadolint on the Dockerfile, compose-lint on docker-compose.yml
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/compose-lint check --no-env docker-compose.yml

format: venv ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

ui: venv ## browse runs and models at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)"

data: venv ## rebuild data/training/data.csv from the S&P 500 prices bundled with `arch`
	$(BIN)/python scripts/make_dataset.py --arch-sp500 --output data/training/data.csv

bench: venv ## scale benchmark: pipeline vs naive reference, prints the table
	$(BIN)/python benchmarks/scale.py $(ARGS)

conda.yaml: requirements.lock ## regenerate conda.yaml from the lock
	$(BIN)/python scripts/sync_conda_yaml.py

clean: ## remove the venv and local tracking data
	rm -rf $(VENV) mlflow.db mlruns mlartifacts .pytest_cache .ruff_cache
