"""YuNet output decoding: anchor grid -> boxes, scores and 5 landmarks, then NMS.

Mirrors OpenCV's `cv2.FaceDetectorYN` (modules/objdetect/src/face_detect.cpp), which is the reference
the parity tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

STRIDES = (8, 16, 32)
OUTPUT_NAMES = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES)


@dataclass(frozen=True)
class Detections:
    """Faces of one image, in the coordinates of the detector input unless rescaled."""

    boxes: np.ndarray  # [F, 4] x1, y1, x2, y2
    scores: np.ndarray  # [F]
    landmarks: np.ndarray  # [F, 5, 2]

    def __len__(self) -> int:
        return len(self.scores)

    def scaled(self, factor: float) -> Detections:
        return Detections(self.boxes * factor, self.scores, self.landmarks * factor)

    def take(self, index: np.ndarray) -> Detections:
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index])

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


def decode(outputs: dict[str, np.ndarray], input_h: int, input_w: int, score_threshold: float = 0.6,
           nms_threshold: float = 0.3, top_k: int = 5000) -> Detections:
    """Decode one image's YuNet outputs (each [A, k], batch axis removed) into NMS-filtered faces."""
    boxes, scores, landmarks = [], [], []
    for stride in STRIDES:
        rows, cols = input_h // stride, input_w // stride
        # Anchor (row, col) for every cell, row-major as the network flattens them.
        grid_y, grid_x = np.divmod(np.arange(rows * cols, dtype=np.float32), cols)
        cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0, 1)
        obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0, 1)
        score = np.sqrt(cls * obj)
        keep = score >= score_threshold
        if not keep.any():
            continue
        gx, gy = grid_x[keep], grid_y[keep]
        bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep]
        kps = outputs[f"kps_{stride}"].reshape(-1, 5, 2)[keep]
        cx, cy = (gx + bbox[:, 0]) * stride, (gy + bbox[:, 1]) * stride
        w, h = np.exp(bbox[:, 2]) * stride, np.exp(bbox[:, 3]) * stride
        boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
        landmarks.append((kps + np.stack([gx, gy], axis=1)[:, None, :]) * stride)
        scores.append(score[keep])
    if not scores:
        return Detections.empty()
    found = Detections(np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32),
                       np.concatenate(landmarks).astype(np.float32))
    return found.take(nms(found.boxes, found.scores, score_threshold, nms_threshold, top_k))


def nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float,
        top_k: int) -> np.ndarray:
    """Indices kept by OpenCV's NMS (the same call FaceDetectorYN makes), best score first."""
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).tolist()
    keep = cv2.dnn.NMSBoxes(xywh, scores.tolist(), score_threshold, iou_threshold, top_k=top_k)
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def select(faces: Detections, max_faces: int, min_face_size: float) -> Detections:
    """Drop faces whose shorter box side is below `min_face_size`, keep the `max_faces` largest."""
    if not len(faces):
        return faces
    wh = faces.boxes[:, 2:] - faces.boxes[:, :2]
    order = np.argsort(-(wh[:, 0] * wh[:, 1]), kind="stable")
    order = order[wh[order].min(axis=1) >= min_face_size]
    return faces.take(order[: max(0, max_faces)])
