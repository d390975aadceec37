"""GET /healthz (alive), /readyz (Triton's pipeline ready and Milvus reachable), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.common import services
from gateway.errors import ApiError

router = APIRouter(tags=["operations"])
NO_KEY = {"security": []}  # the schema's global ApiKey requirement does not apply to these


@router.get("/healthz", summary="Liveness: the process serves requests", openapi_extra=NO_KEY)
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: Triton's face_pipeline is ready and Milvus answers",
            responses={503: {"description": "problem+json, code: backend_unavailable"}}, openapi_extra=NO_KEY)
async def readyz(request: Request) -> dict:
    svc = services(request)
    triton, milvus = await asyncio.gather(svc.triton.ready(), svc.store.ping())
    if not (triton and milvus):
        down = [name for name, ok in (("triton", triton), ("milvus", milvus)) if not ok]
        raise ApiError("backend_unavailable", f"not ready: {', '.join(down)} unavailable",
                       retry_after=svc.settings.gateway_backend_retry_after_s, triton=triton, milvus=milvus)
    return {"status": "ready", "triton": True, "milvus": True}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, openapi_extra=NO_KEY)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(services(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
