"""The presentation-attack-detection (PAD) policy of a tenant, applied to the `face_pad` score of a face.

No PAD model ships with facestack (docs/liveness.md). A deployer who installs one as the Triton model
`face_pad` (contract: docs/architecture.md) gets a bona-fide score per face from the pipeline; this module
decides what it means: `off` (ignored), `report` (returned and audited), `enforce` (also refused below the
threshold, and refused when no score came back: a missing model must not pass as a pass).
"""

from __future__ import annotations

from facestack.settings import Settings
from gateway.errors import ApiError


def policy(settings: Settings, tenant: str) -> str:
    return settings.gateway_pad_policy_by_tenant.get(tenant, settings.gateway_pad_policy)


def judge(settings: Settings, tenant: str, score: float | None, *, field: str = "probe") -> dict | None:
    """The answer's `pad` object (None under `off`); raises liveness_failed under `enforce` for a low or
    missing score."""
    mode = policy(settings, tenant)
    if mode == "off":
        return None
    threshold = settings.gateway_pad_threshold
    passed = None if score is None else score >= threshold
    if mode == "enforce" and not passed:
        why = ("no PAD score came back (is the face_pad model installed and enabled?)" if score is None
               else f"bona-fide score {score:.3f} < {threshold:g}")
        raise ApiError("liveness_failed", f"{field}: presentation-attack check failed: {why}", field=field,
                       check="pad", pad_score=None if score is None else round(score, 6))
    return {"policy": mode, "score": None if score is None else round(score, 6), "threshold": threshold,
            "passed": passed}
