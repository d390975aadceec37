"""Which face of an image a request uses, and whether it is good enough to compare or enrol."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import ApiError
from gateway.triton_client import Analysis, DetectedFace


@dataclass(frozen=True)
class QualityGate:
    min_face_size: float
    min_sharpness: float
    max_pose_deg: float
    brightness: tuple[float, float]

    def problems(self, face: DetectedFace) -> list[str]:
        q = face.quality
        found = []
        if q["sharpness"] < self.min_sharpness:
            found.append(f"sharpness {q['sharpness']:.1f} < {self.min_sharpness:g}")
        for angle in ("yaw", "pitch"):
            if abs(q[angle]) > self.max_pose_deg:
                found.append(f"|{angle}| {abs(q[angle]):.0f} deg > {self.max_pose_deg:g}")
        lo, hi = self.brightness
        if not lo <= q["brightness"] <= hi:
            found.append(f"brightness {q['brightness']:.0f} outside [{lo:g}, {hi:g}]")
        return found


def select(analysis: Analysis, *, policy: str, gate: QualityGate, field: str) -> DetectedFace:
    """The face to use under the multi-face policy (`largest` or `reject`), after the size and quality gates.

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
    face = usable[0]  # largest first
    problems = gate.problems(face)
    if problems:
        raise ApiError("low_quality", f"{field}: " + "; ".join(problems), field=field)
    return face
