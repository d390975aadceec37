"""Liveness through the real stack: challenges, frames judged by the real Triton pipeline, the verify binding,
the `face_pad` slot with a test-built ONNX graph in a copy of the model repository (its own Triton).

Frames are real registry photos of one person in different poses: obama.jpg looks at the camera (yaw ~0),
obama2.jpg is turned to his right (yaw ~ -18), and obama2.jpg mirrored is the same real face turned to his
left (yaw ~ +20). The default gateway draws its challenges from the two turns (FACESTACK_GATEWAY_LIVENESS_ACTIONS'
default, the configuration measured on LFW: docs/liveness.md) and judges them by the face mesh's pose; real
photos show no look up or down of 10 degrees, so the up/down logic is covered by test_liveness_logic.py. Which
way is "left" is checked on real faces, not assumed.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from facestack.artifacts import photo_bytes
from facestack.pipeline import pad as pad_contract
from facestack.triton.launcher import TritonServer
from gateway.audit import verify_chain
from tests.gateway.liveness_frames import Person

TURNS = ["turn_left", "turn_right"]


def reencoded(data: bytes, quality: int) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture(scope="module")
def obama() -> Person:
    return Person("obama.jpg", "obama2.jpg")


@pytest.fixture(scope="module")
def biden() -> Person:
    return Person("biden.jpg", "biden.jpg")


@pytest.fixture(scope="module")
def turns_gw(gw):
    """The session's gateway: its challenges are drawn from the two turns (the default actions)."""
    return gw


@pytest.fixture(scope="module")
def acme(turns_gw, keys):
    with turns_gw.client(keys["acme"]) as client:
        yield client


@pytest.fixture(scope="module")
def globex(turns_gw, keys):
    with turns_gw.client(keys["globex"]) as client:
        yield client


def challenge(client) -> dict:
    r = client.post("/v1/liveness/challenges")
    assert r.status_code == 201, r.text
    body = r.json()
    actions = body["actions"]
    assert 2 <= len(actions) <= 3 and all(a != b for a, b in zip(actions, actions[1:], strict=False))
    return body


def submit(client, issued: dict, frames: list[bytes], nonce: str | None = None, as_json: bool = False):
    url = f"/v1/liveness/challenges/{issued['challenge_id']}/frames"
    nonce = issued["nonce"] if nonce is None else nonce
    if as_json:
        return client.post(url, json={"nonce": nonce, "frames": [
            {"image_base64": base64.b64encode(f).decode()} for f in frames]})
    return client.post(url, data={"nonce": nonce}, files=[("frames", (f"f{i}.jpg", f)) for i, f in enumerate(frames)])


def test_turn_left_is_yaw_up_on_real_faces(acme):
    """On real faces (the registry's group photos: about 20 people looking every way), a face whose nose tip
    sits towards the image's right of its eyes' midpoint (the person turned to their own left, in an
    unmirrored photo) has yaw > 0, and one turned the other way yaw < 0. gateway.liveness's turn_left
    (yaw grows) rests on this."""
    checked = 0
    for name in ("sample1.jpg", "sample2.jpg", "sample3.jpg", "sample4.jpg", "sample5.jpg", "sample6.jpg",
                 "obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"):
        for face in acme.post("/v1/detect", files={"image": ("f.jpg", photo_bytes(name))}).json()["faces"]:
            points = np.array(face["landmarks"])
            eyes = np.linalg.norm(points[1] - points[0])
            offset = (points[2, 0] - (points[0, 0] + points[1, 0]) / 2) / eyes  # nose right of the eyes' middle
            if abs(offset) < 0.12 or face["quality"]["face_size"] < 40:
                continue  # nearly frontal: the sign would be noise
            assert np.sign(face["quality"]["yaw"]) == np.sign(offset), (name, offset, face["quality"])
            checked += 1
    assert checked >= 5  # enough real turned faces to stand for the convention


def test_default_challenges_are_the_two_turns(gw, keys):
    """Left-right, right-left, and the two three-step returns (gateway.liveness.new_actions)."""
    with gw.client(keys["acme"]) as client:
        issued = [challenge(client)["actions"] for _ in range(40)]
    left, right = TURNS
    assert {tuple(a) for a in issued} == {(left, right), (right, left), (left, right, left), (right, left, right)}


def test_live_then_verify_bound_to_it(acme, obama, turns_gw, problem):
    issued = challenge(acme)
    r = submit(acme, issued, obama.frames(issued["actions"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["decision"], body["reason"]) == ("live", "all_steps"), body
    assert all(s["passed"] for s in body["steps"]) and body["identity_operating_point"] == "fmr_1e-3"
    # judged by the face mesh's pose (`make models` exports it; five landmarks only without it: docs/liveness.md)
    assert body["pose_source"] == "mesh"
    assert [f["pose"] for f in body["frames"]] == ["neutral", *issued["actions"]]

    verify = {"liveness_challenge": issued["challenge_id"]}
    files = {"probe": ("p.jpg", photo_bytes("obama2.jpg")), "reference": ("r.jpg", photo_bytes("obama3.jpg"))}
    r = acme.post("/v1/verify", data=verify, files=files)
    assert r.status_code == 200, r.text
    assert r.json()["liveness"]["status"] == "passed" and r.json()["match"] is True
    # one verify per passed challenge
    problem(acme.post("/v1/verify", data=verify, files=files), 422, "liveness_failed")
    events = [json.loads(line) for line in Path(turns_gw.settings.data_dir / "audit.jsonl").read_text().splitlines()]
    mine = [e for e in events if e.get("challenge_id") == issued["challenge_id"]]
    assert [e["operation"] for e in mine][:2] == ["liveness", "verify"] and mine[0]["decision"] == "live"
    assert mine[0]["pose_source"] == body["pose_source"]  # the audit says which pose judged
    verify_chain(turns_gw.settings.data_dir / "audit.jsonl")


def test_verify_refuses_another_person_with_a_passed_challenge(acme, obama, problem):
    issued = challenge(acme)
    assert submit(acme, issued, obama.frames(issued["actions"])).json()["decision"] == "live"
    files = {"probe": ("p.jpg", photo_bytes("biden.jpg")), "reference": ("r.jpg", photo_bytes("biden.jpg"))}
    body = problem(acme.post("/v1/verify", data={"liveness_challenge": issued["challenge_id"]}, files=files), 422,
                   "liveness_failed")
    assert "not the person" in body["detail"]


def test_verify_refuses_failed_unknown_and_other_tenants_challenges(acme, globex, obama, problem):
    files = {"probe": ("p.jpg", photo_bytes("obama2.jpg")), "reference": ("r.jpg", photo_bytes("obama3.jpg"))}
    problem(acme.post("/v1/verify", data={"liveness_challenge": "0" * 32}, files=files), 422, "liveness_failed")
    issued = challenge(acme)
    still = [reencoded(obama.data, q) for q in (95, 85, 75, 65)]  # one frame per step and the first
    assert submit(acme, issued, still).json()["decision"] == "not_live"
    problem(acme.post("/v1/verify", data={"liveness_challenge": issued["challenge_id"]}, files=files), 422,
            "liveness_failed")
    passed = challenge(acme)
    assert submit(acme, passed, obama.frames(passed["actions"])).json()["decision"] == "live"
    problem(globex.post("/v1/verify", data={"liveness_challenge": passed["challenge_id"]}, files=files), 422,
            "liveness_failed")


def test_wrong_order_is_not_live(acme, obama):
    """The turns the other way round (left-right for right-left; right-left-right for left-right-left)."""
    issued = challenge(acme)
    other = {"turn_left": "turn_right", "turn_right": "turn_left"}
    body = submit(acme, issued, obama.frames([other[a] for a in issued["actions"]])).json()
    assert (body["decision"], body["reason"], body["frame"]) == ("not_live", "unexpected_action", 1), body


def test_a_static_photo_never_passes(acme, obama):
    """The same photo sent as every frame, each re-encoded (other bytes): it cannot turn."""
    for _ in range(3):
        issued = challenge(acme)
        still = [reencoded(obama.data, q) for q in (95, 90, 85, 80, 75)]
        body = submit(acme, issued, still).json()
        assert body["decision"] == "not_live" and body["reason"] in ("step_missing", "repeated_frame"), body


def test_a_replayed_frame_is_not_live(acme, obama):
    issued = challenge(acme)
    frames = obama.frames(issued["actions"])
    frames.insert(2, frames[0])  # the first frame again, as if to come back to neutral: the same picture
    body = submit(acme, issued, frames).json()
    assert (body["decision"], body["reason"], body["frame"]) == ("not_live", "repeated_frame", 2), body


def test_identity_swap_mid_challenge_is_not_live(acme, obama, biden):
    issued = challenge(acme)
    frames = obama.frames(issued["actions"])
    frames[2] = biden.poses[issued["actions"][1]]  # someone else does the second step
    body = submit(acme, issued, frames, as_json=True).json()
    assert (body["decision"], body["reason"], body["frame"]) == ("not_live", "identity_changed", 2), body
    assert body["frames"][2]["similarity"] < body["identity_threshold"] <= body["frames"][1]["similarity"]


def test_a_challenge_is_answered_once(acme, obama, problem):
    issued = challenge(acme)
    frames = obama.frames(issued["actions"])
    problem(submit(acme, issued, frames, nonce="not-the-nonce"), 404, "challenge_not_found")
    problem(submit(acme, issued, frames[:2]), 422, "validation_error")  # too few: nothing used up
    assert submit(acme, issued, frames).json()["decision"] == "live"
    body = problem(submit(acme, issued, frames), 409, "challenge_used")
    assert body["challenge_id"] == issued["challenge_id"]


def test_other_tenants_cannot_answer_a_challenge(acme, globex, obama, problem):
    issued = challenge(acme)
    problem(submit(globex, issued, obama.frames(issued["actions"])), 404, "challenge_not_found")


def test_no_face_is_inconclusive(acme, obama, img):
    issued = challenge(acme)
    frames = obama.frames(issued["actions"])
    frames.insert(1, img.blank())
    body = submit(acme, issued, frames).json()
    assert (body["decision"], body["reason"], body["frame"]) == ("inconclusive", "no_face", 1), body


def test_expired_challenge_is_not_live(spawn, keys, obama):
    with spawn(gateway_liveness_deadline_s=1.0, gateway_liveness_actions=TURNS) as gw, \
            gw.client(keys["acme"]) as client:
        issued = challenge(client)
        time.sleep(1.3)
        body = submit(client, issued, obama.frames(issued["actions"])).json()
        assert (body["decision"], body["reason"]) == ("not_live", "expired"), body


# ---- the face_pad slot ----------------------------------------------------------------------------------

def brightness_pad(path: Path) -> None:
    """A stand-in PAD model for the plumbing only, NOT a detector: the score is the crop's mean brightness / 255."""
    x = helper.make_tensor_value_info(pad_contract.INPUT_NAME, TensorProto.FLOAT, ["N", 3, 112, 112])
    y = helper.make_tensor_value_info(pad_contract.OUTPUT_NAME, TensorProto.FLOAT, ["N", 1])
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Div", ["mean", "scale"], ["scaled"]),
             helper.make_node("Unsqueeze", ["scaled", "axis"], [pad_contract.OUTPUT_NAME])]
    init = [helper.make_tensor("scale", TensorProto.FLOAT, [], [255.0]),
            helper.make_tensor("axis", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "brightness_not_a_pad", [x], [y], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


PAD_CONFIG = """name: "face_pad"
backend: "python"
max_batch_size: 64
input [ { name: "input" data_type: TYPE_FP32 dims: [ 3, 112, 112 ] } ]
output [ { name: "score" data_type: TYPE_FP32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""


@pytest.fixture(scope="module")
def pad_triton(tmp_path_factory):
    """A copy of model_repository with a face_pad folder (the brightness graph), served by its own Triton."""
    source = Path(__file__).resolve().parents[2] / "model_repository"
    repository = tmp_path_factory.mktemp("pad") / "model_repository"
    shutil.copytree(source, repository, symlinks=True,
                    ignore=shutil.ignore_patterns("*.onnx", "*.plan", "__pycache__"))
    for onnx_file in source.glob("*/*/model.onnx"):  # the big exported graphs: linked, not copied
        (repository / onnx_file.relative_to(source)).symlink_to(onnx_file)
    folder = repository / pad_contract.PAD_MODEL
    brightness_pad(folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(PAD_CONFIG)
    shutil.copy(source / "face_embedder" / "1" / "model.py", folder / "1" / "model.py")
    with TritonServer(repository) as server:
        yield server


def darker(data: bytes, factor: float) -> bytes:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    ok, out = cv2.imencode(".jpg", np.clip(image * factor, 0, 255).astype(np.uint8))
    return out.tobytes()


def test_pad_enforce_refuses_a_low_score_and_reports_a_high_one(pad_triton, spawn, keys, problem):
    with spawn(triton_grpc_url=pad_triton.grpc_url, gateway_pad_policy="off",
               gateway_pad_policy_by_tenant={"acme": "enforce", "globex": "report"},
               gateway_pad_threshold=0.3) as gw, \
            gw.client(keys["acme"]) as acme, gw.client(keys["globex"]) as globex:
        bright = {"probe": ("p.jpg", photo_bytes("obama2.jpg")), "reference": ("r.jpg", photo_bytes("obama3.jpg"))}
        r = acme.post("/v1/verify", files=bright)
        assert r.status_code == 200, r.text
        pad = r.json()["pad"]
        assert pad["policy"] == "enforce" and pad["passed"] and pad["score"] >= 0.3
        dark = {"probe": ("p.jpg", darker(photo_bytes("obama2.jpg"), 0.45)), **{"reference": bright["reference"]}}
        body = problem(acme.post("/v1/verify", files=dark), 422, "liveness_failed")
        assert body["check"] == "pad" and body["pad_score"] < 0.3 and "presentation-attack" in body["detail"]
        reported = globex.post("/v1/verify", files=dark)  # report: the same score, no refusal
        assert reported.status_code == 200 and reported.json()["pad"]["passed"] is False
        assert abs(reported.json()["pad"]["score"] - body["pad_score"]) < 1e-4
        events = [json.loads(x) for x in Path(gw.settings.data_dir / "audit.jsonl").read_text().splitlines()]
        refused = [e for e in events if e.get("decision") == "liveness_failed"]
        assert refused and abs(refused[0]["pad_score"] - body["pad_score"]) < 1e-4
        assert any(e["operation"] == "verify" and e.get("decision") == "match" and "pad_score" in e for e in events)


def test_absent_pad_model_changes_nothing(acme, triton, pad_triton):  # acme: a gateway on the default Triton
    """Without face_pad in the repository the pipeline returns no PAD_SCORES and verify's answer has exactly the
    keys it always had; with it, the other outputs are the same numbers."""
    import tritonclient.grpc as grpcclient

    files = {"probe": ("p.jpg", photo_bytes("obama2.jpg")), "reference": ("r.jpg", photo_bytes("obama3.jpg"))}
    body = acme.post("/v1/verify", files=files).json()
    assert set(body) == {"match", "similarity", "threshold", "operating_point", "model", "probe_face",
                         "reference_face", "subject", "request_id"}

    def infer(url: str) -> grpcclient.InferResult:
        with grpcclient.InferenceServerClient(url) as client:
            image = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
            image.set_data_from_numpy(np.array([[photo_bytes("obama.jpg")]], dtype=np.object_))
            names = ["EMBEDDINGS", "QUALITY", "PAD_SCORES"]
            return client.infer("face_pipeline", [image], outputs=[grpcclient.InferRequestedOutput(n) for n in names])

    without, with_pad = infer(triton.grpc_url), infer(pad_triton.grpc_url)
    assert without.as_numpy("PAD_SCORES") is None
    assert with_pad.as_numpy("PAD_SCORES").shape == (1, 1)
    np.testing.assert_allclose(without.as_numpy("EMBEDDINGS"), with_pad.as_numpy("EMBEDDINGS"), atol=1e-6)
    np.testing.assert_allclose(without.as_numpy("QUALITY"), with_pad.as_numpy("QUALITY"), atol=1e-5)
