# facestack: two commands. `make run` serves the API on 127.0.0.1; `make test` runs every test.
PYTHON ?= python3.11
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint models peer bench bench-gateway bench-milvus eval loadtest soak clean

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
	@$(PY) -m localstack.run $(if $(filter server,$(MILVUS)),--milvus-server)

test: models
	@$(PY) -m ruff check .
	@$(PY) -m pytest -q -rs

lint: $(STAMP)
	@$(PY) -m ruff check .

# face_recognition 1.3.0, the peer `make bench` compares against (not a dependency of facestack). Its
# metadata asks for the dlib sdist (a C++ compile); the `peer` extra brings prebuilt dlib-bin and the models,
# and face_recognition itself goes in without its dependencies.
PEER_STAMP := $(VENV)/.peer-installed
FACE_RECOGNITION := face-recognition==1.3.0
$(PEER_STAMP): $(STAMP)
	@echo "==> installing face_recognition 1.3.0 (the benchmark's peer)"
	@$(PY) -m pip install -q -e '.[dev,peer]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	@$(PY) -m pip install -q --no-deps '$(FACE_RECOGNITION)' 2>&1 | { grep -v '^WARNING: Location' || true; }
	@$(PY) -c 'import face_recognition' || { echo "error: face_recognition did not install"; exit 1; }
	@touch $(PEER_STAMP)
peer: $(PEER_STAMP)

# Pipeline benchmark (docs/benchmarks.md): Triton vs in process, verify end to end, face_recognition per core.
LFW ?= ../shared/datasets/lfw-view1
BENCH_ARGS ?=
bench: models peer
	@$(PY) -m benchmarks.pipeline --lfw '$(LFW)' $(BENCH_ARGS)

bench-gateway: models
	@$(PY) -m benchmarks.gateway

# LFW-layout accuracy through the real pipeline, with threshold calibration (docs/accuracy.md).
eval: models
	@$(PY) -m facestack.accuracy --data '$(LFW)' --calibrate

# Load test with SLO gates (docs/loadtest.md). With the default URL it uses `make run`'s stack when one
# answers, else starts a private local stack for the run.
URL ?= http://127.0.0.1:$(or $(PORT),8000)
API_KEY ?=
DURATION ?= 60s
USERS ?= 5
SHAPE ?= steady
P99_MS ?= 500
# In percent, as loadtest/run.py reads it: 0.1 = one failed request in a thousand.
MAX_ERROR_RATE ?= 0.1
loadtest: models
	@LOADTEST_API_KEY='$(API_KEY)' $(PY) -m loadtest.run --url '$(URL)' --duration $(DURATION) --users $(USERS) \
		--shape $(SHAPE) --p99-ms $(P99_MS) --max-error-rate $(MAX_ERROR_RATE) $(LOADTEST_ARGS)

soak: models  ## minutes under Locust at ~70 % of capacity: errors, RSS growth, leaks (docs/reliability.md)
	@$(PY) -m loadtest.soak $(SOAK_ARGS)

# identify at 100k and 1M templates on the real Milvus server (docs/benchmarks.md; the 1M fill takes a while)
bench-milvus: models
	@$(PY) -m benchmarks.milvus $(BENCH_MILVUS_ARGS)

clean:
	rm -rf $(VENV) .cache .data .pytest_cache
