"""SFace export: the folded, optimised fp32 graph against the quantised original, OpenCV's reference pipeline,
identities in the registry photos, and the unoptimised fold."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export import sface
from export.weights import SFACE_INT8BQ, YUNET
from facestack.artifacts import fetch, photo
from facestack.pipeline.alignment import similarity_transform

PORTRAITS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
GROUPS = ("sample1.jpg", "sample2.jpg")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The optimised export (with its measured facts) and the unoptimised one."""
    out = tmp_path_factory.mktemp("sface")
    optimised, plain = out / "optimised.onnx", out / "plain.onnx"
    facts = sface.export_onnx(fetch(SFACE_INT8BQ), optimised)
    plain_facts = sface.export_onnx(fetch(SFACE_INT8BQ), plain, optimise=False, measure=False)
    print("\nSFace export facts:", json.dumps(facts["optimisation"], indent=1))
    return {"optimised": optimised, "plain": plain, "facts": facts, "plain_facts": plain_facts}


def detect_faces(image: np.ndarray) -> np.ndarray:
    """YuNet rows (box, 5 landmarks, score) via OpenCV's reference decoder, largest face first."""
    height, width = image.shape[:2]
    detector = cv2.FaceDetectorYN.create(str(fetch(YUNET)), "", (width, height))
    _, faces = detector.detect(image)
    assert faces is not None and len(faces), "YuNet found no face"
    return faces[np.argsort(-faces[:, 2] * faces[:, 3])]


@pytest.fixture(scope="module")
def detections() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each registry photo (BGR) with its YuNet face rows."""
    images = {name: cv2.imread(str(photo(name))) for name in PORTRAITS + GROUPS}
    return {name: (image, detect_faces(image)) for name, image in images.items()}


@pytest.fixture(scope="module")
def crops(exported: dict, detections: dict) -> dict[str, list[np.ndarray]]:
    """Aligned 112x112 BGR crops (OpenCV's alignCrop) of every detected face, per photo."""
    recognizer = cv2.FaceRecognizerSF.create(str(exported["optimised"]), "")
    return {name: [recognizer.alignCrop(image, face) for face in faces] for name, (image, faces) in detections.items()}


def to_input(crops_bgr: list[np.ndarray]) -> np.ndarray:
    """OpenCV BGR crops -> the graph's input: RGB 0..255, NCHW float32."""
    return np.stack([c[:, :, ::-1].transpose(2, 0, 1) for c in crops_bgr]).astype(np.float32)


def test_graph_follows_the_contract(exported: dict) -> None:
    for key in ("optimised", "plain"):
        model = onnx.load(str(exported[key]))
        onnx.checker.check_model(model, full_check=True)
        graph = model.graph
        initializers = {t.name for t in graph.initializer}
        (data,) = [i for i in graph.input if i.name not in initializers]
        assert data.name == "input"
        assert [d.dim_param or d.dim_value for d in data.type.tensor_type.shape.dim] == ["N", 3, 112, 112]
        assert [o.name for o in graph.output] == ["embedding"]
        assert [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == ["N", 128]
        assert {(o.domain, o.version) for o in model.opset_import} == {("", 13)}
        assert not any(n.op_type == "DequantizeLinear" for n in graph.node)
    # Optimised: standard-domain ops only (no onnxruntime-specific fused ops), every BN fused into its Conv,
    # no PRelu, weight Reshape or Dropout left, and no initializer doubling as a graph input.
    graph = onnx.load(str(exported["optimised"])).graph
    assert {n.domain for n in graph.node} == {""}
    assert not {n.op_type for n in graph.node} & {"PRelu", "Reshape", "Dropout"}
    conv_outputs = {n.output[0] for n in graph.node if n.op_type == "Conv"}
    assert not any(n.op_type == "BatchNormalization" and n.input[0] in conv_outputs for n in graph.node)
    assert [i.name for i in graph.input] == ["input"]


def test_facts(exported: dict) -> None:
    facts = exported["facts"]
    assert facts["input"]["name"] == "input" and facts["input"]["colour"] == "RGB"
    assert facts["input"]["normalisation"] == {"in_graph": True, "mean": 127.5, "scale": 1 / 128}
    assert facts["embedding"] == {"name": "embedding", "dim": 128, "metric": "cosine"}
    assert facts["alignment"] == {"template": sface.ALIGN_TEMPLATE, "size": [112, 112]}
    assert np.allclose(sface.ALIGN_TEMPLATE, [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                              [41.5493, 92.3655], [70.7299, 92.2041]])
    optimisation = facts["optimisation"]
    assert len(optimisation["steps"]) == len(sface.OPTIMISATION_PASSES)
    assert optimisation["parity"]["vs_quantised_original"]["max_abs_diff"] < 1e-4
    latency = optimisation["latency_ms_per_face"]
    assert all(v > 0 for row in ("naive", "exported") for v in latency[row].values())
    assert exported["plain_facts"]["optimisation"]["steps"] == []


def test_template_is_the_one_opencv_aligns_to(exported: dict, detections: dict, crops: dict) -> None:
    """A plain least-squares similarity warp onto ALIGN_TEMPLATE reproduces cv2.FaceRecognizerSF.alignCrop."""
    for name, (image, faces) in detections.items():
        for face, reference in zip(faces, crops[name], strict=True):
            matrix = similarity_transform(face[4:14].reshape(5, 2), np.array(sface.ALIGN_TEMPLATE))
            ours = cv2.warpAffine(image, matrix, (sface.INPUT_SIZE, sface.INPUT_SIZE), flags=cv2.INTER_LINEAR)
            assert np.abs(ours.astype(np.int16) - reference).mean() < 0.1, name


def test_export_is_deterministic(exported: dict, tmp_path: Path) -> None:
    again = tmp_path / "again.onnx"
    sface.export_onnx(fetch(SFACE_INT8BQ), again, measure=False)
    assert again.read_bytes() == exported["optimised"].read_bytes()


def test_parity_with_quantised_original(exported: dict, crops: dict) -> None:
    """onnx's reference evaluator runs the shipped int8bq graph (blocked DequantizeLinear) as the ground truth."""
    x = to_input([crops["obama.jpg"][0], crops["biden.jpg"][0]])
    reference = sface.reference_embeddings(fetch(SFACE_INT8BQ), x)
    ours = sface.embed(sface.session(exported["optimised"]), x)
    diff = float(np.abs(reference - ours).max())
    print(f"\nmax abs diff vs quantised original (reference evaluator): {diff:.2e}")
    assert diff < 1e-4
    assert sface.cosine(reference, ours).min() >= 0.99999


@pytest.mark.parametrize("variant", ["optimised", "plain"])
def test_parity_with_opencv_face_recognizer(exported: dict, crops: dict, variant: str) -> None:
    """OpenCV's own SFace pipeline (alignCrop + feature, which loads our file) against onnxruntime on our input."""
    recognizer = cv2.FaceRecognizerSF.create(str(exported[variant]), "")
    sess = sface.session(exported["optimised"])
    all_crops = [c for faces in crops.values() for c in faces]
    assert len(all_crops) >= len(PORTRAITS) + len(GROUPS)
    opencv = np.concatenate([recognizer.feature(c) for c in all_crops])
    ours = sface.embed(sess, to_input(all_crops))
    cosines = sface.cosine(opencv, ours)
    print(f"\n{variant}: {len(all_crops)} faces, min cosine vs cv2.FaceRecognizerSF {cosines.min():.7f}")
    assert cosines.min() >= 0.9999
    # The colour order matters: fed BGR, the same graph disagrees with OpenCV's (swapRB) pipeline.
    bgr = np.stack([c.transpose(2, 0, 1) for c in all_crops]).astype(np.float32)
    assert sface.cosine(opencv, sface.embed(sess, bgr)).min() < 0.99


def test_same_person_scores_higher(exported: dict, crops: dict) -> None:
    sess = sface.session(exported["optimised"])
    emb = {name: sface.embed(sess, to_input(crops[name][:1])) for name in PORTRAITS}
    same = [float(sface.cosine(emb["obama.jpg"], emb[n])[0]) for n in ("obama2.jpg", "obama3.jpg")]
    different = float(sface.cosine(emb["obama.jpg"], emb["biden.jpg"])[0])
    print(f"\nobama vs obama2/obama3: {same}, obama vs biden: {different:.3f}")
    assert min(same) > different + 0.3
    # OpenCV's published SFace threshold (0.363) separates these pairs too.
    assert min(same) > 0.363 > different


def test_optimised_matches_unoptimised(exported: dict, crops: dict) -> None:
    x = to_input([c for faces in crops.values() for c in faces])
    optimised = sface.embed(sface.session(exported["optimised"]), x)
    plain = sface.embed(sface.session(exported["plain"]), x)
    assert sface.cosine(optimised, plain).min() >= 0.9999
    assert np.abs(optimised - plain).max() < 1e-4


def test_dynamic_batch(exported: dict, crops: dict) -> None:
    x = to_input([c for faces in crops.values() for c in faces])
    sess = sface.session(exported["optimised"])
    batched = sface.embed(sess, x)
    one_by_one = np.concatenate([sface.embed(sess, face[None]) for face in x])
    assert batched.shape == (len(x), 128)
    assert np.abs(batched - one_by_one).max() < 1e-4
    # OpenCV's importer takes the dynamic batch as well.
    net = cv2.dnn.readNetFromONNX(str(exported["optimised"]))
    net.setInput(x)
    assert sface.cosine(net.forward(), batched).min() >= 0.9999


@pytest.mark.parametrize("level", ["ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"])
def test_every_onnxruntime_level_agrees(exported: dict, crops: dict, level: str) -> None:
    x = to_input(crops["obama.jpg"] + crops["sample1.jpg"])
    reference = sface.embed(sface.session(exported["plain"], level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL), x)
    ours = sface.embed(sface.session(exported["optimised"], level=getattr(ort.GraphOptimizationLevel, level)), x)
    assert sface.cosine(reference, ours).min() >= 0.9999
