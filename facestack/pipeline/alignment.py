"""5-point similarity alignment of a face to an embedder's template."""

from __future__ import annotations

import cv2
import numpy as np


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991) mapping src points onto dst, as a 2x3 matrix.

    OpenCV's `estimateAffinePartial2D` only offers robust (RANSAC/LMEDS) fits, which can ignore a landmark;
    the embedders were trained on crops made by the plain least-squares fit, as in
    `cv2.FaceRecognizerSF.alignCrop`, so that is what this computes.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection is not a similarity
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / src_c.var(axis=0).sum()
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def align(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """Warp the face with these 5 landmarks onto the template, giving a size x size crop (same colour order).

    A bilinear warp that shrinks by more than 2x aliases (a 600 px selfie face into a 112 px crop), so
    the region the crop samples is first halved with cv2.pyrDown until the remaining shrink is under 2x,
    as dlib's get_face_chip does.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    matrix = similarity_transform(landmarks, template)
    shrink = 1 / np.hypot(matrix[0, 0], matrix[0, 1])  # source pixels per crop pixel
    if shrink > 2:
        # Bounding box, in the source, of the crop's corners (+1 px for the pyramid's kernel).
        corners = cv2.transform(np.array([[[0, 0], [size, 0], [0, size], [size, size]]], np.float64),
                                cv2.invertAffineTransform(matrix))[0]
        x0, y0 = np.maximum(np.floor(corners.min(axis=0)) - 2, 0).astype(int)
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
        region = image[y0:y1, x0:x1]
        points = landmarks - (x0, y0)
        while shrink > 2 and min(region.shape[:2]) > 1:
            region = cv2.pyrDown(region)
            points, shrink = points / 2, shrink / 2
        image, matrix = region, similarity_transform(points, template)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
