"""Which face of a photo a request means, when the photo holds several.

One place for the rule, used by the gateway (`multi_face`) and by the accuracy tool that measured it
(docs/accuracy.md, "Which face"). `main`, the default: the largest face among those whose centre lies in the
central part of the photo (within CENTRAL_SHARE of the half-width/half-height of the centre), else the largest
face. A person photographed on purpose stands near the middle; the largest face alone is often a bystander's
shoulder-to-camera, and the face nearest the centre alone picks a small face behind a subject who stands
off-centre.
"""

from __future__ import annotations

import numpy as np

RULES = ("main", "largest", "centre")
CENTRAL_SHARE = 0.5

WHY = {
    "main": "the largest face near the centre of the photo",
    "main_fallback": "the largest face (no face near the centre of the photo)",
    "largest": "the largest face",
    "centre": "the face nearest the centre of the photo",
    "only": "the only face",
}


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def choose(boxes: np.ndarray, image_size: tuple[int, int], rule: str = "main") -> tuple[int, str]:
    """(index of the face to use, the reason as a WHY key) among boxes [F, 4] (x1, y1, x2, y2); F >= 1.

    Ties go to the earlier face (the pipeline lists faces largest first).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("no face to choose from")
    if rule not in RULES:
        raise ValueError(f"unknown face choice {rule!r}; choose one of {RULES}")
    if len(boxes) == 1:
        return 0, "only"
    height, width = image_size
    centres = _centres(boxes)
    offset = np.abs(centres - [width / 2, height / 2]) / [max(width, 1) / 2, max(height, 1) / 2]
    order = np.arange(len(boxes))
    if rule == "centre":
        distance = np.round(np.hypot(*(centres - [width / 2, height / 2]).T), 3)
        return int(np.lexsort((order, -np.round(_areas(boxes), 3), distance))[0]), "centre"
    sizes = np.round(_areas(boxes), 3)
    if rule == "main":
        central = (offset <= CENTRAL_SHARE).all(axis=1)
        if central.any():
            candidates = np.flatnonzero(central)
            return int(candidates[np.lexsort((candidates, -sizes[candidates]))[0]]), "main"
        return int(np.lexsort((order, -sizes))[0]), "main_fallback"
    return int(np.lexsort((order, -sizes))[0]), "largest"
