"""YuNet export parity: our dynamic ONNX + facestack's decoder vs OpenCV's cv2.FaceDetectorYN."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export import weights, yunet
from facestack import artifacts
from facestack.pipeline import detection
from facestack.pipeline.image import letterbox, to_nchw


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("yunet") / "model.onnx"
    yunet.export_onnx(artifacts.fetch(weights.YUNET), out)
    return out


@pytest.fixture(scope="module")
def session(exported: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])


def _ours(session: ort.InferenceSession, canvases: list[np.ndarray], threshold: float) -> list[detection.Detections]:
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"input": to_nchw(canvases, np.uint8)}), strict=True))
    h, w = canvases[0].shape[:2]
    return [detection.decode({k: v[i] for k, v in outputs.items()}, h, w, threshold) for i in range(len(canvases))]


def _reference(canvas: np.ndarray, threshold: float) -> np.ndarray:
    h, w = canvas.shape[:2]
    detector = cv2.FaceDetectorYN.create(str(artifacts.fetch(weights.YUNET)), "", (w, h), threshold, 0.3, 5000)
    _, faces = detector.detect(canvas)
    faces = np.zeros((0, 15), np.float32) if faces is None else faces
    return faces[np.argsort(-faces[:, -1])]


@pytest.mark.parametrize("name", ["obama.jpg", "biden.jpg", "sample1.jpg", "sample2.jpg", "sample4.jpg"])
def test_detections_match_opencv(session: ort.InferenceSession, name: str) -> None:
    image = cv2.imread(str(artifacts.photo(name)))
    canvas = letterbox(image, 640).canvas
    threshold = 0.5
    (ours,) = _ours(session, [canvas], threshold)
    ref = _reference(canvas, threshold)
    assert len(ours) == len(ref) > 0
    ref_boxes = np.column_stack([ref[:, :2], ref[:, :2] + ref[:, 2:4]])
    assert np.abs(ours.boxes - ref_boxes).max() <= 1.0
    assert np.abs(ours.landmarks - ref[:, 4:14].reshape(-1, 5, 2)).max() <= 1.0
    np.testing.assert_allclose(ours.scores, ref[:, -1], atol=1e-4)


def test_uint8_input_gives_exactly_the_float_graphs_outputs(session: ort.InferenceSession) -> None:
    """The exported input is uint8 (4x fewer bytes per image); the in-graph cast must change nothing."""
    assert session.get_inputs()[0].type == "tensor(uint8)"
    float_graph = yunet.make_dynamic(onnx.load(str(artifacts.fetch(weights.YUNET))))
    reference = ort.InferenceSession(float_graph.SerializeToString(), providers=["CPUExecutionProvider"])
    canvas = letterbox(cv2.imread(str(artifacts.photo("sample2.jpg"))), 640).canvas
    ours = session.run(None, {"input": to_nchw([canvas], np.uint8)})
    theirs = reference.run(None, {"input": to_nchw([canvas])})
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_dynamic_batch_and_size(session: ort.InferenceSession) -> None:
    image = cv2.imread(str(artifacts.photo("obama.jpg")))
    canvas = letterbox(image, 640).canvas
    small = cv2.resize(image, (320, 416))  # any multiple of 32, not square
    batch = _ours(session, [canvas, canvas, canvas], 0.5)
    assert [len(d) for d in batch] == [1, 1, 1]
    np.testing.assert_allclose(batch[0].boxes, batch[2].boxes, atol=1e-3)
    (faces,) = _ours(session, [small], 0.5)
    ref = _reference(small, 0.5)
    assert len(faces) == len(ref) == 1
    np.testing.assert_allclose(faces.boxes[0, :2], ref[0, :2], atol=1.0)
