"""A typed Python client for the facestack gateway's `/v1` API (httpx; sync `Client` and `AsyncClient`).

    from facestack.client import Client, NotFound

    with Client("http://127.0.0.1:8000", api_key="fs_...") as fs:
        fs.create_gallery("staff")
        fs.create_subject("staff", "alice", name="Alice")
        fs.enrol("staff", "alice", ["alice1.jpg", "alice2.jpg"])      # paths, bytes or open files
        answer = fs.identify("who.jpg", gallery="staff")
        print(answer["decision"], answer["subject_id"], answer["operating_point"]["fpir"])

Answers are the gateway's JSON as typed dicts (below, one per schema of /openapi.json). Every error answer
raises an `ApiError` subclass carrying the problem's stable `code`, `detail` and `request_id`
(`ERRORS` maps each code to its class). Only 429 and 503 are retried, after `Retry-After` when the
gateway sends it (else an exponential backoff with jitter), at most `retries` times; anything else is
raised at once. tests/client/test_drift.py checks every route, parameter and schema against /openapi.json.

No `from __future__ import annotations` here: TypedDict needs real annotations to see NotRequired (3.11).
"""

import asyncio
import email.utils
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, NotRequired, Self, TypedDict
from urllib.parse import quote

import httpx

# ---- answers: one TypedDict per schema in /openapi.json --------------------------------------------


class Quality(TypedDict):
    face_size: float
    sharpness: float
    yaw: float
    pitch: float
    roll: float
    brightness: float


class FaceSelection(TypedDict):
    policy: str
    reason: str
    faces_found: int


class Face(TypedDict):
    box: list[float]
    score: float
    landmarks: list[list[float]]
    quality: Quality
    selection: NotRequired[FaceSelection | None]


class ImageSize(TypedDict):
    width: int
    height: int


class DetectResponse(TypedDict):
    faces: list[Face]
    image: ImageSize
    request_id: str


class ModelInfo(TypedDict):
    embedder: str
    name: str
    version: str


class OperatingPoint(TypedDict):
    name: str
    threshold: float
    fmr: NotRequired[float | None]
    calibrated: bool
    source: NotRequired[str | None]
    fpir: NotRequired[float | None]
    gallery_size: NotRequired[int | None]


class SubjectRef(TypedDict):
    gallery: str
    subject_id: str
    templates_compared: int


LivenessAction = Literal["turn_left", "turn_right", "look_up", "look_down"]


class LivenessBinding(TypedDict):
    status: str  # "passed" (a failed binding refuses the verify)
    challenge_id: str
    similarity: float
    threshold: float


class PadInfo(TypedDict):
    policy: Literal["report", "enforce"]
    score: float | None
    threshold: float
    passed: bool | None


class VerifyResponse(TypedDict):
    match: bool
    similarity: float
    threshold: float
    operating_point: OperatingPoint
    model: ModelInfo
    probe_face: Face
    reference_face: NotRequired[Face | None]
    subject: NotRequired[SubjectRef | None]
    liveness: NotRequired[LivenessBinding | None]
    pad: NotRequired[PadInfo | None]
    request_id: str


class ChallengeResponse(TypedDict):
    challenge_id: str
    nonce: str
    actions: list[LivenessAction]
    instructions: list[str]
    expires_at: str
    deadline_s: float
    min_frames: int
    max_frames: int
    yaw_deg: float
    pitch_deg: float
    convention: str


class LivenessStep(TypedDict):
    action: LivenessAction
    passed: bool
    frame: NotRequired[int | None]


class LivenessFrame(TypedDict):
    index: int
    faces: int
    yaw: NotRequired[float | None]
    pitch: NotRequired[float | None]
    roll: NotRequired[float | None]
    delta_yaw: NotRequired[float | None]
    delta_pitch: NotRequired[float | None]
    pose: NotRequired[Literal["neutral", "turn_left", "turn_right", "look_up", "look_down"] | None]
    similarity: NotRequired[float | None]
    pad_score: NotRequired[float | None]


class LivenessResult(TypedDict):
    challenge_id: str
    decision: Literal["live", "not_live", "inconclusive"]
    reason: str
    detail: str
    frame: NotRequired[int | None]
    actions: list[LivenessAction]
    steps: list[LivenessStep]
    frames: list[LivenessFrame]
    pose_source: Literal["mesh", "five-point"]
    yaw_deg: float
    pitch_deg: float | None
    identity_threshold: float
    identity_operating_point: str
    model: ModelInfo
    request_id: str


class Candidate(TypedDict):
    subject_id: str
    similarity: float
    face_id: str


class IdentifyResponse(TypedDict):
    decision: Literal["match", "unknown"]
    subject_id: NotRequired[str | None]
    similarity: NotRequired[float | None]
    candidates: list[Candidate]
    threshold: float
    operating_point: OperatingPoint
    templates_searched: int
    model: ModelInfo
    gallery: str
    probe_face: Face
    request_id: str


class Gallery(TypedDict):
    gallery_id: str
    embedder: str
    metadata: NotRequired[dict[str, Any] | None]
    created_at: str
    subjects: NotRequired[int | None]
    templates: NotRequired[int | None]


class Subject(TypedDict):
    gallery_id: str
    subject_id: str
    name: NotRequired[str | None]
    metadata: NotRequired[dict[str, Any] | None]
    created_at: str
    updated_at: str
    faces: NotRequired[int | None]


class FaceRecord(TypedDict):
    face_id: str
    gallery_id: str
    subject_id: str
    model: str
    created_at: str


class EnrolledFace(TypedDict):
    face_id: str
    image_index: int
    face: Face


class EnrolResponse(TypedDict):
    gallery_id: str
    subject_id: str
    model: ModelInfo
    faces: list[EnrolledFace]
    request_id: str


class GalleryPage(TypedDict):
    total: int
    limit: int
    offset: int
    items: list[Gallery]
    next: NotRequired[str | None]  # pass as `cursor` for the next page (null on the last page)


class SubjectPage(TypedDict):
    total: int
    limit: int
    offset: int
    items: list[Subject]
    next: NotRequired[str | None]  # pass as `cursor` for the next page (null on the last page)


class FacePage(TypedDict):
    total: int
    limit: int
    offset: int
    items: list[FaceRecord]
    next: NotRequired[str | None]  # pass as `cursor` for the next page (null on the last page)


class ErasureReceipt(TypedDict):
    receipt_id: str
    operation: Literal["erase_gallery", "erase_subject", "erase_face"]
    tenant: str
    gallery_id: str
    subject_id: NotRequired[str | None]
    face_id: NotRequired[str | None]
    subjects_deleted: int
    templates_deleted: int
    remaining_templates: int
    erased_at: str
    request_id: str


class Problem(TypedDict):
    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: NotRequired[str | None]
    request_id: NotRequired[str | None]


# ---- errors: one class per kind of problem, each carrying the stable `code` -------------------------


class FacestackError(Exception):
    """Base of everything this client raises (transport errors stay httpx's own)."""


class ApiError(FacestackError):
    """An error answer (problem+json). Branch on `code` (stable) or the class; `detail` is for people."""

    def __init__(self, status: int, problem: Mapping[str, Any], retry_after: float | None = None) -> None:
        self.status = status
        self.problem = dict(problem)
        self.code: str = str(problem.get("code") or f"http_{status}")
        self.detail: str = str(problem.get("detail") or problem.get("title") or "")
        self.request_id: str | None = problem.get("request_id")
        self.retry_after = retry_after
        super().__init__(f"{status} {self.code}: {self.detail}")

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Per image or per field: [{"field": "image[1]", "code": "no_face", "detail": ...}] or validation items."""
        return list(self.problem.get("errors") or [])


class InvalidRequest(ApiError):
    """400/413/415/422 about the request itself: an unreadable or too large image, a malformed field."""


class FaceRejected(ApiError):
    """422: the photo's face cannot be used (none, several, too small, low quality; `gates` says which)."""

    @property
    def gates(self) -> list[str]:
        return list(self.problem.get("gates") or [])


class Unauthorized(ApiError):
    """401: no or unknown API key."""


class Forbidden(ApiError):
    """403: the key lacks the scope (verify, enrol, admin)."""


class NotFound(ApiError):
    """404: no such gallery, subject, face or route in the key's tenant."""


class Conflict(ApiError):
    """409: exists already, or a state that forbids the operation."""


class RateLimited(ApiError):
    """429, after the retries: the key's rate limit or the gateway's queue (see `retry_after`)."""


class ServerError(ApiError):
    """500: a bug in the gateway (the request id finds it in the logs)."""


class Unavailable(ApiError):
    """503, after the retries: Triton or Milvus unavailable."""


class GatewayTimeout(ApiError):
    """504: a backend did not answer within its deadline."""


# Every code the gateway documents (gateway/errors.py); an unknown code falls back to its status' class.
ERRORS: dict[str, type[ApiError]] = {
    "invalid_image": InvalidRequest,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "gallery_not_found": NotFound,
    "subject_not_found": NotFound,
    "face_not_found": NotFound,
    "not_found": NotFound,
    "method_not_allowed": InvalidRequest,
    "conflict": Conflict,
    "idempotency_conflict": Conflict,
    "challenge_not_found": NotFound,
    "challenge_used": Conflict,
    "liveness_failed": FaceRejected,
    "image_too_large": InvalidRequest,
    "unsupported_media_type": InvalidRequest,
    "no_face": FaceRejected,
    "multiple_faces": FaceRejected,
    "face_too_small": FaceRejected,
    "low_quality": FaceRejected,
    "validation_error": InvalidRequest,
    "rate_limited": RateLimited,
    "internal_error": ServerError,
    "backend_unavailable": Unavailable,
    "audit_unavailable": Unavailable,
    "timeout": GatewayTimeout,
}
_BY_STATUS: dict[int, type[ApiError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
                                         429: RateLimited, 503: Unavailable, 504: GatewayTimeout}
RETRY_STATUSES = frozenset({429, 503})


def error_for(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    body.setdefault("detail", response.text[:300])
    code = body.get("code")
    cls = ERRORS.get(code) if isinstance(code, str) else None
    if cls is None:
        cls = _BY_STATUS.get(response.status_code,
                             ServerError if response.status_code >= 500 else InvalidRequest)
    return cls(response.status_code, body, retry_after_seconds(response))


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date (RFC 9110); None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# ---- requests ----------------------------------------------------------------------------------------

# A photo: raw bytes, a path, or an open binary file (read once, so a retry sends the same bytes).
ImageInput = bytes | str | os.PathLike[str] | IO[bytes]
Embedder = Literal["sface", "dlib"]
MultiFace = Literal["main", "largest", "reject"]

# method name -> (HTTP method, path template, answer schema). Both clients implement exactly these; the drift
# test compares them with /openapi.json.
ROUTES: dict[str, tuple[str, str, str]] = {
    "detect": ("POST", "/v1/detect", "DetectResponse"),
    "verify": ("POST", "/v1/verify", "VerifyResponse"),
    "identify": ("POST", "/v1/identify", "IdentifyResponse"),
    "liveness_challenge": ("POST", "/v1/liveness/challenges", "ChallengeResponse"),
    "liveness_frames": ("POST", "/v1/liveness/challenges/{challenge_id}/frames", "LivenessResult"),
    "create_gallery": ("POST", "/v1/galleries", "Gallery"),
    "list_galleries": ("GET", "/v1/galleries", "GalleryPage"),
    "get_gallery": ("GET", "/v1/galleries/{gallery_id}", "Gallery"),
    "delete_gallery": ("DELETE", "/v1/galleries/{gallery_id}", "ErasureReceipt"),
    "create_subject": ("POST", "/v1/galleries/{gallery_id}/subjects", "Subject"),
    "list_subjects": ("GET", "/v1/galleries/{gallery_id}/subjects", "SubjectPage"),
    "get_subject": ("GET", "/v1/galleries/{gallery_id}/subjects/{subject_id}", "Subject"),
    "update_subject": ("PATCH", "/v1/galleries/{gallery_id}/subjects/{subject_id}", "Subject"),
    "delete_subject": ("DELETE", "/v1/galleries/{gallery_id}/subjects/{subject_id}", "ErasureReceipt"),
    "enrol": ("POST", "/v1/galleries/{gallery_id}/subjects/{subject_id}/faces", "EnrolResponse"),
    "list_faces": ("GET", "/v1/galleries/{gallery_id}/subjects/{subject_id}/faces", "FacePage"),
    "delete_face": ("DELETE", "/v1/galleries/{gallery_id}/subjects/{subject_id}/faces/{face_id}", "ErasureReceipt"),
}
_UNSET: Any = object()  # "leave unchanged" for update_subject (None clears the field)


@dataclass
class _Request:
    route: str
    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] | None = None
    json: dict[str, Any] | None = None
    form: dict[str, Any] | None = None
    files: list[tuple[str, tuple[str, bytes]]] | None = None
    headers: dict[str, str] | None = None  # per-request headers (e.g. an idempotency key)

    def url(self) -> tuple[str, str]:
        method, template, _ = ROUTES[self.route]
        return method, template.format(**{k: quote(v, safe="") for k, v in self.path.items()})

    def send_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.headers:
            kwargs["headers"] = self.headers
        if self.query is not None:
            kwargs["params"] = {k: v for k, v in self.query.items() if v is not None}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.files is not None:
            kwargs["files"] = self.files
            kwargs["data"] = {k: str(v) for k, v in (self.form or {}).items() if v is not None}
        return kwargs


def _photo(name: str, image: ImageInput) -> tuple[str, tuple[str, bytes]]:
    if isinstance(image, bytes | bytearray):
        return name, (name, bytes(image))
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return name, (path.name, path.read_bytes())
    return name, (Path(getattr(image, "name", name)).name, image.read())


def _photos(name: str, images: ImageInput | Sequence[ImageInput]) -> list[tuple[str, tuple[str, bytes]]]:
    many = isinstance(images, Sequence) and not isinstance(images, bytes | bytearray | str)
    return [_photo(name, image) for image in (images if many else [images])]  # type: ignore[union-attr]


def _not_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class _Base:
    """What both clients share: configuration, request building per endpoint, the retry rule."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout: float, retries: int, backoff: float,
                 max_wait: float, headers: Mapping[str, str] | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {**(headers or {}), **({"X-API-Key": api_key} if api_key else {})}
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait

    def _wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying `response`, or None to raise it now."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
            return None
        after = retry_after_seconds(response)
        if after is None:  # exponential backoff with full jitter
            after = random.uniform(0, self.backoff * 2 ** attempt)
        return after if after <= self.max_wait else None  # a longer wait is the caller's decision

    # Request builders: one per route, shared by both clients.
    @staticmethod
    def _detect(image: ImageInput, max_faces: int | None) -> _Request:
        return _Request("detect", form=_not_none(max_faces=max_faces), files=[_photo("image", image)])

    @staticmethod
    def _verify(probe: ImageInput, reference: ImageInput | None, gallery: str | None, subject_id: str | None,
                threshold: float | None, operating_point: str | None, multi_face: MultiFace | None,
                embedder: Embedder | None, liveness_challenge: str | None = None) -> _Request:
        files = [_photo("probe", probe)] + ([_photo("reference", reference)] if reference is not None else [])
        return _Request("verify", files=files, form=_not_none(
            gallery=gallery, subject_id=subject_id, threshold=threshold, operating_point=operating_point,
            multi_face=multi_face, embedder=embedder, liveness_challenge=liveness_challenge))

    @staticmethod
    def _liveness_frames(challenge_id: str, nonce: str, frames: ImageInput | Sequence[ImageInput]) -> _Request:
        return _Request("liveness_frames", {"challenge_id": challenge_id}, form={"nonce": nonce},
                        files=_photos("frames", frames))

    @staticmethod
    def _identify(probe: ImageInput, gallery: str, top_k: int | None, threshold: float | None,
                  operating_point: str | None, multi_face: MultiFace | None) -> _Request:
        return _Request("identify", files=[_photo("probe", probe)], form=_not_none(
            gallery=gallery, top_k=top_k, threshold=threshold, operating_point=operating_point,
            multi_face=multi_face))

    @staticmethod
    def _subject_patch(gallery_id: str, subject_id: str, name: Any, metadata: Any) -> _Request:
        body = {k: v for k, v in (("name", name), ("metadata", metadata)) if v is not _UNSET}
        return _Request("update_subject", {"gallery_id": gallery_id, "subject_id": subject_id}, json=body)


class Client(_Base):
    """Synchronous client. Use as a context manager, or call `close()`."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5, max_wait: float = 30.0, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout=timeout, retries=retries, backoff=backoff, max_wait=max_wait,
                         headers=headers)
        self.http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _send(self, request: _Request) -> Any:
        method, url = request.url()
        kwargs = request.send_kwargs()
        attempt = 0
        while True:
            response = self.http.request(method, url, **kwargs)
            if response.is_success:
                return response.json()
            wait = self._wait(response, attempt)
            if wait is None:
                raise error_for(response)
            time.sleep(wait)
            attempt += 1

    # ---- recognition
    def detect(self, image: ImageInput, *, max_faces: int | None = None) -> DetectResponse:
        return self._send(self._detect(image, max_faces))

    def verify(self, probe: ImageInput, reference: ImageInput | None = None, *, gallery: str | None = None,
               subject_id: str | None = None, threshold: float | None = None, operating_point: str | None = None,
               multi_face: MultiFace | None = None, embedder: Embedder | None = None,
               liveness_challenge: str | None = None) -> VerifyResponse:
        return self._send(self._verify(probe, reference, gallery, subject_id, threshold, operating_point,
                                       multi_face, embedder, liveness_challenge))

    # ---- liveness (docs/liveness.md)
    def liveness_challenge(self) -> ChallengeResponse:
        return self._send(_Request("liveness_challenge"))

    def liveness_frames(self, challenge_id: str, *, nonce: str,
                        frames: ImageInput | Sequence[ImageInput]) -> LivenessResult:
        return self._send(self._liveness_frames(challenge_id, nonce, frames))

    def identify(self, probe: ImageInput, *, gallery: str, top_k: int | None = None, threshold: float | None = None,
                 operating_point: str | None = None, multi_face: MultiFace | None = None) -> IdentifyResponse:
        return self._send(self._identify(probe, gallery, top_k, threshold, operating_point, multi_face))

    # ---- galleries
    def create_gallery(self, gallery_id: str, *, embedder: Embedder | None = None,
                       metadata: dict[str, Any] | None = None) -> Gallery:
        return self._send(_Request("create_gallery", json=_not_none(gallery_id=gallery_id, embedder=embedder,
                                                                    metadata=metadata)))

    def list_galleries(self, *, limit: int | None = None, offset: int | None = None,
                       cursor: str | None = None) -> GalleryPage:
        return self._send(_Request("list_galleries", query={"limit": limit, "offset": offset, "cursor": cursor}))

    def get_gallery(self, gallery_id: str) -> Gallery:
        return self._send(_Request("get_gallery", {"gallery_id": gallery_id}))

    def delete_gallery(self, gallery_id: str) -> ErasureReceipt:
        return self._send(_Request("delete_gallery", {"gallery_id": gallery_id}))

    # ---- subjects
    def create_subject(self, gallery_id: str, subject_id: str, *, name: str | None = None,
                       metadata: dict[str, Any] | None = None) -> Subject:
        return self._send(_Request("create_subject", {"gallery_id": gallery_id}, json=_not_none(
            subject_id=subject_id, name=name, metadata=metadata)))

    def list_subjects(self, gallery_id: str, *, limit: int | None = None, offset: int | None = None,
                      cursor: str | None = None) -> SubjectPage:
        return self._send(_Request("list_subjects", {"gallery_id": gallery_id},
                                   query={"limit": limit, "offset": offset, "cursor": cursor}))

    def get_subject(self, gallery_id: str, subject_id: str) -> Subject:
        return self._send(_Request("get_subject", {"gallery_id": gallery_id, "subject_id": subject_id}))

    def update_subject(self, gallery_id: str, subject_id: str, *, name: str | None = _UNSET,
                       metadata: dict[str, Any] | None = _UNSET) -> Subject:
        """Changes only what is passed; None clears the name or the metadata."""
        return self._send(self._subject_patch(gallery_id, subject_id, name, metadata))

    def delete_subject(self, gallery_id: str, subject_id: str) -> ErasureReceipt:
        return self._send(_Request("delete_subject", {"gallery_id": gallery_id, "subject_id": subject_id}))

    # ---- faces
    def enrol(self, gallery_id: str, subject_id: str, image: ImageInput | Sequence[ImageInput], *,
              multi_face: MultiFace | None = None) -> EnrolResponse:
        """One or many photos; all or nothing (a FaceRejected's `errors` lists every failing photo)."""
        return self._send(_Request("enrol", {"gallery_id": gallery_id, "subject_id": subject_id},
                                   form=_not_none(multi_face=multi_face), files=_photos("image", image)))

    def list_faces(self, gallery_id: str, subject_id: str, *, limit: int | None = None,
                   offset: int | None = None) -> FacePage:
        return self._send(_Request("list_faces", {"gallery_id": gallery_id, "subject_id": subject_id},
                                   query={"limit": limit, "offset": offset}))

    def delete_face(self, gallery_id: str, subject_id: str, face_id: str) -> ErasureReceipt:
        return self._send(_Request("delete_face", {"gallery_id": gallery_id, "subject_id": subject_id,
                                                   "face_id": face_id}))


class AsyncClient(_Base):
    """The same API for asyncio: `async with AsyncClient(url, key) as fs: await fs.identify(...)`."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5, max_wait: float = 30.0, headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout=timeout, retries=retries, backoff=backoff, max_wait=max_wait,
                         headers=headers)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=timeout,
                                      transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(self, request: _Request) -> Any:
        method, url = request.url()
        kwargs = request.send_kwargs()
        attempt = 0
        while True:
            response = await self.http.request(method, url, **kwargs)
            if response.is_success:
                return response.json()
            wait = self._wait(response, attempt)
            if wait is None:
                raise error_for(response)
            await asyncio.sleep(wait)
            attempt += 1

    # ---- recognition
    async def detect(self, image: ImageInput, *, max_faces: int | None = None) -> DetectResponse:
        return await self._send(self._detect(image, max_faces))

    async def verify(self, probe: ImageInput, reference: ImageInput | None = None, *, gallery: str | None = None,
                     subject_id: str | None = None, threshold: float | None = None,
                     operating_point: str | None = None, multi_face: MultiFace | None = None,
                     embedder: Embedder | None = None, liveness_challenge: str | None = None) -> VerifyResponse:
        return await self._send(self._verify(probe, reference, gallery, subject_id, threshold, operating_point,
                                             multi_face, embedder, liveness_challenge))

    # ---- liveness (docs/liveness.md)
    async def liveness_challenge(self) -> ChallengeResponse:
        return await self._send(_Request("liveness_challenge"))

    async def liveness_frames(self, challenge_id: str, *, nonce: str,
                              frames: ImageInput | Sequence[ImageInput]) -> LivenessResult:
        return await self._send(self._liveness_frames(challenge_id, nonce, frames))

    async def identify(self, probe: ImageInput, *, gallery: str, top_k: int | None = None,
                       threshold: float | None = None, operating_point: str | None = None,
                       multi_face: MultiFace | None = None) -> IdentifyResponse:
        return await self._send(self._identify(probe, gallery, top_k, threshold, operating_point, multi_face))

    # ---- galleries
    async def create_gallery(self, gallery_id: str, *, embedder: Embedder | None = None,
                             metadata: dict[str, Any] | None = None) -> Gallery:
        return await self._send(_Request("create_gallery", json=_not_none(gallery_id=gallery_id, embedder=embedder,
                                                                          metadata=metadata)))

    async def list_galleries(self, *, limit: int | None = None, offset: int | None = None,
                             cursor: str | None = None) -> GalleryPage:
        return await self._send(_Request("list_galleries", query={"limit": limit, "offset": offset,
                                                                  "cursor": cursor}))

    async def get_gallery(self, gallery_id: str) -> Gallery:
        return await self._send(_Request("get_gallery", {"gallery_id": gallery_id}))

    async def delete_gallery(self, gallery_id: str) -> ErasureReceipt:
        return await self._send(_Request("delete_gallery", {"gallery_id": gallery_id}))

    # ---- subjects
    async def create_subject(self, gallery_id: str, subject_id: str, *, name: str | None = None,
                             metadata: dict[str, Any] | None = None) -> Subject:
        return await self._send(_Request("create_subject", {"gallery_id": gallery_id}, json=_not_none(
            subject_id=subject_id, name=name, metadata=metadata)))

    async def list_subjects(self, gallery_id: str, *, limit: int | None = None,
                            offset: int | None = None, cursor: str | None = None) -> SubjectPage:
        return await self._send(_Request("list_subjects", {"gallery_id": gallery_id},
                                         query={"limit": limit, "offset": offset, "cursor": cursor}))

    async def get_subject(self, gallery_id: str, subject_id: str) -> Subject:
        return await self._send(_Request("get_subject", {"gallery_id": gallery_id, "subject_id": subject_id}))

    async def update_subject(self, gallery_id: str, subject_id: str, *, name: str | None = _UNSET,
                             metadata: dict[str, Any] | None = _UNSET) -> Subject:
        """Changes only what is passed; None clears the name or the metadata."""
        return await self._send(self._subject_patch(gallery_id, subject_id, name, metadata))

    async def delete_subject(self, gallery_id: str, subject_id: str) -> ErasureReceipt:
        return await self._send(_Request("delete_subject", {"gallery_id": gallery_id, "subject_id": subject_id}))

    # ---- faces
    async def enrol(self, gallery_id: str, subject_id: str, image: ImageInput | Sequence[ImageInput], *,
                    multi_face: MultiFace | None = None) -> EnrolResponse:
        """One or many photos; all or nothing (a FaceRejected's `errors` lists every failing photo)."""
        return await self._send(_Request("enrol", {"gallery_id": gallery_id, "subject_id": subject_id},
                                         form=_not_none(multi_face=multi_face), files=_photos("image", image)))

    async def list_faces(self, gallery_id: str, subject_id: str, *, limit: int | None = None,
                         offset: int | None = None) -> FacePage:
        return await self._send(_Request("list_faces", {"gallery_id": gallery_id, "subject_id": subject_id},
                                         query={"limit": limit, "offset": offset}))

    async def delete_face(self, gallery_id: str, subject_id: str, face_id: str) -> ErasureReceipt:
        return await self._send(_Request("delete_face", {"gallery_id": gallery_id, "subject_id": subject_id,
                                                         "face_id": face_id}))
