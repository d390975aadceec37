"""RFC 9457 problem details with stable codes. Every error the API returns goes through here.

Clients branch on `code`, never on `title` or `detail` (those are for people and may change).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

log = logging.getLogger("gateway")

PROBLEM_JSON = "application/problem+json"

# code -> (HTTP status, title). The public contract: codes are only ever added.
CODES: dict[str, tuple[int, str]] = {
    "invalid_image": (400, "The image could not be decoded"),
    "unauthorized": (401, "Missing or unknown API key"),
    "forbidden": (403, "The API key lacks the scope for this operation"),
    "gallery_not_found": (404, "No such gallery"),
    "subject_not_found": (404, "No such subject"),
    "face_not_found": (404, "No such face"),
    "not_found": (404, "No such resource"),
    "challenge_not_found": (404, "No such liveness challenge (or not with this nonce)"),
    "method_not_allowed": (405, "Method not allowed"),
    "conflict": (409, "The resource already exists or is in a conflicting state"),
    "challenge_used": (409, "The liveness challenge was already used; request a new one"),
    "idempotency_conflict": (409, "The Idempotency-Key was already used with a different request"),
    "image_too_large": (413, "The image exceeds the byte or pixel limit"),
    "unsupported_media_type": (415, "Unsupported media type"),
    "no_face": (422, "No face was found in the image"),
    "multiple_faces": (422, "More than one face was found and the policy is 'reject'"),
    "face_too_small": (422, "The face is smaller than the minimum size"),
    "low_quality": (422, "The face is too blurred, dark, bright or turned away"),
    "validation_error": (422, "The request is not valid"),
    "liveness_failed": (422, "The liveness check did not pass"),
    "rate_limited": (429, "Too many requests in flight; retry later"),
    "internal_error": (500, "Internal error"),
    "backend_unavailable": (503, "A backend (Triton or Milvus) is unavailable"),
    "audit_unavailable": (503, "The audit log cannot be written"),
    "timeout": (504, "A backend did not answer in time"),
}
# A backend's trouble rather than the request's: never blamed on a request field.
BACKEND = ("rate_limited", "backend_unavailable", "timeout")


class ApiError(Exception):
    """An error with a stable code; raised anywhere, rendered as problem+json by the handler below."""

    def __init__(self, code: str, detail: str = "", *, retry_after: int | None = None, **extra: Any) -> None:
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.status = CODES[code][0]
        self.detail = detail or CODES[code][1]
        self.retry_after = retry_after
        self.extra = extra


def problem(code: str, detail: str, request: Request | None, *, retry_after: int | None = None,
            **extra: Any) -> JSONResponse:
    status, title = CODES[code]
    body: dict[str, Any] = {"type": f"https://facestack.dev/problems/{code}", "title": title, "status": status,
                            "code": code, "detail": detail}
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    if request is not None:
        body["instance"] = request.url.path
    if request_id:
        body["request_id"] = request_id
    body.update(extra)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    if code == "unauthorized":
        headers = {**(headers or {}), "WWW-Authenticate": 'ApiKey header="X-API-Key"'}
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


# Codes whose detail would carry a backend's own words (Milvus or Triton error text: addresses, internals):
# the detail is logged with the request id and the client gets this stable text instead.
GENERIC_DETAIL = {
    "backend_unavailable": "a backend is unavailable or at capacity; retry after Retry-After seconds "
                           "(the request id identifies the cause in the gateway's log)",
}


def _api_problem(request: Request, exc: ApiError) -> JSONResponse:
    detail = exc.detail
    if exc.code in GENERIC_DETAIL:
        log.warning("%s on %s %s (request %s): %s", exc.code, request.method, request.url.path,
                    getattr(request.state, "request_id", "-"), exc.detail)
        detail = GENERIC_DETAIL[exc.code]
    return problem(exc.code, detail, request, retry_after=exc.retry_after, **exc.extra)


def _validation_detail(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # pydantic's `input` can echo a whole base64 image back: keep location, message and type only.
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in errors]


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _api_problem(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_detail(list(exc.errors()))
        return problem("validation_error", "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or
                       "invalid request", request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ApiError):  # FastAPI wraps errors raised while it reads a JSON body
            return _api_problem(request, exc.__cause__)  # (the middleware's body limit on a streamed body)
        code = {404: "not_found", 405: "method_not_allowed", 413: "image_too_large",
                415: "unsupported_media_type"}.get(exc.status_code, "validation_error")
        return problem(code, str(exc.detail), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: bad input is caught before it reaches here (tests assert no 500s).
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem("internal_error", "internal error; the request id identifies it in the logs", request)
