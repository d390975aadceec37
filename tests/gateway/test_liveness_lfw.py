"""The liveness bars on LFW View 1's held-out people (DevTest's; configurations are fitted on DevTrain's):
genuine attempts pass at least 95 %; a still photo replayed, or a print tilted, never passes.

A genuine attempt's frames are the person's own photos chosen by an INDEPENDENT reference pose
(benchmarks/reference_pose.py: dlib's 68 landmarks, a measuring tool only), not by facestack's own pose, which
made the pose part pass by construction. Skipped without LFW or without `make peer`. The full measurement,
both splits and every configuration: `python -m benchmarks.liveness` (docs/liveness.md)."""

from __future__ import annotations

import pytest

from benchmarks import reference_pose
from benchmarks.liveness import run
from facestack.settings import get_settings


@pytest.fixture(scope="module")
def heldout(lfw_dir) -> dict:
    if not reference_pose.available():
        pytest.skip("the reference pose needs dlib and face_recognition_models (`make peer`)")
    # the benchmark's own defaults, judged by five landmarks: the figures below equal docs/liveness.md's
    result = run(lfw_dir, per_person=5, ask_yaw=15.0, ask_pitch=10.0, frontal_deg=10.0, replay_photos=60, seed=0,
                 repository=get_settings().model_repository, splits=("test",))
    return next(r for r in result["splits"]["test"]["configs"] if r["config"] == "shipped defaults")


@pytest.mark.xfail(strict=True, reason="bar not met by five landmarks (2026-12-02), the fallback where a repository "
                   "has no face mesh: at its defaults (turns only with three-step returns, yaw 15) DevTest genuine "
                   "attempts pass 6/21 = 28.6 % (photos) and 115/202 = 56.9 % (with mirrored); at yaw 10 (the DevTrain "
                   "fit) 84.2 %, and a print tilted in the asked order passed 5/600. The default judges by the face "
                   "mesh: test_liveness_mesh_lfw.py. docs/liveness.md, docs/bench/liveness-returns.json")
def test_genuine_attempts_pass(heldout):
    for key in ("genuine", "genuine_with_mirrored"):
        genuine = heldout[key]
        assert genuine["attempts"] >= 20, genuine  # enough attempts could be built to judge the rate
        assert genuine["pass_rate"] >= 0.95, genuine


def test_a_still_photo_or_a_randomly_tilted_print_never_passes(heldout):
    for key in ("still_photo_replay", "tilted_print_replay"):
        replay = heldout[key]
        assert replay["attempts"] >= 500 and replay["live"] == 0, replay


def test_a_print_tilted_in_the_asked_order_never_passes(heldout):
    """At the five-point defaults (turns only, yaw 15): 0/600 on DevTest (the old defaults with look up/down: 4;
    turns only at yaw 10: 5)."""
    replay = heldout["tilted_print_best_order"]
    assert replay["attempts"] >= 500 and replay["live"] == 0, replay
