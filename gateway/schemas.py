"""Request and response models (they are also the OpenAPI schema at /docs)."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Ids may hold quotes, backslashes, spaces and any Unicode (the store escapes them in every filter), but
# no control characters and no "/" (they travel as path segments).
ID_PATTERN = re.compile(r"^[^\x00-\x1f\x7f/]{1,128}$")
ID_RULE = "1-128 characters, no control characters and no '/'"
MAX_METADATA_BYTES = 8192
MAX_METADATA_DEPTH = 32  # nesting; deeper values cannot be serialised back (pydantic's depth limit)
# A hard ceiling on images in one JSON body, checked while the body is parsed (so a list of 200k items is
# refused at once); FACESTACK_GATEWAY_MAX_IMAGES_PER_REQUEST (at most this) is the configured limit.
MAX_IMAGES_PER_REQUEST = 64
INT64 = (-(2**63), 2**63 - 1)


def valid_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value)) and value.strip() == value and value not in (".", "..")


def check_id(value: str, what: str = "id") -> str:
    if not valid_id(value):
        from gateway.errors import ApiError  # late: errors imports nothing from here, keep it that way

        raise ApiError("validation_error", f"{what} must be {ID_RULE}, without surrounding spaces")
    return value


def _id(value: str) -> str:
    if not valid_id(value):
        raise ValueError(f"must be {ID_RULE}, without surrounding spaces")
    return value


def _too_deep(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:  # iterative: a deeply nested value must not exhaust the interpreter's stack here
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _unstorable(value: Any) -> str | None:
    """Why the store cannot hold this JSON value (Milvus JSON: 64-bit integers, finite numbers), else None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int) and not INT64[0] <= item <= INT64[1]:
            return "integers must fit in 64 bits (send larger numbers as strings)"
        elif isinstance(item, float) and not math.isfinite(item):
            return "numbers must be finite (NaN and Infinity cannot be stored)"
    return None


def _metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and _too_deep(value, MAX_METADATA_DEPTH):
        raise ValueError(f"metadata must nest at most {MAX_METADATA_DEPTH} levels")
    if value is not None and len(json.dumps(value)) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata must serialise to at most {MAX_METADATA_BYTES} bytes of JSON")
    if value is not None and (reason := _unstorable(value)):
        raise ValueError(f"metadata: {reason}")
    return value


Id = Annotated[str, AfterValidator(_id), Field(examples=["alice-01"])]
Metadata = Annotated[dict[str, Any] | None, AfterValidator(_metadata)]
Embedder = Literal["sface", "dlib"]
# main: the largest face near the photo's centre (else the largest); largest; reject: refuse 2+ faces
MultiFace = Literal["main", "largest", "reject"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- requests -------------------------------------------------------------------------------------

class ImageB64(_Strict):
    image_base64: str = Field(description="the encoded JPEG, PNG or WebP file, base64 (a data: URL also works)",
                              examples=["/9j/4AAQSkZJRgABAQ..."])


# Each image endpoint takes multipart (image file parts + these fields as form fields) or JSON (the same
# fields, images as {"image_base64": ...} objects in the same places): *Form is the fields, *Json adds images.

class DetectForm(_Strict):
    max_faces: int = Field(16, ge=1, le=64)


class DetectJson(DetectForm):
    image: ImageB64


class MatchOptions(_Strict):
    threshold: float | None = Field(None, description="override the operating point's threshold "
                                    "(within the model's documented bounds)")
    operating_point: str | None = Field(None, description="a named operating point of the model: fmr_1e-3 etc. "
                                        "for verify, fpir_1e-2 etc. for identify")
    multi_face: MultiFace = Field("main", description="which face of a photo with several: `main` (the largest "
                                  "face near the centre, else the largest), `largest`, or `reject`")


class VerifyForm(MatchOptions):
    gallery: Id | None = Field(None, description="with subject_id: verify against an enrolled subject")
    subject_id: Id | None = None
    embedder: Embedder | None = Field(None, description="image-to-image only (a gallery fixes its own)")
    liveness_challenge: str | None = Field(None, max_length=64, description="a passed liveness challenge's id: "
                                           "the probe must be the person who passed it (docs/liveness.md)")


class VerifyJson(VerifyForm):
    probe: ImageB64
    reference: ImageB64 | None = None


class IdentifyForm(MatchOptions):
    gallery: Id
    top_k: int = Field(5, ge=1, le=100)


class IdentifyJson(IdentifyForm):
    probe: ImageB64


class EnrolForm(_Strict):
    multi_face: MultiFace = Field("main", description="as for verify and identify")


class EnrolJson(EnrolForm):
    image: ImageB64 | Annotated[list[ImageB64], Field(max_length=MAX_IMAGES_PER_REQUEST)] = Field(
        description="one image, or a list for bulk enrolment (at most FACESTACK_GATEWAY_MAX_IMAGES_PER_REQUEST)")


class GalleryCreate(_Strict):
    gallery_id: Id
    embedder: Embedder | None = Field(None, description="the embedder whose templates this gallery holds "
                                      "(default: the gateway's default, sface)")
    metadata: Metadata = None


class SubjectCreate(_Strict):
    subject_id: Id
    name: str | None = Field(None, max_length=256)
    metadata: Metadata = None


class SubjectPatch(_Strict):
    name: str | None = Field(None, max_length=256)
    metadata: Metadata = None


# ---- responses ------------------------------------------------------------------------------------

class Quality(BaseModel):
    face_size: float = Field(description="shorter side of the box, pixels")
    sharpness: float = Field(description="variance of the Laplacian of the aligned crop")
    yaw: float
    pitch: float
    roll: float
    brightness: float = Field(description="mean grey level of the aligned crop, 0..255")


class FaceSelection(BaseModel):
    policy: str = Field(description="the multi_face policy applied")
    reason: str = Field(examples=["the largest face near the centre of the photo"])
    faces_found: int = Field(description="faces in the photo at least the minimum face size")


class Face(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in image pixels")
    score: float
    landmarks: list[list[float]] = Field(description="right eye, left eye, nose tip, right and left mouth "
                                         "corners (the subject's right is the image's left)")
    quality: Quality
    selection: FaceSelection | None = Field(None, description="verify, identify, enrol: why this face was used")


class ImageSize(BaseModel):
    width: int
    height: int


class DetectResponse(BaseModel):
    faces: list[Face]
    image: ImageSize
    request_id: str


class ModelInfo(BaseModel):
    embedder: str = Field(examples=["sface"])
    name: str = Field(examples=["face_embedder"])
    version: str = Field(examples=["1"])


class OperatingPoint(BaseModel):
    name: str = Field(examples=["provisional"])
    threshold: float
    fmr: float | None = Field(None, description="false-match rate per comparison the threshold stands for (against "
                              "a subject with several templates: the effective rate of the whole comparison)")
    calibrated: bool = Field(description="false when the rate rests on extrapolation beyond the measured range or "
                             "on a request's own threshold")
    source: str | None = None
    fpir: float | None = Field(None, description="identify: the share of people who are not enrolled that a "
                               "gallery of gallery_size templates would name")
    gallery_size: int | None = Field(None, description="identify: templates the threshold was computed for (the "
                                     "gallery's count rounded up to a calibrated size)")


class SubjectRef(BaseModel):
    gallery: str
    subject_id: str
    templates_compared: int


class VerifyResponse(BaseModel):
    match: bool
    similarity: float = Field(description="cosine similarity; against a subject, the best over its templates")
    threshold: float
    operating_point: OperatingPoint
    model: ModelInfo
    probe_face: Face
    reference_face: Face | None = None
    subject: SubjectRef | None = None
    liveness: LivenessBinding | None = Field(None, description="with liveness_challenge: the challenge it passed")
    pad: PadInfo | None = Field(None, description="the PAD score of the probe, where the tenant's policy asks")
    request_id: str


class Candidate(BaseModel):
    subject_id: str
    similarity: float
    face_id: str


class IdentifyResponse(BaseModel):
    decision: Literal["match", "unknown"]
    subject_id: str | None = Field(None, description="the matched subject when decision is match")
    similarity: float | None = Field(None, description="best similarity (null on an empty gallery)")
    candidates: list[Candidate]
    threshold: float
    operating_point: OperatingPoint
    templates_searched: int = Field(description="templates in the gallery when the threshold was chosen")
    model: ModelInfo
    gallery: str
    probe_face: Face
    request_id: str


class Gallery(BaseModel):
    gallery_id: str
    embedder: str
    metadata: dict[str, Any] | None = None
    created_at: str
    subjects: int | None = None
    templates: int | None = None


class Subject(BaseModel):
    gallery_id: str
    subject_id: str
    name: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: str
    updated_at: str
    faces: int | None = None


class FaceRecord(BaseModel):
    face_id: str
    gallery_id: str
    subject_id: str
    model: str = Field(description="embedder model and version of the template, e.g. face_embedder:1")
    created_at: str


class EnrolledFace(BaseModel):
    face_id: str
    image_index: int
    face: Face


class EnrolResponse(BaseModel):
    gallery_id: str
    subject_id: str
    model: ModelInfo
    faces: list[EnrolledFace]
    request_id: str


class Page(BaseModel):
    total: int
    limit: int
    offset: int
    next: str | None = Field(None, description="cursor of the next page (pass it as `cursor`); null on the last page")


class GalleryPage(Page):
    items: list[Gallery]


class SubjectPage(Page):
    items: list[Subject]


class FacePage(Page):
    items: list[FaceRecord]


class ErasureReceipt(BaseModel):
    receipt_id: str
    operation: Literal["erase_gallery", "erase_subject", "erase_face"]
    tenant: str
    gallery_id: str
    subject_id: str | None = None
    face_id: str | None = None
    subjects_deleted: int
    templates_deleted: int
    remaining_templates: int = Field(description="templates still stored after the erasure (read back: 0)")
    erased_at: str
    request_id: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str | None = None
    request_id: str | None = None


# ---- liveness (docs/liveness.md) --------------------------------------------------------------------

LivenessAction = Literal["turn_left", "turn_right", "look_up", "look_down"]


class ChallengeResponse(BaseModel):
    challenge_id: str
    nonce: str = Field(description="send it back with the frames; shown once")
    actions: list[LivenessAction] = Field(description="perform these in this order, from a frontal start")
    instructions: list[str] = Field(description="the actions in words for the person in front of the camera")
    expires_at: str = Field(description="the frames must arrive before this instant (ISO 8601, UTC)")
    deadline_s: float
    min_frames: int = Field(description="a frontal first frame and at least one frame per action")
    max_frames: int
    yaw_deg: float = Field(description="a turn counts once the yaw changed this much from the first frame")
    pitch_deg: float = Field(description="a look up or down counts once the pitch changed this much")
    convention: str = Field(description="which way left and up are")


class FramesForm(_Strict):
    nonce: str = Field(min_length=1, max_length=64)


class FramesJson(FramesForm):
    frames: Annotated[list[ImageB64], Field(min_length=1, max_length=MAX_IMAGES_PER_REQUEST)] = Field(
        description="the captured frames in capture order")


class LivenessStep(BaseModel):
    action: LivenessAction
    passed: bool
    frame: int | None = Field(None, description="the first frame that showed it")


class LivenessFrame(BaseModel):
    index: int
    faces: int = Field(description="faces at least the minimum face size")
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    delta_yaw: float | None = Field(None, description="yaw minus the first frame's (> 0: towards the person's left)")
    delta_pitch: float | None = Field(None, description="pitch minus the first frame's (> 0: looking down)")
    pose: Literal["neutral", "turn_left", "turn_right", "look_up", "look_down"] | None = None
    similarity: float | None = Field(None, description="cosine to the first frame's face")
    pad_score: float | None = Field(None, description="the face_pad model's bona-fide score, where one runs")


class LivenessResult(BaseModel):
    challenge_id: str
    decision: Literal["live", "not_live", "inconclusive"]
    reason: str = Field(examples=["all_steps"])
    detail: str
    frame: int | None = Field(None, description="the frame the reason points at")
    actions: list[LivenessAction]
    steps: list[LivenessStep]
    frames: list[LivenessFrame]
    pose_source: Literal["mesh", "five-point"] = Field(
        description="the pose the steps were judged by: the face mesh where the pipeline has it (the default), "
                    "else YuNet's five landmarks")
    yaw_deg: float = Field(description="the yaw change that counted as a turn, in that pose's degrees")
    pitch_deg: float | None = Field(description="the pitch change that counted as a look up or down (null: "
                                                "pitch not judged, the challenges are turns only)")
    identity_threshold: float
    identity_operating_point: str
    model: ModelInfo
    request_id: str


class LivenessBinding(BaseModel):
    status: Literal["passed"]
    challenge_id: str
    similarity: float = Field(description="cosine of the probe to the challenge's first frame")
    threshold: float


class PadInfo(BaseModel):
    policy: Literal["report", "enforce"]
    score: float | None = Field(description="bona-fide score of the probe face (null: no face_pad model ran)")
    threshold: float
    passed: bool | None = Field(description="score >= threshold (null without a score)")


VerifyResponse.model_rebuild()  # it names LivenessBinding and PadInfo, defined after it
