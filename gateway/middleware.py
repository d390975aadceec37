"""One pure-ASGI middleware: request id, request body limits, Server-Timing, Prometheus request metrics.

Pure ASGI (not BaseHTTPMiddleware) because it sits on every request and the overhead budget is 5 ms.

Body limits are per route: an image route may carry its images (base64-inflated) plus the form fields;
every other route (galleries, subjects: small JSON) gets `gateway_max_body_bytes`. Without that, a
60 MB JSON body to `POST /v1/galleries` was parsed on the event loop (8 s stall, +350 MB RSS kept).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facestack.settings import Settings
from gateway import timing
from gateway.errors import CODES, PROBLEM_JSON, ApiError
from gateway.metrics import Metrics

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# POST routes that carry images -> images per request (None: the bulk enrolment limit).
_IMAGE_ROUTES: tuple[tuple[re.Pattern[str], int | None], ...] = (
    (re.compile(r"^/v1/(detect|identify)$"), 1),
    (re.compile(r"^/v1/verify$"), 2),
    (re.compile(r"^/v1/galleries/[^/]+/subjects/[^/]+/faces$"), None),
    (re.compile(r"^/v1/liveness/challenges/[^/]+/frames$"), None),
)


@dataclass(frozen=True)
class BodyLimits:
    image_bytes: int  # one image
    images_per_request: int  # bulk enrolment
    other: int  # routes without images

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        return cls(settings.gateway_max_image_bytes, settings.gateway_max_images_per_request,
                   settings.gateway_max_body_bytes)

    def for_request(self, method: str, path: str) -> int:
        if method == "POST":
            for pattern, images in _IMAGE_ROUTES:
                if pattern.match(path):
                    # Every image at the byte limit, base64-inflated, plus the form fields.
                    return (images or self.images_per_request) * self.image_bytes * 4 // 3 + (1 << 20)
        return self.other


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, body_limits: BodyLimits) -> None:
        self.app = app
        self.metrics = metrics
        self.body_limits = body_limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        intervals = timing.begin()
        status = 500
        max_body = self.body_limits.for_request(scope["method"], scope["path"])

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = [(b"x-request-id", request_id.encode()),
                         (b"server-timing", timing.header(intervals, time.perf_counter() - started).encode())]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise ApiError("image_too_large", f"request body above {max_body} bytes")
            return message

        try:
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > max_body:
                await self._refuse(send_wrapper, request_id, scope["path"], int(length), max_body)
                return
            await self.app(scope, receive_limited, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(label, scope["method"], str(status)).inc()
            self.metrics.latency.labels(label, scope["method"]).observe(elapsed)

    async def _refuse(self, send: Send, request_id: str, path: str, length: int, max_body: int) -> None:
        # Refused from Content-Length alone: the body is never read.
        status, title = CODES["image_too_large"]
        body = json.dumps({"type": "https://facestack.dev/problems/image_too_large", "title": title, "status": status,
                           "code": "image_too_large", "detail": f"request body of {length} bytes is above the limit "
                           f"of {max_body}", "instance": path, "request_id": request_id}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
