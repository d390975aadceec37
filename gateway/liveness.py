"""Challenge-response liveness: which head movements a challenge asks for, and the decision on a sequence of frames.

Pure logic (no I/O): the route (gateway/api/liveness.py) issues challenges, stores them (gateway/challenges.py),
runs the frames through Triton, and hands what it measured to `evaluate`. docs/liveness.md says what this stops
and what it does not.

Direction conventions (pose from facestack.pipeline.quality, checked on real photos by tests/gateway/test_liveness.py):
frames are the camera's own, unmirrored pictures. `turn_left` means the person turns to *their own* left, as
they would when told "turn your head to the left"; in an unmirrored picture the nose then points to the image's
right, which is yaw > 0. `look_up` raises the chin: pitch < 0 (pitch > 0 is looking down). A preview shown to
the user is usually mirrored; the frames sent must not be.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

ACTIONS = ("turn_left", "turn_right", "look_up", "look_down")
# The pose change each action is, as (axis, sign): yaw grows when the person turns to their left.
MOVES: dict[str, tuple[str, int]] = {
    "turn_left": ("yaw", +1), "turn_right": ("yaw", -1), "look_up": ("pitch", -1), "look_down": ("pitch", +1),
}
INSTRUCTIONS = {
    "turn_left": "turn your head to your left", "turn_right": "turn your head to your right",
    "look_up": "tilt your head up (chin up)", "look_down": "tilt your head down (chin down)",
}
NEUTRAL = "neutral"
# Where a frame's pose comes from: the face mesh (docs/liveness.md) or YuNet's five landmarks.
MESH, FIVE_POINT = "mesh", "five-point"
DECISIONS = ("live", "not_live", "inconclusive")
# Why a decision was taken: reason -> words (the answer carries both).
REASONS = {
    "all_steps": "every step was performed in the issued order by the same person",
    "expired": "the frames arrived after the challenge's deadline",
    "repeated_frame": "two frames are the same picture (identical, or the same face to the pixel): a replay",
    "identity_changed": "a frame shows a different person than the first frame",
    "unexpected_action": "a frame shows a movement other than the step expected at that point (wrong order)",
    "step_missing": "a step was never performed (a still photo cannot turn)",
    "no_face": "a frame shows no face: capture again with the face in view",
    "multiple_faces": "a frame shows more than one face: capture again with one person in view",
    "pad_failed": "the presentation-attack model scored a frame below its threshold",
}


def new_actions(rng: random.Random | None = None, allowed: Sequence[str] = ACTIONS) -> list[str]:
    """2 or 3 actions of `allowed`, none the same as the one before, in random order (the system's random source
    unless `rng` is given). An action may come back after another (left, right, left): with the two turns, that
    makes four sequences instead of two, so one recording answers a quarter of the challenges, not half."""
    rng = rng or random.SystemRandom()
    choices = sorted(set(allowed))
    if len(choices) < 2 or not set(choices) <= set(ACTIONS):
        raise ValueError(f"a challenge needs at least two of {ACTIONS}, not {allowed}")
    actions = [rng.choice(choices)]
    for _ in range(rng.choice((2, 3)) - 1):
        actions.append(rng.choice([a for a in choices if a != actions[-1]]))
    return actions


@dataclass(frozen=True)
class Thresholds:
    yaw_deg: float  # |yaw change| from the first frame that counts as a turn
    pitch_deg: float  # |pitch change| that counts as looking up or down
    identity: float  # cosine to the first frame's embedding: at least this for the same person
    repeat_landmarks: float = 0.005  # landmarks within this fraction of the eye distance ...
    repeat_similarity: float = 0.998  # ... and embeddings at least this close: the same picture again


@dataclass(frozen=True)
class Frame:
    """What the pipeline measured on one frame; `faces` counts faces at least the minimum size."""

    digest: str  # sha256 of the encoded bytes
    faces: int
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    landmarks: np.ndarray | None = None  # [5, 2] of the one face
    embedding: np.ndarray | None = None  # of the one face, L2-normalised
    pad_score: float | None = None
    mesh_pose: tuple[float, float, float] | None = None  # yaw, pitch, roll from the face mesh, when it ran


def judges_pitch(allowed: Sequence[str]) -> bool:
    """Whether a challenge drawn from `allowed` can ask for a pitch step (look up or down)."""
    return any(MOVES[a][0] == "pitch" for a in allowed)


def thresholds(allowed: Sequence[str], yaw_deg: float, pitch_deg: float, identity: float) -> Thresholds:
    """The thresholds a deployment's action set implies. Pitch is judged only where a challenge can ask for a
    pitch step: otherwise a nod during a turn would read as an unexpected action, and five landmarks measure
    pitch poorly (docs/liveness.md)."""
    return Thresholds(yaw_deg, pitch_deg if judges_pitch(allowed) else math.inf, identity)


def judged_pose(frames: list[Frame]) -> tuple[list[Frame], str]:
    """The frames with the pose the rule reads, and its source: the mesh's where every frame with one face has
    one (it measures pitch, five landmarks do not: docs/liveness.md), else the five landmarks' for all frames
    (never a mix: the thresholds are in one estimator's degrees)."""
    faced = [f for f in frames if f.faces == 1]
    if not faced or any(f.mesh_pose is None for f in faced):
        return frames, FIVE_POINT
    return [replace(f, yaw=f.mesh_pose[0], pitch=f.mesh_pose[1], roll=f.mesh_pose[2])  # type: ignore[index]
            if f.faces == 1 else f for f in frames], MESH


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def classify(frame: Frame, first: Frame, th: Thresholds) -> str:
    """The action a frame's pose shows relative to the first frame: the axis that moved most (in units of its
    threshold), if it moved past its threshold; else neutral."""
    dyaw, dpitch = frame.yaw - first.yaw, frame.pitch - first.pitch
    ryaw, rpitch = abs(dyaw) / th.yaw_deg, abs(dpitch) / th.pitch_deg
    if max(ryaw, rpitch) < 1.0:
        return NEUTRAL
    if ryaw >= rpitch:
        return "turn_left" if dyaw > 0 else "turn_right"
    return "look_down" if dpitch > 0 else "look_up"


def _same_picture(a: Frame, b: Frame, th: Thresholds) -> bool:
    if a.digest == b.digest:
        return True
    if a.landmarks is None or b.landmarks is None or a.embedding is None or b.embedding is None:
        return False
    eyes = float(np.linalg.norm(a.landmarks[1] - a.landmarks[0])) or 1.0
    close = float(np.abs(a.landmarks - b.landmarks).max()) <= th.repeat_landmarks * eyes
    return close and float(np.dot(a.embedding, b.embedding)) >= th.repeat_similarity


@dataclass
class Outcome:
    decision: str
    reason: str
    frame: int | None = None  # the frame the reason points at
    steps: list[dict] = field(default_factory=list)
    frames: list[dict] = field(default_factory=list)

    @property
    def detail(self) -> str:
        return REASONS[self.reason] + (f" (frame {self.frame})" if self.frame is not None else "")


def evaluate(actions: list[str], frames: list[Frame], th: Thresholds, *, expired: bool = False,
             pad_threshold: float | None = None) -> Outcome:
    """The decision on a challenge's frames, in the order they were captured. The first frame is the reference
    pose and face. Checks, in order (the first that fails decides): deadline; every frame one face
    (`inconclusive` otherwise: no evidence of an attack, the person should capture again); no picture twice
    (a replay); the same person throughout (cosine to the first frame); the PAD score where it is enforced;
    the steps in the issued order: each frame is neutral, the step in progress, the step just done (held), or
    else `unexpected_action`; all steps reached, else `step_missing`."""
    steps = [{"action": a, "passed": False, "frame": None} for a in actions]
    if expired:
        return Outcome("not_live", "expired", steps=steps)
    evidence = [{"index": i, "faces": f.faces} for i, f in enumerate(frames)]
    for i, f in enumerate(frames):
        if f.faces != 1:
            return Outcome("inconclusive", "no_face" if f.faces == 0 else "multiple_faces", i, steps, evidence)
    first = frames[0]
    for i, f in enumerate(frames):
        similarity = float(np.dot(f.embedding, first.embedding)) if f.embedding is not None else None
        evidence[i].update(yaw=round(f.yaw, 2), pitch=round(f.pitch, 2), roll=round(f.roll, 2),
                           delta_yaw=round(f.yaw - first.yaw, 2), delta_pitch=round(f.pitch - first.pitch, 2),
                           pose=NEUTRAL if i == 0 else classify(f, first, th),
                           similarity=None if similarity is None else round(similarity, 4))
        if f.pad_score is not None:
            evidence[i]["pad_score"] = round(f.pad_score, 4)
    for i, f in enumerate(frames):
        for j in range(i):
            if _same_picture(frames[j], f, th):
                return Outcome("not_live", "repeated_frame", i, steps, evidence)
    for i, row in enumerate(evidence):
        if row["similarity"] is None or row["similarity"] < th.identity:
            return Outcome("not_live", "identity_changed", i, steps, evidence)
    if pad_threshold is not None:
        for i, f in enumerate(frames):
            if f.pad_score is None or f.pad_score < pad_threshold:  # enforced: no score is no pass
                return Outcome("not_live", "pad_failed", i, steps, evidence)
    done = 0  # steps passed so far
    for i, row in enumerate(evidence[1:], 1):
        pose = row["pose"]
        if pose == NEUTRAL or (done and pose == actions[done - 1]):
            continue
        if done < len(actions) and pose == actions[done]:
            steps[done].update(passed=True, frame=i)
            done += 1
            continue
        return Outcome("not_live", "unexpected_action", i, steps, evidence)
    if done < len(actions):
        return Outcome("not_live", "step_missing", None, steps, evidence)
    return Outcome("live", "all_steps", None, steps, evidence)
