"""dlib ResNet-29 -> ONNX: parity with dlib itself on identical chips, the 5-point template, identities.

Chips are made by dlib (frontal detector, 5-point shape predictor, `get_face_chip(img, shape, 150, 0.25)`)
from the registry photos, so the converted graph and dlib see the very same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export import dlib_resnet
from export.weights import DLIB_RESNET, DLIB_SHAPE5, YUNET
from facestack.artifacts import fetch, photo
from facestack.pipeline.alignment import align
from facestack.pipeline.sessions import onnx_session, session_options

dlib = pytest.importorskip("dlib")

PHOTOS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", *(f"sample{i}.jpg" for i in range(1, 7))]
PARITY_TOL = 1e-4
DLIB_SAME_PERSON_L2 = 0.6  # dlib's own rule for its descriptors


@dataclass
class Face:
    photo: str
    image: np.ndarray  # RGB, the whole photo
    shape: object  # dlib.full_object_detection, 5 points
    width: int  # detection box width, px
    chip: np.ndarray  # dlib's own 150x150 RGB chip


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("dlib") / "model.onnx"
    facts = dlib_resnet.export_onnx(fetch(DLIB_RESNET), out)
    return out, facts


@pytest.fixture(scope="module")
def session(exported: tuple[Path, dict]) -> ort.InferenceSession:
    return onnx_session(exported[0], session_options(2))


@pytest.fixture(scope="module")
def recogniser():
    return dlib.face_recognition_model_v1(str(fetch(DLIB_RESNET)))


@pytest.fixture(scope="module")
def faces() -> list[Face]:
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(fetch(DLIB_SHAPE5)))
    found = []
    for name in PHOTOS:
        image = dlib.load_rgb_image(str(photo(name)))
        for box in detector(image, 0):  # the registry photos' faces are all >100 px: no upsampling needed
            shape = predictor(image, box)
            found.append(Face(name, image, shape, box.width(), dlib.get_face_chip(image, shape, 150, 0.25)))
    assert len(found) >= 8, "too few faces to test a batch"
    return found


def embed(session: ort.InferenceSession, chips: list[np.ndarray]) -> np.ndarray:
    batch = np.stack(chips).astype(np.float32).transpose(0, 3, 1, 2)  # N x 3 x 150 x 150, RGB 0..255
    return session.run(["embedding"], {"input": batch})[0]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def yunet_landmarks(faces: list[Face]) -> list[np.ndarray | None]:
    """YuNet's 5 landmarks for each dlib face (None where YuNet has no face whose eyes match dlib's)."""
    detector = cv2.FaceDetectorYN.create(str(fetch(YUNET)), "", (320, 320), 0.6, 0.3, 100)
    per_photo: dict[str, np.ndarray] = {}
    result = []
    for face in faces:
        if face.photo not in per_photo:
            h, w = face.image.shape[:2]
            detector.setInputSize((w, h))
            _, rows = detector.detect(cv2.cvtColor(face.image, cv2.COLOR_RGB2BGR))
            per_photo[face.photo] = np.zeros((0, 5, 2)) if rows is None else rows[:, 4:14].reshape(-1, 5, 2)
        parts = np.array([(p.x, p.y) for p in face.shape.parts()], np.float64)
        # dlib's 5 points: 0-1 the image-right eye's corners, 2-3 the image-left eye's, 4 the base of the nose.
        eyes = np.stack([parts[2:4].mean(0), parts[0:2].mean(0)])
        errors = [np.abs(lm[:2] - eyes).max() for lm in per_photo[face.photo]]
        best = int(np.argmin(errors)) if errors else -1
        result.append(per_photo[face.photo][best] if best >= 0 and errors[best] < 0.25 * face.width else None)
    return result


def template_chip(face: Face, landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """The chip the pipeline makes (facestack.pipeline.alignment), for comparison with dlib's own."""
    return align(face.image, landmarks, template, dlib_resnet.INPUT_SIZE)


# ---------------------------------------------------------------------------------------------------------


def test_graph_contract(exported: tuple[Path, dict]) -> None:
    path, facts = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "input" and out.name == "embedding"
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[1:] == [3, 150, 150]
    assert out_dims == [in_dims[0], 128]
    # Every learned value of dlib's layers is an initializer; the rest are the input mean/scale and Pad amounts.
    learned = sum(int(np.prod(t.dims)) for t in model.graph.initializer
                  if t.name.rsplit(".", 1)[-1] in ("weight", "bias", "gamma", "beta"))
    assert facts["parameters"] == learned == 5_614_592  # as dnn_face_recognition_ex's network has
    assert facts["layers"] == 108
    assert facts["embedding"]["dim"] == 128 and facts["embedding"]["name"] == "embedding"
    template = np.array(facts["alignment"]["template"])
    assert template.shape == (5, 2) and facts["alignment"]["size"] == [150, 150]
    assert template[0, 0] < template[1, 0] and template[3, 0] < template[4, 0]  # subject's right = image left
    assert template[0, 1] < template[2, 1] < template[3, 1]  # eyes above nose above mouth


def test_export_is_deterministic(exported: tuple[Path, dict], tmp_path: Path) -> None:
    again = tmp_path / "again.onnx"
    facts = dlib_resnet.export_onnx(fetch(DLIB_RESNET), again)
    assert again.read_bytes() == exported[0].read_bytes()
    assert facts == exported[1]


def test_rejects_damaged_files() -> None:
    data = fetch(DLIB_RESNET).read_bytes()
    for damaged in (data[:-1], data + b"\x00", data.replace(b"con_4", b"con_9", 1)):
        with pytest.raises(dlib_resnet.DlibFormatError):
            dlib_resnet.parse_dat(damaged)


def test_matches_dlib_one_chip_at_a_time(session, recogniser, faces: list[Face]) -> None:
    worst = 0.0
    for face in faces:
        ours = embed(session, [face.chip])[0]
        theirs = np.array(recogniser.compute_face_descriptor(face.chip))
        worst = max(worst, float(np.abs(ours - theirs).max()))
    print(f"\nbatch 1: {len(faces)} chips, max |onnx - dlib| = {worst:.2e}")
    assert worst <= PARITY_TOL


def test_matches_dlib_on_a_batch(session, recogniser, faces: list[Face]) -> None:
    chips = [face.chip for face in faces]
    ours = embed(session, chips)
    theirs = np.array([np.array(d) for d in recogniser.compute_face_descriptor(chips)])
    assert ours.shape == theirs.shape == (len(chips), 128)
    worst = float(np.abs(ours - theirs).max())
    print(f"\nbatch {len(chips)}: max |onnx - dlib| = {worst:.2e}")
    assert worst <= PARITY_TOL
    # A face's descriptor does not depend on its batch neighbours.
    assert np.abs(embed(session, chips[::-1])[::-1] - ours).max() <= 1e-5


def test_template_alignment_reproduces_dlib_chips(session, faces: list[Face]) -> None:
    """YuNet's 5 points warped onto ALIGN_TEMPLATE give (nearly) the descriptor of dlib's own chip."""
    landmarks = yunet_landmarks(faces)
    matched = [(face, lm) for face, lm in zip(faces, landmarks, strict=True) if lm is not None]
    assert len(matched) >= 0.9 * len(faces), "YuNet should find the faces dlib finds"
    reference = embed(session, [face.chip for face, _ in matched])

    def distances(template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        aligned = embed(session, [template_chip(face, lm, template) for face, lm in matched])
        return aligned, np.linalg.norm(aligned - reference, axis=1)

    aligned, l2 = distances(np.array(dlib_resnet.ALIGN_TEMPLATE))
    cos = cosine(aligned, reference)
    print(f"\nALIGN_TEMPLATE vs dlib chips, {len(matched)} faces: L2 mean {l2.mean():.3f} max {l2.max():.3f}, "
          f"cosine mean {cos.mean():.4f} min {cos.min():.4f}")
    assert l2.mean() <= 0.3
    assert l2.max() < DLIB_SAME_PERSON_L2  # still "the same person" by dlib's rule, every face
    # Each aligned chip's nearest dlib-chip descriptor is its own face's.
    all_pairs = np.linalg.norm(aligned[:, None] - reference[None], axis=2)
    assert (all_pairs.argmin(axis=1) == np.arange(len(matched))).all()

    # Control: the ArcFace template SFace uses, scaled to 150 px, frames the face differently from dlib's chips;
    # dlib's descriptor notices, so ALIGN_TEMPLATE's closeness is not just the descriptor shrugging off framing.
    arcface = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]]) * 150 / 112
    _, l2_control = distances(arcface)
    print(f"ArcFace template scaled to 150 px: L2 mean {l2_control.mean():.3f}")
    assert l2_control.mean() > 2 * l2.mean()


def test_same_person_is_closer_than_another(session, faces: list[Face]) -> None:
    largest = {}
    for face in faces:
        if face.photo in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg") and (
                face.photo not in largest or face.width > largest[face.photo].width):
            largest[face.photo] = face
    landmarks = dict(zip(largest, yunet_landmarks(list(largest.values())), strict=True))
    template = np.array(dlib_resnet.ALIGN_TEMPLATE)
    for how, chips in (
        ("dlib chips", [largest[p].chip for p in largest]),
        ("template chips", [template_chip(largest[p], landmarks[p], template) for p in largest]),
    ):
        emb = dict(zip(largest, embed(session, chips), strict=True))
        dist = {(a, b): float(np.linalg.norm(emb[a] - emb[b])) for a in emb for b in emb}
        same = [dist["obama.jpg", "obama2.jpg"], dist["obama.jpg", "obama3.jpg"], dist["obama2.jpg", "obama3.jpg"]]
        other = [dist[o, "biden.jpg"] for o in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
        print(f"\n{how}: obama-obama L2 {np.round(same, 3).tolist()}, obama-biden L2 {np.round(other, 3).tolist()}")
        assert max(same) < min(other)
        assert max(same) < DLIB_SAME_PERSON_L2 <= min(other)
