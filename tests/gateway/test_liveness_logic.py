"""The liveness decision on measured frames (gateway.liveness.evaluate), one outcome per test, no servers.

Each test builds the frames a real attempt or attack would give and asserts the one check that must catch it,
so removing that check fails the test. The same outcomes through the real Triton: test_liveness.py.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from gateway import liveness
from gateway.liveness import Frame, Thresholds, evaluate

TH = Thresholds(yaw_deg=15.0, pitch_deg=10.0, identity=0.368)
POSE = {"neutral": (0.0, 0.0), "turn_left": (25.0, 0.0), "turn_right": (-25.0, 0.0), "look_up": (0.0, -15.0),
        "look_down": (0.0, 15.0)}
RNG = np.random.default_rng(0)
PERSON = RNG.normal(size=128)
STRANGER = RNG.normal(size=128)
LANDMARKS = np.array([[40.0, 50], [72, 50], [56, 70], [42, 90], [70, 90]])


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def frame(pose: str, n: int, *, who: np.ndarray = PERSON, faces: int = 1, pad: float | None = None) -> Frame:
    """Frame n of an attempt: its own bytes, its own landmark jitter and embedding noise (as a camera gives)."""
    yaw, pitch = POSE[pose]
    rng = np.random.default_rng(n + 1)
    return Frame(f"digest-{n}-{pose}", faces, yaw + rng.normal(0, 1), pitch + rng.normal(0, 1), 0.0,
                 LANDMARKS + rng.normal(0, 1.5, LANDMARKS.shape), unit(who + rng.normal(0, 0.3, 128)), pad)


def attempt(poses: list[str], **kw) -> list[Frame]:
    return [frame(p, i, **kw) for i, p in enumerate(poses)]


ACTIONS = ["turn_left", "look_up", "turn_right"]
GENUINE = ["neutral", "turn_left", "turn_left", "neutral", "look_up", "look_up", "neutral", "turn_right"]


def test_live_when_every_step_is_done_in_order():
    out = evaluate(ACTIONS, attempt(GENUINE), TH)
    assert (out.decision, out.reason) == ("live", "all_steps")
    assert [s["frame"] for s in out.steps] == [1, 4, 7]
    assert [f["pose"] for f in out.frames] == GENUINE


def test_wrong_order_is_not_live():
    poses = ["neutral", "look_up", "turn_left", "turn_right"]  # up before left
    out = evaluate(ACTIONS, attempt(poses), TH)
    assert (out.decision, out.reason, out.frame) == ("not_live", "unexpected_action", 1)


def test_a_move_the_challenge_did_not_ask_for_is_not_live():
    out = evaluate(ACTIONS, attempt(["neutral", "turn_left", "look_down", "look_up", "turn_right"]), TH)
    assert (out.decision, out.reason, out.frame) == ("not_live", "unexpected_action", 2)


def test_expired_is_not_live_whatever_the_frames():
    out = evaluate(ACTIONS, attempt(GENUINE), TH, expired=True)
    assert (out.decision, out.reason) == ("not_live", "expired")


def test_a_static_photo_never_passes():
    still = [frame("neutral", i) for i in range(8)]  # the same pose in every frame, camera noise only
    out = evaluate(ACTIONS, still, TH)
    assert (out.decision, out.reason) == ("not_live", "step_missing")
    assert not any(s["passed"] for s in out.steps)


def test_a_repeated_frame_is_a_replay():
    frames = attempt(GENUINE)
    frames[6] = frames[0]  # the first frame sent again as the "return to neutral"
    out = evaluate(ACTIONS, frames, TH)
    assert (out.decision, out.reason, out.frame) == ("not_live", "repeated_frame", 6)


def test_a_re_encoded_frame_is_a_replay():
    frames = attempt(GENUINE)
    # other bytes (re-encoded), but the very same face geometry and embedding
    copy = Frame("other-bytes", 1, frames[1].yaw, frames[1].pitch, 0.0, frames[1].landmarks + 0.05,
                 frames[1].embedding)
    frames[2] = copy
    out = evaluate(ACTIONS, frames, TH)
    assert (out.decision, out.reason, out.frame) == ("not_live", "repeated_frame", 2)


def test_identity_swap_mid_challenge_is_not_live():
    frames = attempt(GENUINE)
    frames[4] = frame("look_up", 4, who=STRANGER)  # someone else does the hard step
    out = evaluate(ACTIONS, frames, TH)
    assert (out.decision, out.reason, out.frame) == ("not_live", "identity_changed", 4)


@pytest.mark.parametrize(("faces", "reason"), [(0, "no_face"), (2, "multiple_faces")])
def test_no_face_or_several_is_inconclusive(faces, reason):
    frames = attempt(GENUINE)
    frames[3] = Frame("x", faces)
    out = evaluate(ACTIONS, frames, TH)
    assert (out.decision, out.reason, out.frame) == ("inconclusive", reason, 3)


def test_pad_enforced_fails_a_low_score_and_a_missing_one():
    low = attempt(GENUINE, pad=0.9)
    low[5] = frame("look_up", 5, pad=0.1)
    assert evaluate(ACTIONS, low, TH, pad_threshold=0.5).reason == "pad_failed"
    assert evaluate(ACTIONS, attempt(GENUINE), TH, pad_threshold=0.5).reason == "pad_failed"  # no score at all
    assert evaluate(ACTIONS, low, TH).decision == "live"  # not enforced: the score is only evidence


def test_directions():
    first = frame("neutral", 0)
    assert liveness.classify(Frame("a", 1, yaw=20.0), first, TH) == "turn_left"  # yaw grows: the person's left
    assert liveness.classify(Frame("a", 1, yaw=-20.0), first, TH) == "turn_right"
    assert liveness.classify(Frame("a", 1, pitch=-12.0), first, TH) == "look_up"  # pitch > 0 is looking down
    assert liveness.classify(Frame("a", 1, pitch=12.0), first, TH) == "look_down"
    assert liveness.classify(Frame("a", 1, yaw=10.0, pitch=5.0), first, TH) == "neutral"  # below both thresholds


def test_new_actions_are_two_or_three_known_actions_none_twice_in_a_row():
    rng = random.Random(1)
    seen = [liveness.new_actions(rng) for _ in range(400)]
    assert {len(a) for a in seen} == {2, 3}
    assert all(set(a) <= set(liveness.ACTIONS) and all(x != y for x, y in zip(a, a[1:], strict=False)) for a in seen)
    assert len({tuple(a) for a in seen}) == 4 * 3 + 4 * 3 * 3  # every sequence the rule allows turns up


def test_the_two_turns_make_four_sequences():
    """Turns only (the default): left-right, right-left, and the three-step returns; a single recording of one
    of them answers a quarter of the challenges."""
    rng = random.Random(2)
    seen = {tuple(liveness.new_actions(rng, ["turn_left", "turn_right"])) for _ in range(200)}
    assert seen == {("turn_left", "turn_right"), ("turn_right", "turn_left"),
                    ("turn_left", "turn_right", "turn_left"), ("turn_right", "turn_left", "turn_right")}


def test_a_turn_asked_twice_needs_the_return():
    """left, right, left: the second left counts only after the right; holding the first left is not it."""
    actions = ["turn_left", "turn_right", "turn_left"]
    done = [frame("neutral", 0), frame("turn_left", 1), frame("neutral", 2), frame("turn_right", 3),
            frame("neutral", 4), frame("turn_left", 5)]
    assert evaluate(actions, done, TH).reason == "all_steps"
    held = [frame("neutral", 0), frame("turn_left", 1), frame("turn_left", 2), frame("turn_right", 3)]
    outcome = evaluate(actions, held, TH)
    assert (outcome.decision, outcome.reason) == ("not_live", "step_missing")
    assert [s["passed"] for s in outcome.steps] == [True, True, False]


def test_pitch_is_judged_only_where_a_challenge_can_ask_for_it():
    """Turns only (the default): a nod between the turns is not an unexpected action, since five landmarks do
    not measure pitch; with look up/down in the action set, the same nod is one."""
    nod = [frame("neutral", 0), frame("turn_left", 1), frame("look_down", 2), frame("turn_right", 3)]
    turns = liveness.thresholds(("turn_left", "turn_right"), 15.0, 10.0, 0.368)
    everything = liveness.thresholds(liveness.ACTIONS, 15.0, 10.0, 0.368)
    assert evaluate(["turn_left", "turn_right"], nod, turns).reason == "all_steps"
    assert evaluate(["turn_left", "turn_right"], nod, everything).reason == "unexpected_action"


def with_mesh(f: Frame, yaw: float, pitch: float) -> Frame:
    return replace(f, mesh_pose=(yaw, pitch, 0.0))


def test_the_mesh_pose_judges_when_every_face_has_one():
    """The five-point pitch of these frames is flat (it misses the nod), the mesh's shows it: with the mesh's
    pose the look_down step is seen; the frame without a face keeps its own (empty) pose."""
    five = attempt(["neutral", "turn_left", "neutral"])
    meshed = [with_mesh(five[0], 0.0, 0.0), with_mesh(five[1], 20.0, 1.0), with_mesh(five[2], 1.0, 12.0),
              Frame("digest-none", 0)]
    frames, source = liveness.judged_pose(meshed)
    assert source == liveness.MESH
    assert [(f.yaw, f.pitch) for f in frames[:3]] == [(0.0, 0.0), (20.0, 1.0), (1.0, 12.0)]
    assert frames[3] == meshed[3]
    assert evaluate(["turn_left", "look_down"], frames[:3], TH).reason == "all_steps"
    assert evaluate(["turn_left", "look_down"], five, TH).reason == "step_missing"


def test_without_a_mesh_pose_on_every_face_the_five_points_judge_all():
    """Never a mix of estimators in one decision (their degrees differ): one face without a mesh pose and
    every frame keeps its five-point pose."""
    five = attempt(["neutral", "turn_left", "turn_right"])
    mixed = [with_mesh(five[0], 3.0, 3.0), five[1], with_mesh(five[2], -30.0, 0.0)]
    frames, source = liveness.judged_pose(mixed)
    assert source == liveness.FIVE_POINT and frames == mixed
    assert liveness.judged_pose(five) == (five, liveness.FIVE_POINT)
    assert liveness.judged_pose([])[1] == liveness.FIVE_POINT
