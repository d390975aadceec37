"""POST /v1/detect, /v1/verify (1:1) and /v1/identify (1:N)."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter, Request

from facestack.settings import Settings
from facestack.triton.contract import Analysis
from gateway import pad
from gateway.api import deps
from gateway.api.common import BACKEND, IMAGE, image_body, problems
from gateway.audit import AuditLog
from gateway.auth import Principal, VerifyKey
from gateway.challenges import Challenges
from gateway.errors import ApiError
from gateway.faces import Chosen, analyze_all, face_json, model_json, select
from gateway.inputs import read_images
from gateway.metrics import Metrics
from gateway.operating_points import OperatingPoints
from gateway.schemas import (
    DetectForm,
    DetectJson,
    DetectResponse,
    IdentifyForm,
    IdentifyJson,
    IdentifyResponse,
    VerifyForm,
    VerifyJson,
    VerifyResponse,
)

router = APIRouter(prefix="/v1", tags=["recognition"])
_B64 = {"image_base64": "/9j/4AAQSkZJRgABAQAAAQABAAD..."}


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.clip(np.dot(a, b), -1.0, 1.0))


@router.post("/detect", response_model=DetectResponse, summary="Find all faces in an image",
             responses=problems(*IMAGE[:3], *BACKEND, "forbidden"),
             openapi_extra=image_body(DetectForm, DetectJson, {"image": "the photo"}, {"image": _B64}))
async def detect(request: Request, principal: VerifyKey, settings: deps.SettingsDep, triton: deps.TritonDep,
                 metrics: deps.MetricsDep, rid: deps.RequestIdDep) -> dict:
    options, images = await read_images(request, DetectForm, DetectJson, {"image": "required"})
    (analysis,) = await analyze_all(triton, [("image", images["image"][0])], settings.gateway_default_embedder,
                                    request_id=rid, max_faces=options.max_faces)
    metrics.faces.labels("detect").observe(len(analysis.faces))
    return {"faces": [face_json(f) for f in analysis.faces],
            "image": {"width": analysis.width, "height": analysis.height}, "request_id": rid}


@router.post("/verify", response_model=VerifyResponse, response_model_exclude_unset=True,
             summary="1:1: is the probe the same person?",
             description="Against a second image (`reference`) or an enrolled subject (`gallery` + `subject_id`; "
                         "its templates are fetched by key and the best similarity counts, against a threshold "
                         "raised so that the best of k comparisons keeps the operating point's false-match rate). "
                         "`match` is `similarity >= threshold`.",
             responses=problems(*IMAGE, *BACKEND, "forbidden", "gallery_not_found", "subject_not_found", "conflict",
                                "audit_unavailable", "liveness_failed"),
             openapi_extra=image_body(VerifyForm, VerifyJson, {"probe": "the face to check",
                                                               "reference": "optional: a second photo"},
                                      {"probe": _B64, "reference": _B64}))
async def verify(request: Request, principal: VerifyKey, settings: deps.SettingsDep, triton: deps.TritonDep,
                 store: deps.StoreDep, points: deps.PointsDep, gate: deps.GateDep, metrics: deps.MetricsDep,
                 audit: deps.AuditDep, challenges: deps.ChallengesDep, rid: deps.RequestIdDep) -> dict:
    options, images = await read_images(request, VerifyForm, VerifyJson, {"probe": "required", "reference": "optional"})
    by_subject = options.gallery is not None or options.subject_id is not None
    if by_subject and (options.gallery is None or options.subject_id is None):
        raise ApiError("validation_error", "gallery and subject_id go together")
    if by_subject == bool(images.get("reference")):
        raise ApiError("validation_error", "send either a reference image or gallery + subject_id")
    policy = options.multi_face

    reference_face, subject = None, None
    if by_subject:
        gallery = await store.get_gallery(principal.tenant, options.gallery)
        if options.embedder and options.embedder != gallery["embedder"]:
            raise ApiError("validation_error", f"gallery {options.gallery!r} holds {gallery['embedder']} templates")
        (probe,) = await analyze_all(triton, [("probe", images["probe"][0])], gallery["embedder"], request_id=rid)
        face = select(probe, policy=policy, gate=gate, field="probe")
        templates = await store.subject_templates(principal.tenant, options.gallery, options.subject_id,
                                                  probe.model, probe.version)
        if templates.size == 0:
            raise ApiError("conflict", f"subject {options.subject_id!r} has no enrolled faces for "
                           f"{probe.model}:{probe.version}", subject_id=options.subject_id)
        # best of k templates: the threshold keeps the point's FMR for the whole comparison (docs/accuracy.md)
        decision = points.decide(probe.model, probe.version, name=options.operating_point,
                                 threshold=options.threshold, templates=len(templates))
        score = float(np.clip((templates @ face.embedding).max(), -1.0, 1.0))
        subject = {"gallery": options.gallery, "subject_id": options.subject_id, "templates_compared": len(templates)}
    else:
        embedder = options.embedder or settings.gateway_default_embedder
        probe, reference = await analyze_all(triton, [("probe", images["probe"][0]),
                                                      ("reference", images["reference"][0])], embedder,
                                             request_id=rid)
        face = select(probe, policy=policy, gate=gate, field="probe")
        other = select(reference, policy=policy, gate=gate, field="reference")
        if (probe.model, probe.version) != (reference.model, reference.version):  # a model rollout mid-request
            raise ApiError("backend_unavailable", "the embedder model changed between the two images; retry",
                           retry_after=1)
        decision = points.decide(probe.model, probe.version, name=options.operating_point,
                                 threshold=options.threshold)
        score = similarity(face.embedding, other.embedding)
        reference_face = other.public()

    pad_info, liveness = await _liveness_checks(principal, options.liveness_challenge, face, probe,
                                                settings=settings, points=points, challenges=challenges,
                                                metrics=metrics, audit=audit, rid=rid)
    match = score >= decision.threshold
    model = model_json(probe)
    metrics.decisions.labels("verify", "match" if match else "no_match").inc()
    audit.write("verify", tenant=principal.tenant, key_id=principal.key_id, gallery=options.gallery,
                subject=options.subject_id, similarity=round(score, 6), threshold=decision.threshold,
                operating_point=decision.name, decision="match" if match else "no_match",
                model=f"{probe.model}:{probe.version}", pad_score=pad_info["score"] if pad_info else None,
                challenge_id=options.liveness_challenge, liveness="passed" if liveness else None,
                request_id=rid)
    answer = {"match": match, "similarity": round(score, 6), "threshold": decision.threshold,
              "operating_point": decision.as_dict(), "model": model, "probe_face": face.public(),
              "reference_face": reference_face, "subject": subject, "request_id": rid}
    # only when asked for (a challenge) or configured (a PAD policy): otherwise the answer is as it always was
    return answer | {k: v for k, v in (("liveness", liveness), ("pad", pad_info)) if v is not None}


async def _liveness_checks(principal: Principal, challenge_id: str | None, face: Chosen, probe: Analysis, *,
                           settings: Settings, points: OperatingPoints, challenges: Challenges, metrics: Metrics,
                           audit: AuditLog, rid: str) -> tuple[dict | None, dict | None]:
    """The probe's PAD score under the tenant's policy, and the liveness challenge the verify is bound to.
    Either refuses the verify with liveness_failed (audited: the refusal names the check and the score)."""
    try:
        pad_info = pad.judge(settings, principal.tenant, face.face.pad_score)
        liveness = None
        if challenge_id is not None:
            threshold = points.decide(probe.model, probe.version,
                                      name=settings.gateway_liveness_identity_point).threshold
            liveness = await challenges.bind(
                principal.tenant, challenge_id, f"{probe.model}:{probe.version}", face.embedding, threshold)
    except ApiError as exc:
        if exc.code == "liveness_failed":
            metrics.decisions.labels("verify", "liveness_failed").inc()
            audit.write("verify", tenant=principal.tenant, key_id=principal.key_id, decision="liveness_failed",
                        reason=exc.extra.get("check"), pad_score=exc.extra.get("pad_score"),
                        challenge_id=challenge_id, model=f"{probe.model}:{probe.version}", request_id=rid)
        raise
    return pad_info, liveness


@router.post("/identify", response_model=IdentifyResponse, summary="1:N: who in the gallery is this?",
             description="Open set: `decision` is `match` (with `subject_id`) when the best candidate's similarity "
                         "reaches the threshold, else `unknown`. The threshold holds the operating point's "
                         "false-positive identification rate (FPIR: the share of people who are not enrolled that "
                         "get named) for a gallery of this size: it rises as the gallery grows. Candidates are "
                         "distinct subjects, best first; a key with only the verify scope sees only candidates at "
                         "or above the threshold, so probing cannot list a gallery.",
             responses=problems(*IMAGE, *BACKEND, "forbidden", "gallery_not_found", "audit_unavailable"),
             openapi_extra=image_body(IdentifyForm, IdentifyJson, {"probe": "the face to identify"},
                                      {"probe": _B64, "gallery": "staff", "top_k": 5}))
async def identify(request: Request, principal: VerifyKey, settings: deps.SettingsDep, triton: deps.TritonDep,
                   store: deps.StoreDep, points: deps.PointsDep, gate: deps.GateDep, sizes: deps.SizesDep,
                   metrics: deps.MetricsDep, audit: deps.AuditDep, rid: deps.RequestIdDep) -> dict:
    options, images = await read_images(request, IdentifyForm, IdentifyJson, {"probe": "required"})
    gallery = await store.get_gallery(principal.tenant, options.gallery)
    (probe,), templates = await asyncio.gather(
        analyze_all(triton, [("probe", images["probe"][0])], gallery["embedder"], request_id=rid),
        sizes.templates(principal.tenant, options.gallery))
    face = select(probe, policy=options.multi_face, gate=gate, field="probe")
    decision = points.decide_identify(probe.model, probe.version, templates, name=options.operating_point,
                                      threshold=options.threshold)
    hits = await store.search(principal.tenant, options.gallery, probe.model, probe.version, face.embedding,
                              options.top_k, settings.gateway_max_faces_per_subject)
    best = hits[0] if hits else None
    outcome = "match" if best is not None and best.similarity >= decision.threshold else "unknown"
    sees_all = principal.allows("enrol")  # verify-only keys see no near misses: a probe cannot list the gallery
    shown = hits if sees_all else [h for h in hits if h.similarity >= decision.threshold]
    metrics.decisions.labels("identify", outcome).inc()
    audit.write("identify", tenant=principal.tenant, key_id=principal.key_id, gallery=options.gallery,
                subject=best.subject if outcome == "match" else None,
                similarity=round(best.similarity, 6) if best else None, threshold=decision.threshold,
                operating_point=decision.name, fpir=decision.fpir, templates=templates, decision=outcome,
                model=f"{probe.model}:{probe.version}", request_id=rid)
    return {"decision": outcome, "subject_id": best.subject if outcome == "match" else None,
            "similarity": round(best.similarity, 6) if best and (sees_all or outcome == "match") else None,
            "candidates": [{"subject_id": h.subject, "similarity": round(h.similarity, 6), "face_id": h.face_id}
                           for h in shown],
            "threshold": decision.threshold, "operating_point": decision.as_dict(), "templates_searched": templates,
            "model": model_json(probe),
            "gallery": options.gallery, "probe_face": face.public(), "request_id": rid}
