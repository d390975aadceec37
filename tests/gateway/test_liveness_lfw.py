"""The liveness bars on LFW View 1's held-out people (DevTest's; the configuration was fitted on DevTrain's):
genuine attempts pass at least 95 %; a still photo replayed, or tilted as a print, never passes.

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
    # the benchmark's own defaults (so the genuine figures equal docs/liveness.md's), fewer replayed photos
    result = run(lfw_dir, per_person=5, ask_yaw=15.0, ask_pitch=10.0, frontal_deg=10.0, replay_photos=20, seed=0,
                 repository=get_settings().model_repository, splits=("test",))
    return next(r for r in result["splits"]["test"]["configs"] if r["config"] == "shipped defaults")


@pytest.mark.xfail(strict=True, reason="bar not met (2026-12-02): with the shipped defaults (turns only, yaw 10, "
                   "fitted on DevTrain) DevTest genuine attempts pass 21/24 = 87.5 % (photos) and 186/211 = 88.2 % "
                   "(with mirrored photos); a lower yaw threshold lets tilted prints pass. Five landmarks cannot do "
                   "better: docs/liveness.md")
def test_genuine_attempts_pass(heldout):
    for key in ("genuine", "genuine_with_mirrored"):
        genuine = heldout[key]
        assert genuine["attempts"] >= 20, genuine  # enough attempts could be built to judge the rate
        assert genuine["pass_rate"] >= 0.95, genuine


def test_a_still_photo_or_a_tilted_print_never_passes(heldout):
    """Nor a print tilted one way then the other in the order the challenge asks (a deliberate attacker)."""
    for key in ("still_photo_replay", "tilted_print_replay", "tilted_print_best_order"):
        replay = heldout[key]
        assert replay["attempts"] >= 100 and replay["live"] == 0, replay
