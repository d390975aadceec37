"""Head pose from 2D landmarks and a 3D face: the one solver every pose facestack reads uses.

Kept apart from quality (which reads settings) so the mesh exporter's own venv can import it.
"""

from __future__ import annotations

import cv2
import numpy as np

# The camera is assumed this many face sizes away: near-orthographic, as for a portrait at arm's length or more.
CAMERA_DISTANCE = 10.0


def solve_pose(model: np.ndarray, image: np.ndarray, size: float) -> tuple[float, float, float] | None:
    """(yaw, pitch, roll) in degrees of the rotation of the 3D `model` points (x right, y down, z away) whose
    projection best fits the `image` points, through a near-orthographic pinhole camera centred on them
    (`size`: the face's size in pixels); None where solvePnP finds no pose. One solver for every pose
    facestack reads (quality.pose's five points, the face mesh, the benchmark's reference)."""
    focal = CAMERA_DISTANCE * size
    centre = image.mean(axis=0)
    camera = np.array([[focal, 0, centre[0]], [0, focal, centre[1]], [0, 0, 1]])
    ok, rvec, tvec = cv2.solvePnP(model, image, camera, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(model, image, camera, None, rvec, tvec)
    rotation, _ = cv2.Rodrigues(rvec)
    # rotation = Rz(roll) @ Ry(-yaw) @ Rx(pitch)
    yaw = np.degrees(np.arctan2(rotation[2, 0], np.hypot(rotation[0, 0], rotation[1, 0])))
    pitch = np.degrees(np.arctan2(rotation[2, 1], rotation[2, 2]))
    roll = np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0]))
    return float(yaw), float(pitch), float(roll)

