"""POST /v1/liveness/challenges and /v1/liveness/challenges/{id}/frames; the verify binding (docs/liveness.md)."""

from __future__ import annotations

import math

import numpy as np
from fastapi import APIRouter, Request

from facestack.triton.contract import Analysis
from gateway import liveness, pad
from gateway.api import deps
from gateway.api.common import BACKEND, IMAGE, image_body, iso, problems
from gateway.auth import VerifyKey
from gateway.errors import ApiError
from gateway.faces import analyze_all, model_json
from gateway.inputs import read_images
from gateway.schemas import ChallengeResponse, FramesForm, FramesJson, LivenessResult
from gateway.store import now_ms

router = APIRouter(prefix="/v1/liveness", tags=["liveness"])
CONVENTION = ("unmirrored camera frames; turn_left = the person turns to their own left (nose towards the image's "
              "right, yaw grows); look_up = chin up (pitch falls)")


@router.post("/challenges", status_code=201, response_model=ChallengeResponse,
             summary="Issue a head-movement challenge",
             description="A random sequence of 2-3 actions (none twice in a row), a nonce and a deadline, "
                         "stored server-side for one use. Capture a frontal frame, then a few frames per action in "
                         "order, and send them to `/v1/liveness/challenges/{id}/frames` with the nonce before "
                         "`expires_at`.",
             responses=problems(*BACKEND, "forbidden"))
async def issue(principal: VerifyKey, settings: deps.SettingsDep, challenges: deps.ChallengesDep) -> dict:
    actions = liveness.new_actions(allowed=settings.gateway_liveness_actions)
    challenge = await challenges.issue(principal.tenant, actions)
    return {"challenge_id": challenge.id, "nonce": challenge.nonce, "actions": actions,
            "instructions": [liveness.INSTRUCTIONS[a] for a in actions], "expires_at": iso(challenge.deadline_ms),
            "deadline_s": settings.gateway_liveness_deadline_s, "min_frames": len(actions) + 1,
            "max_frames": settings.gateway_max_images_per_request, "yaw_deg": settings.gateway_liveness_yaw_deg,
            "pitch_deg": settings.gateway_liveness_pitch_deg, "convention": CONVENTION}


def _frame(data: bytes, analysis: Analysis, min_face_size: float) -> liveness.Frame:
    usable = [f for f in analysis.faces if f.quality["face_size"] >= min_face_size]
    if len(usable) != 1:
        return liveness.Frame(liveness.digest(data), len(usable))
    face = usable[0]
    return liveness.Frame(liveness.digest(data), 1, face.quality["yaw"], face.quality["pitch"], face.quality["roll"],
                          np.asarray(face.landmarks, np.float64), face.embedding, face.pad_score, face.mesh_pose)


@router.post("/challenges/{challenge_id}/frames", response_model=LivenessResult,
             summary="Answer a challenge with the captured frames",
             description="Frames in capture order (multipart `frames` parts, or JSON `frames` list) with the "
                         "challenge's `nonce`. The decision: `live` (every step in order by one person), `not_live` "
                         "(with the reason: expired, repeated_frame, identity_changed, unexpected_action, "
                         "step_missing, pad_failed) or `inconclusive` (a frame without exactly one face: capture "
                         "again). A challenge is answered once: a second submission is `challenge_used` (409).",
             responses=problems(*IMAGE[:3], *BACKEND, "forbidden", "challenge_not_found", "challenge_used",
                                "audit_unavailable"),
             openapi_extra=image_body(FramesForm, FramesJson, {"frames": "the frames, repeated, in order"},
                                      {"nonce": "kP3...", "frames": [{"image_base64": "/9j/4AAQ..."}]}))
async def frames(challenge_id: str, request: Request, principal: VerifyKey, settings: deps.SettingsDep,
                 triton: deps.TritonDep, points: deps.PointsDep, gate: deps.GateDep, metrics: deps.MetricsDep,
                 audit: deps.AuditDep, challenges: deps.ChallengesDep, rid: deps.RequestIdDep) -> dict:
    arrived = now_ms()
    options, images = await read_images(request, FramesForm, FramesJson, {"frames": "many"})
    challenge = await challenges.get(principal.tenant, challenge_id, options.nonce)
    found = images.get("frames", [])
    if len(found) < len(challenge.actions) + 1:
        raise ApiError("validation_error", f"{len(found)} frames; this challenge needs at least "
                       f"{len(challenge.actions) + 1} (a frontal frame, then one or more per action)")
    expired = arrived > challenge.deadline_ms
    analyses: list[Analysis] = []
    if not expired:  # an expired challenge is not worth the pipeline's time
        analyses = await analyze_all(triton, [(f"frames[{i}]", image) for i, image in enumerate(found)],
                                     settings.gateway_default_embedder, request_id=rid, max_faces=4, mesh=True)
    # Claimed after the pipeline ran, so a frame it refuses (400/413/415) does not use the challenge up.
    if not await challenges.claim(principal.tenant, challenge.id, "frames"):
        raise ApiError("challenge_used", f"challenge {challenge.id!r} was already answered; request a new one",
                       challenge_id=challenge.id)
    observed, source = liveness.judged_pose([_frame(image.data, analysis, gate.min_face_size)
                                             for image, analysis in zip(found, analyses, strict=False)])
    mesh = source == liveness.MESH  # its thresholds are in the mesh's degrees (docs/liveness.md)
    thresholds = liveness.thresholds(
        settings.gateway_liveness_actions,
        settings.gateway_liveness_mesh_yaw_deg if mesh else settings.gateway_liveness_yaw_deg,
        settings.gateway_liveness_mesh_pitch_deg if mesh else settings.gateway_liveness_pitch_deg, 0.0)
    model = version = ""
    point = settings.gateway_liveness_identity_point
    if analyses:
        model, version = analyses[0].model, analyses[0].version
        if any((a.model, a.version) != (model, version) for a in analyses):  # a model rollout mid-request
            raise ApiError("backend_unavailable", "the embedder model changed between frames; retry with a new "
                           "challenge", retry_after=1)
        identity = points.decide(model, version, name=point).threshold
        thresholds = liveness.Thresholds(thresholds.yaw_deg, thresholds.pitch_deg, identity)
    enforce = pad.policy(settings, principal.tenant) == "enforce"
    outcome = liveness.evaluate(challenge.actions, observed, thresholds, expired=expired,
                                pad_threshold=settings.gateway_pad_threshold if enforce else None)
    live = outcome.decision == "live"
    first = observed[0] if observed else None
    await challenges.keep_result(challenge, outcome.decision, outcome.reason,
                                 f"{model}:{version}" if live else None,
                                 first.embedding if live and first is not None else None)
    metrics.decisions.labels("liveness", outcome.decision).inc()
    audit.write("liveness", tenant=principal.tenant, key_id=principal.key_id, challenge_id=challenge.id,
                decision=outcome.decision, reason=outcome.reason, actions=",".join(challenge.actions),
                pose_source=source, pad_score=_lowest([f.pad_score for f in observed]),
                model=f"{model}:{version}" if model else None, request_id=rid)
    return {"challenge_id": challenge.id, "decision": outcome.decision, "reason": outcome.reason,
            "detail": outcome.detail, "frame": outcome.frame, "actions": challenge.actions, "steps": outcome.steps,
            "frames": outcome.frames, "pose_source": source, "yaw_deg": thresholds.yaw_deg,
            "pitch_deg": thresholds.pitch_deg if math.isfinite(thresholds.pitch_deg) else None,
            "identity_threshold": thresholds.identity, "identity_operating_point": point,
            "model": model_json(analyses[0]) if analyses else {"embedder": "", "name": "", "version": ""},
            "request_id": rid}


def _lowest(scores: list[float | None]) -> float | None:
    present = [s for s in scores if s is not None]
    return round(min(present), 6) if present else None
