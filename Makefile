# facestack: two commands. `make run` serves the API on 127.0.0.1; `make test` runs every test.
PYTHON ?= python3.11
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint models bench bench-gateway bench-milvus eval loadtest soak clean

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

# MILVUS=server: a real Milvus 2.3.5 server (from the milvus wheel) instead of the Milvus Lite file
run: models
	@$(PY) -m gateway.local $(if $(filter server,$(MILVUS)),--milvus-server)

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

# identify at 100k and 1M templates on the real Milvus server (docs/benchmarks.md; the 1M fill takes a while)
bench-milvus: models
	@$(PY) -m gateway.bench_milvus $(BENCH_MILVUS_ARGS)

clean:
	rm -rf $(VENV) .cache .data .pytest_cache
