# facestack: two commands. `make run` serves the API on 127.0.0.1; `make test` runs every test.
PYTHON ?= python3.11
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint models bench bench-gateway eval clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (facestack needs Python 3.11)"; exit 1; }
	@echo "==> creating virtual environment in $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@echo "==> installing pinned dependencies"
	@$(PY) -m pip install -q -e '.[dev]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	@$(PY) -c 'import facestack, cv2, onnxruntime, tritonclient, pymilvus' || { echo "error: dependency install failed"; exit 1; }
	@touch $(STAMP)

models: $(STAMP)
	@$(PY) -m export --if-missing

run: models
	@$(PY) -m gateway.local

test: models
	@$(PY) -m ruff check .
	@$(PY) -m pytest -q -rs

lint: $(STAMP)
	@$(PY) -m ruff check .

bench: models
	@$(PY) -m facestack.bench.pipeline

clean:
	rm -rf $(VENV) .cache .data .pytest_cache
