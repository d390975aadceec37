"""Dense face landmarks (MediaPipe FaceMesh, 468 points), the head pose they give, and eye openness.

The model (export/facemesh.py) takes a 192x192 RGB crop in [0, 1] framed as MediaPipe frames it: a square
rotated so that the eye line is level, 1.5x the face's extent. It returns 468 (x, y, z) points in crop
pixels (z: depth relative to the face, scaled like x, smaller = nearer the camera) and a face-presence logit.

Framing follows MediaPipe's graphs (face_detection_front_detection_to_roi, face_landmark_landmarks_to_roi):
`rect_from_mesh` is its tracking rectangle from a previous mesh (the parity check reproduces the reference
exactly with it); `rect_from_detection` frames a YuNet face (box + 5 points) the same way, with the scale
fitted so that it lands on `rect_from_mesh` (docs/mesh.md).

Pose: cv2.solvePnP of MediaPipe's canonical face (its 33 rigid "Procrustes" points, not the lids or the
mouth, which move with blinks and speech) onto the mesh, with facestack's sign conventions
(facestack/pipeline/quality.py): yaw > 0 = face turned to the image's right, pitch > 0 = looking down,
roll > 0 = eye line turned clockwise in the image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facestack.pipeline.headpose import solve_pose
from facestack.pipeline.sessions import newest_version, onnx_session, session_options

INPUT_SIZE = 192
POINTS = 468
INPUT_NAME = "input"
LANDMARKS_NAME = "landmarks"
FACE_FLAG_NAME = "face_flag"
MODEL_FILE = "model.onnx"
CANONICAL_FILE = "canonical_face.json"
RECT_SCALE = 1.5  # MediaPipe's RectTransformationCalculator scale for both framings

# Mesh indices (MediaPipe's topology). "Right" is the subject's right, on the image's left.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263  # MediaPipe levels the crop on these two
# Each eye: the corners, then three (upper lid, lower lid) pairs across the eye.
RIGHT_EYE = {"corners": (33, 133), "lids": ((160, 144), (159, 145), (158, 153))}
LEFT_EYE = {"corners": (362, 263), "lids": ((385, 380), (386, 374), (387, 373))}

# YuNet's box centre and size -> MediaPipe's framing: the side is `YUNET_SIDE` x the box's longer side
# (MediaPipe's 1.5 x the mesh's extent), the centre moved down by `YUNET_SHIFT` x the box's height. Fitted
# on the registry photos and LFW View 1 against rect_from_mesh (benchmarks/mesh_pose.py prints the fit).
YUNET_SIDE = 1.37
YUNET_SHIFT = 0.055


@dataclass(frozen=True)
class Rect:
    """A rotated square in image pixels: centre, side, rotation in radians (clockwise in the image)."""

    cx: float
    cy: float
    side: float
    rotation: float

    def to_crop(self) -> np.ndarray:
        """2x3 affine: image pixels -> crop pixels (the rect's corners onto 0 and INPUT_SIZE, as MediaPipe's
        ImageToTensorCalculator warps: corners to the crop's edges, not to pixel centres)."""
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        k = INPUT_SIZE / self.side
        rot_inv = np.array([[c, s], [-s, c]]) * k
        offset = INPUT_SIZE / 2 - rot_inv @ np.array([self.cx, self.cy])
        return np.hstack([rot_inv, offset[:, None]])

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] crop points (x, y, z in crop pixels) -> image pixels; z scaled like x (LandmarkProjection)."""
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        k = self.side / INPUT_SIZE
        uv = points[:, :2] - INPUT_SIZE / 2
        xy = uv @ (np.array([[c, -s], [s, c]]) * k).T + np.array([self.cx, self.cy])
        return np.hstack([xy, points[:, 2:3] * k])


def _rotation(start: np.ndarray, end: np.ndarray) -> float:
    """The rotation that levels the start->end line (MediaPipe's DetectionsToRects, target angle 0)."""
    d = np.asarray(end, np.float64) - np.asarray(start, np.float64)
    return float(np.arctan2(d[1], d[0]))


def rect_from_mesh(points: np.ndarray) -> Rect:
    """MediaPipe's tracking rect: the mesh's axis-aligned bounding box centre, 1.5x its longer side, levelled
    on the outer eye corners."""
    lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    centre = (lo + hi) / 2
    return Rect(float(centre[0]), float(centre[1]), float(RECT_SCALE * (hi - lo).max()),
                _rotation(points[RIGHT_EYE_OUTER, :2], points[LEFT_EYE_OUTER, :2]))


def rect_from_detection(box: np.ndarray, landmarks: np.ndarray) -> Rect:
    """The model's framing from a YuNet face: box [x1, y1, x2, y2], 5 landmarks (right eye first)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    return Rect((x1 + x2) / 2, (y1 + y2) / 2 + YUNET_SHIFT * h, YUNET_SIDE * max(w, h),
                _rotation(landmarks[0], landmarks[1]))


def crop(image_rgb: np.ndarray, rect: Rect) -> np.ndarray:
    """The model input for one face: [192, 192, 3] float32 RGB in [0, 1] (border pixels replicated)."""
    warped = cv2.warpAffine(image_rgb, rect.to_crop(), (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    return warped.astype(np.float32) / 255.0


@dataclass(frozen=True)
class Canonical:
    """MediaPipe's canonical face (cm; x to the subject's left, y up, z out of the face) and its rigid points."""

    vertices: np.ndarray  # [468, 3]
    rigid: np.ndarray  # indices of the Procrustes basis points

    @classmethod
    def load(cls, path: Path) -> Canonical:
        data = json.loads(path.read_text())
        return cls(np.asarray(data["vertices"], np.float64), np.asarray(data["procrustes_ids"], np.int64))


# The canonical face turned into facestack's camera frame (quality.FACE_3D's: x to the image's right, y down,
# z away from the camera).
_TO_CAMERA = np.diag([1.0, -1.0, -1.0])


def head_pose(points: np.ndarray, canonical: Canonical) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees: the rotation of the canonical face that best projects onto the mesh."""
    model = canonical.vertices[canonical.rigid] @ _TO_CAMERA
    image = np.ascontiguousarray(points[canonical.rigid, :2], np.float64)
    size = float(np.ptp(image, axis=0).max())
    if not np.isfinite(image).all() or size < 1e-3:
        return 0.0, 0.0, 0.0
    # Scale the model to image units roughly (cm -> px), so the assumed camera distance means what it says.
    model = model * (size / float(np.ptp(model[:, :2], axis=0).max()))
    return solve_pose(model, image, size) or (0.0, 0.0, 0.0)


def eye_openness(points: np.ndarray) -> tuple[float, float]:
    """(right, left): mean eyelid gap over eye width, in the image plane.

    On LFW View 1 (docs/mesh.md) the median is 0.27 and the lowest faces, eyes shut or squeezed by a laugh, read
    0.10-0.12: this model (without MediaPipe's attention refinement) never closes the lid contour fully, so a
    blink shows as a relative drop across frames, not as a value near zero."""

    def one(eye: dict) -> float:
        a, b = (points[i, :2] for i in eye["corners"])
        width = float(np.linalg.norm(b - a))
        gaps = [float(np.linalg.norm(points[u, :2] - points[d, :2])) for u, d in eye["lids"]]
        return float(np.mean(gaps) / width) if width > 1e-6 else 0.0

    return one(RIGHT_EYE), one(LEFT_EYE)


@dataclass(frozen=True)
class Mesh:
    """One face's mesh in image pixels and what is read from it."""

    points: np.ndarray  # [468, 3] x, y in image pixels; z relative depth in the same scale
    presence: float  # the model's face-presence probability (MediaPipe drops a face below 0.5)
    yaw: float
    pitch: float
    roll: float
    eyes: tuple[float, float]  # (right, left) eye openness


def model_dir(repository: Path, model: str) -> Path | None:
    """The newest version folder of `model` holding both files FaceMesh needs, or None (not exported)."""
    return newest_version(repository / model, MODEL_FILE, CANONICAL_FILE) if model else None


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


class FaceMesh:
    """The exported model and canonical face from a model directory (model.onnx + canonical_face.json)."""

    def __init__(self, directory: Path, threads: int = 1) -> None:
        self.session = onnx_session(directory / MODEL_FILE, session_options(threads))
        self.canonical = Canonical.load(directory / CANONICAL_FILE)

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N, 192, 192, 3] crops -> ([N, 468, 3] crop-pixel points, [N] presence logits)."""
        landmarks, flags = self.session.run([LANDMARKS_NAME, FACE_FLAG_NAME], {INPUT_NAME: crops})
        return landmarks.reshape(len(crops), POINTS, 3), flags.reshape(len(crops))

    def run(self, image_rgb: np.ndarray, rect: Rect) -> Mesh:
        landmarks, flags = self.infer(crop(image_rgb, rect)[None])
        points = rect.to_image(landmarks[0].astype(np.float64))
        yaw, pitch, roll = head_pose(points, self.canonical)
        return Mesh(points, _sigmoid(flags[0]), yaw, pitch, roll, eye_openness(points))

    def run_face(self, image_rgb: np.ndarray, box: np.ndarray, landmarks5: np.ndarray) -> Mesh:
        """A YuNet face (box and 5 landmarks in the image's pixels) -> its mesh."""
        return self.run(image_rgb, rect_from_detection(box, landmarks5))
