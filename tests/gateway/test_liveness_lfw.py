"""The liveness bars on LFW View 1's held-out people (DevTest's; thresholds were chosen on DevTrain's):
genuine attempts made of a person's own photos pass at least 95 %; a still photo replayed never passes.
Skipped where LFW is absent. The full measurement: `python -m benchmarks.liveness` (docs/liveness.md)."""

from __future__ import annotations

import pytest

from benchmarks.liveness import run
from facestack.settings import get_settings


@pytest.fixture(scope="module")
def heldout(lfw_dir) -> dict:
    return run(lfw_dir, "test", per_person=15, turn=0.2, tilt=0.12, replay_photos=20, seed=1,
               repository=get_settings().model_repository)


def test_genuine_attempts_pass(heldout):
    genuine = heldout["genuine"]
    assert genuine["attempts"] >= 50, genuine  # enough attempts could be built to judge the rate
    assert genuine["pass_rate"] >= 0.95, genuine


def test_a_still_photo_never_passes(heldout):
    replay = heldout["still_photo_replay"]
    assert replay["attempts"] >= 50 and replay["live"] == 0, replay
