# Two commands set everything up on a fresh machine: `make pipeline` and `make test` (see README.md).
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export ESVR_MIRROR ?= $(abspath ../shared/data)
export DVC_NO_ANALYTICS := 1

.PHONY: setup pipeline test test-fast lint bench mlflow-ui clean docker-check gpu-smoke

# Idempotent: re-installs only when pyproject.toml changed. torch first, from the local CPU wheel (the == pin
# keeps pip from resolving a multi-GB CUDA build), then the project with its dev extra.
setup: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# The whole DAG on the active profile (tiny by default), offline, through the Prefect pipeline flow.
pipeline: setup
	@test -d .dvc || (echo "not a DVC repo: run from a git clone of esvr" && exit 1)
	$(BIN)/esvr config check
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/esvr pipeline

test: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q --durations=15

test-fast: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check tasks flows tests benchmarks
	$(BIN)/mypy tasks flows

bench: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m benchmarks

# Opens on the runs tables: the links printed first carry MLflow 3's model-training view (docs/operations.md).
mlflow-ui: setup
	-$(BIN)/esvr mlflow links
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --workers 1 \
	  --backend-store-uri sqlite:///$(abspath mlruns)/mlflow.db --default-artifact-root $(abspath mlruns)/artifacts

# Static checks only: no Docker engine is needed (or claimed).
docker-check: setup
	$(BIN)/hadolint --failure-threshold error docker/Dockerfile docker/Dockerfile.gpu
	ESVR_PSEUDONYM_KEY=check POSTGRES_PASSWORD=check "$$($(BIN)/python -c 'import compose,pathlib;print(pathlib.Path(compose.__file__).parent/"docker-compose")')" -f docker-compose.yml config -q

# A few steps of every GPU stage (LoRA SFT, DPO, vLLM serving) on the GPU worker; tokens/s next to TRL's defaults.
gpu-smoke: setup
	PATH=$(abspath $(BIN)):$$PATH PYTHON=$(abspath $(BIN))/python scripts/gpu_smoke.sh

clean:
	rm -rf .prefect .pytest_cache .ruff_cache .mypy_cache
