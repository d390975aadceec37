"""Challenge frames made from real registry photos, for the liveness tests on the real stack.

obama.jpg looks at the camera (yaw ~0), obama2.jpg is turned to his right, and obama2.jpg mirrored is the same
real face turned to his left. A challenge may ask for the same turn twice (left, right, left): the second time,
the photo is moved by a few pixels, as a later camera frame of the same pose is never the same picture.
"""

from __future__ import annotations

import cv2
import numpy as np

from facestack.artifacts import photo_bytes


def _decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _encode(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def mirrored(data: bytes) -> bytes:
    return _encode(np.ascontiguousarray(_decode(data)[:, ::-1]))


def moved(data: bytes, pixels: int) -> bytes:
    image = _decode(data)
    shift = np.float32([[1, 0, pixels], [0, 1, pixels]])
    return _encode(cv2.warpAffine(image, shift, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE))


class Person:
    """A frontal photo and a real photo for each turn."""

    def __init__(self, frontal: str, turned_right: str) -> None:
        self.data = photo_bytes(frontal)
        self.poses = {"turn_right": photo_bytes(turned_right), "turn_left": mirrored(photo_bytes(turned_right))}

    def frames(self, actions: list[str]) -> list[bytes]:
        """The frontal first frame, then one frame per action (a repeated action's photo moved by 12 px)."""
        return [self.data] + [self.poses[a] if a not in actions[:i] else moved(self.poses[a], 12)
                              for i, a in enumerate(actions)]
