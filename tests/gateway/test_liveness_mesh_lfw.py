"""The liveness bars on LFW View 1's held-out people (DevTest) with the face mesh's pose: the configuration the
gateway uses by default, the face mesh and turns only (mesh yaw from the settings, fitted on DevTrain) passes at least
95 % of genuine attempts, and no still photo or tilted print passes, even shown in the asked order.

The same attempts as test_liveness_lfw.py (frames chosen by the independent reference pose); only the pose the
rule reads is the mesh's. Skipped without LFW or `make peer`. The full measurement:
`python -m benchmarks.liveness --pose mesh` (docs/liveness.md, docs/bench/liveness-mesh.json)."""

from __future__ import annotations

import pytest

from benchmarks import reference_pose
from benchmarks.liveness import run
from facestack.pipeline import mesh
from facestack.settings import REPO_ROOT, get_settings


@pytest.fixture(scope="module")
def heldout(lfw_dir) -> dict:
    if not reference_pose.available():
        pytest.skip("the reference pose needs dlib and face_recognition_models (`make peer`)")
    model = mesh.model_dir(REPO_ROOT / "model_repository", "face_mesh")
    assert model is not None, "no model_repository/face_mesh/1: run `make models`"
    settings = get_settings()
    result = run(lfw_dir, per_person=5, ask_yaw=15.0, ask_pitch=10.0, frontal_deg=10.0, replay_photos=60, seed=0,
                 repository=settings.model_repository, splits=("test",), pose="mesh", mesh_model=model)
    return next(r for r in result["splits"]["test"]["configs"]
                if r["actions"] == list(settings.gateway_liveness_actions)
                and r["yaw_deg"] == settings.gateway_liveness_mesh_yaw_deg)


def test_genuine_attempts_pass(heldout):
    """Measured 2026-12-02 at the defaults (mesh yaw 8, turns with three-step returns): 21/21 photos, 196/202 =
    97.0 % with mirrored photos (interval 93.7-98.6: docs/liveness.md)."""
    for key in ("genuine", "genuine_with_mirrored"):
        genuine = heldout[key]
        assert genuine["attempts"] >= 20, genuine  # enough attempts could be built to judge the rate
        assert genuine["pass_rate"] >= 0.95, genuine


def test_a_still_photo_or_a_tilted_print_never_passes(heldout):
    for key in ("still_photo_replay", "tilted_print_replay", "tilted_print_best_order"):
        replay = heldout[key]
        assert replay["attempts"] >= 500 and replay["live"] == 0, replay
