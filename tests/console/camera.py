"""A fake webcam for chromium: Y4M videos made from registry photos, which chromium plays from their first frame
each time the page opens the camera (`--use-file-for-fake-video-capture`: the file is read again at every
`getUserMedia`, so a test can change what the camera shows between two captures).

Each photo is framed like a webcam selfie (640 x 480, the face 50 % of the height, centred on the face box the
gateway's /v1/detect found). Two kinds of video:
- a still: one photo, every frame the same picture (a photo held up to the camera, or a replay of one picture);
- a person doing a challenge: obama.jpg facing the camera, then for each step obama2.jpg (turned to his right) or
  obama2.jpg mirrored (the same real face turned to his left), timed like a person who reads each step when the
  console shows it, each frame moved by a few pixels like a hand-held camera (no two frames the same picture).
Registry photos show turns, no look up or down, and were not taken to order: measured through the pipeline at this
framing, obama2.jpg reads about 13 degrees of yaw from obama.jpg (8 to 19 over the frame shifts), its mirror about
21, and the photos' pitch differs by up to 10 degrees. The gateway these tests use is set to match (test_liveness.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from facestack.artifacts import photo_bytes

WIDTH, HEIGHT, FPS = 640, 480, 5
FACE_HEIGHT = 0.5  # of the frame's
# When the person does what (seconds from the camera opening), against the console's pacing (gateway/console/
# console.js: a frontal frame at 1.5 s, then each step's frames 1, 2 and 3 s after it is shown): a reaction time
# of about 1 s, each step held until the next one is asked, a pass through facing the camera between two turns.
FACING_S, STEP_S, BETWEEN_S = 2.6, 3.0, 0.4
LENGTH_S = 12  # longer than any capture (the file loops at its end), shorter than 81 frames (see _shifted)
POSES = {"turn_right": ("obama2.jpg", False), "turn_left": ("obama2.jpg", True)}


class Webcam:
    """Writes what the camera shows into `file`; `boxes`: each photo's face box [x1, y1, x2, y2] as detected."""

    def __init__(self, file: Path, boxes: dict[str, list[float]]) -> None:
        self.file = file
        self.boxes = boxes

    def framed(self, name: str, mirror: bool = False) -> np.ndarray:
        image = cv2.imdecode(np.frombuffer(photo_bytes(name), np.uint8), cv2.IMREAD_COLOR)
        x1, y1, x2, y2 = self.boxes[name]
        if mirror:
            image = np.ascontiguousarray(image[:, ::-1])
            x1, x2 = image.shape[1] - x2, image.shape[1] - x1
        scale = FACE_HEIGHT * HEIGHT / (y2 - y1)
        centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
        move = np.float32([[scale, 0, WIDTH / 2 - scale * centre_x], [0, scale, HEIGHT / 2 - scale * centre_y]])
        return cv2.warpAffine(image, move, (WIDTH, HEIGHT), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)

    def still(self, name: str = "obama.jpg") -> None:
        write_y4m(self.file, [self.framed(name)])

    def performing(self, actions: list[str]) -> None:
        """obama facing the camera, then each action in turn (only the two turns exist here)."""
        facing = self.framed("obama.jpg")
        timeline = [(FACING_S, facing)]
        for k, action in enumerate(actions):
            if k:
                timeline.append((BETWEEN_S, facing))
            timeline.append((STEP_S - (BETWEEN_S if k else 0), self.framed(*POSES[action])))
        frames, until = [], 0.0
        for seconds, picture in timeline:
            until += seconds
            while len(frames) < round(until * FPS):
                frames.append(_shifted(picture, len(frames)))
        while len(frames) < LENGTH_S * FPS:  # the last step held
            frames.append(_shifted(timeline[-1][1], len(frames)))
        write_y4m(self.file, frames)


def _shifted(frame: np.ndarray, i: int) -> np.ndarray:
    """Frame i moved on a 9 x 9 grid of 2-pixel steps: no two of the first 81 frames sit at the same place."""
    dx, dy = (i % 9 - 4) * 2, (i // 9 % 9 - 4) * 2
    return cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, dy]]), (WIDTH, HEIGHT), borderMode=cv2.BORDER_REPLICATE)


def write_y4m(path: Path, frames: list[np.ndarray]) -> None:
    """A 4:2:0 Y4M video, replaced at once (chromium never reads half a file)."""
    partial = path.with_suffix(".partial")
    with partial.open("wb") as out:
        out.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    os.replace(partial, path)
