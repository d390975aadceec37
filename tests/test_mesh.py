"""FaceMesh (facestack.pipeline.mesh, export/facemesh.py): parity with TensorFlow Lite, pose signs, eye openness.

The model is exported by `make models` into `model_repository/face_mesh/1/` (FACESTACK_MESH_DIR may point at
another export); the parity reference is TensorFlow Lite's own interpreter (`tflite-runtime`, the dev extra).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from export import facemesh
from facestack import artifacts
from facestack.artifacts import REPO_ROOT, photo
from facestack.pipeline import mesh, quality

MODEL_DIR = Path(os.environ.get("FACESTACK_MESH_DIR", REPO_ROOT / "model_repository" / "face_mesh" / "1"))


@pytest.fixture(scope="module")
def face_mesh() -> mesh.FaceMesh:
    assert (MODEL_DIR / mesh.MODEL_FILE).exists(), f"no exported FaceMesh in {MODEL_DIR}: run `make models`"
    return mesh.FaceMesh(MODEL_DIR)


@pytest.fixture(scope="module")
def detector():
    from benchmarks.mesh_pose import Detector

    return Detector(REPO_ROOT / "model_repository")


def rgb_of(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(photo(name))), cv2.COLOR_BGR2RGB)


def central(detector, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    found = detector.central_face(np.ascontiguousarray(rgb[:, :, ::-1]))
    assert found is not None
    return found


# --- parity with the reference implementation ---------------------------------------------------------------


def test_parity_with_tensorflow_lite(face_mesh):
    """The exported ONNX equals the pinned .tflite run by TensorFlow Lite on the same face crops (YuNet-framed,
    then tracked): fp32 kernels reorder sums, ~1e-4 px on a 192 px crop; a wrong operator mapping is pixels off."""
    result = facemesh.parity(MODEL_DIR, artifacts.fetch(facemesh.FACE_LANDMARK), ("obama.jpg", "biden.jpg"))
    assert result["onnx_vs_tflite_max_px"] < 1e-3
    assert result["onnx_vs_tflite_max_logit"] < 1e-3
    assert all(row["presence"] > 0.9 for row in result["photos"])  # the crops were faces


def test_batch_equals_single(face_mesh, detector):
    rgb = rgb_of("obama.jpg")
    box, five = central(detector, rgb)
    one = mesh.crop(rgb, mesh.rect_from_detection(box, five))
    batch = np.stack([one, one[::-1].copy(), one])
    points, flags = face_mesh.infer(batch)
    single, _ = face_mesh.infer(one[None])
    assert points.shape == (3, mesh.POINTS, 3) and flags.shape == (3,)
    np.testing.assert_allclose(points[0], single[0], atol=1e-3)
    np.testing.assert_allclose(points[2], single[0], atol=1e-3)
    assert np.abs(points[1] - single[0]).max() > 1.0  # an upside-down face is not the same answer


# --- framing ------------------------------------------------------------------------------------------------


def test_rect_maps_crop_and_image_consistently():
    rect = mesh.Rect(cx=300.0, cy=200.0, side=150.0, rotation=np.radians(25))
    points = np.array([[10.0, 20.0, 0.0], [96.0, 96.0, 3.0], [180.0, 5.0, -2.0]])
    image = rect.to_image(points)
    affine = rect.to_crop()
    back = image[:, :2] @ affine[:, :2].T + affine[:, 2]
    np.testing.assert_allclose(back, points[:, :2], atol=1e-9)
    np.testing.assert_allclose(image[1, :2], [300.0, 200.0])  # the crop's centre is the rect's centre
    assert image[1, 2] == pytest.approx(3.0 * 150 / 192)  # z scales like x


def test_framing_from_yunet_lands_on_mediapipe_framing(face_mesh, detector):
    """YuNet's framing is within a few per cent of MediaPipe's own (the mesh's) on registry photos."""
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        rgb = rgb_of(name)
        box, five = central(detector, rgb)
        rect = mesh.rect_from_detection(box, five)
        tracked = mesh.rect_from_mesh(face_mesh.run(rgb, rect).points)
        assert tracked.side / rect.side == pytest.approx(1.0, abs=0.08), name
        assert np.hypot(tracked.cx - rect.cx, tracked.cy - rect.cy) < 0.06 * rect.side, name


# --- pose signs ---------------------------------------------------------------------------------------------


def rotated_canonical(canonical: mesh.Canonical, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The canonical face turned by (yaw, pitch, roll) in facestack's convention and projected (orthographic),
    as image points 200 px across around (320, 240)."""
    model = canonical.vertices @ np.diag([1.0, -1.0, -1.0])  # x right, y down, z away
    y, p, r = np.radians([yaw, pitch, roll])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    ry = np.array([[np.cos(-y), 0, np.sin(-y)], [0, 1, 0], [-np.sin(-y), 0, np.cos(-y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    turned = model @ (rz @ ry @ rx).T
    return turned * (200 / np.ptp(model[:, 0])) + np.array([320.0, 240.0, 0.0])


@pytest.fixture(scope="module")
def canonical() -> mesh.Canonical:
    assert (MODEL_DIR / mesh.CANONICAL_FILE).exists(), f"no canonical face in {MODEL_DIR}: run `make models`"
    return mesh.Canonical.load(MODEL_DIR / mesh.CANONICAL_FILE)


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (30, 0, 0), (-30, 0, 0), (0, 20, 0), (0, -20, 0),
                                              (0, 0, 15), (25, -15, 10), (60, 10, 0)])
def test_head_pose_recovers_known_rotations(canonical, yaw, pitch, roll):
    points = rotated_canonical(canonical, yaw, pitch, roll)
    got = mesh.head_pose(points, canonical)
    np.testing.assert_allclose(got, (yaw, pitch, roll), atol=2.5)


def test_sign_conventions_match_five_point_pose(canonical):
    """Head turned to its own left (nose towards the image's right) = yaw > 0; looking down = pitch > 0;
    for the mesh and for quality.pose alike."""
    points = rotated_canonical(canonical, 25, 0, 0)
    nose, eyes_mid = points[1, 0], (points[33, 0] + points[263, 0]) / 2
    assert nose > eyes_mid  # the nose has moved to the image's right
    yaw, _, _ = mesh.head_pose(points, canonical)
    assert yaw > 15
    # the same head as five points (eye centres, nose tip, mouth corners) for the 5-point solver
    five = np.array([points[[33, 133]].mean(axis=0), points[[362, 263]].mean(axis=0), points[1], points[61],
                     points[291]])[:, :2].copy()
    assert quality.pose(five)[0] > 10
    down = rotated_canonical(canonical, 0, 20, 0)
    assert down[1, 1] > rotated_canonical(canonical, 0, 0, 0)[1, 1]  # the nose tip moves down the image
    assert mesh.head_pose(down, canonical)[1] > 10


def test_mirrored_photo_flips_yaw_and_roll(face_mesh, detector):
    """obama2.jpg is turned ~15 degrees: its mirror image reads the opposite yaw and roll, about the same pitch."""
    rgb = rgb_of("obama2.jpg")
    mirrored = np.ascontiguousarray(rgb[:, ::-1])
    a = face_mesh.run_face(rgb, *central(detector, rgb))
    b = face_mesh.run_face(mirrored, *central(detector, mirrored))
    assert abs(a.yaw) > 8 and abs(b.yaw) > 8
    assert np.sign(a.yaw) == -np.sign(b.yaw)
    assert a.yaw + b.yaw == pytest.approx(0, abs=5)
    assert a.roll + b.roll == pytest.approx(0, abs=4)
    assert a.pitch == pytest.approx(b.pitch, abs=8)


def test_rotated_photo_reads_as_roll_only(face_mesh, detector):
    """Rotating the photo clockwise by 20 degrees adds ~20 degrees of roll and leaves yaw and pitch."""
    rgb = rgb_of("obama.jpg")
    h, w = rgb.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), -20, 1.0)  # OpenCV: positive = counter-clockwise
    turned = cv2.warpAffine(rgb, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)
    a = face_mesh.run_face(rgb, *central(detector, rgb))
    b = face_mesh.run_face(turned, *central(detector, turned))
    assert b.roll - a.roll == pytest.approx(20, abs=3)
    assert b.yaw == pytest.approx(a.yaw, abs=4)
    assert b.pitch == pytest.approx(a.pitch, abs=4)


# --- eye openness -------------------------------------------------------------------------------------------


def test_eye_openness_follows_the_lid_gap():
    points = np.zeros((mesh.POINTS, 3))
    for eye, x0 in ((mesh.RIGHT_EYE, 100.0), (mesh.LEFT_EYE, 200.0)):
        a, b = eye["corners"]
        points[a, :2], points[b, :2] = (x0, 100.0), (x0 + 40.0, 100.0)
        for upper, lower in eye["lids"]:
            points[upper, :2], points[lower, :2] = (x0 + 20, 94.0), (x0 + 20, 106.0)
    assert mesh.eye_openness(points) == pytest.approx((0.3, 0.3))
    for upper, lower in mesh.LEFT_EYE["lids"]:
        points[upper, 1], points[lower, 1] = 99.5, 100.5
    right, left = mesh.eye_openness(points)
    assert right == pytest.approx(0.3) and left == pytest.approx(0.025)


def test_open_eyes_on_a_registry_photo(face_mesh, detector):
    rgb = rgb_of("obama.jpg")
    m = face_mesh.run_face(rgb, *central(detector, rgb))
    assert m.presence > 0.9
    assert all(0.18 < e < 0.45 for e in m.eyes)
