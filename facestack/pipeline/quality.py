"""Per-face quality signals (from the box, the landmarks and the aligned crop) and the gates that judge them.

The gates live here, beside the signals, so that the gateway (which refuses faces with them) and the accuracy
tool (which measures what each gate costs on LFW) apply the very same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from facestack.pipeline.headpose import solve_pose
from facestack.settings import Settings, get_settings

FIELDS = ("face_size", "sharpness", "yaw", "pitch", "roll", "brightness")

# A generic face as five 3D points (right eye, left eye, nose tip, right mouth corner, left mouth corner), in
# units of the inter-ocular distance: x to the image's right, y down, z away from the camera. x and y are the
# ArcFace alignment template's proportions (so a frontal face projects onto the template); the depths are
# anthropometric: the nose tip stands about 0.55 IOD (~35 mm) in front of the eyes, the mouth corners a little.
FACE_3D = np.array([
    [-0.5, 0.0, 0.0],
    [0.5, 0.0, 0.0],
    [0.0, 0.571, -0.55],
    [-0.414, 1.154, -0.05],
    [0.414, 1.154, -0.05],
])


def pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from the 5 landmarks: the rotation of FACE_3D that best projects onto them.

    Solved with cv2.solvePnP (SQPnP, then Levenberg-Marquardt) through a pinhole camera centred on the face.
    Unlike a ratio of 2D offsets it does not saturate: on synthetic heads it is within a few degrees up to 80
    (tests/test_quality.py). Signs: yaw > 0 = the face turned to the image's right; pitch > 0 = looking down;
    roll > 0 = the eye line turned clockwise in the image.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eyes_mid = (points[0] + points[1]) / 2
    mouth_mid = (points[3] + points[4]) / 2
    size = max(float(np.linalg.norm(points[1] - points[0])), float(np.linalg.norm(mouth_mid - eyes_mid)))
    if not np.isfinite(points).all() or size < 1e-3:
        return 0.0, 0.0, 0.0  # a degenerate face: nothing to measure
    return solve_pose(FACE_3D, points, size) or (0.0, 0.0, 0.0)


# Sharpness is measured on the crop brought to this side, so that one gate serves every embedder: dlib's 150-px
# chip (a face of ~100 px with padding) otherwise reads about twice as blurred as SFace's 112-px crop.
SHARPNESS_SIDE = 112


def measure(box: np.ndarray, landmarks: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """The FIELDS for one face: box in original pixels, its landmarks, its aligned crop (BGR or RGB)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    face_size = float(min(box[2] - box[0], box[3] - box[1]))
    if grey.shape[0] != SHARPNESS_SIDE:
        grey = cv2.resize(grey, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    yaw, pitch, roll = pose(landmarks)
    brightness = float(grey.mean())
    return np.array([face_size, sharpness, yaw, pitch, roll, brightness], dtype=np.float32)


@dataclass(frozen=True)
class Refusal:
    gate: str  # "face_size", "sharpness", "pose", "brightness"
    detail: str  # for people: what was measured against which limit


# Each gate in plain words (the console and docs show these).
GATE_WORDS = {"face_size": "the face is too small", "sharpness": "the photo is too blurred",
              "pose": "the face is turned too far", "brightness": "the photo is too dark or too bright"}


@dataclass(frozen=True)
class QualityGate:
    """What a face must reach to be compared or enrolled; `refusals` lists every gate it fails."""

    min_face_size: float
    min_sharpness: float
    max_pose_deg: float
    brightness: tuple[float, float]

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> QualityGate:
        """The gateway's gate: FACESTACK_GATEWAY_MIN_FACE_SIZE, _MIN_SHARPNESS, _MAX_POSE_DEG, _BRIGHTNESS_RANGE."""
        s = settings or get_settings()
        return cls(s.gateway_min_face_size, s.gateway_min_sharpness, s.gateway_max_pose_deg,
                   tuple(s.gateway_brightness_range))

    def refusals(self, q: Mapping[str, float]) -> list[Refusal]:
        found = []
        if q["face_size"] < self.min_face_size:
            found.append(Refusal("face_size", f"face {q['face_size']:.0f} px < {self.min_face_size:g}"))
        if q["sharpness"] < self.min_sharpness:
            found.append(Refusal("sharpness", f"sharpness {q['sharpness']:.1f} < {self.min_sharpness:g}"))
        for angle in ("yaw", "pitch"):
            if abs(q[angle]) > self.max_pose_deg:
                found.append(Refusal("pose", f"|{angle}| {abs(q[angle]):.0f} deg > {self.max_pose_deg:g}"))
        lo, hi = self.brightness
        if not lo <= q["brightness"] <= hi:
            found.append(Refusal("brightness", f"brightness {q['brightness']:.0f} outside [{lo:g}, {hi:g}]"))
        return found


def as_dict(row: np.ndarray) -> dict[str, float]:
    """One row of the pipeline's quality output -> {field: value}."""
    return {name: float(v) for name, v in zip(FIELDS, row, strict=True)}
