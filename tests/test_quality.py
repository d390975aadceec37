"""The pose estimate on synthetic heads, the quality gates, and the choice of face in a multi-face photo."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from facestack.pipeline import choice, quality


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rz(roll) @ Ry(-yaw) @ Rx(pitch): yaw > 0 turns the nose to the image's right, pitch > 0 looks down."""
    y, p, r = np.radians([-yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def project(head: np.ndarray, yaw: float, pitch: float, roll: float, distance: float, focal: float = 900.0,
            centre: tuple[float, float] = (320.0, 240.0)) -> np.ndarray:
    """The head's five points rotated about their centroid, `distance` IODs in front of a pinhole camera."""
    points = (rotation(yaw, pitch, roll) @ (head - head.mean(axis=0)).T).T + [0, 0, distance]
    return focal * points[:, :2] / points[:, 2:] + centre


def a_head(nose_depth: float = 0.55, mouth_width: float = 0.828, mouth_height: float = 1.154) -> np.ndarray:
    """A five-point head in IOD units (right eye, left eye, nose tip, mouth corners), x right, y down, z away."""
    return np.array([[-0.5, 0, 0], [0.5, 0, 0], [0, 0.571, -nose_depth],
                     [-mouth_width / 2, mouth_height, -0.05], [mouth_width / 2, mouth_height, -0.05]])


ANGLES = list(itertools.product(range(-60, 61, 15), range(-45, 46, 15), (-30, 0, 20)))


@pytest.mark.parametrize("distance", [4.0, 8.0, 30.0])  # a selfie at arm's length to a camera across the room
def test_pose_comes_back_within_8_degrees_up_to_60(distance: float) -> None:
    errors = []
    for yaw, pitch, roll in ANGLES:
        estimate = quality.pose(project(a_head(), yaw, pitch, roll, distance))
        errors.append(np.abs(np.subtract(estimate, (yaw, pitch, roll))).max())
    assert max(errors) <= 8, f"worst error {max(errors):.1f} deg"


@pytest.mark.parametrize("head", [a_head(nose_depth=0.45), a_head(nose_depth=0.65),
                                  a_head(mouth_width=0.9, mouth_height=1.1)], ids=["flat_nose", "long_nose", "mouth"])
def test_pose_yaw_tolerates_other_faces(head: np.ndarray) -> None:
    """Real faces are not the generic one: yaw, which the gate uses most, stays within 8 degrees up to 60."""
    for yaw, roll in itertools.product(range(-60, 61, 10), (-20, 0, 20)):
        assert quality.pose(project(head, yaw, 0, roll, 8.0))[0] == pytest.approx(yaw, abs=8)


def test_pose_is_monotonic_without_saturation_to_80_degrees() -> None:
    for angle in ("yaw", "pitch"):
        index = 0 if angle == "yaw" else 1
        truth = np.arange(0, 81, 5)
        estimates = [quality.pose(project(a_head(), *((t, 0, 0) if angle == "yaw" else (0, t, 0)), 8.0))[index]
                     for t in truth]
        assert np.all(np.diff(estimates) > 2), (angle, np.round(estimates, 1))
        assert estimates[-1] > 70


def test_pose_signs_and_degenerate_input() -> None:
    right = quality.pose(project(a_head(), 30, 0, 0, 8.0))
    down = quality.pose(project(a_head(), 0, 20, 0, 8.0))
    clockwise = quality.pose(project(a_head(), 0, 0, 15, 8.0))
    assert right[0] > 25 and down[1] > 15 and clockwise[2] > 10
    # the image's right = larger x: the nose tip moved right of the eyes' midpoint
    points = project(a_head(), 30, 0, 0, 8.0)
    assert points[2, 0] > (points[0, 0] + points[1, 0]) / 2
    assert quality.pose(np.zeros((5, 2))) == (0.0, 0.0, 0.0)


def test_gate_names_every_failed_gate() -> None:
    gate = quality.QualityGate(min_face_size=40, min_sharpness=15, max_pose_deg=50, brightness=(25, 235))
    good = {"face_size": 80, "sharpness": 100, "yaw": 10, "pitch": -5, "roll": 3, "brightness": 120}
    assert gate.refusals(good) == []
    bad = {"face_size": 30, "sharpness": 3, "yaw": -70, "pitch": 55, "roll": 0, "brightness": 250}
    gates = [r.gate for r in gate.refusals(bad)]
    assert gates == ["face_size", "sharpness", "pose", "pose", "brightness"]
    assert all(g in quality.GATE_WORDS for g in gates)


def test_choice_rules() -> None:
    size = (400, 600)  # height, width
    bystander = [0, 0, 200, 260]  # large, in the corner
    subject = [250, 150, 370, 280]  # centred
    small_centre = [290, 190, 310, 212]  # tiny, dead centre
    boxes = np.array([bystander, subject, small_centre], float)
    assert choice.choose(boxes, size, "largest") == (0, "largest")
    assert choice.choose(boxes, size, "centre") == (2, "centre")
    assert choice.choose(boxes, size, "main") == (1, "main")
    # nobody near the centre: the largest
    assert choice.choose(np.array([bystander, [500, 300, 560, 380]], float), size, "main") == (0, "main_fallback")
    assert choice.choose(boxes[1:2], size, "main") == (0, "only")
    with pytest.raises(ValueError):
        choice.choose(boxes, size, "nearest")
