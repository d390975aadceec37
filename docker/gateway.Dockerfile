# syntax=docker/dockerfile:1.7
# facestack gateway: the FastAPI service (`python -m gateway`), listening on $PORT (8000).
#
#   docker build -f docker/gateway.Dockerfile -t facestack-gateway:0.1.0 .     # context: the repository root
#
# Not built by the checks in this repository (no Docker engine on the build machines): tests/helm only checks
# this file statically. Pin the base image by digest in your registry mirror for reproducible builds.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The source lives at /opt/facestack and is installed in editable mode, so paths the code finds relative to
# the repository root (the .cache of the photos below) resolve. The gateway needs two packages only: gateway/
# and facestack/ (settings, the pipeline contract, and facestack/thresholds.json as package data: the
# operating points the gateway falls back on without a model repository). One pyproject.toml pins every
# dependency (numpy 1.26.4, ...).
WORKDIR /opt/facestack
COPY pyproject.toml ./
COPY facestack/ facestack/
COPY gateway/ gateway/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile -e . \
 && /opt/venv/bin/python -c "import gateway.app, facestack, tritonclient.grpc, pymilvus"
# The two registry photos the `helm test` pod sends to POST /v1/verify (two photos of one person), fetched with
# the project's pinned, sha256-checked fetcher from PyPI face-recognition==1.3.0 (sdist: pip needs its build
# isolation, i.e. network, here). Photos are never committed to the repository. Only the extracted files stay
# in the image (read-only at run time: facestack.artifacts.photo() just re-checks their sha256); the archive goes.
ENV FACESTACK_CACHE_DIR=/opt/facestack/.cache
RUN /opt/venv/bin/python -c "from facestack.artifacts import photo; [photo(n) for n in ('obama.jpg', 'obama2.jpg')]" \
 && rm -rf /opt/facestack/.cache/downloads

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 1000 facestack \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin facestack \
 && install -d -o 1000 -g 1000 /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/facestack /opt/facestack
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8000 \
    FACESTACK_DATA_DIR=/data \
    FACESTACK_CACHE_DIR=/opt/facestack/.cache
# Runs with a read-only root filesystem in Kubernetes: /tmp and /data are volumes there.
USER 1000:1000
WORKDIR /opt/facestack
EXPOSE 8000
CMD ["python", "-m", "gateway"]
