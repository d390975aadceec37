"""The face mesh in the real stack: face_pipeline runs it on request (MESH) from model_repository/face_mesh/
(exported by `make models`), and the liveness answer is judged by its pose.

Frames are the registry photos of test_liveness.py: obama.jpg frontal, obama2.jpg turned to his right, and
obama2.jpg mirrored (turned to his left).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facestack.artifacts import photo_bytes
from facestack.pipeline import mesh
from facestack.settings import REPO_ROOT
from facestack.triton.contract import EYES_OUTPUT, MESH_INPUT, MESH_POSE_OUTPUT
from tests.gateway.liveness_frames import Person

MESH_DIR = mesh.model_dir(REPO_ROOT / "model_repository", "face_mesh")


def infer(url: str, image: bytes, with_mesh: bool | None):
    import tritonclient.grpc as grpcclient

    inputs = [grpcclient.InferInput("IMAGE", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([[image]], dtype=np.object_))
    if with_mesh is not None:
        inputs.append(grpcclient.InferInput(MESH_INPUT, [1, 1], "BOOL"))
        inputs[1].set_data_from_numpy(np.array([[with_mesh]], dtype=np.bool_))
    names = ["BOXES", "LANDMARKS", "EMBEDDINGS", "QUALITY", MESH_POSE_OUTPUT, EYES_OUTPUT]
    with grpcclient.InferenceServerClient(url) as client:
        return client.infer("face_pipeline", inputs, outputs=[grpcclient.InferRequestedOutput(n) for n in names])


def test_the_pipeline_runs_the_mesh_only_when_asked(triton):
    """MESH true: the mesh's pose and eye openness per face, the same numbers facestack.pipeline.mesh gives on
    the pipeline's own face; unset or false: no mesh outputs, and the other outputs are unchanged."""
    data = photo_bytes("obama2.jpg")
    asked, plain, declined = (infer(triton.grpc_url, data, flag) for flag in (True, None, False))
    assert plain.as_numpy(MESH_POSE_OUTPUT) is None and declined.as_numpy(MESH_POSE_OUTPUT) is None
    assert plain.as_numpy(EYES_OUTPUT) is None
    np.testing.assert_allclose(asked.as_numpy("EMBEDDINGS"), plain.as_numpy("EMBEDDINGS"), atol=1e-6)
    pose, eyes = asked.as_numpy(MESH_POSE_OUTPUT)[0], asked.as_numpy(EYES_OUTPUT)[0]
    assert pose.shape == (len(asked.as_numpy("BOXES")[0]), 3) and eyes.shape == (len(pose), 2)
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    own = mesh.FaceMesh(MESH_DIR).run_face(rgb, asked.as_numpy("BOXES")[0][0], asked.as_numpy("LANDMARKS")[0][0])
    np.testing.assert_allclose(pose[0], (own.yaw, own.pitch, own.roll), atol=0.05)
    np.testing.assert_allclose(eyes[0], own.eyes, atol=1e-3)
    assert pose[0, 0] < -8 and eyes[0].min() > 0.15  # turned to his right, eyes open


@pytest.fixture(scope="module")
def acme(gw, keys):
    """The session's gateway: default settings (turns only, judged by the mesh where the pipeline has it)."""
    with gw.client(keys["acme"]) as client:
        yield client


def test_liveness_is_judged_by_the_mesh_pose(acme):
    obama = Person("obama.jpg", "obama2.jpg")
    frontal = obama.data
    issued = acme.post("/v1/liveness/challenges").json()
    r = acme.post(f"/v1/liveness/challenges/{issued['challenge_id']}/frames", data={"nonce": issued["nonce"]},
                  files=[("frames", (f"f{i}.jpg", f)) for i, f in enumerate(obama.frames(issued["actions"]))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["decision"], body["pose_source"]) == ("live", "mesh"), body
    assert body["pitch_deg"] is None  # turns only: pitch not judged, whatever the pose source
    # the frames' yaw is the mesh's, not the five points' (the five points read these photos differently)
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(frontal, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    face = acme.post("/v1/detect", files={"image": ("f.jpg", frontal)}).json()["faces"][0]
    own = mesh.FaceMesh(MESH_DIR).run_face(rgb, np.array(face["box"]), np.array(face["landmarks"]))
    assert abs(body["frames"][0]["yaw"] - own.yaw) < 0.1 and abs(face["quality"]["yaw"] - own.yaw) > 0.1
