# Presto companion: `make repro` runs the whole pipeline; `make test` runs the tests.
# Both start from nothing: they create .venv, install the pinned requirements and the system packages.
PY      ?= python3.11
VENV    := .venv
BIN     := $(abspath $(VENV))/bin
PROFILE ?=
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: setup sysdeps repro test test-fast lab site profile clean

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name presto --display-name "Python (presto)" >/dev/null
	touch $@

sysdeps:
	@bash scripts/install_system_deps.sh

setup: $(VENV)/.installed sysdeps

## Run every stage (notebooks via papermill) for the active profile in params.yaml.
repro: setup
	$(if $(PROFILE),$(BIN)/python -m presto_lib.config use $(PROFILE),)
	mkdir -p data && date -u +%FT%TZ > data/.repro_started    # pipeline_times: what this run made
	$(BIN)/dvc repro

## Unit tests + the whole pipeline at the smoke profile (in a temporary copy).
test: setup
	$(BIN)/python -m pytest

## Unit tests only.
test-fast: setup
	$(BIN)/python -m pytest -m "not pipeline"

## Switch params.yaml to a profile: make profile PROFILE=smoke|cpu|gpu|paper
profile: setup
	$(BIN)/python -m presto_lib.config use $(PROFILE)

lab: setup
	$(BIN)/jupyter lab notebooks/

## HTML of every executed notebook in results/notebooks/ plus an index page, in results/site/ (offline, not
## committed: open results/site/index.html). The notebook stages write results/notebooks/ during `dvc repro`.
site: setup
	$(BIN)/python -m presto_lib.executed site results/notebooks results/site

clean:
	rm -rf $(VENV) .pytest_cache
