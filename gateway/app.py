"""The FastAPI application: `python -m uvicorn gateway.app:app` (port 8000, settings from the environment).

`create_app(settings)` builds one with explicit settings (tests, `localstack.run`, the benchmark).
Connections open in the lifespan, so importing this module touches nothing. Graceful shutdown: uvicorn
stops accepting, lets in-flight requests finish, then the lifespan closes Triton's channel and Milvus
(Milvus Lite syncs its files at close).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from facestack.settings import Settings, get_settings
from gateway import errors
from gateway.api import galleries, health, liveness, recognition
from gateway.api.common import EXTRA_SCHEMAS
from gateway.api.deps import Services
from gateway.audit import AuditLog
from gateway.auth import LiveKeys, check_env_key
from gateway.challenges import Challenges
from gateway.faces import QualityGate
from gateway.gallery_sizes import GallerySizes
from gateway.idempotency import Idempotency
from gateway.metrics import Metrics
from gateway.middleware import BodyLimits, GatewayMiddleware
from gateway.operating_points import OperatingPoints
from gateway.ratelimit import RateLimiter
from gateway.store import Store
from gateway.triton_client import TritonPipeline

log = logging.getLogger("gateway")
VERSION = "1.0.0"


def milvus_uri(settings: Settings) -> str:
    return settings.milvus_uri or str(Path(settings.data_dir) / "milvus.db")


def audit_target(settings: Settings) -> str:
    return settings.audit_log or str(Path(settings.data_dir) / "audit.jsonl")


def _configure_logging(level: str) -> None:
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level.upper())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    _configure_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        env_key = settings.api_key.get_secret_value() if settings.api_key else None
        if env_key:
            check_env_key(env_key)
        keys = LiveKeys(api_key=env_key, keys_file=settings.api_keys_file,
                        check_interval=settings.gateway_keys_reload_s)
        if not len(keys):
            raise RuntimeError("no API keys configured: set FACESTACK_API_KEY or FACESTACK_API_KEYS_FILE")
        triton = TritonPipeline(settings.triton_grpc_url, timeout=settings.gateway_triton_timeout_s,
                                concurrency=settings.gateway_triton_concurrency, queue=settings.gateway_triton_queue,
                                retry_after=settings.gateway_retry_after_s,
                                backend_retry_after=settings.gateway_backend_retry_after_s, metrics=metrics,
                                channel_max_age=settings.gateway_triton_channel_max_age_s)
        store = Store(milvus_uri(settings), settings.milvus_token.get_secret_value(),
                      timeout=settings.gateway_milvus_timeout_s, workers=settings.gateway_milvus_workers,
                      metrics=metrics, retry_after=settings.gateway_backend_retry_after_s,
                      queue=settings.gateway_milvus_queue,
                      bounded_staleness_s=settings.milvus_bounded_staleness_s, index=settings.milvus_index)
        await triton.start()
        await store.start()
        audit = AuditLog(audit_target(settings), retry_after=settings.gateway_backend_retry_after_s)
        app.state.keys = keys
        app.state.idempotency = Idempotency(store, settings.gateway_idempotency_ttl_s)
        app.state.services = Services(  # what routes reach through gateway/api/deps.py
            settings=settings, triton=triton, store=store, audit=audit, metrics=metrics,
            points=OperatingPoints(Path(settings.model_repository)),
            gate=QualityGate.from_settings(settings), sizes=GallerySizes(store),
            challenges=Challenges(store, deadline_s=settings.gateway_liveness_deadline_s,
                                  result_ttl_s=settings.gateway_liveness_result_ttl_s))
        log.info("gateway ready: triton %s, milvus %s, %d API key(s)", settings.triton_grpc_url,
                 "lite" if store.lite else store.uri, len(keys))
        try:
            yield
        finally:
            await triton.close()
            await asyncio.to_thread(store.close)
            audit.close()
            log.info("gateway stopped")

    app = FastAPI(
        title="facestack", version=VERSION, lifespan=lifespan,
        summary="Face verification (1:1) and identification (1:N) on Triton and Milvus",
        description="Authenticate with the `X-API-Key` header. Errors are `application/problem+json` with a "
                    "stable `code` (see docs/gateway.md).",
    )
    app.state.settings = settings
    app.state.limiter = RateLimiter(settings.gateway_rate_limit_rps, settings.gateway_rate_limit_burst)
    errors.install(app)
    app.add_middleware(GatewayMiddleware, metrics=metrics, body_limits=BodyLimits.from_settings(settings))
    app.include_router(recognition.router)
    app.include_router(galleries.router)
    app.include_router(liveness.router)
    app.include_router(health.router)
    # The web console (docs/console.md): static files from the package, no key needed to load them.
    app.mount("/console", StaticFiles(directory=Path(__file__).parent / "console", html=True), name="console")

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                                 description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in EXTRA_SCHEMAS:  # the JSON bodies of the image endpoints (parsed by hand)
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(definition.pop("$defs", {}))
                components[model.__name__] = definition
            schema["components"]["securitySchemes"] = {"ApiKey": {"type": "apiKey", "in": "header",
                                                                  "name": "X-API-Key"}}
            schema["security"] = [{"ApiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


app = create_app()
