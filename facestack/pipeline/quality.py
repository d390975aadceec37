"""Simple per-face quality signals, from the box, the landmarks and the aligned crop."""

from __future__ import annotations

import cv2
import numpy as np

FIELDS = ("face_size", "sharpness", "yaw", "pitch", "roll", "brightness")

# On a frontal face the nose tip sits about this far down from the eye line towards the mouth line
# (measured on the ArcFace template: (71.74 - 51.60) / (92.28 - 51.60)).
_FRONTAL_NOSE_RATIO = 0.495


def pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """Rough (yaw, pitch, roll) in degrees from 5 landmarks; good for rejecting profiles, not for metrology.

    roll: angle of the eye line. yaw: the nose tip's sideways offset from the eye/mouth midline, relative
    to half the inter-ocular distance. pitch: the nose tip's height between eye and mouth lines, relative
    to where a frontal face has it. Positive yaw = the face turned to the image's right.
    """
    right_eye, left_eye, nose, right_mouth, left_mouth = np.asarray(landmarks, dtype=np.float64)
    eye_vec = left_eye - right_eye
    roll = np.degrees(np.arctan2(eye_vec[1], eye_vec[0]))
    # Express the points in a frame with the eye line horizontal.
    c, s = np.cos(np.radians(-roll)), np.sin(np.radians(-roll))
    rot = np.array([[c, -s], [s, c]])
    eyes_mid = rot @ ((right_eye + left_eye) / 2)
    mouth_mid = rot @ ((right_mouth + left_mouth) / 2)
    nose_r = rot @ nose
    half_iod = max(np.linalg.norm(eye_vec) / 2, 1e-6)
    midline_x = (eyes_mid[0] + mouth_mid[0]) / 2
    yaw = np.degrees(np.arcsin(np.clip((nose_r[0] - midline_x) / half_iod, -1, 1)))
    face_height = max(mouth_mid[1] - eyes_mid[1], 1e-6)
    ratio = (nose_r[1] - eyes_mid[1]) / face_height
    pitch = np.degrees(np.arcsin(np.clip((ratio - _FRONTAL_NOSE_RATIO) * 2, -1, 1)))
    return float(yaw), float(pitch), float(roll)


def measure(box: np.ndarray, landmarks: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """The FIELDS for one face: box in original pixels, its landmarks, its aligned crop (BGR or RGB)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    face_size = float(min(box[2] - box[0], box[3] - box[1]))
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    yaw, pitch, roll = pose(landmarks)
    brightness = float(grey.mean())
    return np.array([face_size, sharpness, yaw, pitch, roll, brightness], dtype=np.float32)
