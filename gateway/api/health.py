"""GET /healthz (alive), /readyz (can serve: Triton's pipeline ready), /dependencies (Triton and Milvus),
/metrics (Prometheus).

Readiness does not depend on Milvus: verify and detect need only Triton, and a Milvus blip would otherwise
take every gateway replica out of its Service at once (the routes that need Milvus answer 503 with Retry-After
meanwhile). /readyz still reports Milvus, and /dependencies fails when either is down, for monitoring.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api import deps
from gateway.errors import ApiError
from gateway.store import Store
from gateway.triton_client import TritonPipeline

router = APIRouter(tags=["operations"])
NO_KEY = {"security": []}  # the schema's global ApiKey requirement does not apply to these


@router.get("/healthz", summary="Liveness: the process serves requests", openapi_extra=NO_KEY)
async def healthz() -> dict:
    return {"status": "ok"}


async def _backends(triton: TritonPipeline, store: Store) -> dict[str, bool]:
    triton_ok, milvus_ok = await asyncio.gather(triton.ready(), store.ping())
    return {"triton": triton_ok, "milvus": milvus_ok}


@router.get("/readyz", summary="Readiness: Triton's face_pipeline is ready (Milvus is reported, not required)",
            responses={503: {"description": "problem+json, code: backend_unavailable"}}, openapi_extra=NO_KEY)
async def readyz(settings: deps.SettingsDep, triton: deps.TritonDep, store: deps.StoreDep) -> dict:
    state = await _backends(triton, store)
    if not state["triton"]:
        raise ApiError("backend_unavailable", "not ready: triton unavailable",
                       retry_after=settings.gateway_backend_retry_after_s, **state)
    return {"status": "ready" if state["milvus"] else "degraded", **state}


@router.get("/dependencies", summary="Every backend answers: Triton's face_pipeline and Milvus",
            responses={503: {"description": "problem+json, code: backend_unavailable"}}, openapi_extra=NO_KEY)
async def dependencies(settings: deps.SettingsDep, triton: deps.TritonDep, store: deps.StoreDep) -> dict:
    state = await _backends(triton, store)
    down = [name for name, ok in state.items() if not ok]
    if down:
        raise ApiError("backend_unavailable", f"unavailable: {', '.join(down)}",
                       retry_after=settings.gateway_backend_retry_after_s, **state)
    return {"status": "ok", **state}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, openapi_extra=NO_KEY)
async def metrics(metrics: deps.MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
