"""Which face of an image a request uses, and whether it is good enough to compare or enrol.

The rules themselves live in facestack.pipeline (choice: which face; quality.QualityGate: good enough), where
the accuracy tool measures them on LFW; this module applies them to a Triton answer and words the refusals.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from facestack.pipeline import choice
from facestack.pipeline.quality import GATE_WORDS, QualityGate
from facestack.triton.contract import Analysis, DetectedFace
from gateway.errors import BACKEND, ApiError
from gateway.images import ImageData
from gateway.triton_client import TritonPipeline

__all__ = ["Chosen", "QualityGate", "analyze_all", "face_json", "model_json", "select"]


async def analyze_all(triton: TritonPipeline, items: list[tuple[str, ImageData]], embedder: str, *,
                      request_id: str, max_faces: int = 16) -> list[Analysis]:
    """One Triton call per (field, image), concurrently; the first failure (in argument order) is raised, an image's
    own failure named after its field."""
    results = await asyncio.gather(*(triton.analyze(image.data, embedder=embedder, max_faces=max_faces,
                                                    request_id=request_id) for _, image in items),
                                   return_exceptions=True)
    for (field, _), result in zip(items, results, strict=True):
        if isinstance(result, ApiError) and result.code not in BACKEND:
            result.detail = f"{field}: {result.detail}" if not result.detail.startswith(field) else result.detail
            result.extra.setdefault("field", field)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


def model_json(analysis: Analysis) -> dict:
    """The model an answer's templates come from, as the API shows it."""
    return {"embedder": analysis.embedder, "name": analysis.model, "version": analysis.version}


def face_json(face: DetectedFace) -> dict:
    """A face as the API shows it (rounded)."""
    return {"box": [round(float(v), 2) for v in face.box], "score": round(face.score, 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
            "quality": {k: round(v, 3) for k, v in face.quality.items()}}


@dataclass(frozen=True)
class Chosen:
    """The face a request uses, and why that one."""

    face: DetectedFace
    policy: str  # the multi_face policy applied
    reason: str  # choice.WHY key
    faces_found: int  # faces at least the minimum size

    @property
    def embedding(self) -> np.ndarray:
        return self.face.embedding

    def public(self) -> dict:
        return {**face_json(self.face), "selection": {"policy": self.policy, "reason": choice.WHY[self.reason],
                                                   "faces_found": self.faces_found}}


def select(analysis: Analysis, *, policy: str, gate: QualityGate, field: str) -> Chosen:
    """The face to use under the multi-face policy (`main`, `largest` or `reject`), after the size and quality gates.

    Faces below the minimum size are background: they neither count for `reject` nor get chosen.
    """
    if not analysis.faces:
        raise ApiError("no_face", f"{field}: no face found", field=field)
    usable = [f for f in analysis.faces if f.quality["face_size"] >= gate.min_face_size]
    if not usable:
        size = max(f.quality["face_size"] for f in analysis.faces)
        raise ApiError("face_too_small", f"{field}: the largest face is {size:.0f} px; at least "
                       f"{gate.min_face_size:g} px (shorter box side) is needed", field=field)
    if policy == "reject" and len(usable) > 1:
        raise ApiError("multiple_faces", f"{field}: {len(usable)} faces found and multi_face is 'reject'",
                       field=field, faces=len(usable))
    rule = "largest" if policy == "reject" else policy
    index, reason = choice.choose(np.array([f.box for f in usable]), (analysis.height, analysis.width), rule)
    face = usable[index]
    refusals = gate.refusals(face.quality)
    if refusals:
        gates = list(dict.fromkeys(r.gate for r in refusals))
        raise ApiError("low_quality", f"{field}: " + "; ".join(GATE_WORDS[g] for g in gates) + " ("
                       + "; ".join(r.detail for r in refusals) + ")", field=field, gates=gates)
    return Chosen(face, policy, reason, len(usable))
