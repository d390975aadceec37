"""The routes' dependencies: the app's settings and services and the request's id, as `Annotated` aliases (the
FastAPI full-stack template's shape). A route names what it uses (`store: StoreDep`); this is the one way routes
reach them. The services are built once in the app's lifespan (gateway/app.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from facestack.settings import Settings
from gateway.audit import AuditLog
from gateway.challenges import Challenges
from gateway.faces import QualityGate
from gateway.gallery_sizes import GallerySizes
from gateway.metrics import Metrics
from gateway.operating_points import OperatingPoints
from gateway.store import Store
from gateway.triton_client import TritonPipeline


@dataclass
class Services:
    settings: Settings
    triton: TritonPipeline
    store: Store
    audit: AuditLog
    metrics: Metrics
    points: OperatingPoints
    gate: QualityGate
    sizes: GallerySizes
    challenges: Challenges


def _service(name: str) -> Any:
    """Depends() on one attribute of the app's Services."""
    async def dependency(request: Request) -> Any:  # async: a sync dependency costs each request a thread hop
        return getattr(request.app.state.services, name)

    dependency.__name__ = name
    return Depends(dependency)


async def _request_id(request: Request) -> str:
    return request.state.request_id


SettingsDep = Annotated[Settings, _service("settings")]
TritonDep = Annotated[TritonPipeline, _service("triton")]
StoreDep = Annotated[Store, _service("store")]
AuditDep = Annotated[AuditLog, _service("audit")]
MetricsDep = Annotated[Metrics, _service("metrics")]
PointsDep = Annotated[OperatingPoints, _service("points")]
GateDep = Annotated[QualityGate, _service("gate")]
SizesDep = Annotated[GallerySizes, _service("sizes")]
ChallengesDep = Annotated[Challenges, _service("challenges")]
RequestIdDep = Annotated[str, Depends(_request_id)]
