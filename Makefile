# facestack: two commands. `make run` serves the API on 127.0.0.1; `make test` runs every test.
PYTHON ?= python3.11
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint models bench bench-gateway eval loadtest soak clean

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

# Load test with SLO gates (docs/loadtest.md). With the default URL it uses `make run`'s stack when one
# answers, else starts a private local stack for the run.
URL ?= http://127.0.0.1:$(or $(PORT),8000)
API_KEY ?=
DURATION ?= 60s
USERS ?= 5
SHAPE ?= steady
P99_MS ?= 500
MAX_ERROR_RATE ?= 0.001
loadtest: models
	@LOADTEST_API_KEY='$(API_KEY)' $(PY) -m loadtest.run --url '$(URL)' --duration $(DURATION) --users $(USERS) \
		--shape $(SHAPE) --p99-ms $(P99_MS) --max-error-rate $(MAX_ERROR_RATE) $(LOADTEST_ARGS)

soak: models  ## minutes under Locust at ~70 % of capacity: errors, RSS growth, leaks (docs/reliability.md)
	@$(PY) -m tests.reliability.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .cache .data .pytest_cache
