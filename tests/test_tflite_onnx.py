"""export/tflite_onnx.py: the TensorFlow-free TFLite -> ONNX conversion of FaceMesh, and the canonical face decoded
with the schema the mediapipe wheel ships. The reference is TensorFlow Lite's interpreter (`tflite-runtime`)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from export import facemesh, tflite_onnx
from facestack import artifacts
from facestack.artifacts import REPO_ROOT
from facestack.pipeline import mesh

EXPORTED = REPO_ROOT / "model_repository" / "face_mesh" / "1"


@pytest.fixture(scope="module")
def tflite_file():
    return artifacts.fetch(facemesh.FACE_LANDMARK)


def convert(tflite_file) -> bytes:
    return tflite_onnx.convert(tflite_file, mesh.INPUT_NAME, facemesh.SOURCE_OUTPUTS).SerializeToString(
        deterministic=True)


def test_conversion_is_reproducible(tflite_file):
    """Two conversions are byte-identical, and equal the model `make models` exported."""
    first = convert(tflite_file)
    assert convert(tflite_file) == first
    assert (EXPORTED / mesh.MODEL_FILE).read_bytes() == first


def test_matches_tensorflow_lite_on_any_input(tflite_file):
    """Random crops (not faces: every operator's arithmetic, not only a face's typical range), a batch of 3."""
    session = ort.InferenceSession(convert(tflite_file), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(7).random((3, mesh.INPUT_SIZE, mesh.INPUT_SIZE, 3), dtype=np.float32)
    landmarks, flags = session.run([mesh.LANDMARKS_NAME, mesh.FACE_FLAG_NAME], {mesh.INPUT_NAME: x})
    assert landmarks.shape == (3, mesh.POINTS, 3) and flags.shape == (3, 1)
    reference = facemesh.Reference(tflite_file)
    for i in range(3):
        points, logit = reference.run(x[i])
        np.testing.assert_allclose(landmarks[i], points, atol=1e-3)
        np.testing.assert_allclose(flags[i], [logit], atol=1e-3)


def test_an_unmapped_operator_is_refused(tflite_file, monkeypatch):
    """A model with an operator the converter does not map fails loudly instead of converting wrongly."""
    monkeypatch.delattr(tflite_onnx.Converter, "op_pad")
    with pytest.raises(tflite_onnx.UnsupportedModel, match="PAD"):
        convert(tflite_file)


@pytest.mark.parametrize("size, kernel, stride, pads", [
    ((192, 192), (3, 3), (2, 2), [0, 0, 1, 1]),  # TensorFlow puts the odd pixel at the end
    ((96, 96), (3, 3), (1, 1), [1, 1, 1, 1]),
    ((5, 6), (2, 2), (2, 2), [0, 0, 1, 0]),
    ((3, 3), (3, 3), (3, 3), [0, 0, 0, 0]),
])
def test_same_padding_is_tensorflows(size, kernel, stride, pads):
    assert tflite_onnx.same_pads(size, kernel, stride) == pads


def test_canonical_face_from_the_wheels_schema():
    """Decoded by protobuf with the descriptors the mediapipe wheel's generated modules carry: 468 vertices of a
    left-right symmetric face (every vertex's mirror image is a vertex), MediaPipe's weighted rigid points."""
    face = facemesh.canonical_face(artifacts.fetch(facemesh.FACE_MESH_NPM))
    vertices = np.array(face["vertices"])
    assert vertices.shape == (mesh.POINTS, 3)
    mirror = vertices * np.array([-1.0, 1.0, 1.0])
    nearest = np.linalg.norm(mirror[:, None] - vertices[None], axis=2).min(axis=1)
    assert nearest.max() < 0.01  # cm
    assert 14 < np.ptp(vertices[:, 0]) < 16  # a head ~15 cm across
    ids, weights = face["procrustes_ids"], face["procrustes_weights"]
    assert len(ids) == len(weights) >= 30 and len(set(ids)) == len(ids) and max(ids) < mesh.POINTS
    assert all(w > 0 for w in weights)
    assert json.loads((EXPORTED / mesh.CANONICAL_FILE).read_text()) == face
