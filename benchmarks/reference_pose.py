"""A reference head pose, independent of facestack's, for measuring the liveness challenge (benchmarks/liveness.py).

A MEASURING TOOL ONLY, never part of the service. It uses dlib's 68-point shape predictor
(`shape_predictor_68_face_landmarks.dat` from the `face_recognition_models` package, installed by `make peer`),
which was trained on the iBUG 300-W data set: its licence excludes commercial use. facestack must not ship it,
load it in gateway/ or facestack/, or depend on it; it serves here to choose test frames by a pose that
facestack's own five-point solver (facestack.pipeline.quality.pose) did not produce.

The pose: dlib's HOG detector finds the face, the shape predictor places 68 landmarks, and cv2.solvePnP fits a
generic 3D face to them (through quality.solve_pose, the solver every facestack pose uses: what is independent here
is the landmarks and the 3D face, not the fitting arithmetic). The generic face is built here, not copied: x and y
are the shape predictor's own mean shape (read from the model file, so a frontal face projects onto it exactly), z
is an anthropometric depth per landmark (below). Only the 51 inner points (brows, nose, eyes, mouth) are used: the
17 jaw-line points follow the visible silhouette, which slides over the head as it turns, so they are not fixed
points of a rigid face. Like every generic-model pose, its scale rests on the assumed depths: a real nose 15 %
longer than the model's reads turns about 15 % larger. Conventions are facestack's: yaw > 0 = the face turned
towards the image's right (the person's own left), pitch > 0 = looking down, roll > 0 = the eye line turned
clockwise; degrees."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from facestack.pipeline.headpose import solve_pose

MODEL_FILE = "shape_predictor_68_face_landmarks.dat"
INNER = np.arange(17, 68)  # brows 17-26, nose 27-35, eyes 36-47, mouth 48-67 (dlib / iBUG 300-W order)
RIGHT_EYE, LEFT_EYE = np.arange(36, 42), np.arange(42, 48)  # the subject's right eye is on the image's left
NOSE_TIP, MOUTH_RIGHT, MOUTH_LEFT = 30, 48, 54

# Depth of each inner landmark, in inter-ocular distances (eye centre to eye centre, about 63 mm), behind (+) or
# in front of (-) the plane of the eyes' centres. Rounded adult anthropometry: the nose tip about 35 mm in front
# of the corneas, the nose's base 13-21 mm, the upper lip about 21 mm (2-3 mm behind the line from nose tip to
# chin), the mouth corners about 5 mm, the outer eye corners and brow tails 15-20 mm behind.
_HALF_DEPTH = {  # index on the image's left -> depth; the mirror point gets the same depth
    17: 0.30, 18: 0.10, 19: -0.02, 20: -0.08, 21: -0.10,  # brow, outer to inner
    36: 0.30, 37: 0.05, 38: 0.02, 39: 0.10, 40: 0.03, 41: 0.06,  # eye: outer corner, upper lid, inner, lower lid
    31: -0.20, 32: -0.28,  # nose base: wing, nostril
    48: -0.08, 49: -0.20, 50: -0.30, 59: -0.16, 58: -0.25,  # outer lip: corner, upper, lower
    60: -0.12, 61: -0.24, 67: -0.22,  # inner lip
}
_CENTRE_DEPTH = {27: -0.15, 28: -0.27, 29: -0.40, 30: -0.55, 33: -0.33, 51: -0.33, 57: -0.28, 62: -0.28,
                 66: -0.25}
# the mirror of each left-side inner point (brows 17-21 <-> 26-22, eyes 36-41 <-> 45-42 / 47-46, nose 31-32 <->
# 35-34, lips 48-50 <-> 54-52, 58-59 <-> 56-55, 60-61 <-> 64-63, 67 <-> 65)
MIRROR = {17: 26, 18: 25, 19: 24, 20: 23, 21: 22, 36: 45, 37: 44, 38: 43, 39: 42, 40: 47, 41: 46, 31: 35, 32: 34,
          48: 54, 49: 53, 50: 52, 59: 55, 58: 56, 60: 64, 61: 63, 67: 65}



def model_path() -> Path | None:
    """The 68-point model file of the installed face_recognition_models package (`make peer`), or None."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILE
    return path if path.is_file() else None


def _read_int(data: bytes, pos: int) -> tuple[int, int]:
    # dlib's serialised integer: a control byte (bit 7 = negative, low nibble = byte count), then little-endian bytes
    control = data[pos]
    count = control & 0x0F
    value = int.from_bytes(data[pos + 1:pos + 1 + count], "little")
    return (-value if control & 0x80 else value), pos + 1 + count


def mean_shape(path: Path) -> np.ndarray:
    """The shape predictor's initial (mean) shape, [68, 2] in units of its detection box: the first thing the
    file holds (version, then a 136 x 1 float matrix, each float a mantissa and a power of two)."""
    data = path.open("rb").read(8192)
    version, pos = _read_int(data, 0)
    rows, pos = _read_int(data, pos)
    cols, pos = _read_int(data, pos)
    if version != 1 or abs(rows) * abs(cols) != 136:
        raise ValueError(f"{path}: not a 68-point dlib shape predictor (version {version}, {rows} x {cols})")
    values = []
    for _ in range(136):
        mantissa, pos = _read_int(data, pos)
        exponent, pos = _read_int(data, pos)
        values.append(mantissa * 2.0 ** exponent)
    return np.array(values).reshape(68, 2)


def _eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return points[RIGHT_EYE].mean(axis=0), points[LEFT_EYE].mean(axis=0)


def generic_face(shape: np.ndarray) -> np.ndarray:
    """The generic 3D face [68, 3] (x right, y down, z away from the camera; inter-ocular units, origin between
    the eyes) from a frontal 2D mean shape: made left-right symmetric, then given the anthropometric depths.
    The jaw points get no depth (NaN): they are not used."""
    mirrored = shape.copy()
    mirrored[:, 0] = -mirrored[:, 0]
    swap = np.arange(68)
    for left, right in MIRROR.items():
        swap[left], swap[right] = right, left
    swap[:17] = 16 - np.arange(17)  # the jaw line runs from the image's left to its right
    symmetric = (shape + mirrored[swap]) / 2
    symmetric[:, 0] -= symmetric[[27, 28, 29, 30, 33, 51, 57, 62, 66, 8], 0].mean()  # midline at x = 0
    right, left = _eye_centres(symmetric)
    symmetric = (symmetric - (right + left) / 2) / float(np.linalg.norm(left - right))
    depth = np.full(68, np.nan)
    for index, z in _HALF_DEPTH.items():
        depth[index] = depth[MIRROR[index]] = z
    for index, z in _CENTRE_DEPTH.items():
        depth[index] = z
    return np.column_stack([symmetric, depth])


def solve(points: np.ndarray, face: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees: the rotation of the generic `face` whose projection best fits the 68 image
    `points` (inner points only), through a near-orthographic pinhole camera centred on the face."""
    image = np.asarray(points, np.float64)[INNER]
    model = np.ascontiguousarray(face[INNER], np.float64)
    right, left = _eye_centres(np.asarray(points, np.float64))
    size = max(float(np.linalg.norm(left - right)), 1e-3)
    angles = solve_pose(model, image, size)
    if angles is None:
        raise ValueError("solvePnP found no pose")
    return angles


def five_points(points: np.ndarray) -> np.ndarray:
    """The 68 points reduced to YuNet's five (right eye, left eye, nose tip, right and left mouth corners)."""
    right, left = _eye_centres(points)
    return np.array([right, left, points[NOSE_TIP], points[MOUTH_RIGHT], points[MOUTH_LEFT]])


@dataclass(frozen=True)
class Reading:
    yaw: float
    pitch: float
    roll: float
    box: tuple[int, int, int, int]  # dlib's detection, (left, top, right, bottom)
    points: np.ndarray  # [68, 2] image pixels


class ReferencePose:
    """dlib HOG detection + 68 landmarks + solvePnP on the generic face. Needs `make peer`."""

    def __init__(self, path: Path | None = None) -> None:
        import dlib  # the peer extra (dlib-bin); imported here so that the module loads without it

        path = path or model_path()
        if path is None:
            raise FileNotFoundError(f"{MODEL_FILE} not found: install the peer extra (`make peer`)")
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(path))
        self.face = generic_face(mean_shape(path))
        self._rectangle = dlib.rectangle

    def read(self, image_bgr: np.ndarray, near: tuple[float, float] | None = None) -> Reading | None:
        """The pose of the face nearest `near` (x, y; default the image's centre), or None without a face.
        Upsamples once more only when the first pass finds nothing (LFW faces are about 110 px)."""
        rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
        boxes = list(self.detector(rgb, 0)) or list(self.detector(rgb, 1))
        if not boxes:
            return None
        h, w = rgb.shape[:2]
        x, y = near if near is not None else (w / 2, h / 2)
        box = min(boxes, key=lambda b: (b.center().x - x) ** 2 + (b.center().y - y) ** 2)
        shape = self.predictor(rgb, box)
        points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        yaw, pitch, roll = solve(points, self.face)
        return Reading(yaw, pitch, roll, (box.left(), box.top(), box.right(), box.bottom()), points)


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether the reference can run here (dlib and the 68-point model file of `make peer`)."""
    return model_path() is not None and importlib.util.find_spec("dlib") is not None
